"""Observations: what the models see at one moment, built from the candle store and the books.

One observation per (symbol, timeframe) prediction round, shared by every model. Only closed
candles (and the latest book, itself built from prices already replayed) go in, so nothing
here can see the candle being predicted.
"""

from __future__ import annotations

import math
from functools import cache

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


RSI_PERIOD = 14
RSI_CLOSES = 60  # the RSI reads the last 60 closes (59 changes)
REGIME_WINDOW = 20  # market_regime over the last 20 returns
PIVOT_CANDLES = 120  # swing levels from the last 120 candles


@cache
def _wilder_weights(n: int, period: int) -> np.ndarray:
    """w [n] with ``w @ x`` equal to the last value of Wilder smoothing over ``x`` [n]
    (``features.rsi``'s: seed = mean of the first ``period``, then ``n - period`` steps of
    ``y += (x - y) / period``), which is linear in ``x``: one dot product per side instead of
    a recursion per closed candle."""
    a = 1.0 / period
    steps = n - period
    w = np.empty(n)
    w[:period] = (1.0 - a) ** steps / period
    w[period:] = a * (1.0 - a) ** np.arange(steps - 1, -1, -1)
    w.flags.writeable = False  # shared by every call
    return w


def _last_peak(values: list[float]) -> int:
    """Index of the last value strictly above both neighbours (ties never count), or -1."""
    for i in range(len(values) - 2, 0, -1):
        if values[i] > values[i - 1] and values[i] > values[i + 1]:
            return i
    return -1


def _pivot_levels(candles: np.ndarray) -> list[float]:
    """Distance of the latest level-1 and level-2 swing high and low from the last close.

    The same pivots as ``features.williams_pivots(high, low, levels=2, strength=2)`` (tested
    against it), found for highs and lows (as -low) at once with index arrays: this runs for
    every closed candle."""
    out = [0.0, 0.0, 0.0, 0.0]
    n = len(candles)
    if n < 7:
        return out
    close = float(candles[-1, 4])
    p = candles[:, 2:4].T.copy()  # [2, n]: highs, then lows negated
    p[1] *= -1.0
    c = p[:, 2 : n - 2]  # strictly above the 2 candles on each side
    ok = (c > p[:, 1 : n - 3]) & (c > p[:, 3 : n - 1]) & (c > p[:, : n - 4]) & (c > p[:, 4:])
    for slot in (0, 1):
        level1 = p[slot, np.flatnonzero(ok[slot]) + 2].tolist()  # level-1 pivot prices
        if level1:
            out[slot] = abs(level1[-1]) / close - 1.0
            j = _last_peak(level1)  # level 2: a level-1 pivot above its 2 neighbours
            if j > 0:
                out[2 + slot] = abs(level1[j]) / close - 1.0
    return out


def scalar_features(candles: np.ndarray) -> np.ndarray:
    """The SCALAR_NAMES vector from closed candles [N, 6] of one timeframe (float32).

    Equal (to float32 precision, tested) to computing them with core.features: returns, SMA
    ratios, ``rsi(close[-60:], 14)``, ``volume_ratio(volume, 20)``, ``williams_pivots`` over
    the last 120 candles and ``market_regime(close[-21:], 20, 3 x median |log return|)``. Done
    here on the last 21 closes as Python floats, the RSI as two dot products and the pivots
    with index arrays, because it runs for every closed candle (~35 us instead of ~130 us).
    The candle store only holds validated candles (finite, prices > 0)."""
    out = np.zeros(N_SCALARS, dtype=np.float32)
    n = len(candles)
    if n < 2:
        return out
    tail = candles[-(REGIME_WINDOW + 1) :]
    close = tail[:, 4].tolist()  # the last <= 21 closes
    logret = np.diff(np.log(tail[:, 4])).tolist()  # [<= 20]
    last = close[-1]
    mean = sum(logret) / len(logret)
    squares = sum((r - mean) ** 2 for r in logret)
    sma5 = sum(close[-5:]) / len(close[-5:])
    sma10 = sum(close[-10:]) / len(close[-10:])
    volume_ratio = 0.0  # log1p(last volume / mean of the 20 before), 0 without that mean
    if n > 20:
        volume = tail[:, 5].tolist()
        before = sum(volume[:-1]) / 20
        if before > 0:
            volume_ratio = math.log1p(volume[-1] / before)
    rsi = 0.0  # (RSI - 50) / 50 = (gain - loss) / (gain + loss) of the smoothed moves
    if n > RSI_PERIOD + 1:
        moves = np.diff(candles[-RSI_CLOSES:, 4])
        w = _wilder_weights(len(moves), RSI_PERIOD)
        both = float(w @ np.abs(moves))
        rsi = float(w @ moves) / both if both > 0 else 0.0
    values = [
        last / close[-2] - 1.0,
        last / close[-6] - 1.0 if n > 5 else 0.0,
        last / close[-11] - 1.0 if n > 10 else 0.0,
        math.sqrt(squares / len(logret)) if len(logret) >= 2 else 0.0,
        volume_ratio,
        last / sma5 - 1.0, last / sma10 - 1.0, sma5 / sma10 - 1.0,
        rsi,
        *_pivot_levels(candles[-PIVOT_CANDLES:]),
    ]
    out[: len(values)] = values
    if n > REGIME_WINDOW:
        # features.market_regime: volatile if the sample std of the returns is above the
        # threshold, else trending if the efficiency ratio is >= 0.3, else ranging. The
        # threshold scales with the data itself: 3x the window's median absolute return.
        volatility = math.sqrt(squares / (len(logret) - 1))
        path = sum(abs(b - a) for a, b in zip(close, close[1:]))
        efficiency = abs(close[-1] - close[0]) / path if path > 0 else 0.0
        size = sorted(abs(r) for r in logret)
        threshold = max(1e-9, 3 * (size[9] + size[10]) / 2)  # median of 20
        onehot = 2 if volatility > threshold else 0 if efficiency >= 0.3 else 1
        out[len(values) + onehot] = 1.0  # trending, ranging, volatile
        out[len(values) + 3] = efficiency
    return out


