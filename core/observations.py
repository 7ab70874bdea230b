"""Observations: what the models see at one moment, built from the candle store and the books.

One observation per (symbol, timeframe) prediction round, shared by every model. Only closed
candles (and the latest book, itself built from prices already replayed) go in, so nothing
here can see the candle being predicted.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from core import features
from core.market.books import OrderBook, OrderBooks
from core.market.candles import CandleStore
from core.market.cob import (
    ConsolidatedBooks,
    consolidate_sides,
    stacked_sides,
)
from nn.contract import BOOK_TOP_LEVELS, N_BOOK, N_CHANNELS, N_SCALARS, Observation

RSI_PERIOD = 14
RSI_CLOSES = 60  # the RSI reads the last 60 closes (59 changes)
REGIME_WINDOW = 20  # market_regime over the last 20 returns
PIVOT_CANDLES = 120  # swing levels from the last 120 candles


@njit(cache=True, nogil=True)
def _scalars(c: np.ndarray) -> np.ndarray:  # pragma: no cover (compiled; tested through
    # scalar_features against core.features)
    out = np.zeros(N_SCALARS, dtype=np.float32)
    n = c.shape[0]
    if n < 2:
        return out
    m = min(n, REGIME_WINDOW + 1)  # the last <= 21 closes
    s = n - m
    last = c[n - 1, 4]
    lr = np.diff(np.log(c[s:, 4]))  # their log returns
    squares = ((lr - lr.mean()) ** 2).sum()
    sma5, sma10 = c[n - min(m, 5) :, 4].mean(), c[n - min(m, 10) :, 4].mean()
    out[0] = last / c[n - 2, 4] - 1.0
    if n > 5:
        out[1] = last / c[n - 6, 4] - 1.0
    if n > 10:
        out[2] = last / c[n - 11, 4] - 1.0
    if m - 1 >= 2:
        out[3] = math.sqrt(squares / (m - 1))
    if n > 20:  # log1p(last volume / mean of the 20 before), 0 without that mean
        before = c[n - 21 : n - 1, 5].sum() / 20
        if before > 0:
            out[4] = math.log1p(c[n - 1, 5] / before)
    out[5], out[6], out[7] = last / sma5 - 1.0, last / sma10 - 1.0, sma5 / sma10 - 1.0
    if n > RSI_PERIOD + 1:
        out[8] = _rsi(c)
    _pivots(c[max(0, n - PIVOT_CANDLES) :], last, out)
    if n > REGIME_WINDOW:
        _regime(c[s:, 4], lr, squares, out)
    return out


@njit(cache=True, nogil=True)
def _rsi(c: np.ndarray) -> float:  # pragma: no cover (compiled)
    """(RSI - 50) / 50 = (gain - loss) / (gain + loss) of the smoothed moves of the last 60
    closes. Wilder smoothing (seed = mean of the first 14 moves, then y += (x - y) / 14) is
    linear in the moves: its last value is a weighted sum, one pass for both sides."""
    n = c.shape[0]
    r0 = max(0, n - RSI_CLOSES)
    moves = n - 1 - r0
    a = 1.0 / RSI_PERIOD
    steps = moves - RSI_PERIOD
    up, both = 0.0, 0.0
    for i in range(moves):
        w = ((1.0 - a) ** steps / RSI_PERIOD if i < RSI_PERIOD
             else a * (1.0 - a) ** (moves - 1 - i))
        d = c[r0 + i + 1, 4] - c[r0 + i, 4]
        up += w * d
        both += w * abs(d)
    return up / both if both > 0 else 0.0


@njit(cache=True, nogil=True)
def _regime(close: np.ndarray, lr: np.ndarray, squares: float,
            out: np.ndarray) -> None:  # pragma: no cover (compiled)
    """out[13:17] from the last 21 closes, their 20 log returns and the returns' sum of
    squared deviations: ``features.market_regime``: volatile if the sample std of the returns
    is above the threshold, else trending if the efficiency ratio is >= 0.3, else ranging.
    The threshold scales with the data itself: 3x the window's median absolute return."""
    volatility = math.sqrt(squares / (len(lr) - 1))
    path = 0.0
    for i in range(len(close) - 1):
        path += abs(close[i + 1] - close[i])
    efficiency = abs(close[-1] - close[0]) / path if path > 0 else 0.0
    size = np.sort(np.abs(lr))
    threshold = max(1e-9, 3 * (size[9] + size[10]) / 2)  # median of 20
    onehot = 2 if volatility > threshold else 0 if efficiency >= 0.3 else 1
    out[13 + onehot] = 1.0  # trending, ranging, volatile
    out[16] = efficiency


