"""Order books: local books kept from an exchange's messages, and the validated snapshots.

- ``DepthBook`` (Binance) and ``BybitBook`` (Bybit) follow each exchange's rules for keeping a
  local book from a snapshot plus diff messages; the streams (``binance_stream``,
  ``bybit_stream``) feed them and publish their top levels.
- An ``OrderBook`` is what the market feed accepted: bids sorted by falling price, asks by
  rising price, both ``[K, 2]`` arrays of (price, size). ``synthetic`` marks books the replay
  made up around the replayed price (no real book data exists for the bundled history);
  ``exchange`` names the exchange of a book that is not the source's own market (a second
  exchange's, for the consolidated book). ``OrderBooks`` keeps the latest per symbol and
  exchange.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from core.market.wire import field, parse_levels, whole_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderBook:
    symbol: str
    ts: int  # market time, UTC ms
    bids: np.ndarray  # [K, 2] (price, size), best (highest) first
    asks: np.ndarray  # [K, 2] (price, size), best (lowest) first
    synthetic: bool = False
    exchange: str = ""  # "" for the source's own market, else the exchange it came from

    @property
    def mid(self) -> float:
        return float(self.bids[0, 0] + self.asks[0, 0]) / 2.0


class OrderBooks:
    """Latest book per symbol (and exchange), shared between the feed thread and readers."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], OrderBook] = {}
        self._lock = threading.Lock()

    def put(self, book: OrderBook) -> None:
        with self._lock:
            self._books[(book.exchange, book.symbol)] = book

    def get(self, symbol: str, exchange: str = "") -> OrderBook | None:
        """The latest book of ``symbol``: the source's own, or ``exchange``'s."""
        with self._lock:
            return self._books.get((exchange, symbol))


# ---------------------------------------------------------------------------------------------
# Binance: REST snapshot + diff-depth events


class DepthDiff(NamedTuple):
    symbol: str
    event_ms: int  # E, market time
    first_id: int  # U
    final_id: int  # u
    bids: list[tuple[float, float]]  # absolute sizes; 0 removes the level
    asks: list[tuple[float, float]]


class DepthBook:
    """One symbol's local book from a REST snapshot plus diff-depth events, per Binance's rules.

    ``needs_snapshot`` is true at first and after a sequence gap; meanwhile diffs are buffered.
    Call ``apply_snapshot`` with ``{"bids", "asks", "nonce"}`` (nonce = lastUpdateId) to sync.
    """

    def __init__(self, symbol: str = "", max_buffer: int = 1000):
        self.symbol = symbol
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)  # 1000 diffs = 100 s at 100 ms
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self.last_update_id: int | None = None
        self.last_event_ms: int | None = None  # E of the last applied diff since the snapshot
        self.needs_snapshot = True
        self.resyncs = 0  # gaps found while in sync
        self._bridged = False  # the first diff after the snapshot has been applied

    def reset(self) -> None:
        """Forget everything (e.g. a new connection: diffs in between are lost)."""
        self._buffer.clear()
        self._bids.clear()
        self._asks.clear()
        self.last_update_id = None
        self.last_event_ms = None
        self.needs_snapshot = True
        self._bridged = False

    def apply_snapshot(self, snapshot: Mapping[str, Any]) -> bool:
        """Load a snapshot and replay the buffered diffs; True when the book is in sync.

        False when the snapshot is older than the buffered diffs (its lastUpdateId + 1 < the
        first remaining U): diffs in between are unknown, fetch a newer snapshot.
        """
        nonce = whole_ms(snapshot, "nonce", "snapshot")
        bids = parse_levels(field(snapshot, "bids", "snapshot"), "bid")
        asks = parse_levels(field(snapshot, "asks", "snapshot"), "ask")
        pending = [d for d in self._buffer if d.final_id > nonce]  # drop u <= lastUpdateId
        self._buffer = deque(pending, maxlen=self._buffer.maxlen)
        if pending and pending[0].first_id > nonce + 1:
            log.info("%s snapshot %d is older than the buffered diffs (U=%d); refetching",
                     self.symbol, nonce, pending[0].first_id)
            return False
        self._bids = {p: s for p, s in bids if s > 0}
        self._asks = {p: s for p, s in asks if s > 0}
        self.last_update_id = nonce
        self.last_event_ms = None
        self.needs_snapshot = False
        self._bridged = False
        self._buffer.clear()
        for diff in pending:  # a gap among them buffers the rest again
            self.apply(diff)
        return not self.needs_snapshot

    def apply(self, diff: DepthDiff) -> bool:
        """Apply one diff; True if it changed the book.

        False if it was buffered (no snapshot yet, or a gap) or stale (u <= lastUpdateId). A gap
        (the first diff not bridging lastUpdateId + 1, or U != previous u + 1) clears the book,
        buffers this diff and sets ``needs_snapshot``.
        """
        if self.needs_snapshot:
            self._buffer.append(diff)
            return False
        lid = self.last_update_id
        assert lid is not None
        if diff.final_id <= lid:
            return False
        ok = diff.first_id == lid + 1 if self._bridged else diff.first_id <= lid + 1
        if not ok:
            log.warning("%s depth gap: expected U %s %d, got U=%d u=%d; resyncing", self.symbol,
                        "==" if self._bridged else "<=", lid + 1, diff.first_id, diff.final_id)
            self.resyncs += 1
            self.reset()
            self._buffer.append(diff)
            return False
        for side, levels in ((self._bids, diff.bids), (self._asks, diff.asks)):
            for price, size in levels:
                if size > 0:
                    side[price] = size
                else:  # removing a level we never had is normal
                    side.pop(price, None)
        self.last_update_id = diff.final_id
        self.last_event_ms = diff.event_ms
        self._bridged = True
        return True

    def top(self, n: int) -> tuple[list[list[float]], list[list[float]]]:
        """Best n levels: (bids by falling price, asks by rising price), each [[price, size]]."""
        bids = heapq.nlargest(n, self._bids.items())
        asks = heapq.nsmallest(n, self._asks.items())
        return [[p, s] for p, s in bids], [[p, s] for p, s in asks]

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# ---------------------------------------------------------------------------------------------
# Bybit: snapshot + delta messages


