"""Tests for core.observations: hand-made scalars, the book vector (against a readable
reference kept here) and the observation builder.

Expected numbers are worked out by hand in the comments.
"""

import math

import numpy as np
import pytest

from core import features
from core.market.books import OrderBook, OrderBooks
from core.market.candles import Candle, CandleStore
from core.observations import (
    ObservationBuilder,
    book_vector,
    scalar_features,
)
from nn.contract import BOOK_NAMES, BOOK_TOP_LEVELS, N_BOOK, N_SCALARS, SCALAR_NAMES

ETH, BTC = "ETH/USDT", "BTC/USDT"
IDX = {name: i for i, name in enumerate(SCALAR_NAMES)}
REGIMES = ["regime_trending", "regime_ranging", "regime_volatile"]


def candles(close, volume=None, spread=1.0) -> np.ndarray:
    """[N, 6] candles, open = close, high/low = close +/- spread, volume 10 unless given."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    vol = np.full(n, 10.0) if volume is None else np.asarray(volume, dtype=np.float64)
    return np.column_stack([np.arange(n) * 60_000.0, close, close + spread, close - spread,
                            close, vol])


def scalars(arr: np.ndarray) -> dict[str, float]:
    out = scalar_features(arr)
    assert out.shape == (N_SCALARS,) and out.dtype == np.float32
    return {name: float(out[i]) for name, i in IDX.items()}


def test_names_match_the_count():
    assert N_SCALARS == len(SCALAR_NAMES) == 17
    assert N_BOOK == len(BOOK_NAMES) == 9 + 2 * BOOK_TOP_LEVELS


# -- scalar_features -------------------------------------------------------------------


def test_scalars_of_a_steady_rise():
    # closes 100, 101, ..., 120 (21 candles); volume 10 twenty times, then 30
    s = scalars(candles(np.arange(100.0, 121.0), volume=[10.0] * 20 + [30.0]))
    assert s["ret_1"] == pytest.approx(120 / 119 - 1, abs=1e-6)  # 0.0084034
    assert s["ret_5"] == pytest.approx(120 / 115 - 1, abs=1e-6)  # 0.0434783
    assert s["ret_10"] == pytest.approx(120 / 110 - 1, abs=1e-6)  # 0.0909091
    # sma5 = mean(116..120) = 118; sma10 = mean(111..120) = 115.5
    assert s["close_vs_sma5"] == pytest.approx(120 / 118 - 1, abs=1e-6)  # 0.0169492
    assert s["close_vs_sma10"] == pytest.approx(120 / 115.5 - 1, abs=1e-6)  # 0.0389610
    assert s["sma5_vs_sma10"] == pytest.approx(118 / 115.5 - 1, abs=1e-6)  # 0.0216450
    # last volume 30 over the mean 10 of the 20 before: ratio 3 -> log1p(3) = ln 4
    assert s["volume_ratio_20"] == pytest.approx(math.log(4), abs=1e-6)  # 1.3862944
    # only gains: RSI 100 -> (100 - 50) / 50 = 1
    assert s["rsi_14"] == pytest.approx(1.0)
    # highs and lows only rise: no swing points
    assert [s[f"pivot_{k}"] for k in ("high_1", "low_1", "high_2", "low_2")] == [0.0] * 4
    # path 20 = net move 20: efficiency 1, trending; one-hot sums to 1
    assert [s[r] for r in REGIMES] == [1.0, 0.0, 0.0]
    assert s["regime_efficiency"] == pytest.approx(1.0)


def test_scalars_of_a_choppy_range():
    # closes 100, 110, 100, ..., 100 (21 candles): log returns +-ln 1.1, ten of each
    s = scalars(candles([100.0 if i % 2 == 0 else 110.0 for i in range(21)]))
    assert s["ret_1"] == pytest.approx(100 / 110 - 1, abs=1e-6)  # -0.0909091
    assert s["ret_5"] == pytest.approx(100 / 110 - 1, abs=1e-6)  # close[-6] is 110
    assert s["ret_10"] == pytest.approx(0.0, abs=1e-7)  # close[-11] is 100
    # mean 0, every |return| ln 1.1: population std = ln 1.1
    assert s["volatility_20"] == pytest.approx(math.log(1.1), abs=1e-6)  # 0.0953102
    # sma5 = (3 * 100 + 2 * 110) / 5 = 104; sma10 = (5 * 100 + 5 * 110) / 10 = 105
    assert s["close_vs_sma5"] == pytest.approx(100 / 104 - 1, abs=1e-6)  # -0.0384615
    assert s["close_vs_sma10"] == pytest.approx(100 / 105 - 1, abs=1e-6)  # -0.0476190
    assert s["sma5_vs_sma10"] == pytest.approx(104 / 105 - 1, abs=1e-6)  # -0.0095238
    assert s["volume_ratio_20"] == pytest.approx(math.log(2), abs=1e-6)  # flat volume: ratio 1
    # net move 0 over a path of 200: efficiency 0, ranging (volatility 0.098 < 3 x 0.0953)
    assert [s[r] for r in REGIMES] == [0.0, 1.0, 0.0]
    assert s["regime_efficiency"] == 0.0


def test_scalars_of_a_jumpy_series_are_volatile():
    # 18 steps of +0.01 %, one +20 % jump and one -1/6 drop: the std of the returns (~0.058)
    # dwarfs 3 x their median |return| (3 x 1e-4), so the series is volatile to itself
    close = [100.0]
    for i in range(20):
        close.append(close[-1] * {5: 1.2, 12: 1 / 1.2}.get(i, 1.0001))
    s = scalars(candles(close))
    assert [s[r] for r in REGIMES] == [0.0, 0.0, 1.0]


def test_rsi_of_a_steady_fall_is_minus_one():
    s = scalars(candles(np.arange(130.0, 110.0, -1.0)))  # 20 candles, only losses: RSI 0
    assert s["rsi_14"] == pytest.approx(-1.0)  # (0 - 50) / 50
    assert [s[r] for r in REGIMES] == [0.0, 0.0, 0.0]  # fewer than 21 candles: no regime


def test_pivot_levels_by_hand():
    # 7 candles around one outside bar: high 110 and low 96 at index 3, close 100 throughout
    arr = np.column_stack([np.arange(7) * 1000.0, np.full(7, 100.0),
                           [101, 102, 103, 110, 103, 102, 101], [99, 98, 97, 96, 97, 98, 99],
                           np.full(7, 100.0), np.ones(7)])
    s = scalars(arr)
    assert s["pivot_high_1"] == pytest.approx(110 / 100 - 1)  # 0.1
    assert s["pivot_low_1"] == pytest.approx(96 / 100 - 1)  # -0.04
    assert s["pivot_high_2"] == 0.0 and s["pivot_low_2"] == 0.0  # one pivot: no level 2
    assert s["ret_10"] == 0.0  # 7 candles: no 10-candle return


@pytest.mark.parametrize("seed", range(20))
def test_pivot_levels_equal_williams_pivots(seed):
    from core.observations import _pivots

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 120)))
    high = close * (1 + rng.uniform(0, 0.01, 120))
    low = close * (1 - rng.uniform(0, 0.01, 120))
    if seed % 4 == 0:  # ties: rounded prices
        high, low = np.round(high), np.round(low)
    arr = np.column_stack([np.arange(120.0), close, high, low, close, np.ones(120)])
    expected = [0.0] * 4
    for level, pivots in enumerate(features.williams_pivots(high, low, levels=2, strength=2)):
        for kind, slot in (("high", 0), ("low", 1)):
            found = [p for p in pivots if p.kind == kind]
            if found:
                expected[level * 2 + slot] = found[-1].price / close[-1] - 1.0
    out = np.zeros(N_SCALARS)  # float64 here, to compare closely (float32 in the vector)
    _pivots(arr, float(close[-1]), out)
    assert out[9:13].tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", [0, 1])
def test_scalars_are_zeros_below_two_candles(n):
    out = scalar_features(candles(np.full(n, 100.0)))
    assert out.shape == (N_SCALARS,)
    assert not out.any()


def reference_scalars(c: np.ndarray) -> np.ndarray:
    """SCALAR_NAMES computed with core.features, the definitions scalar_features follows."""
    out = np.zeros(N_SCALARS)
    if len(c) < 2:
        return out
    close, volume = c[:, 4], c[:, 5]
    sma5, sma10 = close[-5:].mean(), close[-10:].mean()
    vr = features.volume_ratio(volume, 20)[-1] if len(c) > 20 else np.nan
    rsi = features.rsi(close[-60:], 14)[-1] if len(c) > 15 else np.nan
    pivots = [0.0] * 4
    window = c[-120:]
    if len(window) >= 7:
        for level, found in enumerate(features.williams_pivots(window[:, 2], window[:, 3],
                                                               levels=2, strength=2)):
            for slot, kind in enumerate(("high", "low")):
                prices = [p.price for p in found if p.kind == kind]
                if prices:
                    pivots[2 * level + slot] = prices[-1] / close[-1] - 1.0
    out[:13] = [
        *(features.returns(close, k)[-1] if len(c) > k else 0.0 for k in (1, 5, 10)),
        features.log_returns(close)[1:][-20:].std() if len(c) > 2 else 0.0,
        math.log1p(vr) if np.isfinite(vr) else 0.0,
        close[-1] / sma5 - 1.0, close[-1] / sma10 - 1.0, sma5 / sma10 - 1.0,
        (rsi - 50.0) / 50.0 if np.isfinite(rsi) else 0.0,
        *pivots,
    ]
    if len(c) >= 21:
        logret = features.log_returns(close)[-20:]
        regime = features.market_regime(close[-21:], window=20, vol_threshold=max(
            1e-9, 3 * np.median(np.abs(logret))))
        out[13 + ["trending", "ranging", "volatile"].index(regime.label)] = 1.0
        out[16] = regime.efficiency
    return out


@pytest.mark.parametrize("seed", range(12))
def test_scalars_equal_the_features_library(seed):
    # Random walks of every length from 0 to 130 candles, calm to wild, sometimes with ties
    # (rounded prices) or zero volume: the fast path agrees with core.features everywhere.
    rng = np.random.default_rng(seed)
    for n in range(seed, 131, 12):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001 * (1 + seed % 5), n)))
        high = close * (1 + rng.uniform(0, 0.002, n))
        low = close * (1 - rng.uniform(0, 0.002, n))
        if seed % 3 == 0:
            close, high, low = np.round(close, 1), np.round(high, 1), np.round(low, 1)
            high, low = np.maximum(high, close), np.minimum(low, close)
        volume = rng.uniform(0, 10, n) * (seed % 4 != 1)
        arr = np.column_stack([np.arange(n) * 1000.0, close, high, low, close, volume])
        np.testing.assert_allclose(scalar_features(arr), reference_scalars(arr),
                                   atol=1e-6, rtol=1e-5, err_msg=f"{n} candles")


# -- book_vector -----------------------------------------------------------------------


def three_level_book(ts: int = 0, symbol: str = ETH) -> OrderBook:
    bids = np.array([[99.95, 2.0], [99.7, 1.0], [99.2, 4.0]])
    asks = np.array([[100.05, 1.0], [100.3, 3.0], [100.8, 2.0]])
    return OrderBook(symbol, ts, bids, asks)


def test_book_vector_by_hand():
    v = book_vector(three_level_book())
    assert v.shape == (N_BOOK,) and v.dtype == np.float32
    got = dict(zip(BOOK_NAMES, v.tolist()))
    # mid = (99.95 + 100.05) / 2 = 100; spread 0.1 -> 0.1 / 100 * 1e4 = 10 bps
    assert got["spread_bps"] == pytest.approx(10.0, abs=1e-4)
    # top sizes: bids 2 + 1 + 4 = 7, asks 1 + 3 + 2 = 6 -> (7 - 6) / 13
    assert got["imbalance"] == pytest.approx(1 / 13, abs=1e-6)  # 0.0769231
    # micro = (99.95 * 1 + 100.05 * 2) / 3 = 300.05 / 3 = 100.016667 -> +1.6667 bps over mid
    assert got["micro_vs_mid_bps"] == pytest.approx(5 / 3, abs=1e-4)
    # depth within 10 bps (99.9..100.1): bid 2, ask 1; 50 bps (99.5..100.5): bid 2 + 1 = 3,
    # ask 1 + 3 = 4; 100 bps (99..101): everything, bid 7, ask 6; each log1p-squashed
    expected_depth = {"bid_depth_10bps": 2, "ask_depth_10bps": 1, "bid_depth_50bps": 3,
                      "ask_depth_50bps": 4, "bid_depth_100bps": 7, "ask_depth_100bps": 6}
    for name, size in expected_depth.items():
        assert got[name] == pytest.approx(math.log1p(size), abs=1e-6), name
    # sizes per level, log1p, padded with zeros to 10 levels per side
    bid_sizes = v[9:19]
    ask_sizes = v[19:29]
    np.testing.assert_allclose(bid_sizes, np.log1p([2, 1, 4, 0, 0, 0, 0, 0, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(ask_sizes, np.log1p([1, 3, 2, 0, 0, 0, 0, 0, 0, 0]), rtol=1e-6)


def test_book_vector_keeps_only_the_top_ten_levels():
    bids = np.column_stack([100.0 - 0.01 * np.arange(1, 13), np.arange(1.0, 13.0)])  # 12 levels
    asks = np.column_stack([100.0 + 0.01 * np.arange(1, 13), np.full(12, 2.0)])
    v = book_vector(OrderBook(ETH, 0, bids, asks))
    assert v.shape == (N_BOOK,)
    np.testing.assert_allclose(v[9:19], np.log1p(np.arange(1.0, 11.0)), rtol=1e-6)  # 1..10
    np.testing.assert_allclose(v[19:29], np.full(10, math.log(3)), rtol=1e-6)


def book_features(bids: np.ndarray, asks: np.ndarray, bands=(0.001, 0.005, 0.01),
                  top_n: int = 5) -> dict[str, float]:
    """Readable reference of the book features book_vector computes in one compiled pass.

    ``bids``/``asks``: [K, 2] (price, size), best first, best bid below best ask. Prices in
    quote currency, sizes in base currency:

    * ``mid``, ``spread`` (absolute), ``spread_bps`` (spread / mid * 1e4)
    * ``imbalance`` in [-1, 1]: (bid size - ask size) / total over the top ``top_n`` levels
    * ``micro_price``: best prices weighted by the *opposite* side's top size
    * ``bid_depth_{b}bps`` / ``ask_depth_{b}bps`` per band (0.001 -> ``10bps``): size with
      price within ``mid * (1 -/+ band)``
    """
    (bid_px, bid_sz), (ask_px, ask_sz) = bids[0], asks[0]
    mid, spread = (bid_px + ask_px) / 2, ask_px - bid_px
    top_b = sum(size for _, size in bids[:top_n])
    top_a = sum(size for _, size in asks[:top_n])
    out = {
        "mid": mid,
        "spread": spread,
        "spread_bps": spread / mid * 1e4,
        "imbalance": (top_b - top_a) / (top_b + top_a),
        "micro_price": (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz),
    }
    for band in bands:
        bps = round(band * 1e4)  # round: 0.001 * 1e4 is not exactly 10 in floats
        out[f"bid_depth_{bps}bps"] = sum(size for price, size in bids if price >= mid * (1 - band))
        out[f"ask_depth_{bps}bps"] = sum(size for price, size in asks if price <= mid * (1 + band))
    return {k: float(v) for k, v in out.items()}


BIDS = np.array([[99.95, 2.0], [99.6, 3.0], [99.2, 5.0]])
ASKS = np.array([[100.05, 1.0], [100.4, 4.0], [102.0, 6.0]])
# 10bps: bid >= 99.9 -> 2;  ask <= 100.1 -> 1
# 50bps: bid >= 99.5 -> 2+3; ask <= 100.5 -> 1+4
# 100bps: bid >= 99.0 -> 2+3+5; ask <= 101.0 -> 1+4 (102 is outside)
DEPTHS = {
    "bid_depth_10bps": 2,
    "ask_depth_10bps": 1,
    "bid_depth_50bps": 5,
    "ask_depth_50bps": 5,
    "bid_depth_100bps": 10,
    "ask_depth_100bps": 5,
}


def test_book_features_three_levels():
    f = book_features(BIDS, ASKS)
    # mid = (99.95 + 100.05)/2 = 100; spread 0.1; 0.1/100*1e4 = 10 bps
    assert f["mid"] == pytest.approx(100.0)
    assert f["spread"] == pytest.approx(0.1)
    assert f["spread_bps"] == pytest.approx(10.0)
    # top 5 covers all 3 levels: bids 2+3+5 = 10, asks 1+4+6 = 11 -> (10-11)/21
    assert f["imbalance"] == pytest.approx(-1 / 21)
    # (99.95*1 + 100.05*2) / (2+1) = 300.05/3: heavier bid pulls it toward the ask
    assert f["micro_price"] == pytest.approx(300.05 / 3)
    for key, val in DEPTHS.items():
        assert f[key] == pytest.approx(val), key
    assert all(isinstance(v, float) for v in f.values())
    # The product (compiled) vector of the same book: the same numbers, sizes log1p-squashed.
    got = dict(zip(BOOK_NAMES, book_vector(OrderBook(ETH, 0, BIDS, ASKS)).tolist()))
    assert got["spread_bps"] == pytest.approx(10.0, abs=1e-4)
    assert got["imbalance"] == pytest.approx(-1 / 21, abs=1e-6)
    assert got["micro_vs_mid_bps"] == pytest.approx((300.05 / 3 / 100 - 1) * 1e4, abs=1e-4)
    for key, val in DEPTHS.items():
        assert got[key] == pytest.approx(math.log1p(val), abs=1e-6), key


def test_book_imbalance_top_n():
    # top 1 level: (2 - 1)/(2 + 1) = 1/3
    assert book_features(BIDS, ASKS, top_n=1)["imbalance"] == pytest.approx(1 / 3)


def test_book_vector_imbalance_reads_the_top_five_levels():
    # 12 levels a side: bids 1 + 2 + 3 + 4 + 5 = 15, asks 5 x 2 = 10 -> (15 - 10) / 25
    bids = np.column_stack([100.0 - 0.01 * np.arange(1, 13), np.arange(1.0, 13.0)])
    asks = np.column_stack([100.0 + 0.01 * np.arange(1, 13), np.full(12, 2.0)])
    got = dict(zip(BOOK_NAMES, book_vector(OrderBook(ETH, 0, bids, asks)).tolist()))
    assert got["imbalance"] == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize(
    "bids, asks, match",
    [
        (np.empty((0, 2)), ASKS, "best bid None"),
        (BIDS, np.empty((0, 2)), "best ask None"),
        (np.array([[100.1, 1.0]]), ASKS, "best bid 100.1 and best ask 100.05"),  # crossed
        (np.array([[100.05, 1.0]]), ASKS, "best bid 100.05 and best ask 100.05"),  # locked
    ],
)
def test_book_vector_refuses_an_empty_side_or_a_crossed_or_locked_book(bids, asks, match):
    with pytest.raises(ValueError, match=match):
        book_vector(OrderBook(ETH, 0, bids, asks))


def reference_book_vector(bids: np.ndarray, asks: np.ndarray) -> np.ndarray:
    """BOOK_NAMES from the reference book_features (the definitions book_vector follows)."""
    f = book_features(bids, asks)
    top_b, top_a = np.zeros(BOOK_TOP_LEVELS), np.zeros(BOOK_TOP_LEVELS)
    top_b[: min(len(bids), BOOK_TOP_LEVELS)] = bids[:BOOK_TOP_LEVELS, 1]
    top_a[: min(len(asks), BOOK_TOP_LEVELS)] = asks[:BOOK_TOP_LEVELS, 1]
    return np.array([f["spread_bps"], f["imbalance"], (f["micro_price"] / f["mid"] - 1) * 1e4,
                     *(math.log1p(f[name]) for name in BOOK_NAMES[3:9]),
                     *np.log1p(top_b), *np.log1p(top_a)])


@pytest.mark.parametrize("seed", range(10))
def test_book_vector_equals_the_reference(seed):
    # Books of 1 to 40 levels, tight to wide steps (so the 10/50/100 bps bands hold from one
    # level to all of them), sizes from dust to whales.
    rng = np.random.default_rng(seed)
    for _ in range(20):
        nb, na = rng.integers(1, 41, 2)
        step = 10 ** rng.uniform(-3, 0)
        bids = np.column_stack([100 - np.cumsum(rng.uniform(0.01, 1, nb) * step),
                                10 ** rng.uniform(-3, 3, nb)])
        asks = np.column_stack([100 + np.cumsum(rng.uniform(0.01, 1, na) * step),
                                10 ** rng.uniform(-3, 3, na)])
        np.testing.assert_allclose(book_vector(OrderBook(ETH, 0, bids, asks)),
                                   reference_book_vector(bids, asks), rtol=1e-5, atol=1e-5)


def test_a_crossed_or_one_sided_book_is_refused():
    with pytest.raises(ValueError, match="best bid 100.2 and best ask 100.1"):
        book_vector(OrderBook(ETH, 0, np.array([[100.2, 1.0]]), np.array([[100.1, 1.0]])))
    with pytest.raises(ValueError, match="best ask None"):
        book_vector(OrderBook(ETH, 0, np.array([[100.2, 1.0]]), np.empty((0, 2))))


def test_book_vector_without_a_book_is_none():
    assert book_vector(None) is None


# -- ObservationBuilder ------------------------------------------------------------------


@pytest.fixture
def store() -> CandleStore:
    """Two minutes of 1s candles per symbol: ETH at 100 + k, BTC at 1000 + 2k at second k."""
    store = CandleStore([ETH, BTC], ["1s", "1m"], {"1s": 200, "1m": 10})
    for k in range(120):
        for symbol, price in ((ETH, 100.0 + k), (BTC, 1000.0 + 2 * k)):
            store.add(symbol, Candle(k * 1000, price, price, price, price, 1.0 + k % 3))
    return store


def test_store_fixture_closed_two_minutes(store):
    # minute 0: open 100, high 159, low 100, close 159; minute 1: 160, 219, 160, 219
    np.testing.assert_allclose(store.closed(ETH, "1m")[:, 1:5],
                               [[100, 159, 100, 159], [160, 219, 160, 219]])


def test_build_windows_and_scalars(store):
    books = OrderBooks()
    obs = ObservationBuilder(store, books, window=8, reference=BTC).build(ETH, "1m", ts=120_000)
    assert (obs.symbol, obs.timeframe, obs.ts) == (ETH, "1m", 120_000)
    assert set(obs.windows) == set(obs.ref_windows) == {"1s", "1m"}
    for tf in ("1s", "1m"):
        assert obs.windows[tf].shape == (5, 8)
        assert obs.ref_windows[tf].shape == (5, 8)
    w = obs.windows["1m"]
    # two 1m candles, right-aligned: six zero columns of padding, then ln(price / 219)
    assert not w[:, :6].any()
    assert w[3, 6] == pytest.approx(math.log(159 / 219), abs=1e-6)  # -0.3201675
    assert w[3, 7] == 0.0  # the last close against itself
    assert w[0, 6] == pytest.approx(math.log(100 / 219), abs=1e-6)  # -0.7839015
    assert w[0, 7] == pytest.approx(math.log(160 / 219), abs=1e-6)  # -0.3138979
    # the 1s window: the closes of k = 112..119 (212..219) against 219
    np.testing.assert_allclose(obs.windows["1s"][3], np.log(np.arange(212, 220) / 219), atol=1e-6)
    # the reference's 1s closes: 1000 + 2k for k = 112..119, against 1238
    np.testing.assert_allclose(obs.ref_windows["1s"][3],
                               np.log((1000 + 2 * np.arange(112, 120)) / 1238), atol=1e-6)
    # scalars from the 1m candles: ret_1 = 219 / 159 - 1 = 60 / 159
    assert obs.scalars.shape == (N_SCALARS,)
    assert obs.scalars[IDX["ret_1"]] == pytest.approx(60 / 159, abs=1e-6)  # 0.3773585
    assert obs.book is None  # no book was ever put


def test_windows_match_normalised_window(store):
    obs = ObservationBuilder(store, OrderBooks(), window=8, reference=BTC).build(BTC, "1s", 0)
    expected = features.normalised_window(store.closed(BTC, "1s", 8), 8)
    np.testing.assert_array_equal(obs.windows["1s"], expected)
    # BTC is its own reference
    np.testing.assert_array_equal(obs.ref_windows["1s"], expected)


def test_unknown_reference_falls_back_to_the_first_symbol(store):
    builder = ObservationBuilder(store, OrderBooks(), window=8, reference="SOL/USDT")
    assert builder.reference == ETH
    obs = builder.build(BTC, "1m", 0)
    np.testing.assert_array_equal(obs.ref_windows["1m"],
                                  features.normalised_window(store.closed(ETH, "1m"), 8))


def test_empty_timeframe_gives_a_zero_window():
    store = CandleStore([ETH], ["1s", "1m"], {"1s": 10, "1m": 10})
    store.add(ETH, Candle(0, 100.0, 100.0, 100.0, 100.0, 1.0))  # one 1s candle, no 1m yet
    obs = ObservationBuilder(store, OrderBooks(), window=4, reference=ETH).build(ETH, "1m", 0)
    assert obs.windows["1m"].shape == (5, 4) and not obs.windows["1m"].any()
    assert not obs.scalars.any()  # no 1m candles: zeros


def test_book_included_only_if_not_newer_than_the_observation(store):
    books = OrderBooks()
    books.put(three_level_book(ts=5_000))
    builder = ObservationBuilder(store, books, window=8, reference=BTC)
    assert builder.build(ETH, "1m", ts=4_999).book is None  # the book is from the future
    at = builder.build(ETH, "1m", ts=5_000).book
    np.testing.assert_array_equal(at, book_vector(three_level_book()))
    assert builder.build(ETH, "1m", ts=60_000).book is not None
    assert builder.build(BTC, "1m", ts=60_000).book is None  # BTC has no book


def test_shared_cache_reuses_windows(store):
    builder = ObservationBuilder(store, OrderBooks(), window=8, reference=BTC)
    cache: dict = {}
    a = builder.build(ETH, "1s", 0, cache)
    b = builder.build(ETH, "1m", 0, cache)
    c = builder.build(BTC, "1m", 0, cache)
    assert {ETH, BTC} <= set(cache)
    assert a.windows is b.windows  # the same dict, not rebuilt
    assert a.windows["1m"] is b.windows["1m"]
    assert a.ref_windows is b.ref_windows is c.windows is c.ref_windows
    # without a shared cache each build makes its own dict, of the same unchanged windows
    d = builder.build(ETH, "1s", 0)
    assert d.windows is not a.windows
    assert d.windows["1s"] is a.windows["1s"]


def test_a_window_is_rebuilt_only_when_its_timeframe_closes_a_candle(store):
    builder = ObservationBuilder(store, OrderBooks(), window=8, reference=BTC)
    first = builder.build(ETH, "1s", 120_000)
    # second 120 closes a 1s candle (ETH 220); no minute closes
    store.add(ETH, Candle(120_000, 220.0, 220.0, 220.0, 220.0, 1.0))
    second = builder.build(ETH, "1s", 121_000)
    assert second.windows["1m"] is first.windows["1m"]  # reused: no 1m candle closed
    assert second.windows["1s"] is not first.windows["1s"]
    np.testing.assert_allclose(second.windows["1s"][3], np.log(np.arange(213, 221) / 220),
                               atol=1e-6)
    assert not second.windows["1s"].flags.writeable  # shared: nobody may change it
    # seconds 121..179 complete minute 2 (open 220, close 279): the 1m window is rebuilt
    for k in range(121, 180):
        store.add(ETH, Candle(k * 1000, 100.0 + k, 100.0 + k, 100.0 + k, 100.0 + k, 1.0))
    third = builder.build(ETH, "1m", 180_000)
    assert third.windows["1m"] is not first.windows["1m"]
    assert third.windows["1m"][3, 6] == pytest.approx(math.log(219 / 279), abs=1e-6)


def book(bids, asks) -> OrderBook:
    return OrderBook(ETH, 0, np.array(bids, dtype=float), np.array(asks, dtype=float))


def test_models_read_the_consolidated_book_summed_over_exchanges():
    from core.observations import consolidated_vector

    two = {"a": book([[100.0, 1.0]], [[100.1, 1.0]]), "b": book([[100.0, 2.0]], [[100.1, 3.0]])}
    v = dict(zip(BOOK_NAMES, consolidated_vector(ETH, two, 1.0, 20).tolist()))
    # Both exchanges' size land in the same buckets: bids 1 + 2 = 3, asks 1 + 3 = 4.
    assert v["bid_size_0"] == pytest.approx(math.log(4)) and v["bid_size_1"] == 0.0
    assert v["ask_size_0"] == pytest.approx(math.log(5)) and v["ask_size_1"] == 0.0
    assert v["imbalance"] == pytest.approx((3 - 4) / 7)
    # One exchange: the same vector as its book read directly, bucketed at 1 bp (0.01 here).
    one = book([[99.95, 2.0], [99.7, 1.0]], [[100.05, 1.0], [100.3, 3.0]])
    np.testing.assert_allclose(consolidated_vector(ETH, {"a": one}, 1.0, 20), book_vector(one),
                               atol=2e-5)
    crossed = {"a": book([[100.2, 1.0]], [[100.3, 1.0]]), "b": book([[100.0, 1.0]], [[100.1, 1.0]])}
    assert consolidated_vector(ETH, crossed, 1.0, 20) is None


def test_a_round_reads_each_symbols_book_once(store):
    books = OrderBooks()
    books.put(three_level_book(ts=0))
    builder = ObservationBuilder(store, books, window=8, reference=BTC)
    read, real = [], builder._book
    builder._book = lambda symbol, ts: read.append(symbol) or real(symbol, ts)
    cache: dict = {}
    one_second = builder.build(ETH, "1s", 60_000, cache)
    one_minute = builder.build(ETH, "1m", 60_000, cache)  # closed in the same second
    assert read == [ETH]
    assert one_second.book is one_minute.book is not None
    builder.build(ETH, "1s", 61_000, {})  # the next round reads it again
    assert read == [ETH, ETH]


@pytest.mark.parametrize("seed", range(8))
def test_consolidated_vector_equals_the_consolidated_books_vector(seed):
    # 1-3 exchanges with books of 1-60 levels around slightly different mids (some crossed,
    # some locked once bucketed): the observation's one-call vector is what the reference
    # says of the ConsolidatedBook the page shows (bucket prices, sizes summed over the
    # exchanges), None where that book is crossed or locked.
    from core.market.cob import ConsolidatedBooks
    from core.observations import consolidated_vector

    rng = np.random.default_rng(seed)
    for trial in range(25):
        books = ConsolidatedBooks(bucket_bps=float(rng.choice([0.5, 1.0, 5.0])),
                                  levels=int(rng.integers(1, 25)))
        for ex in ("binance", "bybit", "okx")[: 1 + trial % 3]:
            mid = 100 + rng.normal(0, 0.03)
            nb, na = rng.integers(1, 61, 2)
            bids = np.column_stack([mid - 0.005 - np.cumsum(rng.uniform(0, 0.02, nb)),
                                    rng.uniform(0.01, 5, nb)])
            asks = np.column_stack([mid + 0.005 + np.cumsum(rng.uniform(0, 0.02, na)),
                                    rng.uniform(0.01, 5, na)])
            books.put(ex, OrderBook(ETH, 1_000, bids, asks))
        fresh, _ = books.fresh(ETH, 1_000)
        cob = books.consolidated(ETH, 1_000)
        got = consolidated_vector(ETH, fresh, books.bucket_bps, books.levels)
        if cob.crossed or cob.bids[0, 0] >= cob.asks[0, 0]:
            assert got is None
        else:
            bids = np.column_stack([cob.bids[:, 0], cob.total("bids")])
            asks = np.column_stack([cob.asks[:, 0], cob.total("asks")])
            np.testing.assert_allclose(got, reference_book_vector(bids, asks), rtol=1e-5,
                                       atol=1e-5)


def test_consolidated_vector_without_an_ask_says_so():
    from core.observations import consolidated_vector

    one_sided = OrderBook(ETH, 0, np.array([[99.0, 1.0]]), np.empty((0, 2)))
    with pytest.raises(ValueError, match="need at least one bid and one ask"):
        consolidated_vector(ETH, {"binance": one_sided}, 1.0, 20)
