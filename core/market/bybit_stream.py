"""Bybit v5 public order-book stream (``orderbook.{depth}.{SYMBOL}``), the COB's second exchange.

Protocol (Bybit v5 public websocket docs, spot endpoint):

* subscribe with ``{"op": "subscribe", "args": [topic, ...]}`` (at most 10 topics per request
  on spot); the server acknowledges with ``{"success": true, "op": "subscribe", ...}``.
* the first book message is a ``"type": "snapshot"``, then ``"delta"`` messages; ``data`` holds
  ``s`` (symbol), ``b``/``a`` as ``[["price", "size"], ...]``, ``u`` (update id) and ``seq``.
  A size of "0" deletes the level; any other size inserts or replaces it. A new snapshot, or a
  message with ``u`` = 1 (Bybit's service restarted), replaces the local book.
* the client sends ``{"op": "ping"}`` every 20 s; public endpoints answer
  ``{"success": true, "ret_msg": "pong", "op": "ping"}``, private ones ``{"op": "pong"}``.

``BybitBook.apply`` is the pure book logic. ``BybitStream.run`` owns the connection: it
subscribes, keeps one ``BybitBook`` per symbol, pings, resubscribes a topic whose update ids
go wrong, and reconnects with exponential backoff and full jitter. Symbols are ccxt unified
("ETH/USDT"); Bybit's own ids ("ETHUSDT") stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI, WebSocketException

from core.market.wire import backoff_delay, parse_levels

log = logging.getLogger(__name__)

EXCHANGE = "bybit"
SPOT_URL = "wss://stream.bybit.com/v5/public/spot"
_TOPICS_PER_REQUEST = 10  # Bybit spot refuses subscribe requests with more args
_RATE_WINDOW_S = 60.0  # messages_per_s is averaged over this many seconds (as Binance's)

OnBook = Callable[[str, str, int, np.ndarray, np.ndarray], None]


class BookMessageError(ValueError):
    """A book message that cannot be applied (missing fields, bad numbers): counted, skipped."""


class BookSequenceError(Exception):
    """The local book no longer follows the exchange's (update id went back, book crossed)."""


def bybit_id(symbol: str) -> str:
    """ccxt unified symbol to Bybit's id: "ETH/USDT" -> "ETHUSDT" ("ETHUSDT" stays)."""
    return symbol.split(":")[0].replace("/", "").upper()


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


