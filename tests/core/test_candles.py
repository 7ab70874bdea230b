"""Tests for core.market.candles: exact aggregation, closing rules, forming candles, bounded memory.

Prices and volumes are chosen so every sum is exact in binary floating point (halves, quarters),
so expected candles are compared exactly. Each expected candle is worked out in a comment.
"""

import threading

import numpy as np
import pytest

from core.market.candles import Candle, CandleStore, RingBuffer, aggregate

# 2024-01-01 00:00 UTC: 19723 days * 86_400_000 ms = 1_704_067_200_000.
T0 = 1_704_067_200_000
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
SYM = "ETH/USDT"


def sec(s: int, o: float, h: float, lo: float, c: float, v: float) -> Candle:
    """A 1s candle opening s seconds after T0."""
    return Candle(T0 + s * 1000, o, h, lo, c, v)


def make_store(capacity=None, symbols=(SYM,), timeframes=("1s", "1m", "1h", "1d")):
    capacity = capacity or {"1s": 1000, "1m": 100, "1h": 50, "1d": 10}
    return CandleStore(symbols, timeframes, capacity)


def rows(*candles: Candle) -> np.ndarray:
    return np.array([c.as_row() for c in candles])


def closed_tfs(events):
    return [tf for _, tf, _ in events]


# ----------------------------------------------------------------------- Candle


def test_merge_keeps_open_time_and_open_extends_the_rest():
    first = Candle(T0, 10.0, 12.0, 9.0, 11.0, 2.0)
    later = Candle(T0 + 1000, 11.0, 13.0, 10.0, 12.5, 0.5)
    # high max(12, 13) = 13, low min(9, 10) = 9, close of the later, volume 2 + 0.5 = 2.5
    assert first.merge(later) == Candle(T0, 10.0, 13.0, 9.0, 12.5, 2.5)
    assert first.as_row() == (float(T0), 10.0, 12.0, 9.0, 11.0, 2.0)


# ----------------------------------------------------------------------- 1s -> 1m aggregation


def test_minute_with_a_gap_inside_and_a_minute_with_missing_seconds():
    store = make_store()
    # Minute 0: seconds 0, 1, 2, then a gap, then 57, 58, 59.
    minute0 = [
        sec(0, 10.0, 11.0, 9.5, 10.5, 1.0),
        sec(1, 10.5, 12.0, 10.0, 11.0, 2.0),
        sec(2, 11.0, 11.5, 10.75, 11.25, 0.5),
        sec(57, 11.25, 11.5, 8.75, 9.25, 3.0),
        sec(58, 9.25, 9.5, 9.0, 9.5, 1.25),
        sec(59, 9.5, 9.75, 9.25, 9.75, 0.25),
    ]
    for candle in minute0[:3]:
        assert closed_tfs(store.add(SYM, candle)) == ["1s"]
    # After second 2 the minute is forming: open 10, high max(11, 12, 11.5) = 12,
    # low min(9.5, 10, 10.75) = 9.5, close 11.25, volume 1 + 2 + 0.5 = 3.5. Nothing closed yet.
    assert store.forming(SYM, "1m") == Candle(T0, 10.0, 12.0, 9.5, 11.25, 3.5)
    assert len(store.closed(SYM, "1m")) == 0
    for candle in minute0[3:5]:
        assert closed_tfs(store.add(SYM, candle)) == ["1s"]
    events = store.add(SYM, minute0[5])  # second 59 ends the minute: it closes now
    # 1m: open 10 (s0), high max(11, 12, 11.5, 11.5, 9.5, 9.75) = 12,
    # low min(9.5, 10, 10.75, 8.75, 9, 9.25) = 8.75, close 9.75 (s59),
    # volume 1 + 2 + 0.5 + 3 + 1.25 + 0.25 = 8.
    minute0_candle = Candle(T0, 10.0, 12.0, 8.75, 9.75, 8.0)
    assert events == [(SYM, "1s", minute0[5]), (SYM, "1m", minute0_candle)]
    assert store.forming(SYM, "1m") is None
    np.testing.assert_array_equal(store.closed(SYM, "1m"), rows(minute0_candle))

    # Minute 1 has only seconds 60 and 61; minute 2 has no data at all; minute 3 starts at 185.
    store.add(SYM, sec(60, 9.75, 10.0, 9.5, 9.75, 2.0))
    store.add(SYM, sec(61, 9.75, 10.25, 9.75, 10.0, 1.0))
    late = sec(185, 10.5, 10.75, 10.25, 10.5, 4.0)
    events = store.add(SYM, late)
    # Minute 1 (ts T0 + 60_000) closes when a candle of a later minute arrives:
    # open 9.75, high max(10, 10.25) = 10.25, low min(9.5, 9.75) = 9.5, close 10, volume 3.
    minute1_candle = Candle(T0 + MIN, 9.75, 10.25, 9.5, 10.0, 3.0)
    assert events == [(SYM, "1s", late), (SYM, "1m", minute1_candle)]
    np.testing.assert_array_equal(store.closed(SYM, "1m"), rows(minute0_candle, minute1_candle))
    # No candle is made up for the empty minute 2; minute 3 (T0 + 180_000) is forming.
    assert store.forming(SYM, "1m") == Candle(T0 + 3 * MIN, 10.5, 10.75, 10.25, 10.5, 4.0)
    # The hour holds all nine seconds: open 10, high 12, low 8.75, close 10.5,
    # volume 8 + 3 + 4 = 15.
    assert store.forming(SYM, "1h") == Candle(T0, 10.0, 12.0, 8.75, 10.5, 15.0)
    assert store.forming(SYM, "1d") == Candle(T0, 10.0, 12.0, 8.75, 10.5, 15.0)
    assert store.closed_count[(SYM, "1m")] == 2
    assert store.closed_count[(SYM, "1s")] == 9


