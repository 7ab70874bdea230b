"""Tests for core.market.cob: buckets, per-exchange sizes and the models' book vector of a
consolidated book, worked out by hand."""

import json
import math

import numpy as np
import pytest

from core.market.books import OrderBook
from core.market.cob import ConsolidatedBooks, consolidate
from core.observations import consolidated_vector
from nn.contract import BOOK_NAMES

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYM = "ETH/USDT"

# Two exchanges, three levels a side. Best bid 1999.8 and best ask 2000.2 are both bybit's,
# so mid = 2000.0; bucket_bps = 5 makes the bucket width 2000 * 5 / 1e4 = 1.0.
BINANCE = (
    [[1999.6, 1.0], [1999.2, 2.0], [1998.5, 3.0]],  # floored: 1999, 1999, 1998
    [[2000.4, 1.0], [2000.9, 2.0], [2001.5, 4.0]],  # ceiled:  2001, 2001, 2002
)
BYBIT = (
    [[1999.8, 0.5], [1998.9, 1.5], [1997.5, 2.0]],  # floored: 1999, 1998, 1997
    [[2000.2, 0.5], [2000.6, 1.0], [2002.2, 3.0]],  # ceiled:  2001, 2001, 2003
)
# Columns (price, binance, bybit):
#   bids 1999: (1 + 2, 0.5)  1998: (3, 1.5)  1997: (0, 2)
#   asks 2001: (1 + 2, 0.5 + 1)  2002: (4, 0)  2003: (0, 3)
EXPECTED_BIDS = [[1999.0, 3.0, 0.5], [1998.0, 3.0, 1.5], [1997.0, 0.0, 2.0]]
EXPECTED_ASKS = [[2001.0, 3.0, 1.5], [2002.0, 4.0, 0.0], [2003.0, 0.0, 3.0]]


def two_books():
    return {"bybit": BYBIT, "binance": BINANCE}  # columns come out in sorted name order


def test_buckets_sum_size_per_exchange():
    cob = consolidate(SYM, two_books(), T0, bucket_bps=5.0)
    assert cob.exchanges == ("binance", "bybit")
    assert cob.mid == pytest.approx(2000.0)
    assert cob.bucket_width == pytest.approx(1.0)
    assert (cob.best_bid, cob.best_ask) == (1999.8, 2000.2)
    assert not cob.crossed
    np.testing.assert_allclose(cob.bids, EXPECTED_BIDS)
    np.testing.assert_allclose(cob.asks, EXPECTED_ASKS)
    np.testing.assert_allclose(cob.total("bids"), [3.5, 4.5, 2.0])
    np.testing.assert_allclose(cob.total("asks"), [4.5, 4.0, 3.0])


def test_contributions():
    cob = consolidate(SYM, two_books(), T0, bucket_bps=5.0)
    # binance: bids 1 + 2 + 3 = 6, asks 1 + 2 + 4 = 7; bybit: bids 4, asks 4.5; all 21.5.
    assert cob.contribution("binance") == pytest.approx(13 / 21.5)
    assert cob.contribution("bybit") == pytest.approx(8.5 / 21.5)
    assert cob.contribution("binance", "bids") == pytest.approx(6 / 10)
    assert cob.contribution("bybit", "asks") == pytest.approx(4.5 / 11.5)
    with pytest.raises(KeyError):
        cob.contribution("kraken")


def test_levels_keeps_buckets_nearest_the_mid():
    cob = consolidate(SYM, two_books(), T0, bucket_bps=5.0, levels=2)
    np.testing.assert_allclose(cob.bids, EXPECTED_BIDS[:2])
    np.testing.assert_allclose(cob.asks, EXPECTED_ASKS[:2])
    # Kept buckets only: binance bids 3 + 3, asks 3 + 4; bybit bids 0.5 + 1.5, asks 1.5 + 0.
    assert cob.contribution("binance") == pytest.approx(13 / 16.5)


def test_bucket_edges_survive_float_rounding():
    # mid 100, 10 bps -> width 0.1, which floats cannot hold: 99.9 / 0.1 = 998.999...
    cob = consolidate(SYM, {"a": ([[99.9, 1.0]], [[100.1, 2.0]])}, T0, bucket_bps=10.0)
    np.testing.assert_allclose(cob.bids, [[99.9, 1.0]])
    np.testing.assert_allclose(cob.asks, [[100.1, 2.0]])


