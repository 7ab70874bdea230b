"""Tests for core.market.feed: every rejection reason is counted and logged, good rows survive."""

import logging
import math

import numpy as np
import pytest

from core.market import feed as feed_module
from core.market.books import OrderBooks
from core.market.candles import Candle, CandleStore
from core.market.feed import MarketFeed, Rejected, parse_candle, parse_levels

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC (19723 days * 86_400_000)
SYM = "ETH/USDT"
LOGGER = "core.market.feed"

# Four good 1s rows around a bad one (the bad row goes where the None is).
GOOD = [
    [T0, 100.0, 102.0, 99.0, 101.0, 2.0],
    [T0 + 1000, 101.0, 103.0, 100.0, 102.0, 3.0],
    None,
    [T0 + 3000, 102.0, 102.5, 97.0, 98.0, 1.5],
    [T0 + 4000, 98.0, 99.0, 96.5, 99.0, 4.0],
]
# The minute of the four good rows: open 100 (first), high max(102, 103, 102.5, 99) = 103,
# low min(99, 100, 97, 96.5) = 96.5, close 99 (last), volume 2 + 3 + 1.5 + 4 = 10.5.
GOOD_MINUTE = Candle(T0, 100.0, 103.0, 96.5, 99.0, 10.5)


def make_feed(symbols=(SYM, "BTC/USDT"), timeframes=("1s", "1m")):
    store = CandleStore(symbols, timeframes, {tf: 100 for tf in timeframes})
    return MarketFeed(store, OrderBooks())


def warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


