"""Replay source: bundled real history, played through the same market feed as live data.

The replay keeps the schedule: which base candle (1s) opens next in market time, the laps of a
looping recording, gaps in the data, and the recorded books and trades played in step with
the candles. The candles inside a real bar, and the order books of a recording without any,
are made up by the seeded process of ``core.market.synthetic``: aggregating the seconds of a
bar gives back the real bar's OHLCV, so every coarser timeframe that real bars tile (1h, 1d
from 30m bars) is exactly real; finer ones are labelled interpolated. Synthetic books are
seeded per second and built around the last replayed close, so nothing in them depends on a
price not yet replayed.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import numpy as np

from core.clock import Clock
from core.market.candles import aggregate
from core.market.feed import MarketFeed
from core.market.recording import Recording
from core.market.synthetic import interpolate_bar, price_decimals, synthetic_book
from core.timeframes import bucket_start, parse_timeframe

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


@dataclass
class SymbolTrack:
    """One symbol's recorded bars, books and trades, and where the replay is in them."""

    symbol: str
    index: int  # position in the recording's symbol list, part of the seed
    bars: np.ndarray  # [N, 6] real bars
    decimals: int  # price tick 10**-decimals, from the bars played so far (see _bar_candles)
    cursor: int = 0  # next bar to play
    current: list | None = None  # base candles of the bar being played, as lists
    current_start: int = -1
    last_close: float | None = None
    # Recorded books and trades (a recording made by the recorder), replayed as they came.
    book_ts: np.ndarray | None = None  # [M] snapshot times
    book_levels: list | None = None  # [(bids [K, 2], asks [K, 2])] per snapshot
    trades: np.ndarray | None = None  # [T, 3] ts, price, amount
    trade_sides: np.ndarray | None = None  # [T] "buy"/"sell"
    book_cursor: int = 0
    trade_cursor: int = 0

    def seek(self, start_ms: int, bar_ms: int) -> None:
        """Point the cursors at market time ``start_ms`` of the first lap: the bar containing
        it (if the start falls inside one) is played from inside, books and trades from it on."""
        self.cursor = int(np.searchsorted(self.bars[:, 0], start_ms - bar_ms, "right"))
        if self.book_ts is not None:
            self.book_cursor = int(np.searchsorted(self.book_ts, start_ms))
        if self.trades is not None:
            self.trade_cursor = int(np.searchsorted(self.trades[:, 0], start_ms))

    def rewind(self) -> None:
        """Back to the recording's first bar, book and trade (a new lap)."""
        self.cursor = 0
        self.current = None
        self.current_start = -1
        self.book_cursor = self.trade_cursor = 0


def recorded_books(frame) -> tuple[np.ndarray, list]:
    """Rows (ts, side, price, size) -> snapshot times and (bids desc, asks asc) per snapshot."""
    times, levels = [], []
    for ts, rows in frame.groupby("ts", sort=True):
        bids = rows[rows["side"] == "bid"][["price", "size"]].to_numpy(np.float64)
        asks = rows[rows["side"] == "ask"][["price", "size"]].to_numpy(np.float64)
        times.append(int(ts))
        levels.append((bids[np.argsort(-bids[:, 0])], asks[np.argsort(asks[:, 0])]))
    return np.asarray(times, dtype=np.int64), levels


def load_track(recording: Recording, symbol: str) -> tuple[str, SymbolTrack]:
    """The bar timeframe and the track of ``symbol``: its bars, and its recorded books and
    trades when the recording has them."""
    tf, bars = recording.candles(symbol)
    track = SymbolTrack(symbol, recording.symbols.index(symbol), bars,
                        price_decimals(bars[:1, 1:5]))
    book_stream = recording.stream(symbol, "book")
    if book_stream is not None and book_stream.rows:
        track.book_ts, track.book_levels = recorded_books(recording.table(book_stream))
    trade_stream = recording.stream(symbol, "trades")
    if trade_stream is not None and trade_stream.rows:
        trades = recording.table(trade_stream)
        track.trades = trades[["ts", "price", "amount"]].to_numpy(np.float64)
        track.trade_sides = trades["side"].to_numpy(str)
    return tf, track