def book_vector(book: OrderBook | None) -> np.ndarray | None:
    """The BOOK_NAMES vector of a book (float32), sizes log1p-squashed; None without a book."""
    if book is None:
        return None
    return _book_vector(book.bids, book.asks, validate=True)


def cob_vector(cob: ConsolidatedBook) -> np.ndarray | None:
    """The BOOK_NAMES vector of a consolidated book, read as one book (bucket prices, the size
    of every exchange summed); None if a side is empty or the book is crossed or locked. Its
    levels were checked when they came in and bucketed by ``consolidate``, so they are not
    checked again."""
    if not len(cob.bids) or not len(cob.asks) or cob.crossed:
        return None
    if len(cob.exchanges) == 1:  # [K, 2] already: (bucket price, size)
        bids, asks = cob.bids, cob.asks
    else:
        bids = np.column_stack([cob.bids[:, 0], cob.total("bids")])
        asks = np.column_stack([cob.asks[:, 0], cob.total("asks")])
    if bids[0, 0] >= asks[0, 0]:  # locked once bucketed
        return None
    return _book_vector(bids, asks, validate=False)


def _book_vector(bids: np.ndarray, asks: np.ndarray, validate: bool) -> np.ndarray:
    f = features.book_features(bids, asks, validate=validate)
    mid = f["mid"]
    out = np.zeros(N_BOOK, dtype=np.float32)
    out[:9] = [
        f["spread_bps"], f["imbalance"], (f["micro_price"] / mid - 1.0) * 1e4,
        *(math.log1p(f[k]) for k in BOOK_NAMES[3:9]),
    ]
    top_bids, top_asks = bids[:BOOK_TOP_LEVELS, 1], asks[:BOOK_TOP_LEVELS, 1]
    out[9 : 9 + len(top_bids)] = np.log1p(top_bids)
    out[9 + BOOK_TOP_LEVELS : 9 + BOOK_TOP_LEVELS + len(top_asks)] = np.log1p(top_asks)
    return out


_ROUND_BOOKS = ("books",)  # the round cache's key for book vectors (symbols key the windows)


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
        self._window_cache: dict[tuple[str, str], tuple[int, np.ndarray]] = {}

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

    def _book(self, symbol: str, ts: int) -> np.ndarray | None:
        """The book vector at ts (only from a book no later than ts), or None."""
        if self.cob is not None:
            consolidated = self.cob.consolidated(symbol, ts)
            if consolidated is not None and consolidated.ts <= ts:
                return cob_vector(consolidated)
            return None
        book = self.books.get(symbol)
        return book_vector(book) if book is not None and book.ts <= ts else None

    def build(self, symbol: str, timeframe: str, ts: int, cache: dict | None = None) -> Observation:
        """``cache`` shares the windows and books of one round (one ts) between its
        observations: a symbol whose 1s and 1m candles close together reads its book once."""
        cache = {} if cache is None else cache
        candles = self.store.closed(symbol, timeframe, PIVOT_CANDLES)
        books = cache.setdefault(_ROUND_BOOKS, {})
        if symbol not in books:
            books[symbol] = self._book(symbol, ts)
        vector = books[symbol]
        return Observation(
            symbol=symbol,
            timeframe=timeframe,
            ts=ts,
            windows=self._windows(symbol, cache),
            ref_windows=self._windows(self.reference, cache),
            scalars=scalar_features(candles),
            book=vector,
        )