@njit(cache=True, nogil=True)
def _pivots(c: np.ndarray, close: float, out: np.ndarray) -> None:  # pragma: no cover
    """out[9:13]: distance of the latest level-1 and level-2 swing high and low from
    ``close``; the pivots of ``features.williams_pivots(high, low, levels=2, strength=2)``:
    level 1 strictly above the 2 candles on each side (lows: strictly below), level 2 a
    level-1 pivot strictly above (below) its level-1 neighbours."""
    n = c.shape[0]
    if n < 7:
        return
    level1 = np.empty(n)
    for slot in range(2):  # highs, then lows negated
        col, sign = (2, 1.0) if slot == 0 else (3, -1.0)
        found = 0
        for i in range(2, n - 2):
            v = sign * c[i, col]
            if (v > sign * c[i - 1, col] and v > sign * c[i + 1, col]
                    and v > sign * c[i - 2, col] and v > sign * c[i + 2, col]):
                level1[found] = v
                found += 1
        if found:
            out[9 + slot] = abs(level1[found - 1]) / close - 1.0
            for j in range(found - 2, 0, -1):
                if level1[j] > level1[j - 1] and level1[j] > level1[j + 1]:
                    out[11 + slot] = abs(level1[j]) / close - 1.0
                    break


def scalar_features(candles: np.ndarray) -> np.ndarray:
    """The SCALAR_NAMES vector from closed candles [N, 6] of one timeframe (float32).

    Equal (to float32 precision, tested) to computing them with core.features: returns, SMA
    ratios, ``rsi(close[-60:], 14)``, ``volume_ratio(volume, 20)``, ``williams_pivots`` over
    the last 120 candles and ``market_regime(close[-21:], 20, 3 x median |log return|)``. Done
    here in one compiled pass (numba) over the last 120 candles, because it runs for every
    closed candle: ~2 us, where the same with numpy calls costs ~30 us and core.features
    ~130 us. The candle store only holds validated candles (finite, prices > 0).
    """
    return _scalars(np.asarray(candles, dtype=np.float64))


def book_vector(book: OrderBook | None) -> np.ndarray | None:
    """The BOOK_NAMES vector of a book (float32), sizes log1p-squashed; None without a book.

    The book is one a feed accepted (``OrderBook``: each side best first, finite prices,
    sizes > 0); a side left empty or a crossed or locked book is refused here."""
    if book is None:
        return None
    bids, asks = np.asarray(book.bids, dtype=np.float64), np.asarray(book.asks, dtype=np.float64)
    if not len(bids) or not len(asks) or bids[0, 0] >= asks[0, 0]:
        raise ValueError(f"{book.symbol}: need a bid below an ask, got best bid "
                         f"{bids[0, 0] if len(bids) else None} and best ask "
                         f"{asks[0, 0] if len(asks) else None}")
    return _vector(bids, asks)


def consolidated_vector(symbol: str, books: dict[str, OrderBook], bucket_bps: float,
                        levels: int) -> np.ndarray | None:
    """The BOOK_NAMES vector of the consolidated book of ``books`` (one per exchange, each a
    book its feed accepted), read as one book: bucket prices, the sizes of every exchange
    summed. The buckets of ``consolidate`` (the same compiled kernel) and the vector, without
    making the ConsolidatedBook: this runs for every observation
    (tested equal to the readable reference in tests/core/test_observations.py applied to
    the page's ConsolidatedBook). None
    if that book is crossed or locked; ValueError if no exchange has a bid or none has an
    ask (as ``consolidate``)."""
    exchanges = sorted(books)  # consolidate's column order: the same sums in the same order
    bids, asks, best_bid, best_ask, ok = consolidate_sides(
        *stacked_sides([books[ex].bids for ex in exchanges]),
        *stacked_sides([books[ex].asks for ex in exchanges]), float(bucket_bps), int(levels))
    if not ok:
        raise ValueError(f"{symbol}: need at least one bid and one ask across "
                         f"{tuple(exchanges)}")
    if best_bid > best_ask or not len(bids) or not len(asks) or bids[0, 0] >= asks[0, 0]:
        return None  # crossed, or locked once bucketed
    return _vector(bids, asks)