def test_last_second_of_the_day_closes_minute_hour_and_day_at_once():
    store = make_store()
    # 23:59:58 is second 86_398 of the day; 23:59:59 is 86_399; 00:00:00 next day is 86_400.
    a = sec(86_398, 50.0, 51.0, 49.0, 50.5, 1.0)
    b = sec(86_399, 50.5, 52.0, 50.0, 51.5, 2.0)
    assert closed_tfs(store.add(SYM, a)) == ["1s"]
    events = store.add(SYM, b)
    # open 50, high max(51, 52) = 52, low min(49, 50) = 49, close 51.5, volume 3.
    # Open times: 23:59 = 1439 * 60_000 = 86_340_000; 23:00 = 23 * 3_600_000 = 82_800_000.
    assert events == [
        (SYM, "1s", b),
        (SYM, "1m", Candle(T0 + 86_340_000, 50.0, 52.0, 49.0, 51.5, 3.0)),
        (SYM, "1h", Candle(T0 + 82_800_000, 50.0, 52.0, 49.0, 51.5, 3.0)),
        (SYM, "1d", Candle(T0, 50.0, 52.0, 49.0, 51.5, 3.0)),
    ]
    for tf in ("1m", "1h", "1d"):
        assert store.forming(SYM, tf) is None
    # The next second opens a new minute, hour and day (2024-01-02 00:00 = T0 + 86_400_000).
    c = sec(86_400, 51.5, 51.75, 51.25, 51.5, 0.5)
    assert closed_tfs(store.add(SYM, c)) == ["1s"]
    for tf in ("1m", "1h", "1d"):
        assert store.forming(SYM, tf) == Candle(T0 + DAY, 51.5, 51.75, 51.25, 51.5, 0.5)
    np.testing.assert_array_equal(
        store.closed(SYM, "1d"), [[T0, 50.0, 52.0, 49.0, 51.5, 3.0]]
    )


def test_a_gap_spanning_a_whole_hour_closes_minute_and_hour_on_the_later_candle():
    store = make_store()
    early = sec(59 * 60 + 30, 20.0, 21.0, 19.0, 20.5, 1.0)  # 00:59:30
    late = sec(2 * 3600 + 10, 22.0, 22.5, 21.5, 22.25, 2.0)  # 02:00:10, hour 01:00 is empty
    store.add(SYM, early)
    events = store.add(SYM, late)
    only = (20.0, 21.0, 19.0, 20.5, 1.0)
    assert events == [
        (SYM, "1s", late),
        (SYM, "1m", Candle(T0 + 59 * MIN, *only)),  # the 00:59 minute
        (SYM, "1h", Candle(T0, *only)),  # the 00:00 hour
    ]
    assert store.forming(SYM, "1h") == Candle(T0 + 2 * HOUR, 22.0, 22.5, 21.5, 22.25, 2.0)
    # Same day: open 20, high 22.5, low 19, close 22.25, volume 3.
    assert store.forming(SYM, "1d") == Candle(T0, 20.0, 22.5, 19.0, 22.25, 3.0)