def test_crossed_across_exchanges_is_flagged_not_refused():
    books = {"a": ([[2001.0, 1.0]], [[2002.0, 1.0]]), "b": ([[1999.0, 1.0]], [[2000.0, 1.0]])}
    cob = consolidate(SYM, books, T0, bucket_bps=5.0)
    assert cob.crossed
    assert cob.mid == pytest.approx(2000.5)  # best bid 2001 (a), best ask 2000 (b)
    # The models read no book of it (the one book-feature implementation refuses it).
    assert consolidated_vector(SYM, {ex: book(SYM, T0, levels) for ex, levels in books.items()},
                               5.0, 20) is None
    locked = consolidate(SYM, {"a": ([[2000.0, 1.0]], [[2001.0, 1.0]]),
                               "b": ([[1999.0, 1.0]], [[2000.0, 1.0]])}, T0)
    assert not locked.crossed  # equal prices: locked, not crossed


def test_zero_sizes_and_bad_input():
    books = {"a": ([[1999.5, 0.0], [1999.0, 1.0]], [[2001.0, 1.0]]), "b": ([], [])}
    cob = consolidate(SYM, books, T0, bucket_bps=5.0)
    assert cob.best_bid == 1999.0  # the zero-size level is not a bid
    np.testing.assert_allclose(cob.bids, [[1999.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="at least one bid"):
        consolidate(SYM, {"a": ([], [[2001.0, 1.0]])}, T0)
    with pytest.raises(ValueError, match=r"\[K, 2\]"):
        consolidate(SYM, {"a": ([1999.0, 1.0], [[2001.0, 1.0]])}, T0)
    with pytest.raises(ValueError, match="finite"):
        consolidate(SYM, {"a": ([[float("nan"), 1.0]], [[2001.0, 1.0]])}, T0)
    with pytest.raises(ValueError, match="bucket_bps"):
        consolidate(SYM, two_books(), T0, bucket_bps=0)


def test_the_models_book_vector_by_hand():
    # What the models read of this consolidated book: core.observations.consolidated_vector,
    # the one book-feature implementation, over the buckets above (bucket prices, sizes
    # summed over the exchanges).
    books = {ex: book(SYM, T0, levels) for ex, levels in two_books().items()}
    v = dict(zip(BOOK_NAMES, consolidated_vector(SYM, books, 5.0, 20).tolist()))
    # Best buckets 1999 and 2001: mid 2000, spread 2 / 2000 * 1e4 = 10 bps (bucket prices,
    # not the raw best prices 1999.8 / 2000.2).
    assert v["spread_bps"] == pytest.approx(10.0)
    # Top 5 buckets = all: bids 3.5 + 4.5 + 2 = 10, asks 4.5 + 4 + 3 = 11.5.
    assert v["imbalance"] == pytest.approx((10 - 11.5) / 21.5)
    # micro = (1999 * 4.5 + 2001 * 3.5) / 8 = 1999.875: 0.125 / 2000 * 1e4 = 0.625 bps below.
    assert v["micro_vs_mid_bps"] == pytest.approx(-0.625)
    # 10 bps: bids >= 2000 * 0.999 = 1998.0 -> buckets 1999 and 1998 (on the edge) = 8; asks
    # <= 2000 * 1.001, which is 2001.9999999999998 in floats -> only 2001 = 4.5 (the 2002
    # bucket on the edge falls out). 50 and 100 bps: every bucket. All log1p-squashed.
    expected_depth = {"bid_depth_10bps": 8.0, "ask_depth_10bps": 4.5,
                      "bid_depth_50bps": 10.0, "ask_depth_50bps": 11.5,
                      "bid_depth_100bps": 10.0, "ask_depth_100bps": 11.5}
    for name, size in expected_depth.items():
        assert v[name] == pytest.approx(math.log1p(size), abs=1e-6), name
    # Per-bucket sizes, best first, zeros past the third bucket.
    for side, sizes in (("bid", [3.5, 4.5, 2.0]), ("ask", [4.5, 4.0, 3.0])):
        got = [v[f"{side}_size_{i}"] for i in range(10)]
        assert got == pytest.approx(np.log1p(sizes + [0.0] * 7).tolist(), abs=1e-6), side


def test_to_dict_is_json_ready():
    d = json.loads(json.dumps(consolidate(SYM, two_books(), T0, bucket_bps=5.0).to_dict()))
    assert d["columns"] == ["price", "binance", "bybit"]
    assert d["bids"][0] == pytest.approx([1999.0, 3.0, 0.5])
    assert (d["symbol"], d["ts"], d["crossed"], d["stale"]) == (SYM, T0, False, [])


def book(symbol, ts, levels):
    bids, asks = (np.array(side, dtype=np.float64) for side in levels)
    return OrderBook(symbol, ts, bids, asks)


def test_service_leaves_out_stale_exchanges():
    books = ConsolidatedBooks(bucket_bps=5.0, stale_after_s=5.0)
    assert books.consolidated(SYM, T0) is None  # nothing yet
    books.put("binance", book(SYM, T0 - 1000, BINANCE))
    books.on_book("bybit", SYM, T0 - 6000, *(np.array(s) for s in BYBIT))  # 6 s old
    books.put("bybit", book("BTC/USDT", T0, BYBIT))  # another symbol: not ours
    assert books.exchanges(SYM) == ["binance", "bybit"]

    cob = books.consolidated(SYM, T0)
    assert cob.exchanges == ("binance",)
    assert cob.stale == ("bybit",)
    assert cob.best_bid == 1999.6  # binance's own best, bybit's 1999.8 left out
    assert books.consolidated(SYM, T0 + 4000).stale == ("bybit",)  # binance 5 s old: fresh
    assert books.consolidated(SYM, T0 + 4001) is None  # both stale

    books.put("bybit", book(SYM, T0, BYBIT))  # bybit catches up
    cob = books.consolidated(SYM, T0)
    assert cob.exchanges == ("binance", "bybit") and cob.stale == ()
    np.testing.assert_allclose(cob.total("bids"), [3.5, 4.5, 2.0])


def reference_side(books: dict, side: int, width: float, levels: int) -> np.ndarray:
    """Every level of every exchange into its bucket, then the `levels` nearest the mid."""
    exchanges = sorted(books)
    grid: dict[int, np.ndarray] = {}
    for j, ex in enumerate(exchanges):
        for price, size in np.asarray(books[ex][side], dtype=float):
            if size > 0:
                k = (int(np.floor(price / width + 1e-9)) if side == 0
                     else int(np.ceil(price / width - 1e-9)))
                grid.setdefault(k, np.zeros(len(exchanges)))[j] += size
    keep = sorted(grid, reverse=side == 0)[:levels]
    return np.array([[k * width, *grid[k]] for k in keep])


@pytest.mark.parametrize("seed", range(8))
def test_consolidate_equals_bucketing_every_level(seed):
    # Deep books (up to 400 levels, some of size 0, some shuffled) on up to three exchanges:
    # the kept buckets are those of bucketing every level, though far levels are never read.
    rng = np.random.default_rng(seed)
    books = {}
    for ex in ("a", "b", "c")[: 1 + seed % 3]:
        n = int(rng.integers(1, 400))
        bids = np.column_stack([100.0 - np.cumsum(rng.uniform(0, 0.02, n)) - 0.01,
                                rng.choice([0.0, 0.5, 1.0, 2.5], n)])
        asks = np.column_stack([100.0 + np.cumsum(rng.uniform(0, 0.02, n)) + 0.01,
                                rng.choice([0.0, 0.5, 1.0, 2.5], n)])
        bids[0, 1] = asks[0, 1] = 1.0  # each exchange has a best level
        if seed % 2:
            rng.shuffle(bids)
            rng.shuffle(asks)
        books[ex] = (bids, asks)
    cob = consolidate(SYM, books, T0, bucket_bps=1.0, levels=20)
    width = cob.bucket_width
    np.testing.assert_allclose(cob.bids, reference_side(books, 0, width, 20), rtol=1e-12)
    np.testing.assert_allclose(cob.asks, reference_side(books, 1, width, 20), rtol=1e-12)


def test_a_book_from_after_the_asked_time_is_never_read():
    # A fast replay publishes books past a candle's close before its observation is built:
    # the observation must read the book of the close, not a newer one (prices inside the
    # next bar, where the replay's path already heads for that bar's close).
    books = ConsolidatedBooks(stale_after_s=5)
    bids, asks = np.array([[99.0, 1.0]]), np.array([[101.0, 1.0]])
    for ts in (1_000, 2_000, 3_000):
        books.put("replay", OrderBook("ETH/USDT", ts, bids + ts / 1000, asks + ts / 1000))
    fresh, stale = books.fresh("ETH/USDT", 2_500)
    assert fresh["replay"].ts == 2_000 and stale == ()  # not the 3,000 one
    assert books.fresh("ETH/USDT", 3_000)[0]["replay"].ts == 3_000
    # Before the first book: none; older than stale_after_s: left out, named stale.
    assert books.fresh("ETH/USDT", 500) == ({}, ("replay",))
    assert books.fresh("ETH/USDT", 9_000) == ({}, ("replay",))
    assert books.consolidated("ETH/USDT", 2_500).ts == 2_500
    # An out-of-order book is dropped: the series stays sorted.
    books.put("replay", OrderBook("ETH/USDT", 1_500, bids, asks))
    assert books.fresh("ETH/USDT", 1_600)[0]["replay"].ts == 1_000