class ReplaySource:
    """Plays a recording into a MarketFeed, paced by a clock."""

    kind = "replay"

    def __init__(self, recording: Recording, feed: MarketFeed, *,
                 symbols: tuple[str, ...], start_ms: int | None = None, warmup_days: int = 45,
                 on_end: str = "loop", seed: int = 7, book_levels: int = 20,
                 book_interval_s: int = 1):
        self.recording = recording
        self.feed = feed
        self.store = feed.store
        self.base_tf = self.store.base_tf
        self.base_ms = self.store.tf_ms[self.base_tf]
        self.on_end = on_end
        self.seed = seed
        self.book_levels = book_levels
        self.book_every_ms = book_interval_s * 1000
        loaded = [load_track(recording, symbol) for symbol in symbols]
        self.tracks = [track for _, track in loaded]
        self.bar_tf = self._bar_timeframe({tf for tf, _ in loaded})
        self.bar_ms = parse_timeframe(self.bar_tf)
        self.data_start = min(int(t.bars[0, 0]) for t in self.tracks)
        self.data_end = max(int(t.bars[-1, 0]) for t in self.tracks) + self.bar_ms
        self.start_ms = self._start(start_ms, warmup_days)
        self.next_ts = self.start_ms  # open time of the next base candle to emit
        self.offset = 0  # added to recorded times; grows by `lap_ms` on every loop
        self.lap = 0
        self.lap_ms = bucket_start(self.data_end - self.data_start, DAY_MS) + 2 * DAY_MS
        self.ended = False
        self.emitted = 0
        self._lock = threading.Lock()
        for track in self.tracks:
            track.seek(self.start_ms, self.bar_ms)

    def _bar_timeframe(self, bar_tfs: set[str]) -> str:
        """The one timeframe of the recording's bars, which must split into base candles."""
        if len(bar_tfs) != 1:
            raise ValueError(f"recording '{self.recording.name}' mixes bar timeframes {bar_tfs}")
        bar_tf = bar_tfs.pop()
        if parse_timeframe(bar_tf) % self.base_ms:
            raise ValueError(f"bars of {bar_tf} do not split into {self.base_tf} candles")
        return bar_tf

    def _start(self, start_ms: int | None, warmup_days: int) -> int:
        """The first base candle's open time: ``start_ms`` or, when None, a UTC midnight after
        ``warmup_days`` of history; a short recording keeps at least its last day (or what it
        has) for the replay itself."""
        first = self.data_start
        if start_ms is None:
            start_ms = bucket_start(first, DAY_MS) + (warmup_days + 1) * DAY_MS
            start_ms = max(first, min(start_ms, bucket_start(self.data_end - DAY_MS, DAY_MS)))
        start = bucket_start(int(start_ms), self.base_ms)
        if not first <= start < self.data_end:
            raise ValueError(
                f"replay start {start} is outside the recording "
                f"({self.data_start} to {self.data_end}); lower replay.warmup_days or set replay.start"
            )
        return start

    # -- description ----------------------------------------------------------------------

    def interpolated_timeframes(self) -> list[str]:
        return [tf for tf in self.store.timeframes
                if self.store.tf_ms[tf] < self.bar_ms or self.store.tf_ms[tf] % self.bar_ms]

    def describe(self) -> dict:
        return {
            "source": "replay",
            "recording": self.recording.name,
            "description": self.recording.description,
            "licence": self.recording.licence,
            "bar_timeframe": self.bar_tf,
            "interpolated_timeframes": self.interpolated_timeframes(),
            "books": "recorded" if all(t.book_ts is not None for t in self.tracks)
            else "synthetic",
            "trades": "recorded" if all(t.trades is not None for t in self.tracks) else "none",
            "lap": self.lap,
            "ended": self.ended,
            "on_end": self.on_end,
            "cursor_ms": self.next_ts,
        }

    # -- backfill -----------------------------------------------------------------------

    def _bar_rng(self, track: SymbolTrack, bar_ts: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, track.index, bar_ts // 1000, 0])

    def _bar_candles(self, track: SymbolTrack, row: int) -> np.ndarray:
        bar = track.bars[row].copy()
        # Played exactly when the bars are the streamed timeframe: no path to draw.
        rng = self._bar_rng(track, int(bar[0])) if self.bar_ms != self.base_ms else None
        bar[0] += self.offset
        # The tick from this bar and the 49 before it: never from bars not yet played.
        track.decimals = price_decimals(track.bars[max(0, row - 49) : row + 1, 1:5])
        return interpolate_bar(bar, self.bar_ms, self.base_ms, rng, track.decimals)

    def backfill(self) -> None:
        """History before the start, per timeframe, through the feed's backfill door."""
        for track in self.tracks:
            history = track.bars[track.bars[:, 0] + self.bar_ms <= self.start_ms]
            fine = [tf for tf in self.store.timeframes if tf in self.interpolated_timeframes()]
            base = np.empty((0, 6))  # no history when the replay starts at the first bar
            if fine and len(history):
                need_ms = max(self.store.capacity(tf) * self.store.tf_ms[tf] for tf in fine)
                n_bars = min(len(history), math.ceil(need_ms / self.bar_ms))
                first_row = len(history) - n_bars
                base = np.concatenate([self._bar_candles(track, r)
                                       for r in range(first_row, len(history))])
            for tf in self.store.timeframes:
                tf_ms = self.store.tf_ms[tf]
                if tf in fine:
                    rows = base if tf == self.base_tf else aggregate(base, tf_ms)
                else:
                    rows = aggregate(history, tf_ms)
                rows = rows[-self.store.capacity(tf):]
                self.feed.backfill(track.symbol, tf, rows.tolist())

    # -- streaming ----------------------------------------------------------------------

    def _candle_at(self, track: SymbolTrack, ts: int) -> list | None:
        """The base candle of `track` opening at market time ts, or None (a gap in the data)."""
        rec_ts = ts - self.offset
        start = bucket_start(rec_ts, self.bar_ms)  # recorded bars are aligned (feed-validated)
        if track.current_start != start:
            while track.cursor < len(track.bars) and track.bars[track.cursor, 0] < start:
                track.cursor += 1
            if track.cursor >= len(track.bars) or track.bars[track.cursor, 0] != start:
                return None
            track.current = self._bar_candles(track, track.cursor).tolist()
            track.current_start = start
        return track.current[(rec_ts - start) // self.base_ms]

    def _next_data_ts(self) -> int | None:
        """Market time of the next bar any track has, or None at the end of the recording."""
        starts = [int(t.bars[t.cursor, 0]) for t in self.tracks if t.cursor < len(t.bars)]
        return min(starts) + self.offset if starts else None

    def emit_until(self, now_ms: int) -> int:
        """Emit every base candle that has closed by market time now_ms; returns how many."""
        emitted = 0
        with self._lock:
            while not self.ended and self.next_ts + self.base_ms <= now_ms:
                ts = self.next_ts
                any_data = False
                for track in self.tracks:
                    row = self._candle_at(track, ts)
                    if row is None:
                        continue
                    any_data = True
                    if self.feed.candle(track.symbol, row) is not None:
                        emitted += 1
                        track.last_close = row[4]
                    end = ts + self.base_ms
                    if track.trades is not None:
                        self._emit_recorded_trades(track, end)
                    if track.book_ts is not None:
                        self._emit_recorded_books(track, end)
                    elif end % self.book_every_ms == 0 and track.last_close:
                        self._emit_book(track, end)
                self.next_ts = ts + self.base_ms
                if not any_data:
                    self._skip_gap(now_ms)
            self.emitted += emitted
        return emitted

    def _skip_gap(self, now_ms: int) -> None:
        nxt = self._next_data_ts()
        if nxt is None:
            self._end_of_data()
            return
        target = min(nxt, bucket_start(now_ms, self.base_ms))
        if target > self.next_ts:
            self.next_ts = target
            self.store.advance(self.next_ts)

    def _end_of_data(self) -> None:
        if self.on_end == "stop":
            self.ended = True
            self.store.advance(self.next_ts + self.bar_ms)
            log.info("replay of %s ended at %d", self.recording.name, self.next_ts)
            return
        self.lap += 1
        self.offset = self.lap * self.lap_ms
        for track in self.tracks:
            track.rewind()
        self.next_ts = self.data_start + self.offset
        self.store.advance(self.next_ts)
        log.info("replay of %s looped (lap %d)", self.recording.name, self.lap)

    def _emit_recorded_trades(self, track: SymbolTrack, end: int) -> None:
        """Every recorded trade before market time ``end`` not yet played."""
        rec_end = end - self.offset
        while track.trade_cursor < len(track.trades) and track.trades[track.trade_cursor, 0] < rec_end:
            ts, price, amount = track.trades[track.trade_cursor]
            self.feed.trade(track.symbol, int(ts) + self.offset, price, amount,
                            str(track.trade_sides[track.trade_cursor]))
            track.trade_cursor += 1

    def _emit_recorded_books(self, track: SymbolTrack, end: int) -> None:
        """Every recorded snapshot taken before market time ``end`` not yet played."""
        rec_end = end - self.offset
        while track.book_cursor < len(track.book_ts) and track.book_ts[track.book_cursor] < rec_end:
            bids, asks = track.book_levels[track.book_cursor]
            self.feed.book(track.symbol, int(track.book_ts[track.book_cursor]) + self.offset,
                           bids, asks)
            track.book_cursor += 1

    def _emit_book(self, track: SymbolTrack, ts: int) -> None:
        rng = np.random.default_rng([self.seed, track.index, (ts - self.offset) // 1000, 1])
        bids, asks = synthetic_book(track.last_close, self.book_levels, track.decimals, rng)
        self.feed.book(track.symbol, ts, bids, asks, synthetic=True)

    def run(self, clock: Clock, stop: threading.Event, tick_s: float = 0.05) -> None:
        """Pump loop for a daemon thread: emit whatever the clock says has closed."""
        while not stop.is_set():
            self.emit_until(clock.now_ms())
            stop.wait(tick_s)

    def lag_ms(self, now_ms: int) -> int:
        """How far the emitted data trails market time now_ms (0 when keeping up)."""
        return max(0, now_ms - self.next_ts - self.base_ms)