def test_forming_candle_is_kept_apart_from_closed_ones():
    store = make_store()
    for s in range(30):
        store.add(SYM, sec(s, 100.0 + s, 101.0 + s, 99.0 + s, 100.5 + s, 1.0))
    # Thirty seconds: open 100, high 101 + 29 = 130, low 99, close 100.5 + 29 = 129.5, volume 30.
    assert store.forming(SYM, "1m") == Candle(T0, 100.0, 130.0, 99.0, 129.5, 30.0)
    assert store.closed(SYM, "1m").shape == (0, 6)
    assert store.closed(SYM, "1h").shape == (0, 6)
    assert store.sizes()[(SYM, "1s")] == 30
    assert store.sizes()[(SYM, "1m")] == 0
    assert store.forming(SYM, "1s") is None  # the finest timeframe has no forming candle
    assert store.last_ts(SYM) == T0 + 29_000
    assert store.last_price(SYM) == 129.5


def test_listeners_are_told_finest_first_in_subscription_order():
    store = make_store()
    heard = []
    store.subscribe(lambda s, tf, c: heard.append(("a", tf, c.ts)))
    store.subscribe(lambda s, tf, c: heard.append(("b", tf, c.ts)))
    store.add(SYM, sec(86_398, 1.0, 1.0, 1.0, 1.0, 1.0))
    heard.clear()
    store.add(SYM, sec(86_399, 1.0, 1.0, 1.0, 1.0, 1.0))
    assert heard == [
        ("a", "1s", T0 + 86_399_000), ("b", "1s", T0 + 86_399_000),
        ("a", "1m", T0 + 86_340_000), ("b", "1m", T0 + 86_340_000),
        ("a", "1h", T0 + 82_800_000), ("b", "1h", T0 + 82_800_000),
        ("a", "1d", T0), ("b", "1d", T0),
    ]


def test_listeners_run_outside_the_lock_and_see_the_candle_stored():
    store = make_store()
    seen = []
    # A listener that reads the store would deadlock if it were called under the store's lock.
    store.subscribe(lambda s, tf, c: seen.append((tf, store.closed(s, tf, 1)[0, 0])))
    worker = threading.Thread(target=store.add, args=(SYM, sec(59, 1.0, 1.0, 1.0, 1.0, 1.0)))
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert seen == [("1s", T0 + 59_000), ("1m", T0)]


# ----------------------------------------------------------------------- advance


def test_advance_closes_a_forming_candle_whose_period_ended():
    store = make_store()
    heard = []
    store.subscribe(lambda s, tf, c: heard.append(tf))
    for s in range(10):  # seconds 0..9 of minute 0, then the data stops
        store.add(SYM, sec(s, 5.0, 5.0 + s, 4.0, 5.0, 0.25))
    heard.clear()
    assert store.advance(T0 + 59_999) == []  # the minute has not ended
    assert store.forming(SYM, "1m") is not None
    events = store.advance(T0 + MIN)
    # open 5, high 5 + 9 = 14, low 4, close 5, volume 10 * 0.25 = 2.5
    assert events == [(SYM, "1m", Candle(T0, 5.0, 14.0, 4.0, 5.0, 2.5))]
    assert heard == ["1m"]
    assert store.forming(SYM, "1m") is None
    assert store.forming(SYM, "1h") == Candle(T0, 5.0, 14.0, 4.0, 5.0, 2.5)  # hour not over
    assert store.advance(T0 + MIN) == []  # nothing left to close
    assert closed_tfs(store.advance(T0 + HOUR)) == ["1h"]
    assert closed_tfs(store.advance(T0 + DAY)) == ["1d"]
    assert store.closed_count[(SYM, "1m")] == 1


def test_advance_does_not_touch_other_symbols_without_data():
    store = make_store(symbols=(SYM, "BTC/USDT"))
    store.add(SYM, sec(0, 1.0, 1.0, 1.0, 1.0, 1.0))
    events = store.advance(T0 + DAY)
    assert sorted(closed_tfs(events)) == ["1d", "1h", "1m"]
    assert all(symbol == SYM for symbol, _, _ in events)
    assert store.closed(SYM, "1m").shape == (1, 6)
    assert store.closed("BTC/USDT", "1m").shape == (0, 6)


