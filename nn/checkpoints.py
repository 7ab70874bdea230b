"""Checkpoints: one file per model and step, written atomically, the newest K kept.

A checkpoint is the learner's ``state_dict()`` (weights, optimiser, target network, epsilon,
step counters, config) saved with ``torch.save`` to ``<dir>/<model>/step-<N>.pt``. It is
written to a temporary file in the same folder and renamed, so a crash never leaves a torn
file where a good one was.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointManager:
    def __init__(self, directory: str | Path, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self._lock = threading.Lock()
        self._last: dict[str, dict] = {}

    def _files(self, model: str) -> list[tuple[int, Path]]:
        folder = self.directory / model
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
        # Oldest written first: after --no-load-models a fresh run's low step numbers are newer
        # than an earlier run's high ones, and "latest" means the last one written.
        return sorted(found, key=lambda item: (item[1].stat().st_mtime_ns, item[0]))

    def save(self, model: str, state: dict, step: int) -> Path:
        folder = self.directory / model
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"step-{step}.pt"
        with self._lock:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    torch.save(state, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            info = {"path": str(target), "step": step, "bytes": target.stat().st_size}
            # Never prune the file just written: a run started from fresh weights saves steps
            # below those an earlier run left here.
            others = [p for _, p in self._files(model) if p != target]
            for old in others[: max(0, len(others) - (self.keep - 1))]:
                old.unlink(missing_ok=True)
            self._last[model] = info
        return target

    def load_latest(self, model: str) -> tuple[Path, dict] | None:
        """The newest readable checkpoint of a model; a corrupt newest one falls back to older."""
        for step, path in reversed(self._files(model)):
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # a torn or foreign file: say so and try the one before
                log.warning("checkpoint %s unreadable (%s: %s)", path, type(exc).__name__, exc)
                continue
            self._last[model] = {"path": str(path), "step": step, "bytes": path.stat().st_size}
            return path, state
        return None

    def latest_info(self, model: str) -> dict | None:
        if model not in self._last:
            files = self._files(model)
            if not files:
                return None
            step, path = files[-1]
            self._last[model] = {"path": str(path), "step": step, "bytes": path.stat().st_size}
        return self._last[model]
