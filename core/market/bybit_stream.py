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

``BybitBook`` (core/market/books.py) is the pure book logic. ``BybitStream`` builds the frames
and parses the messages: it keeps one ``BybitBook`` per symbol and resubscribes a topic whose
update ids go wrong. Connecting, the ping every ``ping_interval_s``, the idle timeout,
reconnecting and health are the ``ExchangeStream`` base's (core/market/stream.py). Symbols are
ccxt unified ("ETH/USDT"); Bybit's own ids ("ETHUSDT") stay inside this module.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from core.market.books import BookMessageError, BookSequenceError, BybitBook
from core.market.stream import BadMessage, ExchangeStream

log = logging.getLogger(__name__)

EXCHANGE = "bybit"
SPOT_URL = "wss://stream.bybit.com/v5/public/spot"
_TOPICS_PER_REQUEST = 10  # Bybit spot refuses subscribe requests with more args

OnBook = Callable[[str, str, int, np.ndarray, np.ndarray], None]


def bybit_id(symbol: str) -> str:
    """ccxt unified symbol to Bybit's id: "ETH/USDT" -> "ETHUSDT" ("ETHUSDT" stays)."""
    return symbol.split(":")[0].replace("/", "").upper()


class BybitStream(ExchangeStream):
    """Order books for ``symbols`` from Bybit's public websocket, passed to ``on_book``.

    ``on_book(exchange, symbol, ts, bids, asks)`` gets "bybit", the unified symbol, the
    exchange's message time (UTC ms) and the top ``book_levels`` levels ([K, 2] arrays) after
    every applied snapshot or delta that leaves both sides non-empty. No frame at all (not even
    a pong) for ``idle_timeout_s`` (3 pings by default) means the connection is dead.
    """

    name = EXCHANGE
    close_timeout_s = 1.0

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
        super().__init__(url, initial_backoff_s=initial_backoff_s, max_backoff_s=max_backoff_s,
                         rng=rng, keepalive_s=ping_interval_s,
                         idle_timeout_s=idle_timeout_s or 3 * ping_interval_s,
                         open_timeout_s=open_timeout_s, clock=clock)
        self.depth = depth
        self.on_book = on_book
        self.book_levels = book_levels
        self.symbols = {bybit_id(s): s for s in symbols}  # Bybit id -> unified symbol
        self.books = {sid: BybitBook(sid, depth) for sid in self.symbols}
        self.topics = {f"orderbook.{depth}.{sid}": sid for sid in self.symbols}
        self._req_ids = itertools.count(1)
        self.last_pong_ms: int | None = None

    # ---- frames -----------------------------------------------------------------------------

    def _subscribe_frames(self, topics: list[str] | None = None,
                          op: str = "subscribe") -> list[dict[str, Any]]:
        topics = list(self.topics) if topics is None else topics
        return [{"op": op, "req_id": str(next(self._req_ids)),
                 "args": topics[i: i + _TOPICS_PER_REQUEST]}
                for i in range(0, len(topics), _TOPICS_PER_REQUEST)]

    def _ping_frame(self) -> dict[str, Any]:
        return {"op": "ping", "req_id": str(next(self._req_ids))}

    def _on_connect(self) -> None:
        for book in self.books.values():
            book.reset()  # a new connection starts from a new snapshot

    async def _on_message(self, raw: str | bytes) -> None:
        topic = self._handle(raw)
        if topic is not None:  # sequence problem: a fresh snapshot via resubscribe
            self.resyncs += 1
            await self.send(*self._subscribe_frames([topic], op="unsubscribe"))
            await self.send(*self._subscribe_frames([topic]))

    # ---- messages ---------------------------------------------------------------------------

    def _handle(self, raw: str | bytes) -> str | None:
        """Process one frame; returns a topic that needs resubscribing, else None."""
        try:
            msg = json.loads(raw)
        except ValueError:
            self._reject(BadMessage("not_json", f"not JSON: {str(raw)[:80]!r}"))
            return None
        if not isinstance(msg, dict):
            self._reject(BadMessage("not_json", f"not an object: {str(raw)[:80]!r}"))
            return None
        if "topic" not in msg:
            self._control(msg)
            return None
        topic = msg["topic"]
        sid = self.topics.get(topic) if isinstance(topic, str) else None
        if sid is None:
            self._reject(BadMessage("unexpected_event", f"unknown topic {topic!r}"))
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
            self._publish(sid, book)
        return None

    def _publish(self, sid: str, book: BybitBook) -> None:
        self.session_worked = True  # a connection that delivers books is healthy
        ts = int(book.ts or 0)
        self._event_at(ts)
        if self.on_book is not None:
            bids, asks = book.top(self.book_levels)
            self.on_book(EXCHANGE, self.symbols[sid], ts, bids, asks)

    def _control(self, msg: dict) -> None:
        if msg.get("op") == "pong" or msg.get("ret_msg") == "pong":
            self.last_pong_ms = int(self.clock() * 1000)
        elif msg.get("success") is False:
            self._reject(f"{msg.get('op')} refused: {msg.get('ret_msg')!r}")
        elif msg.get("success") is not True:
            self._reject(f"unexpected message {str(msg)[:80]!r}")
