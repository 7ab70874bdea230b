"""Checkpoints: one file per model and step, written atomically, read safely, the newest K kept.

Names: ``<dir>/<model>/step-<N>.pt`` for the first run in a folder, ``run-<R>-step-<N>.pt``
for a later run that started from fresh weights while an earlier run's files were there
(--no-load-models, or a checkpoint that did not fit the model): its low step numbers still
rank above the old run's high ones. "Newest" is the highest (run, step) read from the name,
never a file time.

Content: a 32-byte header (magic, payload length, CRC-32) and the learner's ``state_dict()``
as ``torch.save`` writes it. Loading checks the length and the checksum (torch's zip reader
checks neither: a flipped byte in a tensor loads silently), then unpickles with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, so a file
that pickles any other object is refused, never run. Files without the header (written
before it) are read the same way, unchecked.

Writing: a temporary file in the same folder, flushed and fsynced, renamed over the target,
then the folder fsynced. After a crash (kill -9, power loss) the folder holds the old files
and either nothing or the complete new one under a checkpoint's name; a temporary file left
by the crash is never read and is removed at the next load.

A checkpoint that cannot be read (truncated, garbage, a foreign object) is renamed
``*.unreadable`` (kept for a look, never tried again), the next newest is loaded, and
``warnings[model]`` says which file was skipped and why (the model's card shows it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(?:run-(\d+)-)?step-(\d+)\.pt$")
_TEMPORARY = ".tmp-"
MAGIC = b"TICKWISE CHECKPOINT\x00"
_HEADER = struct.Struct("<20sQI")  # magic, payload bytes, CRC-32 of the payload
_ZIP = b"PK\x03\x04"  # what torch.save writes first: a checkpoint from before the header


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that is truncated, damaged or not a checkpoint at all."""


def file_name(run: int, step: int) -> str:
    return f"step-{step}.pt" if run == 0 else f"run-{run}-step-{step}.pt"


