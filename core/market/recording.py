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
import zlib
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

    def stream(self, symbol: str, kind: str) -> Stream | None:
        found = [s for s in self.streams if s.symbol == symbol and s.kind == kind]
        return found[0] if found else None

    def table(self, stream: Stream) -> pd.DataFrame:
        """A stream's rows, checked against its manifest checksum and columns."""
        where = self.path / stream.file
        try:
            raw = where.read_bytes()
        except OSError as exc:
            raise RecordingError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest != stream.sha256:
            raise RecordingError(f"{where}: sha256 {digest} does not match the manifest "
                                 "(truncated or changed?)")
        try:
            frame = pd.read_csv(io.BytesIO(gzip.decompress(raw)))
        except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError) as exc:
            raise RecordingError(f"{where}: not a gzip'd CSV ({exc})") from None
        columns = list(KINDS[stream.kind])
        if list(frame.columns) != columns:
            raise RecordingError(f"{where}: columns {list(frame.columns)} != {columns}")
        return frame

    def candles(self, symbol: str) -> tuple[str, np.ndarray]:
        """(timeframe, candles [N, 6] float64 sorted by ts) of a symbol's finest candle stream."""
        stream = self.candle_stream(symbol)
        frame = self.table(stream)
        try:
            values = frame.to_numpy(dtype=np.float64)
        except ValueError as exc:
            raise RecordingError(f"{self.path / stream.file}: not numbers ({exc})") from None
        return stream.timeframe or "1s", values


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
    """Writes a recording folder: add (or append to) streams, then ``close`` writes the manifest.

    ``add`` writes a whole stream at once; ``append`` adds rows to a stream as they come (the
    recorder), each call one more gzip member (a multi-member gzip file reads as one). The
    checksums are taken from the finished files at ``close``.
    """

    def __init__(self, path: Path, name: str, description: str, provenance: dict, licence: str):
        self.path = Path(path)
        self.meta = {"format": FORMAT, "version": VERSION, "name": name,
                     "description": description, "provenance": provenance, "licence": licence}
        self.streams: dict[tuple[str, str, str | None], dict] = {}
        self.path.mkdir(parents=True, exist_ok=True)

    def add(self, symbol: str, kind: str, frame: pd.DataFrame, timeframe: str | None = None) -> None:
        if (symbol, kind, timeframe) in self.streams:
            raise RecordingError(f"{symbol} {kind} {timeframe or ''} was already added")
        self.append(symbol, kind, frame, timeframe)

    def append(self, symbol: str, kind: str, frame: pd.DataFrame,
               timeframe: str | None = None) -> None:
        columns = list(KINDS[kind])
        if list(frame.columns) != columns:
            raise RecordingError(f"{kind} stream needs columns {columns}, got {list(frame.columns)}")
        key = (symbol, kind, timeframe)
        stream = self.streams.get(key)
        if stream is None:
            name = f"{kind}-{timeframe}.csv.gz" if timeframe else f"{kind}.csv.gz"
            rel = f"{symbol_dir(symbol)}/{name}"
            (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.path / rel).unlink(missing_ok=True)
            stream = {"symbol": symbol, "kind": kind, "timeframe": timeframe, "file": rel,
                      "rows": 0, "sha256": None, "first_ts": None, "last_ts": None}
            self.streams[key] = stream
        text = frame.to_csv(index=False, header=stream["rows"] == 0, lineterminator="\n").encode()
        # mtime=0: the same data always gives the same bytes (and the same checksum).
        with open(self.path / stream["file"], "ab") as handle:
            handle.write(gzip.compress(text, compresslevel=9, mtime=0))
        if len(frame):
            if stream["first_ts"] is None:
                stream["first_ts"] = int(frame["ts"].iloc[0])
            stream["last_ts"] = int(frame["ts"].iloc[-1])
        stream["rows"] += len(frame)

    def close(self) -> Path:
        streams = list(self.streams.values())
        for stream in streams:
            data = (self.path / stream["file"]).read_bytes()
            stream["sha256"] = hashlib.sha256(data).hexdigest()
        firsts = [s["first_ts"] for s in streams if s["first_ts"] is not None]
        lasts = [s["last_ts"] for s in streams if s["last_ts"] is not None]
        self.meta["start_ms"] = min(firsts) if firsts else 0
        self.meta["end_ms"] = max(lasts) if lasts else 0
        self.meta["streams"] = streams
        manifest = self.path / "manifest.json"
        manifest.write_text(json.dumps(self.meta, indent=2) + "\n")
        return manifest