BAD_ROWS = {
    "short_row": ([T0 + 2000, 1.0, 2.0, 3.0], "malformed"),
    "missing_dict_field": ({"ts": T0 + 2000, "open": 1.0, "high": 1.0, "low": 1.0,
                            "close": 1.0}, "malformed"),
    "not_a_row": ("T0,1,1,1,1,1", "malformed"),
    "non_numeric": ([T0 + 2000, "abc", 103.0, 100.0, 101.0, 1.0], "malformed"),
    "none_field": ([T0 + 2000, 101.0, None, 100.0, 101.0, 1.0], "malformed"),
    "fractional_ts": ([T0 + 2000.5, 101.0, 103.0, 100.0, 101.0, 1.0], "malformed"),
    "negative_ts": ([-1000, 101.0, 103.0, 100.0, 101.0, 1.0], "malformed"),
    "nan_price": ([T0 + 2000, math.nan, 103.0, 100.0, 101.0, 1.0], "not_finite"),
    "nan_close": ([T0 + 2000, 101.0, 103.0, 100.0, math.nan, 1.0], "not_finite"),
    "inf_high": ([T0 + 2000, 101.0, math.inf, 100.0, 101.0, 1.0], "not_finite"),
    "inf_volume": ([T0 + 2000, 101.0, 103.0, 100.0, 101.0, math.inf], "not_finite"),
    "zero_price": ([T0 + 2000, 0.0, 103.0, 0.0, 101.0, 1.0], "non_positive_price"),
    "negative_price": ([T0 + 2000, 101.0, 103.0, -1.0, 101.0, 1.0], "non_positive_price"),
    "high_below_low": ([T0 + 2000, 101.0, 100.0, 102.0, 101.0, 1.0], "high_below_low"),
    "open_above_high": ([T0 + 2000, 104.0, 103.0, 100.0, 101.0, 1.0],
                        "open_close_outside_high_low"),
    "close_below_low": ([T0 + 2000, 101.0, 103.0, 100.0, 99.0, 1.0],
                        "open_close_outside_high_low"),
    "negative_volume": ([T0 + 2000, 101.0, 103.0, 100.0, 101.0, -0.5], "negative_volume"),
    "misaligned_ts": ([T0 + 2500, 101.0, 103.0, 100.0, 101.0, 1.0], "misaligned_timestamp"),
    "duplicate": ([T0 + 1000, 101.0, 103.0, 100.0, 101.0, 1.0], "duplicate"),
    "out_of_order": ([T0, 101.0, 103.0, 100.0, 101.0, 1.0], "out_of_order"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_candle_is_counted_logged_and_the_rows_around_it_kept(case, caplog):
    bad, reason = BAD_ROWS[case]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    feed = make_feed()
    rows = [bad if row is None else row for row in GOOD]
    accepted = feed.candles(SYM, rows)
    assert accepted == 4
    assert feed.rejected_by_reason() == {reason: 1}
    assert feed.stats.rejected == {(SYM, reason): 1}
    assert feed.stats.accepted[(SYM, "candle")] == 4
    msgs = warnings(caplog)
    assert len(msgs) == 1 and SYM in msgs[0] and reason in msgs[0]
    np.testing.assert_array_equal(feed.store.closed(SYM, "1s")[:, 0],
                                  [T0, T0 + 1000, T0 + 3000, T0 + 4000])
    assert feed.store.forming(SYM, "1m") == GOOD_MINUTE
    # Closing the minute (the data stopped) stores exactly the hand-computed candle.
    assert feed.store.advance(T0 + 60_000) == [(SYM, "1m", GOOD_MINUTE)]
    np.testing.assert_array_equal(feed.store.closed(SYM, "1m"), [GOOD_MINUTE.as_row()])


def test_unknown_symbol_is_rejected_and_the_known_symbol_continues(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    feed = make_feed()
    assert feed.candle(SYM, GOOD[0]) is not None
    assert feed.candle("XRP/USDT", GOOD[1]) is None
    assert feed.candle(SYM, GOOD[1]) is not None
    assert feed.rejected_by_reason() == {"unknown_symbol": 1}
    assert feed.stats.rejected == {("XRP/USDT", "unknown_symbol"): 1}
    assert "XRP/USDT" in warnings(caplog)[0] and "unknown_symbol" in warnings(caplog)[0]
    assert feed.store.sizes()[(SYM, "1s")] == 2


def test_good_rows_in_other_shapes_are_accepted():
    feed = make_feed()
    as_dict = {"ts": T0, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 0.0}
    assert feed.candle(SYM, as_dict) == Candle(T0, 1.0, 2.0, 0.5, 1.5, 0.0)
    as_array = np.array([T0 + 1000, 1.5, 1.5, 1.5, 1.5, 1.0, 999.0])  # extra columns ignored
    assert feed.candle(SYM, as_array) == Candle(T0 + 1000, 1.5, 1.5, 1.5, 1.5, 1.0)
    as_strings = [str(T0 + 2000), "1.5", "1.75", "1.25", "1.5", "2"]
    assert feed.candle(SYM, as_strings) == Candle(T0 + 2000, 1.5, 1.75, 1.25, 1.5, 2.0)
    assert feed.accepted_total() == 3
    assert feed.stats.last_message_ms[SYM] == T0 + 2000
    assert feed.rejected_by_reason() == {}


def test_symbols_are_checked_independently():
    feed = make_feed()
    assert feed.candle(SYM, GOOD[1]) is not None
    # BTC has no candle yet: an earlier timestamp there is neither duplicate nor out of order.
    assert feed.candle("BTC/USDT", GOOD[0]) is not None
    assert feed.rejected_by_reason() == {}


def test_logging_is_throttled_but_counting_is_not(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    feed = make_feed()
    for _ in range(1000):
        feed.candle(SYM, [T0, "x", 1, 1, 1, 1])
    # The first five rejections of a reason are logged, then every 1000th: 5 + 1 = 6 lines.
    msgs = warnings(caplog)
    assert len(msgs) == 6
    assert "#1000" in msgs[-1]
    assert feed.rejected_by_reason() == {"malformed": 1000}


def test_parse_candle_direct():
    assert parse_candle([T0, 1, 2, 0.5, 1.5, 3], 1000) == Candle(T0, 1.0, 2.0, 0.5, 1.5, 3.0)
    with pytest.raises(Rejected) as info:
        parse_candle([T0 + 30_000, 1, 1, 1, 1, 1], 60_000)  # 00:00:30 is not on a minute
    assert info.value.reason == "misaligned_timestamp"
    assert str(T0 + 30_000) in info.value.detail


# ----------------------------------------------------------------------- backfill


def test_backfill_rejects_bad_rows_and_seeds_the_good_ones(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    feed = make_feed()
    m = 60_000
    rows = [
        [T0, 10.0, 11.0, 9.0, 10.5, 1.0],
        [T0 + m, 10.5, 12.0, 10.0, 11.0, 2.0],
        [T0 + m, 10.5, 12.0, 10.0, 11.0, 2.0],  # duplicate
        [T0 + 2 * m, math.nan, 12.0, 10.0, 11.0, 2.0],  # not finite
        [T0 + 2 * m + 1000, 11.0, 11.0, 11.0, 11.0, 1.0],  # not on a minute
        [T0 + 3 * m, 11.0, 11.5, 10.5, 11.25, 0.5],
        [T0 + 2 * m, 11.0, 11.5, 10.5, 11.25, 0.5],  # goes back
        [T0 + 4 * m, 11.25, 11.25, 11.0, 11.0, 0.25],
    ]
    assert feed.backfill(SYM, "1m", rows) == 4
    np.testing.assert_array_equal(feed.store.closed(SYM, "1m"),
                                  [rows[0], rows[1], rows[5], rows[7]])
    assert feed.rejected_by_reason() == {
        "duplicate": 1, "not_finite": 1, "misaligned_timestamp": 1, "out_of_order": 1,
    }
    assert feed.stats.accepted[(SYM, "backfill_1m")] == 4
    assert len(warnings(caplog)) == 4


def test_backfill_page_overlapping_the_previous_one():
    # Exchange pages repeat the `since` candle: the overlap is a counted duplicate, not a crash.
    feed = make_feed()
    m = 60_000
    first = [[T0 + i * m, 1.0, 1.0, 1.0, 1.0, 1.0] for i in range(3)]
    second = [[T0 + i * m, 2.0, 2.0, 2.0, 2.0, 1.0] for i in range(2, 5)]
    assert feed.backfill(SYM, "1m", first) == 3
    assert feed.backfill(SYM, "1m", second) == 2
    got = feed.store.closed(SYM, "1m")
    np.testing.assert_array_equal(got[:, 0], [T0 + i * m for i in range(5)])
    np.testing.assert_array_equal(got[:, 4], [1.0, 1.0, 1.0, 2.0, 2.0])  # the first kept T0+2m
    assert feed.rejected_by_reason() == {"duplicate": 1}
    assert feed.backfill(SYM, "1m", [[T0, 1.0, 1.0, 1.0, 1.0, 1.0]]) == 0
    assert feed.rejected_by_reason() == {"duplicate": 1, "out_of_order": 1}


def test_backfill_of_an_unknown_symbol_counts_and_returns_zero():
    feed = make_feed()
    assert feed.backfill("XRP/USDT", "1m", [[T0, 1, 1, 1, 1, 1], [T0 + 60_000, 1, 1, 1, 1, 1]]) == 0
    assert feed.stats.rejected == {("XRP/USDT", "unknown_symbol"): 2}


def test_backfill_of_the_finest_timeframe_orders_later_streaming():
    feed = make_feed()
    feed.backfill(SYM, "1s", [[T0, 1, 1, 1, 1, 1], [T0 + 1000, 1, 1, 1, 1, 1]])
    assert feed.candle(SYM, [T0 + 1000, 2, 2, 2, 2, 1]) is None  # already backfilled
    assert feed.candle(SYM, [T0 + 2000, 2, 2, 2, 2, 1]) is not None
    assert feed.rejected_by_reason() == {"duplicate": 1}


# ----------------------------------------------------------------------- books

BIDS = [[100.0, 1.0], [99.5, 2.0], [99.0, 3.0]]
ASKS = [[100.5, 1.5], [101.0, 2.5]]

BAD_BOOKS = {
    "crossed": (BIDS, [[99.75, 1.0], [101.0, 1.0]], "crossed_book"),
    "locked": (BIDS, [[100.0, 1.0]], "crossed_book"),  # best bid == best ask
    "bids_unsorted": ([[99.0, 1.0], [100.0, 1.0]], ASKS, "unsorted_book"),
    "asks_unsorted": (BIDS, [[101.0, 1.0], [100.5, 1.0]], "unsorted_book"),
    "repeated_price": (BIDS, [[100.5, 1.0], [100.5, 2.0]], "unsorted_book"),
    "nan_price": ([[math.nan, 1.0]], ASKS, "not_finite"),
    "inf_size": (BIDS, [[100.5, math.inf]], "not_finite"),
    "empty_bids": ([], ASKS, "malformed"),
    "only_zero_sizes": ([[100.0, 0.0]], ASKS, "malformed"),
    "ragged_level": ([[100.0, 1.0], [99.0]], ASKS, "malformed"),
    "text_level": ([["a", "b"]], ASKS, "malformed"),
    "zero_price": ([[0.0, 1.0]], ASKS, "non_positive_price"),
    "negative_size": (BIDS, [[100.5, -1.0]], "non_positive_price"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOOKS))
def test_bad_book_is_counted_logged_and_the_books_around_it_kept(case, caplog):
    bids, asks, reason = BAD_BOOKS[case]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    feed = make_feed()
    assert feed.book(SYM, T0 + 1000, BIDS, ASKS) is not None
    assert feed.book(SYM, T0 + 2000, bids, asks) is None
    assert feed.books.get(SYM).ts == T0 + 1000  # the bad book did not replace the good one
    assert feed.book(SYM, T0 + 3000, BIDS, ASKS) is not None
    assert feed.books.get(SYM).ts == T0 + 3000
    assert feed.rejected_by_reason() == {reason: 1}
    assert feed.stats.accepted[(SYM, "book")] == 2
    msgs = warnings(caplog)
    assert len(msgs) == 1 and reason in msgs[0] and SYM in msgs[0]


def test_book_out_of_order_and_unknown_symbol():
    feed = make_feed()
    feed.book(SYM, T0 + 2000, BIDS, ASKS)
    assert feed.book(SYM, T0 + 2000, BIDS, ASKS) is None  # same time
    assert feed.book(SYM, T0 + 1000, BIDS, ASKS) is None  # earlier
    assert feed.book("XRP/USDT", T0 + 3000, BIDS, ASKS) is None
    assert feed.rejected_by_reason() == {"out_of_order": 2, "unknown_symbol": 1}
    assert feed.books.get(SYM).ts == T0 + 2000


def test_accepted_book_hand_values():
    feed = make_feed()
    book = feed.book(SYM, T0, [[100.0, 0.0], [99.5, 2.0]], ASKS, synthetic=True)
    # The zero-size level is dropped: best bid 99.5; mid (99.5 + 100.5) / 2 = 100.
    np.testing.assert_array_equal(book.bids, [[99.5, 2.0]])
    np.testing.assert_array_equal(book.asks, ASKS)
    assert book.mid == 100.0
    assert book.synthetic and book.symbol == SYM and book.ts == T0
    assert feed.books.get(SYM) is book
    assert feed.books.get("BTC/USDT") is None


def test_parse_levels_flat_and_reshaped():
    np.testing.assert_array_equal(parse_levels([(1.0, 2.0), (3.0, 4.0)], "bid"),
                                  [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(Rejected) as info:
        parse_levels([1.0, 2.0, 3.0], "ask")  # odd count: not (price, size) pairs
    assert info.value.reason == feed_module.MALFORMED


def test_late_candle_after_advance_is_rejected_and_the_minute_stays_single(caplog):
    f = make_feed()
    f.candle(SYM, [T0, 100.0, 102.0, 99.0, 101.0, 2.0])
    # The source says data up to T0 + 60 s is complete: the minute closes with one second.
    closed = f.store.advance(T0 + 60_000)
    assert [(s, tf, c.ts) for s, tf, c in closed] == [(SYM, "1m", T0)]
    # A straggler from that minute must not open a second candle at T0.
    assert f.candle(SYM, [T0 + 30_000, 101.0, 101.0, 101.0, 101.0, 1.0]) is None
    assert f.stats.rejected[(SYM, "out_of_order")] == 1
    assert "were closed" in " ".join(warnings(caplog))
    assert f.store.closed(SYM, "1m")[:, 0].tolist() == [T0]
    # The next minute goes on as usual.
    assert f.candle(SYM, [T0 + 60_000, 101.0, 101.0, 101.0, 101.0, 1.0]) is not None


@pytest.mark.parametrize("ts", [math.nan, "soon", None, 1.5, -1000])
def test_book_with_a_bad_timestamp_is_rejected_not_raised(ts):
    f = make_feed()
    assert f.book(SYM, ts, [[99.0, 1.0]], [[101.0, 1.0]]) is None
    assert f.stats.rejected[(SYM, "malformed")] == 1
    assert f.book(SYM, T0, [[99.0, 1.0]], [[101.0, 1.0]]) is not None


# -- books of a second exchange (the consolidated book's) ---------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_BOOKS))
def test_second_exchange_book_is_validated_the_same_way(case, caplog):
    bids, asks, reason = BAD_BOOKS[case]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    feed = make_feed()
    seen = []
    feed.exchange_book_listeners.append(seen.append)
    assert feed.book(SYM, T0 + 1000, BIDS, ASKS, exchange="bybit") is not None
    assert feed.book(SYM, T0 + 2000, bids, asks, exchange="bybit") is None
    assert feed.rejected_by_reason() == {reason: 1}
    assert feed.stats.rejected[(SYM, reason)] == 1
    assert [b.ts for b in seen] == [T0 + 1000] and seen[0].exchange == "bybit"
    msgs = warnings(caplog)
    assert len(msgs) == 1 and reason in msgs[0] and "bybit book" in msgs[0]


def test_second_exchange_books_are_kept_and_ordered_apart_from_the_sources_own():
    feed = make_feed()
    own, other = [], []
    feed.book_listeners.append(own.append)
    feed.exchange_book_listeners.append(other.append)
    assert feed.book(SYM, T0 + 2000, BIDS, ASKS) is not None
    # Earlier than the source's own book, but the first of its exchange: accepted.
    book = feed.book(SYM, T0 + 1000, [[100.2, 1.0]], ASKS, exchange="bybit")
    assert book is not None and book.exchange == "bybit" and not book.synthetic
    assert feed.book(SYM, T0 + 1000, BIDS, ASKS, exchange="bybit") is None  # a repeat
    assert feed.book(SYM, T0 + 500, BIDS, ASKS, exchange="bybit") is None  # older
    assert feed.rejected_by_reason() == {"out_of_order": 2}
    assert feed.books.get(SYM).ts == T0 + 2000 and feed.books.get(SYM).exchange == ""
    assert feed.books.get(SYM, "bybit") is book
    assert [b.ts for b in own] == [T0 + 2000] and other == [book]  # each to its listeners
    assert feed.stats.accepted[(SYM, "book")] == 1
    assert feed.stats.accepted[(SYM, "book_bybit")] == 1