# ----------------------------------------------------------------------- bounded buffers


def test_ring_buffer_keeps_the_newest_rows_in_one_array():
    buf = RingBuffer(5)
    array = buf._data
    for i in range(12):
        buf.append([i] * 6)
    assert len(buf) == 5 and buf.capacity == 5
    assert buf._data is array and array.shape == (5, 6)  # same array: memory never grows
    # Rows 0..6 were dropped, oldest first; 7..11 remain. (next slot 12 % 5 = 2: wrapped.)
    np.testing.assert_array_equal(buf.last()[:, 0], [7, 8, 9, 10, 11])
    np.testing.assert_array_equal(buf.last(2)[:, 0], [10, 11])
    np.testing.assert_array_equal(buf.last(99)[:, 0], [7, 8, 9, 10, 11])
    assert buf.last(0).shape == (0, 6)
    np.testing.assert_array_equal(buf.newest(), [11] * 6)


def test_ring_buffer_hands_out_copies():
    buf = RingBuffer(3)
    buf.append([1, 2, 3, 4, 5, 6])
    out = buf.last()
    out[0, 0] = 99
    newest = buf.newest()
    newest[1] = 99
    np.testing.assert_array_equal(buf.last(), [[1, 2, 3, 4, 5, 6]])


def test_empty_ring_buffer():
    buf = RingBuffer(4)
    assert len(buf) == 0
    assert buf.newest() is None
    assert buf.last().shape == (0, 6)


def test_store_capacity_is_respected_and_memory_stays_flat():
    store = make_store(capacity={"1s": 10, "1m": 10, "1h": 10, "1d": 10})
    arrays = {key: buf._data for key, buf in store._closed.items()}
    for s in range(25 * 60):  # 25 minutes of seconds
        store.add(SYM, sec(s, 1.0, 2.0, 0.5, 1.5, 1.0))
    assert store.capacity("1s") == 10
    assert store.sizes()[(SYM, "1s")] == 10
    assert store.sizes()[(SYM, "1m")] == 10  # 25 minutes closed, the newest 10 kept
    # Seconds 1490..1499 remain (1500 seconds added, last 10 kept).
    np.testing.assert_array_equal(store.closed(SYM, "1s")[:, 0], T0 + np.arange(1490, 1500) * 1000)
    # Minutes 15..24 remain.
    np.testing.assert_array_equal(store.closed(SYM, "1m")[:, 0], T0 + np.arange(15, 25) * MIN)
    assert store.closed_count[(SYM, "1m")] == 25  # counted, even though only 10 are kept
    assert all(store._closed[key]._data is arr for key, arr in arrays.items())


def test_closed_since_filters_by_open_time():
    store = make_store()
    for s in range(5):
        store.add(SYM, sec(s, 1.0, 1.0, 1.0, 1.0, 1.0))
    got = store.closed_since(SYM, "1s", T0 + 2000, limit=10)
    np.testing.assert_array_equal(got[:, 0], [T0 + 3000, T0 + 4000])
    got = store.closed_since(SYM, "1s", T0 - 1, limit=2)  # at most the newest 2
    np.testing.assert_array_equal(got[:, 0], [T0 + 3000, T0 + 4000])
    assert store.closed_since(SYM, "1m", T0, limit=10).shape == (0, 6)


# ----------------------------------------------------------------------- aggregate


