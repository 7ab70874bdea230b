"""Consolidated order book (COB): several exchanges' books for one symbol on one price grid.

Each exchange's levels are dropped into price buckets of width ``mid * bucket_bps / 1e4``
(``mid`` from the best bid and ask across all exchanges). Bids are floored to their bucket and
asks ceiled, so a bucket's price is never better than the prices inside it. A bucket keeps one
size column per exchange, so the page can stack them and show who provides the depth.

``consolidate`` is pure; ``ConsolidatedBooks`` is the thread-safe store the exchange streams
write into and the page reads from. The features the models read of a consolidated book are
``core.observations.consolidated_vector`` (the buckets of ``consolidate_sides``, one compiled
kernel for both).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit

from core.market.books import OrderBook

Side = Literal["bids", "asks"]

# Prices divided by the bucket width land a float rounding error away from a whole number when
# they sit on a bucket edge (2000.0 / 0.1 = 19999.999...); this keeps them in their own bucket.
_EDGE_EPS = 1e-9


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class ConsolidatedBook:
    """Buckets nearest the mid per side, one size column per exchange.

    ``bids``/``asks``: [K, 1 + E] rows of (bucket price, size on ``exchanges[0]``, ...), bids by
    falling price, asks by rising price, only buckets that hold some size. Sizes in base
    currency, prices in quote currency.
    """

    symbol: str
    ts: int  # UTC ms the book was consolidated for
    bucket_bps: float
    mid: float  # (best_bid + best_ask) / 2 across exchanges
    bids: np.ndarray  # [K, 1 + E]
    asks: np.ndarray  # [K, 1 + E]
    exchanges: tuple[str, ...]
    best_bid: float
    best_ask: float
    crossed: bool = False  # best bid on one exchange above the best ask on another
    stale: tuple[str, ...] = ()  # exchanges left out because their book was too old

    @property
    def bucket_width(self) -> float:
        return self.mid * self.bucket_bps / 1e4

    def side(self, side: Side) -> np.ndarray:
        if side not in ("bids", "asks"):
            raise ValueError(f"side must be 'bids' or 'asks', got {side!r}")
        return self.bids if side == "bids" else self.asks

    def total(self, side: Side) -> np.ndarray:
        """Size per bucket summed over exchanges: [K]."""
        return self.side(side)[:, 1:].sum(axis=1)

    def contribution(self, exchange: str, side: Side | Literal["both"] = "both") -> float:
        """``exchange``'s share (0..1) of the size in the kept buckets; 0 if there is none."""
        if exchange not in self.exchanges:
            raise KeyError(f"{exchange!r} is not in this book's exchanges {self.exchanges}")
        j = 1 + self.exchanges.index(exchange)
        sides = [self.bids, self.asks] if side == "both" else [self.side(side)]
        total = sum(float(s[:, 1:].sum()) for s in sides)
        own = sum(float(s[:, j].sum()) for s in sides)
        return own / total if total > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready: rows as lists under ``columns`` = ["price", *exchanges]."""
        return {
            "symbol": self.symbol,
            "ts": self.ts,
            "bucket_bps": self.bucket_bps,
            "mid": self.mid,
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "crossed": self.crossed,
            "exchanges": list(self.exchanges),
            "stale": list(self.stale),
            "columns": ["price", *self.exchanges],
            "bids": self.bids.tolist(),
            "asks": self.asks.tolist(),
        }


def _levels(levels: npt.ArrayLike, name: str, descending: bool) -> np.ndarray:
    """[K, 2] float (price, size), best price first, zero-size levels dropped; K may be 0."""
    a = np.asarray(levels, dtype=np.float64)
    if a.size == 0:
        return np.empty((0, 2))
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape [K, 2] (price, size), got {a.shape}")
    lowest = a.min(axis=0)  # NaN anywhere makes it NaN, and the test below fails
    if not (lowest[0] > 0 and lowest[1] >= 0 and a.max() < np.inf):
        raise ValueError(f"{name}: prices must be finite and > 0, sizes finite and >= 0")
    if lowest[1] == 0:
        a = a[a[:, 1] > 0]
    steps = np.diff(a[:, 0])
    if len(steps) and (steps.max() > 0 if descending else steps.min() < 0):
        a = a[np.argsort(-a[:, 0] if descending else a[:, 0], kind="stable")]
    return a


def stacked_sides(sides: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Several exchanges' sides [K_j, 2] as one array [M, 2] and the row where each starts
    (``starts[j]`` to ``starts[j + 1]``): the compiled kernels' form of a list of sides."""
    starts = np.array([0, *accumulate(len(side) for side in sides)], dtype=np.int64)
    return (sides[0] if len(sides) == 1 else np.concatenate(sides)), starts