class BybitStream:
    """Order books for ``symbols`` from Bybit's public websocket, passed to ``on_book``.

    ``on_book(exchange, symbol, ts, bids, asks)`` gets "bybit", the unified symbol, the
    exchange's message time (UTC ms) and the top ``book_levels`` levels ([K, 2] arrays) after
    every applied snapshot or delta that leaves both sides non-empty.
    """

    def __init__(
        self,
        symbols: list[str] | tuple[str, ...],
        url: str = SPOT_URL,
        depth: int = 50,
        on_book: OnBook | None = None,
        book_levels: int = 20,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
        ping_interval_s: float = 20.0,
        idle_timeout_s: float | None = None,
        open_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not symbols:
            raise ValueError("BybitStream needs at least one symbol")
        self.url = url
        self.depth = depth
        self.on_book = on_book
        self.book_levels = book_levels
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.rng = rng if rng is not None else random.Random()
        self.ping_interval_s = ping_interval_s
        # No message at all (not even a pong) for this long means the connection is dead.
        self.idle_timeout_s = idle_timeout_s if idle_timeout_s else 3 * ping_interval_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock
        self.symbols = {bybit_id(s): s for s in symbols}  # Bybit id -> unified symbol
        self.books = {sid: BybitBook(sid, depth) for sid in self.symbols}
        self.topics = {f"orderbook.{depth}.{sid}": sid for sid in self.symbols}
        self._req_ids = itertools.count(1)
        self._lock = threading.Lock()  # health() is read from other threads
        self._arrivals: deque[float] = deque()
        self.connected = False
        self.last_message_ms: int | None = None  # market time (Bybit "ts") of the newest book
        self._last_recv_s: float | None = None  # local clock when the last frame arrived
        self.last_pong_ms: int | None = None
        self.reconnects = 0
        self.rejected = 0
        self.resyncs = 0
        self._got_book = False  # whether the current connection has delivered a book

    # ---- health -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._prune(now)
            n, first = len(self._arrivals), self._arrivals[0] if self._arrivals else now
            recv = self._last_recv_s
        # Average over the window, or over what was seen of it so far (at least 1 s).
        rate = n / min(_RATE_WINDOW_S, max(1.0, now - first))
        return {
            "connected": self.connected,
            "last_message_ms": self.last_message_ms,
            "message_age_s": None if recv is None else max(0.0, now - recv),
            "messages_per_s": rate,
            "reconnects": self.reconnects,
            "rejected": self.rejected,
            "resyncs": self.resyncs,
        }

    def _prune(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] < now - _RATE_WINDOW_S:
            self._arrivals.popleft()

    def _arrived(self) -> None:
        now = self.clock()
        with self._lock:
            self._arrivals.append(now)
            self._prune(now)
            self._last_recv_s = now

    # ---- connection loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop`` is set, reconnecting after drops and connection failures."""
        attempt = 0
        while not stop.is_set():
            self._got_book = False
            try:
                await self._session(stop)
            except InvalidURI:
                raise  # configuration error: retrying cannot fix it
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("bybit stream: %s: %s", type(exc).__name__, exc)
            finally:
                self.connected = False
                for book in self.books.values():
                    book.reset()  # the next connection starts from a new snapshot
            if stop.is_set():
                break
            # A connection that delivered books was healthy: back off from the start again.
            attempt = 0 if self._got_book else attempt + 1
            delay = backoff_delay(attempt, self.initial_backoff_s, self.max_backoff_s, self.rng)
            log.info("bybit stream: reconnecting in %.2f s (attempt %d)", delay, attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if not stop.is_set():
                self.reconnects += 1

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection, until ``stop`` is set (returns) or the connection fails (raises)."""
        async with connect(self.url, open_timeout=self.open_timeout_s, close_timeout=1) as ws:
            self.connected = True
            log.info("bybit stream: connected to %s", self.url)
            await self._subscribe(ws, list(self.topics))
            tasks = [
                asyncio.create_task(self._read(ws)),
                asyncio.create_task(self._ping(ws)),
                asyncio.create_task(stop.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _subscribe(
        self, ws: ClientConnection, topics: list[str], op: str = "subscribe"
    ) -> None:
        for i in range(0, len(topics), _TOPICS_PER_REQUEST):
            args = topics[i : i + _TOPICS_PER_REQUEST]
            await ws.send(json.dumps({"op": op, "req_id": str(next(self._req_ids)), "args": args}))

    async def _ping(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            await ws.send(json.dumps({"op": "ping", "req_id": str(next(self._req_ids))}))

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), self.idle_timeout_s)
            except TimeoutError:
                raise TimeoutError(f"no message for {self.idle_timeout_s} s") from None
            self._arrived()
            topic = self._handle(raw)
            if topic is not None:  # sequence problem: a fresh snapshot via resubscribe
                self.resyncs += 1
                await self._subscribe(ws, [topic], op="unsubscribe")
                await self._subscribe(ws, [topic])

    # ---- messages ---------------------------------------------------------------------------

    def _reject(self, why: str) -> None:
        self.rejected += 1
        if self.rejected <= 5 or self.rejected % 1000 == 0:
            log.warning("bybit stream: rejected message #%d: %s", self.rejected, why)

    def _handle(self, raw: str | bytes) -> str | None:
        """Process one frame; returns a topic that needs resubscribing, else None."""
        try:
            msg = json.loads(raw)
        except ValueError:
            self._reject(f"not JSON: {str(raw)[:80]!r}")
            return None
        if not isinstance(msg, dict):
            self._reject(f"not an object: {str(raw)[:80]!r}")
            return None
        if "topic" not in msg:
            self._control(msg)
            return None
        topic = msg["topic"]
        sid = self.topics.get(topic) if isinstance(topic, str) else None
        if sid is None:
            self._reject(f"unknown topic {topic!r}")
            return None
        book = self.books[sid]
        try:
            changed = book.apply(msg)
        except BookMessageError as exc:
            self._reject(f"{topic}: {exc}")
            return None
        except BookSequenceError as exc:
            log.warning("bybit stream: resubscribing %s: %s", topic, exc)
            return topic
        if changed and book.bids and book.asks:
            self._got_book = True
            self.last_message_ms = max(self.last_message_ms or 0, int(book.ts or 0))
            if self.on_book is not None:
                bids, asks = book.top(self.book_levels)
                self.on_book(EXCHANGE, self.symbols[sid], int(book.ts or 0), bids, asks)
        return None

    def _control(self, msg: dict) -> None:
        if msg.get("op") == "pong" or msg.get("ret_msg") == "pong":
            self.last_pong_ms = int(self.clock() * 1000)
        elif msg.get("success") is False:
            self._reject(f"{msg.get('op')} refused: {msg.get('ret_msg')!r}")
        elif msg.get("success") is not True:
            self._reject(f"unexpected message {str(msg)[:80]!r}")
