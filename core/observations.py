"""Observations: what the models see at one moment, built from the candle store and the books.

One observation per (symbol, timeframe) prediction round, shared by every model. Only closed
candles (and the latest book, itself built from prices already replayed) go in, so nothing
here can see the candle being predicted.
"""

from __future__ import annotations

import math

import numpy as np

from core import features
from core.market.books import OrderBook, OrderBooks
from core.market.candles import CandleStore
from core.market.cob import ConsolidatedBook, ConsolidatedBooks
from nn.base import Observation

# Hand-made scalars, in this order (the DQN's state starts with them):
SCALAR_NAMES = (
    "ret_1", "ret_5", "ret_10",  # simple returns of the close over 1, 5, 10 candles
    "volatility_20",  # std of the last 20 log returns
    "volume_ratio_20",  # last volume / mean of the 20 before (log1p-squashed)
    "close_vs_sma5", "close_vs_sma10", "sma5_vs_sma10",  # ratios - 1
    "rsi_14",  # scaled to [-1, 1]
    "pivot_high_1", "pivot_low_1", "pivot_high_2", "pivot_low_2",  # last swing levels vs close
    "regime_trending", "regime_ranging", "regime_volatile",  # one-hot
    "regime_efficiency",
)
N_SCALARS = len(SCALAR_NAMES)

BOOK_TOP_LEVELS = 10  # bucketed top levels per side in the book vector
BOOK_NAMES = (
    "spread_bps", "imbalance", "micro_vs_mid_bps",
    "bid_depth_10bps", "ask_depth_10bps", "bid_depth_50bps", "ask_depth_50bps",
    "bid_depth_100bps", "ask_depth_100bps",
    *(f"bid_size_{i}" for i in range(BOOK_TOP_LEVELS)),
    *(f"ask_size_{i}" for i in range(BOOK_TOP_LEVELS)),
)
N_BOOK = len(BOOK_NAMES)


def _last_return(close: np.ndarray, period: int) -> float:
    return float(close[-1] / close[-1 - period] - 1.0) if len(close) > period else 0.0


def _pivot_levels(candles: np.ndarray) -> list[float]:
    """Distance of the latest level-1 and level-2 swing high and low from the last close.

    The same pivots as ``features.williams_pivots(high, low, levels=2, strength=2)`` (tested
    against it), found with index arrays only: this runs for every closed candle."""
    out = [0.0, 0.0, 0.0, 0.0]
    if len(candles) < 7:
        return out
    close = candles[-1, 4]
    for slot, prices in ((0, candles[:, 2]), (1, -candles[:, 3])):  # highs; lows as -low
        level1 = features.strict_peaks(prices, 2)
        if len(level1):
            out[slot] = float(abs(prices[level1[-1]]) / close - 1.0)
            level2 = level1[features.strict_peaks(prices[level1], 1)]
            if len(level2):
                out[2 + slot] = float(abs(prices[level2[-1]]) / close - 1.0)
    return out


def scalar_features(candles: np.ndarray) -> np.ndarray:
    """The SCALAR_NAMES vector from closed candles [N, 6] of one timeframe (float32)."""
    out = np.zeros(N_SCALARS, dtype=np.float32)
    if len(candles) < 2:
        return out
    close, volume = candles[:, 4], candles[:, 5]
    logret = np.diff(np.log(close))
    sma5 = close[-5:].mean()
    sma10 = close[-10:].mean()
    prev_volume = volume[-21:-1].mean() if len(volume) > 20 else 0.0  # features.volume_ratio
    vr = volume[-1] / prev_volume if prev_volume > 0 else np.nan
    rsi = features.rsi(close[-60:], period=14)[-1] if len(close) > 15 else np.nan
    values = [
        _last_return(close, 1), _last_return(close, 5), _last_return(close, 10),
        float(logret[-20:].std()) if len(logret) >= 2 else 0.0,
        math.log1p(vr) if np.isfinite(vr) else 0.0,
        close[-1] / sma5 - 1.0, close[-1] / sma10 - 1.0, sma5 / sma10 - 1.0,
        (rsi - 50.0) / 50.0 if np.isfinite(rsi) else 0.0,
        *_pivot_levels(candles[-120:]),
    ]
    out[: len(values)] = values
    if len(close) >= 21:
        # Volatility threshold scaled to the bar length is left to the caller's data: use
        # 3x the window's own median absolute return as "volatile" relative to itself.
        regime = features.market_regime(close[-21:], window=20,
                                         vol_threshold=max(1e-9, 3 * np.median(np.abs(logret[-20:]))))
        onehot = {"trending": 0, "ranging": 1, "volatile": 2}[regime.label]
        out[len(values) + onehot] = 1.0
        out[len(values) + 3] = regime.efficiency
    return out


