"""Replay source: bundled real history, played through the same market feed as live data.

The recording's real bars (30m or 1m) are coarser than the 1s candles the system streams, so
each bar is filled in by a seeded, documented process that honours the bar exactly:

1. The bar's high and low are placed at two instants inside it (pinned to the ends when the
   open or close is the extreme; otherwise a random order and random times).
2. Brownian bridges join open -> first extreme -> second extreme -> close, clipped to
   [low, high] (excursions reflected) and rounded to the recording's price tick, so the path starts at the open, ends
   at the close and touches the high and low exactly.
3. Second i of the bar is the candle (p[i], max + wick, min - wick, p[i+1]), wicks clipped to
   [low, high]; the bar's volume is split over its seconds with random (gamma) weights that
   sum to it.

Aggregating the seconds of a bar therefore gives back the real bar's OHLCV, and every coarser
timeframe that real bars tile (1h, 1d from 30m bars) is exactly real. Finer ones are labelled
interpolated. Order books are synthetic: built around the last replayed close with random
depth, seeded per second, so nothing in them depends on a price not yet replayed.
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
from core.timeframes import bucket_start, parse_timeframe

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


def price_decimals(prices: np.ndarray, max_decimals: int = 8) -> int:
    """Fewest decimals on which all prices lie (2 for 303.44, 304.0, ...): the price tick."""
    sample = prices[: min(len(prices), 5000)].ravel()
    for decimals in range(max_decimals + 1):
        scaled = sample * 10**decimals
        if np.abs(scaled - np.round(scaled)).max(initial=0.0) <= 1e-6:  # allclose, atol 1e-6
            return decimals
    return max_decimals


def _extreme_time(price: float, o: float, c: float, n: int) -> int | None:
    """An extreme equal to the open sits at t=0, one equal to the close at t=n; else free."""
    if price == o:
        return 0
    if price == c:
        return n
    return None


def subbar_path(o: float, h: float, lo: float, c: float, n: int, rng: np.random.Generator,
                decimals: int | None = None) -> np.ndarray:
    """Prices p[0..n] inside one bar: p[0]=o, p[n]=c, max(p)=h, min(p)=lo. Shape [n + 1].

    With n < 3 there may be no room for both extremes inside; the path is then a straight line
    and ``interpolate_bar`` puts the extremes in the wicks.
    """
    if n < 1:
        raise ValueError(f"a bar needs at least one sub-step, got n={n}")
    if h == lo or n < 3:
        path = np.linspace(o, c, n + 1)
        if decimals is not None:
            # A bar priced finer than the tick keeps its own open and close, inside [low, high].
            path = np.clip(np.round(path, decimals), lo, h)
            path[0], path[-1] = o, c
        return path
    t_hi = _extreme_time(h, o, c, n)
    t_lo = _extreme_time(lo, o, c, n)
    if t_hi is None and t_lo is None:
        a, b = (int(x) for x in np.sort(rng.choice(np.arange(1, n), size=2, replace=False)))
        t_hi, t_lo = (a, b) if rng.random() < 0.5 else (b, a)
    elif t_hi is None:
        t_hi = int(rng.integers(1, n))
    elif t_lo is None:
        t_lo = int(rng.integers(1, n))
    anchors = sorted({(0, o), (t_hi, h), (t_lo, lo), (n, c)})
    path = np.empty(n + 1)
    sigma = (h - lo) / math.sqrt(n) * 0.6
    for (ta, pa), (tb, pb) in zip(anchors, anchors[1:]):
        m = tb - ta
        if m == 0:
            continue
        steps = np.arange(1, m + 1) / m
        walk = np.cumsum(rng.normal(0.0, sigma, m))
        bridge = walk - steps * walk[-1]  # pinned to 0 at both ends
        path[ta + 1 : tb + 1] = pa + (pb - pa) * steps + bridge
    # Reflect excursions back inside [low, high] (clipping would leave flat plateaus).
    path = np.where(path > h, 2 * h - path, path)
    path = np.where(path < lo, 2 * lo - path, path)
    path = np.clip(path, lo, h)
    if decimals is not None:
        # Clip again: when the bar's high or low is finer than the tick, rounding can cross it.
        path = np.clip(np.round(path, decimals), lo, h)
    for t, p in anchors:
        path[t] = p
    return path


def interpolate_bar(bar: np.ndarray, bar_ms: int, base_ms: int, rng: np.random.Generator,
                    decimals: int | None = None) -> np.ndarray:
    """One real bar [ts, o, h, l, c, v] -> its base-timeframe candles [bar_ms/base_ms, 6]."""
    ts, o, h, lo, c, v = (float(x) for x in bar)
    n = bar_ms // base_ms
    if n == 1:  # the recording is already at the finest timeframe: play it exactly
        return np.asarray(bar, dtype=np.float64).reshape(1, 6).copy()
    path = subbar_path(o, h, lo, c, n, rng, decimals)
    opens, closes = path[:-1], path[1:]
    sigma = (h - lo) / math.sqrt(max(n, 1)) * 0.3
    wick_up = np.abs(rng.normal(0.0, sigma, n))
    wick_dn = np.abs(rng.normal(0.0, sigma, n))
    highs = np.minimum(np.maximum(opens, closes) + wick_up, h)
    lows = np.maximum(np.minimum(opens, closes) - wick_dn, lo)
    if decimals is not None:
        highs, lows = np.round(highs, decimals), np.round(lows, decimals)
    # Rounding must leave each wick outside the body and inside the bar (prices finer than the
    # tick would otherwise give candles the feed rejects, or a high above the real bar's).
    highs = np.clip(highs, np.maximum(opens, closes), h)
    lows = np.clip(lows, lo, np.minimum(opens, closes))
    # The path touches both extremes when n >= 3; this makes them exact for any n.
    highs[np.argmax(highs)] = h
    lows[np.argmin(lows)] = lo
    weights = rng.gamma(0.6, 1.0, n) * (1.0 + np.abs(closes - opens) / (sigma + 1e-12))
    volumes = v * weights / weights.sum()
    out = np.empty((n, 6))
    out[:, 0] = ts + np.arange(n) * base_ms
    out[:, 1], out[:, 2], out[:, 3], out[:, 4], out[:, 5] = opens, highs, lows, closes, volumes
    return out


def synthetic_book(price: float, levels: int, decimals: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A plausible book around ``price`` (the last replayed close) and nothing else.

    Spread 0.5-3 bps, levels about 1 bp apart, sizes gamma-distributed and growing with depth.
    Returns (bids, asks), each [levels, 2] of (price, size).
    """
    tick = 10.0**-decimals
    half_spread = max(tick, price * rng.uniform(0.5, 3.0) * 1e-4 / 2)
    step = max(tick, price * 1e-4)
    depth = np.arange(levels)
    best_bid = math.floor((price - half_spread) / tick) * tick
    best_ask = math.ceil((price + half_spread) / tick) * tick
    if best_ask <= best_bid:
        best_ask = best_bid + tick
    bid_px = np.round(best_bid - depth * step, decimals)
    ask_px = np.round(best_ask + depth * step, decimals)
    scale = 1.0 / price * 2_000  # about $2k a level at the top
    bid_sz = rng.gamma(2.0, scale, levels) * (1 + 0.15 * depth)
    ask_sz = rng.gamma(2.0, scale, levels) * (1 + 0.15 * depth)
    return np.column_stack((bid_px, bid_sz)), np.column_stack((ask_px, ask_sz))


