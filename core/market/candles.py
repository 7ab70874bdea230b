"""Candles, bounded buffers and the candle store with exact upward aggregation.

The finest timeframe (1s by default) is the only one a source streams. Every coarser candle is
the OHLCV of the finer candles inside it: open of the first, max high, min low, close of the
last, summed volume. A forming candle is kept apart from closed ones and is never in a buffer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.timeframes import bucket_start, parse_timeframe

# Columns of every candle array handed out: [N, 6] float64, oldest first.
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Candle:
    ts: int  # open time, UTC ms
    open: float
    high: float
    low: float
    close: float
    volume: float

    def as_row(self) -> tuple[float, ...]:
        return (float(self.ts), self.open, self.high, self.low, self.close, self.volume)

    def merge(self, later: Candle) -> Candle:
        """This candle extended by a later candle of a finer timeframe (keeps this open time)."""
        return Candle(
            self.ts,
            self.open,
            max(self.high, later.high),
            min(self.low, later.low),
            later.close,
            self.volume + later.volume,
        )


CloseListener = Callable[[str, str, Candle], None]


class RingBuffer:
    """Fixed-capacity FIFO of rows in one preallocated numpy array (memory never grows)."""

    def __init__(self, capacity: int, width: int = len(COLUMNS)):
        self._data = np.zeros((capacity, width), dtype=np.float64)
        self._capacity = capacity
        self._next = 0  # slot the next row goes to
        self._size = 0
        self.appended = 0  # rows ever appended: changes whenever the contents do

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    def append(self, row: Sequence[float]) -> None:
        self._data[self._next] = row
        self._next = (self._next + 1) % self._capacity
        self._size = min(self._size + 1, self._capacity)
        self.appended += 1

    def last(self, n: int | None = None) -> np.ndarray:
        """A copy of the newest n rows (all when None), oldest first."""
        n = self._size if n is None else max(0, min(n, self._size))
        if n == 0:
            return np.empty((0, self._data.shape[1]))
        start = (self._next - n) % self._capacity
        if start + n <= self._capacity:
            return self._data[start : start + n].copy()
        return np.concatenate((self._data[start:], self._data[: self._next]))

    def newest(self) -> np.ndarray | None:
        return None if self._size == 0 else self._data[(self._next - 1) % self._capacity].copy()


def aggregate(candles: np.ndarray, tf_ms: int) -> np.ndarray:
    """Exact OHLCV aggregation of a candle array [N, 6] (sorted by ts) into buckets of tf_ms.

    The result's rows are the buckets that hold at least one input candle; a bucket is *not*
    checked for completeness (the caller decides whether the last one is closed).
    """
    if len(candles) == 0:
        return np.empty((0, len(COLUMNS)))
    ts = candles[:, 0].astype(np.int64)
    buckets = ts - ts % tf_ms
    # Index of the first candle of each bucket; sorted input makes buckets non-decreasing.
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(candles)] - 1
    out = np.empty((len(starts), len(COLUMNS)))
    out[:, 0] = buckets[starts]
    out[:, 1] = candles[starts, 1]
    out[:, 2] = np.maximum.reduceat(candles[:, 2], starts)
    out[:, 3] = np.minimum.reduceat(candles[:, 3], starts)
    out[:, 4] = candles[ends, 4]
    out[:, 5] = np.add.reduceat(candles[:, 5], starts)
    return out


class CandleStore:
    """Closed candles per symbol and timeframe in bounded buffers, plus the forming candles.

    ``add`` takes a closed candle of the finest timeframe and folds it into every coarser forming
    candle; a coarser candle closes as soon as the finest candle that ends its period arrives,
    or, across a gap, when a candle of a later period arrives or ``advance`` passes its end.
    Listeners hear about each closed candle, finest first, outside the lock.
    """

    def __init__(self, symbols: Iterable[str], timeframes: Sequence[str], capacity: dict[str, int]):
        self.symbols = tuple(symbols)
        self.timeframes = tuple(timeframes)
        self.tf_ms = {tf: parse_timeframe(tf) for tf in self.timeframes}
        self.base_tf = self.timeframes[0]
        self._lock = threading.Lock()
        self._closed = {
            (s, tf): RingBuffer(capacity[tf]) for s in self.symbols for tf in self.timeframes
        }
        self._forming: dict[tuple[str, str], Candle | None] = {
            (s, tf): None for s in self.symbols for tf in self.timeframes[1:]
        }
        self._last_base_ts: dict[str, int] = {}
        self._sealed_until = -1  # advance() closed every period ending by then: no data before it
        self._listeners: list[CloseListener] = []
        self.closed_count = {(s, tf): 0 for s in self.symbols for tf in self.timeframes}

    def capacity(self, tf: str) -> int:
        return self._closed[(self.symbols[0], tf)].capacity

    def subscribe(self, listener: CloseListener) -> None:
        self._listeners.append(listener)

    # -- writing -------------------------------------------------------------------------

    def seed(self, symbol: str, tf: str, candles: np.ndarray) -> None:
        """Load closed history (a backfill) for one timeframe; must precede streamed candles.

        Seed the finest timeframe first: a coarser candle whose period the finest history ends
        inside (a backfill that stops mid-hour or mid-day) becomes the forming candle, so the
        candles streamed next complete it instead of closing a second candle at the same time.
        """
        with self._lock:
            buf = self._closed[(symbol, tf)]
            newest = buf.newest()
            times = [int(row[0]) for row in candles]
            # All checked before any is stored: a refused seed leaves the store as it was.
            for prev, ts in zip([None if newest is None else int(newest[0]), *times], times):
                if prev is not None and ts <= prev:
                    raise ValueError(f"seed {symbol} {tf}: candle at {ts} is not after {prev}")
            base_last = None if tf == self.base_tf else self._last_base_ts.get(symbol)
            base_end = None if base_last is None else base_last + self.tf_ms[self.base_tf]
            for row in candles:
                if base_end is not None and row[0] < base_end < row[0] + self.tf_ms[tf]:
                    self._forming[(symbol, tf)] = Candle(int(row[0]), *(float(x) for x in row[1:6]))
                else:
                    buf.append(row)
            if tf == self.base_tf and len(candles):
                self._last_base_ts[symbol] = int(candles[-1, 0])

    def rebuild_forming(self, symbol: str) -> dict[str, Candle | None]:
        """After a backfill of closed candles only: rebuild each coarser forming candle from
        the finer closed candles inside its current period (plus the finer forming one), finest
        first, so candles streamed next complete the right candle. Exact when every finer
        buffer covers the coarser period (1s: the minute, 1m: the hour, 1h: the day)."""
        with self._lock:
            last = self._last_base_ts.get(symbol)
            if last is None:
                return {}
            end = last + self.tf_ms[self.base_tf]
            rebuilt: dict[str, Candle | None] = {}
            for finer, tf in zip(self.timeframes, self.timeframes[1:]):
                start = bucket_start(end - 1, self.tf_ms[tf])
                if start + self.tf_ms[tf] == end:
                    self._forming[(symbol, tf)] = None  # the period just closed with `last`
                    rebuilt[tf] = None
                    continue
                rows = self._closed[(symbol, finer)].last()
                rows = rows[rows[:, 0] >= start] if len(rows) else rows
                parts = [Candle(int(r[0]), *(float(x) for x in r[1:6])) for r in rows]
                finer_forming = self._forming.get((symbol, finer))
                if finer_forming is not None:
                    parts.append(finer_forming)
                forming = None
                for part in parts:
                    forming = Candle(start, part.open, part.high, part.low, part.close,
                                     part.volume) if forming is None else forming.merge(part)
                self._forming[(symbol, tf)] = forming
                rebuilt[tf] = forming
            return rebuilt

    def add(self, symbol: str, candle: Candle) -> list[tuple[str, str, Candle]]:
        """Add a closed candle of the finest timeframe; returns the candles it closed."""
        base_ms = self.tf_ms[self.base_tf]
        with self._lock:
            last = self._last_base_ts.get(symbol)
            if last is not None and candle.ts <= last:
                raise ValueError(f"{symbol} {self.base_tf} candle at {candle.ts} is not after {last}")
            if candle.ts < self._sealed_until:
                raise ValueError(f"{symbol} candle at {candle.ts} is before {self._sealed_until}, "
                                 "where its periods were already closed")
            self._last_base_ts[symbol] = candle.ts
            events = [(symbol, self.base_tf, candle)]
            self._append_closed(symbol, self.base_tf, candle)
            for tf in self.timeframes[1:]:
                tf_ms = self.tf_ms[tf]
                start = bucket_start(candle.ts, tf_ms)
                forming = self._forming[(symbol, tf)]
                if forming is not None and forming.ts != start:
                    # A later period began while this one still formed: a gap in the data.
                    events.append((symbol, tf, forming))
                    self._append_closed(symbol, tf, forming)
                    forming = None
                if forming is None:
                    forming = Candle(start, candle.open, candle.high, candle.low, candle.close,
                                     candle.volume)
                else:
                    forming = forming.merge(candle)
                if candle.ts + base_ms >= start + tf_ms:
                    events.append((symbol, tf, forming))
                    self._append_closed(symbol, tf, forming)
                    forming = None
                self._forming[(symbol, tf)] = forming
        self._notify(events)
        return events

    def advance(self, now_ms: int) -> list[tuple[str, str, Candle]]:
        """Close forming candles whose period ended by now_ms (the data stopped mid-period)."""
        events = []
        with self._lock:
            self._sealed_until = max(self._sealed_until, now_ms)
            for (symbol, tf), forming in self._forming.items():
                if forming is not None and forming.ts + self.tf_ms[tf] <= now_ms:
                    events.append((symbol, tf, forming))
                    self._append_closed(symbol, tf, forming)
                    self._forming[(symbol, tf)] = None
        self._notify(events)
        return events

    def _append_closed(self, symbol: str, tf: str, candle: Candle) -> None:
        self._closed[(symbol, tf)].append(candle.as_row())
        self.closed_count[(symbol, tf)] += 1

    def _notify(self, events: list[tuple[str, str, Candle]]) -> None:
        for event in events:
            for listener in self._listeners:
                listener(*event)

    # -- reading (copies; safe from any thread) ------------------------------------------

    def closed(self, symbol: str, tf: str, n: int | None = None) -> np.ndarray:
        with self._lock:
            return self._closed[(symbol, tf)].last(n)

    def revision(self, symbol: str, tf: str) -> int:
        """How many closed candles of ``symbol``/``tf`` were ever stored: changes whenever
        they change, so whatever was computed from them can be reused until then."""
        with self._lock:
            return self._closed[(symbol, tf)].appended

    def closed_since(self, symbol: str, tf: str, after_ts: int, limit: int) -> np.ndarray:
        """Closed candles with open time > after_ts, at most the newest ``limit``."""
        rows = self.closed(symbol, tf, limit)
        return rows[rows[:, 0] > after_ts] if len(rows) else rows

    def forming(self, symbol: str, tf: str) -> Candle | None:
        if tf == self.base_tf:
            return None  # the finest timeframe only ever holds closed candles
        with self._lock:
            return self._forming[(symbol, tf)]

    def sealed_until(self) -> int:
        """Market time before which no candle is taken any more (set by advance)."""
        with self._lock:
            return self._sealed_until

    def last_ts(self, symbol: str) -> int | None:
        """Open time of the newest finest-timeframe candle of a symbol, or None."""
        with self._lock:
            return self._last_base_ts.get(symbol)

    def last_price(self, symbol: str) -> float | None:
        with self._lock:
            row = self._closed[(symbol, self.base_tf)].newest()
        return None if row is None else float(row[4])

    def sizes(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {key: len(buf) for key, buf in self._closed.items()}