def cob_as_book(cob: ConsolidatedBook) -> OrderBook | None:
    """The consolidated book as one book: bucket prices with the size of all exchanges."""
    bids = np.column_stack([cob.bids[:, 0], cob.total("bids")]) if len(cob.bids) else None
    asks = np.column_stack([cob.asks[:, 0], cob.total("asks")]) if len(cob.asks) else None
    if bids is None or asks is None or cob.crossed or bids[0, 0] >= asks[0, 0]:
        return None
    return OrderBook(cob.symbol, cob.ts, bids, asks)


def book_vector(book: OrderBook | None) -> np.ndarray | None:
    """The BOOK_NAMES vector of a book (float32), sizes log1p-squashed; None without a book."""
    if book is None:
        return None
    f = features.book_features(book.bids, book.asks)
    mid = f["mid"]
    head = [
        f["spread_bps"], f["imbalance"], (f["micro_price"] / mid - 1.0) * 1e4,
        *(math.log1p(f[k]) for k in BOOK_NAMES[3:9]),
    ]
    sizes = np.zeros(2 * BOOK_TOP_LEVELS, dtype=np.float32)
    bids = np.log1p(book.bids[:BOOK_TOP_LEVELS, 1])
    asks = np.log1p(book.asks[:BOOK_TOP_LEVELS, 1])
    sizes[: len(bids)] = bids
    sizes[BOOK_TOP_LEVELS : BOOK_TOP_LEVELS + len(asks)] = asks
    return np.concatenate([np.asarray(head, dtype=np.float32), sizes])


class ObservationBuilder:
    """Builds observations from the live store; ``window`` is the longest any model needs."""

    def __init__(self, store: CandleStore, books: OrderBooks, window: int, reference: str,
                 cob: ConsolidatedBooks | None = None):
        self.store = store
        self.books = books
        self.cob = cob  # when given, the models read the consolidated book
        self.window = window
        self.reference = reference if reference in store.symbols else store.symbols[0]
        # (symbol, tf) -> (store revision, window): a coarse timeframe's window changes only
        # when one of its candles closes, so most rounds reuse three of the four. Read-only
        # arrays: every observation shares them.
        self._window_cache: dict[tuple[str, str], tuple[tuple[int, int], np.ndarray]] = {}

    def _window(self, symbol: str, tf: str) -> np.ndarray:
        revision = self.store.revision(symbol, tf)
        cached = self._window_cache.get((symbol, tf))
        if cached is not None and cached[0] == revision:
            return cached[1]
        candles = self.store.closed(symbol, tf, self.window)
        window = (features.normalised_window(candles, self.window) if len(candles)
                  else np.zeros((features.N_CHANNELS, self.window), dtype=np.float32))
        window.flags.writeable = False
        self._window_cache[(symbol, tf)] = (revision, window)
        return window

    def _windows(self, symbol: str, cache: dict) -> dict[str, np.ndarray]:
        if symbol not in cache:
            cache[symbol] = {tf: self._window(symbol, tf) for tf in self.store.timeframes}
        return cache[symbol]

    def build(self, symbol: str, timeframe: str, ts: int, cache: dict | None = None) -> Observation:
        """``cache`` shares the windows of one round between its observations."""
        cache = {} if cache is None else cache
        candles = self.store.closed(symbol, timeframe, 120)
        book = self.books.get(symbol)
        if self.cob is not None:
            consolidated = self.cob.consolidated(symbol, ts)
            book = cob_as_book(consolidated) if consolidated is not None else None
        return Observation(
            symbol=symbol,
            timeframe=timeframe,
            ts=ts,
            windows=self._windows(symbol, cache),
            ref_windows=self._windows(self.reference, cache),
            scalars=scalar_features(candles),
            book=book_vector(book) if book is not None and book.ts <= ts else None,
        )