def test_aggregate_hand_numbers():
    candles = np.array([
        [T0, 10.0, 11.0, 9.0, 10.5, 1.0],
        [T0 + 1_000, 10.5, 12.0, 10.0, 11.0, 2.0],
        [T0 + 59_000, 11.0, 11.5, 8.0, 9.0, 3.0],
        [T0 + 60_000, 9.0, 9.5, 8.5, 9.25, 4.0],  # minute 1, alone
        [T0 + 180_000, 9.25, 10.0, 9.0, 9.75, 0.5],  # minute 3 (minute 2 is empty)
        [T0 + 181_000, 9.75, 9.8, 9.5, 9.5, 0.25],
    ])
    np.testing.assert_array_equal(aggregate(candles, MIN), [
        # open 10, high max(11, 12, 11.5) = 12, low min(9, 10, 8) = 8, close 9, volume 6
        [T0, 10.0, 12.0, 8.0, 9.0, 6.0],
        [T0 + 60_000, 9.0, 9.5, 8.5, 9.25, 4.0],
        # open 9.25, high max(10, 9.8) = 10, low min(9, 9.5) = 9, close 9.5, volume 0.75
        [T0 + 180_000, 9.25, 10.0, 9.0, 9.5, 0.75],
    ])
    # One hour: open 10, high 12, low 8, close 9.5, volume 6 + 4 + 0.75 = 10.75
    np.testing.assert_array_equal(aggregate(candles, HOUR), [[T0, 10.0, 12.0, 8.0, 9.5, 10.75]])
    assert aggregate(np.empty((0, 6)), MIN).shape == (0, 6)


def test_aggregate_matches_the_store():
    rng = np.random.default_rng(3)
    store = make_store(capacity={"1s": 2000, "1m": 200, "1h": 10, "1d": 10})
    seconds = []
    for s in range(0, 7_200, 7):  # two hours, one second in seven
        o, c = rng.uniform(90, 110, 2)
        h, lo = max(o, c) + rng.uniform(0, 1), min(o, c) - rng.uniform(0, 1)
        candle = sec(s, o, h, lo, c, rng.uniform(0, 5))
        seconds.append(candle)
        store.add(SYM, candle)
    store.advance(T0 + DAY)
    for tf, ms in (("1m", MIN), ("1h", HOUR), ("1d", DAY)):
        expected = aggregate(rows(*seconds), ms)
        got = store.closed(SYM, tf)
        np.testing.assert_array_equal(got[:, :5], expected[:, :5])
        np.testing.assert_allclose(got[:, 5], expected[:, 5], rtol=1e-12)


# ----------------------------------------------------------------------- seed and ordering


def test_seed_then_stream():
    store = make_store()
    history = np.array([[T0 - 2 * MIN, 1, 2, 0.5, 1.5, 3], [T0 - MIN, 1.5, 2, 1, 1.75, 4]], float)
    store.seed(SYM, "1m", history)
    store.seed(SYM, "1s", np.array([[T0 - 1000, 1.75, 1.75, 1.75, 1.75, 1]], float))
    np.testing.assert_array_equal(store.closed(SYM, "1m"), history)
    assert store.last_ts(SYM) == T0 - 1000
    assert store.closed_count[(SYM, "1m")] == 0  # seeds are history, not closes
    assert closed_tfs(store.add(SYM, sec(0, 2.0, 2.0, 2.0, 2.0, 1.0))) == ["1s"]


def test_seed_out_of_order_raises_and_changes_nothing():
    store = make_store()
    store.seed(SYM, "1m", np.array([[T0, 1, 1, 1, 1, 1], [T0 + MIN, 1, 1, 1, 1, 1]], float))
    with pytest.raises(ValueError, match="not after"):
        store.seed(SYM, "1m", np.array([[T0 + MIN, 1, 1, 1, 1, 1]], float))  # duplicate
    with pytest.raises(ValueError, match="not after"):
        # The first row is fine, the second goes back: neither may be stored.
        store.seed(SYM, "1m", np.array([[T0 + 3 * MIN, 1, 1, 1, 1, 1],
                                        [T0 + 2 * MIN, 1, 1, 1, 1, 1]], float))
    np.testing.assert_array_equal(store.closed(SYM, "1m")[:, 0], [T0, T0 + MIN])