@njit(cache=True, nogil=True)
def _depth(price: np.ndarray, size: np.ndarray, limit: float,
           sign: float) -> float:  # pragma: no cover (compiled)
    """Size of the best-first levels with ``sign * price <= limit``: a prefix of the side."""
    depth = 0.0
    for i in range(len(price)):
        if sign * price[i] > limit:
            break
        depth += size[i]
    return depth


BANDS = (0.001, 0.005, 0.01)  # depth bands: 10, 50 and 100 bps of the mid
IMBALANCE_LEVELS = 5  # the imbalance compares the top 5 levels of each side


@njit(cache=True, nogil=True)
def _vector(bids: np.ndarray, asks: np.ndarray) -> np.ndarray:  # pragma: no cover (compiled;
    # tested against the readable reference in tests/core/test_observations.py)
    """``bids``/``asks`` [K, 1 + E]: (price, size on each of E >= 1 exchanges), best first,
    best bid below best ask. The only implementation of the book features (BOOK_NAMES), in
    one compiled pass: it runs for every observation.

    * ``spread_bps``: (best ask - best bid) / mid * 1e4
    * ``imbalance`` in [-1, 1]: (bid size - ask size) / total over the top 5 levels
    * ``micro_vs_mid_bps``: the micro price (best prices weighted by the *opposite* side's
      top size, so it leans toward the side likely to be hit next) against the mid, in bps
    * ``{bid,ask}_depth_{b}bps``: log1p of the size priced within mid * (1 -/+ b / 1e4)
    * ``{bid,ask}_size_{i}``: log1p of the top levels' sizes, zeros past the last level"""
    out = np.zeros(N_BOOK, dtype=np.float32)
    sides = (bids, asks)
    size = [np.zeros(bids.shape[0]), np.zeros(asks.shape[0])]  # summed over exchanges
    for s in range(2):
        side = sides[s]
        for i in range(side.shape[0]):
            for j in range(1, side.shape[1]):
                size[s][i] += side[i, j]
    bid_px, ask_px = bids[0, 0], asks[0, 0]
    bid_sz, ask_sz = size[0][0], size[1][0]
    mid = (bid_px + ask_px) / 2.0
    top = [0.0, 0.0]
    for s in range(2):
        for i in range(min(IMBALANCE_LEVELS, len(size[s]))):
            top[s] += size[s][i]
    out[0] = (ask_px - bid_px) / mid * 1e4
    out[1] = (top[0] - top[1]) / (top[0] + top[1])
    micro = (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz)
    out[2] = (micro / mid - 1.0) * 1e4
    for b in range(len(BANDS)):  # sizes within mid * (1 -/+ band)
        out[3 + 2 * b] = math.log1p(_depth(bids[:, 0], size[0], -mid * (1 - BANDS[b]), -1.0))
        out[4 + 2 * b] = math.log1p(_depth(asks[:, 0], size[1], mid * (1 + BANDS[b]), 1.0))
    for s in range(2):  # the top levels' sizes, zeros past the last level
        for i in range(min(BOOK_TOP_LEVELS, len(size[s]))):
            out[9 + s * BOOK_TOP_LEVELS + i] = math.log1p(size[s][i])
    return out


_ROUND_BOOKS = ("books",)  # the round cache's key for book vectors (symbols key the windows)


class ObservationBuilder:
    """Builds observations from the live store; ``window`` is the longest any model needs."""

    def __init__(self, store: CandleStore, books: OrderBooks, window: int, reference: str,
                 cob: ConsolidatedBooks | None = None, timeframes: tuple[str, ...] | None = None):
        self.store = store
        # The timeframes whose windows the models see: the real ones (see
        # MarketService.model_timeframes), so no input holds an interpolated candle.
        self.timeframes = tuple(timeframes or store.timeframes)
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
                  else np.zeros((N_CHANNELS, self.window), dtype=np.float32))
        window.flags.writeable = False
        self._window_cache[(symbol, tf)] = (revision, window)
        return window

    def _windows(self, symbol: str, cache: dict) -> dict[str, np.ndarray]:
        if symbol not in cache:
            cache[symbol] = {tf: self._window(symbol, tf) for tf in self.timeframes}
        return cache[symbol]

    def _book(self, symbol: str, ts: int) -> np.ndarray | None:
        """The book vector at ts (only from a book no later than ts), or None."""
        if self.cob is not None:
            fresh, _ = self.cob.fresh(symbol, ts)
            if not fresh:
                return None
            return consolidated_vector(symbol, fresh, self.cob.bucket_bps, self.cob.levels)
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