@njit(cache=True, nogil=True)
def consolidate_sides(bids: np.ndarray, bid_starts: np.ndarray, asks: np.ndarray,
                      ask_starts: np.ndarray, bucket_bps: float,
                      levels: int):  # pragma: no cover (compiled; tested via consolidate)
    """(bucketed bids [B, 1 + E], bucketed asks, best bid, best ask, True) from stacked sides
    (see ``stacked_sides``; each exchange's side best first), or (.., False) when no
    exchange has a bid or none has an ask. The best bid is the highest first bid of any
    exchange and the best ask the lowest first ask; buckets are ``mid * bucket_bps / 1e4``
    wide, mid = (best bid + best ask) / 2."""
    best_bid, best_ask = -np.inf, np.inf
    for j in range(len(bid_starts) - 1):
        if bid_starts[j + 1] > bid_starts[j]:
            best_bid = max(best_bid, bids[bid_starts[j], 0])
    for j in range(len(ask_starts) - 1):
        if ask_starts[j + 1] > ask_starts[j]:
            best_ask = min(best_ask, asks[ask_starts[j], 0])
    n_ex = len(bid_starts) - 1
    if best_bid == -np.inf or best_ask == np.inf:
        empty = np.empty((0, 1 + n_ex))
        return empty, empty, best_bid, best_ask, False
    width = (best_bid + best_ask) / 2.0 * bucket_bps / 1e4
    return (_bucket(bids, bid_starts, width, True, levels),
            _bucket(asks, ask_starts, width, False, levels), best_bid, best_ask, True)


@njit(cache=True, nogil=True)
def _bucket(sides: np.ndarray, starts: np.ndarray, width: float, is_bid: bool,
            levels: int) -> np.ndarray:  # pragma: no cover (compiled; tested via consolidate)
    """``sides`` [M, 2]: every exchange's side one after the other (exchange j's rows from
    ``starts[j]`` to ``starts[j + 1]``), each best first. Returns [B, 1 + E]: the ``levels``
    buckets nearest the mid, best first, each exchange's size summed per bucket.

    An exchange's levels past its own ``levels``-th bucket lie farther out than ``levels``
    buckets already found and are never read: a book of 1,000 levels costs what its first
    few dozen do."""
    n_ex = len(starts) - 1
    keys = np.empty(len(sides), dtype=np.int64)  # each read level's bucket number...
    owner = np.empty(len(sides), dtype=np.int64)  # ...exchange...
    sizes = np.empty(len(sides))  # ...and size
    count = 0
    for j in range(n_ex):
        last, found = 0, 0
        for r in range(starts[j], starts[j + 1]):
            price, size = sides[r, 0], sides[r, 1]
            if size <= 0:
                continue  # an empty level (a book that was not re-checked may hold one)
            # Bids floor to their bucket, asks ceil: a bucket's price is never better than
            # the prices inside it.
            k = (math.floor(price / width + _EDGE_EPS) if is_bid
                 else math.ceil(price / width - _EDGE_EPS))
            if found == 0 or k != last:
                if found == levels:
                    break
                found, last = found + 1, k
            keys[count], owner[count], sizes[count] = k, j, size
            count += 1
    # Best bucket first; a stable sort keeps each exchange's levels in book order, so every
    # bucket adds its sizes in the order they were read.
    order = np.argsort(-keys[:count] if is_bid else keys[:count], kind="mergesort")
    out = np.zeros((min(levels, count), 1 + n_ex))
    b, last = -1, 0
    for i in order:
        if b < 0 or keys[i] != last:
            if b + 1 == levels:
                break
            b, last = b + 1, keys[i]
            out[b, 0] = last * width
        out[b, 1 + owner[i]] += sizes[i]
    return out[: b + 1]


