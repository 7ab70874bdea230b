"""The recording format: what the replay reads and the recorder writes.

A recording is a folder::

    <name>/manifest.json              what is inside, where it came from, its licence
    <name>/<BASE>-<QUOTE>/<kind>-<timeframe>.csv.gz   one file per symbol and kind

``manifest.json``::

    {"format": "tickwise-recording", "version": 1, "name": ..., "description": ...,
     "provenance": {...free-form: source, package, upstream files, checksums, processing...},
     "licence": "...", "start_ms": ..., "end_ms": ...,
     "streams": [{"symbol": "ETH/USDT", "kind": "candles", "timeframe": "30m",
                  "file": "ETH-USDT/candles-30m.csv.gz", "rows": 35000, "sha256": "..."}]}

Kinds and their gzip'd CSV columns (header row first, timestamps UTC ms):

- ``candles``: ts (open time), open, high, low, close, volume; one row per closed candle.
- ``trades``: ts, price, amount, side (buy|sell).
- ``book``: ts, side (bid|ask), price, size; each ts is one full snapshot.

Prices are written as the source gave them (no rounding) so a replay is exact.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.timeframes import parse_timeframe

FORMAT = "tickwise-recording"
VERSION = 1
KINDS = {
    "candles": ("ts", "open", "high", "low", "close", "volume"),
    "trades": ("ts", "price", "amount", "side"),
    "book": ("ts", "side", "price", "size"),
}


class RecordingError(ValueError):
    """A recording is missing, malformed or does not match its manifest."""


def symbol_dir(symbol: str) -> str:
    return symbol.replace("/", "-")


@dataclass(frozen=True)
class Stream:
    symbol: str
    kind: str
    timeframe: str | None
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Recording:
    path: Path
    name: str
    description: str
    provenance: dict
    licence: str
    start_ms: int
    end_ms: int
    streams: tuple[Stream, ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.symbol for s in self.streams))

    def candle_stream(self, symbol: str) -> Stream:
        """The finest candle stream of a symbol."""
        found = [s for s in self.streams if s.symbol == symbol and s.kind == "candles"]
        if not found:
            raise RecordingError(
                f"recording '{self.name}' has no candles for {symbol}; it has {self.symbols}"
            )
        return min(found, key=lambda s: parse_timeframe(s.timeframe or "1s"))

    def candles(self, symbol: str) -> tuple[str, np.ndarray]:
        """(timeframe, candles [N, 6] float64 sorted by ts) of a symbol's finest candle stream."""
        stream = self.candle_stream(symbol)
        raw = (self.path / stream.file).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != stream.sha256:
            raise RecordingError(f"{stream.file}: sha256 {digest} does not match the manifest")
        frame = pd.read_csv(io.BytesIO(gzip.decompress(raw)))
        columns = list(KINDS["candles"])
        if list(frame.columns) != columns:
            raise RecordingError(f"{stream.file}: columns {list(frame.columns)} != {columns}")
        return stream.timeframe or "1s", frame.to_numpy(dtype=np.float64)


def find_recording(name_or_path: str, recordings_dir: Path) -> Path:
    """A recording folder by path, or by name under recordings_dir."""
    direct = Path(name_or_path)
    for candidate in (direct, recordings_dir / name_or_path):
        if (candidate / "manifest.json").is_file():
            return candidate
    available = sorted(p.parent.name for p in recordings_dir.glob("*/manifest.json"))
    raise RecordingError(
        f"no recording '{name_or_path}' (looked for {direct}/manifest.json and "
        f"{recordings_dir / name_or_path}/manifest.json); bundled: {', '.join(available) or 'none'}"
    )


def load_recording(path: Path) -> Recording:
    manifest_path = Path(path) / "manifest.json"
    try:
        meta = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordingError(f"{manifest_path}: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise RecordingError(f"{manifest_path}: not a {FORMAT} v{VERSION} manifest")
    try:
        streams = tuple(
            Stream(s["symbol"], s["kind"], s.get("timeframe"), s["file"], int(s["rows"]), s["sha256"])
            for s in meta["streams"]
        )
        recording = Recording(
            Path(path), meta["name"], meta.get("description", ""), meta.get("provenance", {}),
            meta.get("licence", ""), int(meta["start_ms"]), int(meta["end_ms"]), streams,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"{manifest_path}: bad or missing field {exc}") from None
    for s in streams:
        if s.kind not in KINDS:
            raise RecordingError(f"{manifest_path}: unknown kind {s.kind!r}; known: {list(KINDS)}")
    return recording


class RecordingWriter:
    """Writes a recording folder: add streams, then ``close`` writes the manifest."""

    def __init__(self, path: Path, name: str, description: str, provenance: dict, licence: str):
        self.path = Path(path)
        self.meta = {"format": FORMAT, "version": VERSION, "name": name,
                     "description": description, "provenance": provenance, "licence": licence}
        self.streams: list[dict] = []
        self.path.mkdir(parents=True, exist_ok=True)

    def add(self, symbol: str, kind: str, frame: pd.DataFrame, timeframe: str | None = None) -> None:
        columns = list(KINDS[kind])
        if list(frame.columns) != columns:
            raise RecordingError(f"{kind} stream needs columns {columns}, got {list(frame.columns)}")
        name = f"{kind}-{timeframe}.csv.gz" if timeframe else f"{kind}.csv.gz"
        rel = f"{symbol_dir(symbol)}/{name}"
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = frame.to_csv(index=False, lineterminator="\n").encode()
        # mtime=0: the same data always gives the same bytes (and the same checksum).
        data = gzip.compress(text, compresslevel=9, mtime=0)
        target.write_bytes(data)
        self.streams.append({"symbol": symbol, "kind": kind, "timeframe": timeframe, "file": rel,
                             "rows": len(frame), "sha256": hashlib.sha256(data).hexdigest(),
                             "first_ts": int(frame["ts"].iloc[0]) if len(frame) else None,
                             "last_ts": int(frame["ts"].iloc[-1]) if len(frame) else None})

    def close(self) -> Path:
        firsts = [s["first_ts"] for s in self.streams if s["first_ts"] is not None]
        lasts = [s["last_ts"] for s in self.streams if s["last_ts"] is not None]
        self.meta["start_ms"] = min(firsts) if firsts else 0
        self.meta["end_ms"] = max(lasts) if lasts else 0
        self.meta["streams"] = self.streams
        manifest = self.path / "manifest.json"
        manifest.write_text(json.dumps(self.meta, indent=2) + "\n")
        return manifest