def test_add_out_of_order_or_duplicate_raises_and_changes_nothing():
    store = make_store()
    store.seed(SYM, "1s", np.array([[T0 + 5_000, 1, 1, 1, 1, 1]], float))
    with pytest.raises(ValueError, match="not after"):
        store.add(SYM, sec(5, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="not after"):
        store.add(SYM, sec(4, 1.0, 1.0, 1.0, 1.0, 1.0))
    store.add(SYM, sec(6, 2.0, 2.0, 2.0, 2.0, 1.0))
    with pytest.raises(ValueError, match="not after"):
        store.add(SYM, sec(6, 3.0, 3.0, 3.0, 3.0, 1.0))
    assert store.forming(SYM, "1m") == Candle(T0, 2.0, 2.0, 2.0, 2.0, 1.0)
    assert store.sizes()[(SYM, "1s")] == 2


def test_seeded_coarse_candle_that_is_not_over_becomes_forming():
    # A backfill that stops at 00:29:59: the 00:00 hour is only half done, the 00:29 minute is
    # complete. The streamed seconds must finish that hour, not close a second 00:00 candle.
    store = make_store()
    store.seed(SYM, "1s", np.array([[T0 + 1_799_000, 101.0, 101.0, 101.0, 101.0, 1.0]]))
    store.seed(SYM, "1m", np.array([[T0 + 29 * MIN, 100.5, 101.5, 100.0, 101.0, 7.0]]))
    store.seed(SYM, "1h", np.array([[T0 - HOUR, 90.0, 99.0, 89.0, 100.0, 80.0],
                                    [T0, 100.0, 105.0, 95.0, 101.0, 50.0]]))
    np.testing.assert_array_equal(store.closed(SYM, "1m")[:, 0], [T0 + 29 * MIN])
    np.testing.assert_array_equal(store.closed(SYM, "1h")[:, 0], [T0 - HOUR])
    assert store.forming(SYM, "1h") == Candle(T0, 100.0, 105.0, 95.0, 101.0, 50.0)
    store.add(SYM, sec(1_800, 101.0, 106.0, 100.0, 104.0, 5.0))  # 00:30:00
    events = store.add(SYM, sec(3_599, 104.0, 104.5, 94.0, 99.0, 1.0))  # 00:59:59
    # open 100 (seeded), high max(105, 106, 104.5) = 106, low min(95, 100, 94) = 94,
    # close 99, volume 50 + 5 + 1 = 56.
    assert events[-1] == (SYM, "1h", Candle(T0, 100.0, 106.0, 94.0, 99.0, 56.0))
    np.testing.assert_array_equal(store.closed(SYM, "1h")[:, 0], [T0 - HOUR, T0])


def test_coarse_seed_without_finest_history_is_all_closed():
    store = make_store()
    store.seed(SYM, "1h", np.array([[T0, 1.0, 1.0, 1.0, 1.0, 1.0]]))
    assert store.forming(SYM, "1h") is None
    assert store.closed(SYM, "1h").shape == (1, 6)


def test_rebuild_forming_after_a_backfill_of_closed_candles():
    from core.market.candles import CandleStore

    day = 86_400_000
    t0 = 1_704_067_200_000 + 3 * 3_600_000  # 03:00 UTC
    store = CandleStore(["X/USDT"], ["1s", "1m", "1h", "1d"],
                        {"1s": 100, "1m": 100, "1h": 100, "1d": 10})
    # History: hours 00:00-02:00 closed, minute 03:00 closed, seconds 03:01:00-03:01:02 closed.
    store.seed("X/USDT", "1s", np.array([[t0 + 60_000 + i * 1000, 10 + i, 12 + i, 9, 11 + i, 1.0]
                                         for i in range(3)]))
    store.seed("X/USDT", "1m", np.array([[t0, 8.0, 15.0, 7.0, 10.0, 5.0]]))
    store.seed("X/USDT", "1h", np.array([[t0 - 3 * 3_600_000 + h * 3_600_000, 5.0, 20.0, 4.0, 6.0, 100.0]
                                         for h in range(3)]))
    forming = store.rebuild_forming("X/USDT")
    # 1m 03:01: seconds o 10, h max(12, 13, 14) = 14, l 9, c 13, v 3.
    assert forming["1m"] == Candle(t0 + 60_000, 10.0, 14.0, 9.0, 13.0, 3.0)
    # 1h 03:00: the closed minute 03:00 then the forming 03:01: o 8, h 15, l 7, c 13, v 8.
    assert forming["1h"] == Candle(t0, 8.0, 15.0, 7.0, 13.0, 8.0)
    # 1d: three closed hours (o 5, h 20, l 4, v 300) then the forming hour: c 13, v 308.
    assert forming["1d"] == Candle(t0 - 3 * 3_600_000, 5.0, 20.0, 4.0, 13.0, 308.0)
    assert forming["1d"].ts % day == 0
    # The next streamed second completes the same candles instead of starting new ones.
    store.add("X/USDT", Candle(t0 + 63_000, 13.0, 13.5, 12.0, 12.5, 2.0))
    assert store.forming("X/USDT", "1d").volume == 310.0