@dataclass
class SymbolTrack:
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


def recorded_books(frame) -> tuple[np.ndarray, list]:
    """Rows (ts, side, price, size) -> snapshot times and (bids desc, asks asc) per snapshot."""
    times, levels = [], []
    for ts, rows in frame.groupby("ts", sort=True):
        bids = rows[rows["side"] == "bid"][["price", "size"]].to_numpy(np.float64)
        asks = rows[rows["side"] == "ask"][["price", "size"]].to_numpy(np.float64)
        times.append(int(ts))
        levels.append((bids[np.argsort(-bids[:, 0])], asks[np.argsort(asks[:, 0])]))
    return np.asarray(times, dtype=np.int64), levels


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
        self.tracks: list[SymbolTrack] = []
        bar_tfs = set()
        for symbol in symbols:
            tf, bars = recording.candles(symbol)
            bar_tfs.add(tf)
            index = recording.symbols.index(symbol)
            track = SymbolTrack(symbol, index, bars, price_decimals(bars[:1, 1:5]))
            book_stream = recording.stream(symbol, "book")
            if book_stream is not None and book_stream.rows:
                track.book_ts, track.book_levels = recorded_books(recording.table(book_stream))
            trade_stream = recording.stream(symbol, "trades")
            if trade_stream is not None and trade_stream.rows:
                trades = recording.table(trade_stream)
                track.trades = trades[["ts", "price", "amount"]].to_numpy(np.float64)
                track.trade_sides = trades["side"].to_numpy(str)
            self.tracks.append(track)
        if len(bar_tfs) != 1:
            raise ValueError(f"recording '{recording.name}' mixes bar timeframes {bar_tfs}")
        self.bar_tf = bar_tfs.pop()
        self.bar_ms = parse_timeframe(self.bar_tf)
        if self.bar_ms % self.base_ms:
            raise ValueError(f"bars of {self.bar_tf} do not split into {self.base_tf} candles")
        first = min(int(t.bars[0, 0]) for t in self.tracks)
        self.data_start = first
        self.data_end = max(int(t.bars[-1, 0]) for t in self.tracks) + self.bar_ms
        if start_ms is None:
            # After `warmup_days` of history, at a UTC midnight; a short recording keeps at
            # least its last day (or what it has) for the replay itself.
            start_ms = bucket_start(first, DAY_MS) + (warmup_days + 1) * DAY_MS
            start_ms = max(first, min(start_ms, bucket_start(self.data_end - DAY_MS, DAY_MS)))
        self.start_ms = bucket_start(int(start_ms), self.base_ms)
        if not first <= self.start_ms < self.data_end:
            raise ValueError(
                f"replay start {self.start_ms} is outside the recording "
                f"({self.data_start} to {self.data_end}); lower replay.warmup_days or set replay.start"
            )
        self.next_ts = self.start_ms  # open time of the next base candle to emit
        self.offset = 0  # added to recorded times; grows by `lap_ms` on every loop
        self.lap = 0
        self.lap_ms = bucket_start(self.data_end - first, DAY_MS) + 2 * DAY_MS
        self.ended = False
        self.emitted = 0
        self._lock = threading.Lock()
        for track in self.tracks:
            track.cursor = int(np.searchsorted(track.bars[:, 0], self.start_ms - self.bar_ms, "right"))
            # The bar containing start_ms (if the start falls inside one) is played from inside.
            if track.book_ts is not None:
                track.book_cursor = int(np.searchsorted(track.book_ts, self.start_ms))
            if track.trades is not None:
                track.trade_cursor = int(np.searchsorted(track.trades[:, 0], self.start_ms))

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
            track.cursor = 0
            track.current = None
            track.current_start = -1
            track.book_cursor = track.trade_cursor = 0
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