def consolidate(
    symbol: str,
    books: dict[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    ts: int,
    bucket_bps: float = 1.0,
    levels: int = 20,
    stale: tuple[str, ...] = (),
    validate: bool = True,
) -> ConsolidatedBook:
    """Merge per-exchange books (``{exchange: (bids [K, 2], asks [K, 2])}``) into buckets.

    The best bid is the highest bid on any exchange and the best ask the lowest ask; they need
    not be sorted. If the best bid is above the best ask (exchanges disagree, e.g. one is
    lagging) the result is marked ``crossed`` rather than refused; equal prices (locked) are not
    crossed. Exchange columns are in sorted name order; ``stale`` names the exchanges left out
    for being too old (see ``ConsolidatedBooks``). ``validate=False`` is for books checked where
    they came in (an ``OrderBook``: best first, finite, sizes > 0). Raises ValueError on malformed levels,
    if no exchange has a bid or an ask, or on a non-positive ``bucket_bps``/``levels``.
    """
    if not bucket_bps > 0:
        raise ValueError(f"bucket_bps must be > 0, got {bucket_bps!r}")
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    exchanges = tuple(sorted(books))
    if validate:
        bids = [_levels(books[ex][0], f"{ex} bids", descending=True) for ex in exchanges]
        asks = [_levels(books[ex][1], f"{ex} asks", descending=False) for ex in exchanges]
    else:
        bids = [np.asarray(books[ex][0], dtype=np.float64).reshape(-1, 2) for ex in exchanges]
        asks = [np.asarray(books[ex][1], dtype=np.float64).reshape(-1, 2) for ex in exchanges]
    bucketed_bids, bucketed_asks, best_bid, best_ask, ok = consolidate_sides(
        *stacked_sides(bids), *stacked_sides(asks), float(bucket_bps), int(levels))
    if not ok:
        raise ValueError(f"{symbol}: need at least one bid and one ask across {exchanges}")
    mid = (best_bid + best_ask) / 2.0
    return ConsolidatedBook(
        symbol=symbol,
        ts=int(ts),
        bucket_bps=float(bucket_bps),
        mid=mid,
        bids=bucketed_bids,
        asks=bucketed_asks,
        exchanges=exchanges,
        best_bid=best_bid,
        best_ask=best_ask,
        crossed=best_bid > best_ask,
        stale=stale,
    )


class ConsolidatedBooks:
    """Recent books per (exchange, symbol), written by the stream threads, read by the page
    and the models' observations.

    A book put here is one a feed accepted (``OrderBook``: each side best first, finite
    prices, sizes >= 0); it is not checked again when consolidated.

    ``fresh``/``consolidated`` at market time ``ts`` read, per exchange, the newest book taken
    no later than ``ts`` (never one from after it: the observation of a candle that closed at
    ``ts`` is often built a little later, when a fast replay has already published newer
    books, which sit around prices inside the next bar) and leave it out when it is older than
    ``stale_after_s``, naming those exchanges in the result's ``stale``; None when no fresh
    book is left. The last ``history`` books per exchange and symbol are kept for that.
    """

    def __init__(
        self, bucket_bps: float = 1.0, levels: int = 20, stale_after_s: float = 5.0,
        history: int = 256,
    ) -> None:
        self.bucket_bps = bucket_bps
        self.levels = levels
        self.stale_after_ms = int(stale_after_s * 1000)
        self._books: dict[tuple[str, str], deque[OrderBook]] = {}
        self._history = history
        self._lock = threading.Lock()

    def put(self, exchange: str, book: OrderBook) -> None:
        with self._lock:
            kept = self._books.setdefault((exchange, book.symbol), deque(maxlen=self._history))
            if kept and book.ts < kept[-1].ts:  # out of order: keep the series sorted
                return
            kept.append(book)

    def _at(self, kept: deque[OrderBook], ts: int) -> OrderBook | None:
        """The newest of ``kept`` (sorted by time) taken no later than ts."""
        for book in reversed(kept):
            if book.ts <= ts:
                return book
        return None

    def on_book(
        self, exchange: str, symbol: str, ts: int, bids: np.ndarray, asks: np.ndarray
    ) -> None:
        """Callback in the exchange streams' ``on_book`` shape."""
        self.put(exchange, OrderBook(symbol, ts, bids, asks))

    def exchanges(self, symbol: str) -> list[str]:
        with self._lock:
            return sorted(ex for ex, sym in self._books if sym == symbol)

    def fresh(self, symbol: str, ts: int) -> tuple[dict[str, OrderBook], tuple[str, ...]]:
        """The books of ``symbol`` no older than ``stale_after_s`` at ``ts``, by exchange, and
        the names of the exchanges left out for being older."""
        with self._lock:
            mine = {ex: self._at(kept, ts) for (ex, sym), kept in self._books.items()
                    if sym == symbol}
        fresh = {ex: b for ex, b in mine.items()
                 if b is not None and ts - b.ts <= self.stale_after_ms}
        return fresh, tuple(sorted(set(mine) - set(fresh)))

    def consolidated(self, symbol: str, ts: int) -> ConsolidatedBook | None:
        fresh, stale = self.fresh(symbol, ts)
        if not fresh:
            return None
        # The books were checked where they came in (the feeds, the replay): not again here.
        return consolidate(symbol, {ex: (b.bids, b.asks) for ex, b in fresh.items()}, ts,
                           self.bucket_bps, self.levels, stale, validate=False)