class BookMessageError(ValueError):
    """A book message that cannot be applied (missing fields, bad numbers): counted, skipped."""


class BookSequenceError(Exception):
    """The local book no longer follows the exchange's (update id went back, book crossed)."""


class BybitBook:
    """Local book for one symbol, kept from Bybit snapshot + delta messages."""

    def __init__(self, symbol_id: str, depth: int = 50) -> None:
        self.symbol_id = symbol_id
        self.depth = depth  # levels per side Bybit maintains for this topic; extra are trimmed
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.update_id: int | None = None  # None until the first snapshot
        self.seq: int | None = None
        self.ts: int | None = None  # exchange time of the last applied message, UTC ms

    @property
    def ready(self) -> bool:
        return self.update_id is not None

    def reset(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.update_id = self.seq = self.ts = None

    def apply(self, msg: Mapping[str, Any]) -> bool:
        """Apply one ``orderbook`` message (the whole message, ``topic``/``type``/``ts``/``data``).

        Returns True when the book changed, False for a delta before any snapshot (ignored:
        it cannot be applied to nothing). Raises BookMessageError for a malformed message,
        leaving the book as it was, and BookSequenceError, after resetting the book, when a
        delta's ``u`` is not above the last one or the book ends crossed. A gap in ``u`` is
        accepted: Bybit documents ``u`` only as "generally" consecutive, and a lost delta would
        show up as a crossed book or be healed by Bybit's next snapshot.
        """
        kind, data = msg.get("type"), msg.get("data")
        if kind not in ("snapshot", "delta") or not isinstance(data, Mapping):
            raise BookMessageError(f"not a book message: type={kind!r}")
        if data.get("s") not in (None, self.symbol_id):
            raise BookMessageError(f"message for {data.get('s')!r}, book is {self.symbol_id!r}")
        u, seq, ts = data.get("u"), data.get("seq"), msg.get("ts")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (u, ts)):
            raise BookMessageError(f"u and ts must be integers, got u={u!r} ts={ts!r}")
        bids, asks = (parse_levels(data.get("b"), "b", BookMessageError),
                      parse_levels(data.get("a"), "a", BookMessageError))
        if kind == "snapshot" or u == 1:
            self.reset()
        elif self.update_id is None:
            return False
        elif u <= self.update_id:
            last = self.update_id
            self.reset()
            raise BookSequenceError(f"{self.symbol_id}: delta u={u} after u={last}")
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        self._trim()
        self.update_id, self.seq, self.ts = u, seq if isinstance(seq, int) else None, ts
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            best = (max(self.bids), min(self.asks))
            self.reset()
            raise BookSequenceError(
                f"{self.symbol_id}: crossed book bid {best[0]} >= ask {best[1]}"
            )
        return True

    def _trim(self) -> None:
        for side, worst_first in ((self.bids, False), (self.asks, True)):
            extra = len(side) - self.depth
            if extra > 0:
                for price in sorted(side, reverse=worst_first)[:extra]:
                    del side[price]

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``n`` levels: bids [<=n, 2] by falling price, asks [<=n, 2] by rising price."""
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return _as_levels(bids), _as_levels(asks)


def _as_levels(levels: list[tuple[float, float]]) -> np.ndarray:
    return np.array(levels, dtype=np.float64).reshape(-1, 2)  # [K, 2], K may be 0
