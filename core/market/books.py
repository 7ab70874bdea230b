"""Order books: the latest validated snapshot per symbol.

A book is what the feed accepted: bids sorted by falling price, asks by rising price, both
``[K, 2]`` arrays of (price, size). ``synthetic`` marks books the replay made up around the
replayed price (no real book data exists for the bundled history).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OrderBook:
    symbol: str
    ts: int  # market time, UTC ms
    bids: np.ndarray  # [K, 2] (price, size), best (highest) first
    asks: np.ndarray  # [K, 2] (price, size), best (lowest) first
    synthetic: bool = False

    @property
    def mid(self) -> float:
        return float(self.bids[0, 0] + self.asks[0, 0]) / 2.0


class OrderBooks:
    """Latest book per symbol, shared between the feed thread and readers."""

    def __init__(self) -> None:
        self._books: dict[str, OrderBook] = {}
        self._lock = threading.Lock()

    def put(self, book: OrderBook) -> None:
        with self._lock:
            self._books[book.symbol] = book

    def get(self, symbol: str) -> OrderBook | None:
        with self._lock:
            return self._books.get(symbol)