def encode(state: dict) -> tuple[bytes, bytes]:
    """(header, payload) of a checkpoint file holding ``state``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)), payload


def decode(data: bytes) -> dict:
    """The state a checkpoint file's bytes hold; :class:`UnreadableCheckpoint` if damaged,
    ``pickle.UnpicklingError`` if it pickles anything but tensors and plain values."""
    if data.startswith(MAGIC):
        if len(data) < _HEADER.size:
            raise UnreadableCheckpoint(f"truncated header ({len(data)} bytes)")
        _, length, crc = _HEADER.unpack_from(data)
        payload = memoryview(data)[_HEADER.size:]
        if len(payload) != length:
            raise UnreadableCheckpoint(f"truncated: {len(payload):,} of {length:,} bytes")
        if zlib.crc32(payload) != crc:
            raise UnreadableCheckpoint("checksum mismatch: the bytes changed after writing")
    elif data.startswith(_ZIP):
        payload = data
    else:
        raise UnreadableCheckpoint("not a checkpoint file")
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(f"holds a {type(state).__name__}, not a state dict")
    return state


def reason(exc: BaseException) -> str:
    """One short line on why a checkpoint was not read (no paths, no advice to unpickle)."""
    if isinstance(exc, UnreadableCheckpoint):
        return str(exc)
    if isinstance(exc, OSError):  # its str() names the path
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):  # torch's text goes on to suggest unsafe loading
        if found := re.search(r"Unsupported global: GLOBAL (\S+)", text):
            return f"refused: it pickles {found.group(1)}, not only tensors and plain values"
        found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        return f"refused by the weights-only loader: {found.group(1) if found else text}"[:200]
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return f"{type(exc).__name__}: {line}"[:200]


def write_atomically(target: Path, *chunks: bytes) -> None:
    """``chunks`` as the whole content of ``target``, or (on any error) ``target`` as it was."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMPORARY, suffix=".pt", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened; NTFS journals the rename
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    def __init__(self, directory: str | Path, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self._lock = threading.Lock()
        self._last: dict[str, dict] = {}
        self._run: dict[str, int] = {}  # model -> the run number its saves carry
        self.warnings: dict[str, str] = {}  # model -> checkpoints skipped at load, and why

    def _files(self, model: str) -> list[tuple[tuple[int, int], Path]]:
        """(run, step) and path of every checkpoint of ``model``, oldest first."""
        folder = self.directory / model
        if not folder.is_dir():
            return []
        found = [((int(m.group(1) or 0), int(m.group(2))), p)
                 for p in folder.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found, key=lambda item: item[0])

    def _info(self, path: Path, step: int) -> dict:
        return {"path": str(path), "step": step, "bytes": path.stat().st_size}

    def start_fresh(self, model: str) -> None:
        """The model starts from fresh weights: its next save begins a new run, ranked above
        every checkpoint already in its folder."""
        with self._lock:
            self._run.pop(model, None)

    def save(self, model: str, state: dict, step: int) -> Path:
        folder = self.directory / model
        header, payload = encode(state)  # outside the lock: the slow part
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            if model not in self._run:  # nothing loaded: a new run after any files there
                files = self._files(model)
                self._run[model] = files[-1][0][0] + 1 if files else 0
            target = folder / file_name(self._run[model], step)
            write_atomically(target, header, payload)
            # Never prune the file just written, whatever ranks above it.
            others = [p for _, p in self._files(model) if p != target]
            for old in others[: max(0, len(others) - (self.keep - 1))]:
                old.unlink(missing_ok=True)
            self._last[model] = self._info(target, step)
        return target

    def load_latest(self, model: str) -> tuple[Path, dict] | None:
        """The newest readable checkpoint of a model; an unreadable one is set aside, said in
        ``warnings[model]``, and the one before it tried."""
        with self._lock:
            self._remove_temporary(model)
            skipped = []
            found = None
            for (run, step), path in reversed(self._files(model)):
                try:
                    state = decode(path.read_bytes())
                except Exception as exc:  # damaged, foreign or refused: try the one before
                    why = reason(exc)
                    log.warning("checkpoint %s unreadable (%s); trying the one before", path, why)
                    skipped.append(f"{model}/{path.name} skipped: {why}")
                    if not isinstance(exc, OSError):  # a read error leaves the file be
                        self._set_aside(path)
                    continue
                self._run[model] = run
                self._last[model] = self._info(path, step)
                found = path, state
                break
            if skipped:
                self.warnings[model] = "; ".join(skipped)
            return found

    def kept_steps(self, model: str) -> list[int]:
        """The steps of the model's kept checkpoints, oldest first (a step held by two runs
        once: the newer run's file is the one :meth:`load_step` reads)."""
        return sorted({step for (_, step), _ in self._files(model)})

    def load_step(self, model: str, step: int) -> tuple[Path, dict]:
        """The newest kept checkpoint of ``step``; KeyError if none is kept, and the
        checkpoint's own error if it cannot be read."""
        with self._lock:
            found = [path for (_, s), path in self._files(model) if s == step]
            if not found:
                raise KeyError(step)
            return found[-1], decode(found[-1].read_bytes())

    def _remove_temporary(self, model: str) -> None:
        folder = self.directory / model
        if folder.is_dir():
            for tmp in folder.glob(f"{_TEMPORARY}*"):
                log.info("removing %s, left by an interrupted checkpoint write", tmp.name)
                with contextlib.suppress(OSError):  # never read anyway
                    tmp.unlink(missing_ok=True)

    def _set_aside(self, path: Path) -> None:
        try:
            path.replace(path.with_name(path.name + ".unreadable"))
        except OSError as exc:  # a read-only folder: it stays, and is skipped again next time
            log.warning("could not set %s aside (%s)", path.name, exc)

    def latest_info(self, model: str) -> dict | None:
        if model not in self._last:
            files = self._files(model)
            if not files:
                return None
            (_, step), path = files[-1]
            self._last[model] = self._info(path, step)
        return self._last[model]
