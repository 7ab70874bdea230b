"""Binance spot market data over one combined websocket stream: closed candles, trades, books.

One connection to ``{url}/stream?streams=a/b/c`` carries, per configured symbol, a kline stream
per timeframe, the trade stream and the 100 ms diff-depth stream. Messages arrive wrapped as
``{"stream": name, "data": payload}``; payloads follow Binance's documented spot formats.
Connection, keepalive (the websocket pings Binance expects), reconnects and health are the
``ExchangeStream`` base's (core/market/stream.py); this module parses Binance's messages.

- Candles: only CLOSED klines (``k.x`` true) are forwarded. Binance pushes the forming candle
  every 1-2 s and its values change until it closes; the candle store takes closed candles only,
  so forming updates are ignored.
- Gaps: the last forwarded closed candle per (symbol, timeframe) is remembered. After a
  reconnect (the base's ``_fill_gaps`` hook), and whenever a closed kline arrives more than one
  period after it, the missing closed candles come from ``backfill`` and are forwarded in order
  before the live one; live klines at or before the last forwarded one are skipped, so nothing
  is missing or repeated.
- Books: ``DepthBook`` (core/market/books.py) follows Binance's "how to manage a local order
  book correctly" (buffer diffs, REST snapshot, drop ``u <= lastUpdateId``, first diff must
  bridge ``lastUpdateId + 1``, then each ``U`` is the previous ``u + 1``; anything else
  re-snapshots). This stream fetches the snapshots and publishes the book's top levels.
- Time: market time is the exchange's event time ``E``; the local clock only measures message
  age and rate.

Symbols are ccxt unified ("ETH/USDT"); timestamps UTC ms; candle rows ``[ts, o, h, l, c, v]``;
book levels ``[[price, size], ...]`` best first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from core.market.books import DepthBook, DepthDiff
from core.market.stream import BadMessage, CandleGaps, ExchangeStream, call_rest
from core.market.wire import field, number, parse_levels, whole_ms
from core.timeframes import parse_timeframe

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://stream.binance.com:9443"
# Kline intervals Binance streams that core.timeframes can express (no 1w / 1M).
KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                   "1d", "3d")
BOOK_MIN_INTERVAL_MS = 100  # on_book at most this often per symbol, in market time

# Callables the stream is given (ExchangeRest provides both; any sync or async callable works).
SnapshotFn = Callable[[str], Any]  # symbol -> {"bids", "asks", "nonce"}
BackfillFn = Callable[[str, str, int, int], Any]  # (symbol, tf, since_ms, until_ms) -> rows


# ---------------------------------------------------------------------------------------------
# Pure helpers


def exchange_symbol(symbol: str) -> str:
    """ccxt unified spot symbol -> Binance id: 'ETH/USDT' -> 'ETHUSDT'."""
    base, sep, quote = str(symbol).partition("/")
    if not sep or not base or not quote or ":" in quote:
        raise ValueError(f"{symbol!r} is not a spot symbol like 'ETH/USDT'")
    return (base + quote).upper()


def symbol_map(symbols: Iterable[str]) -> dict[str, str]:
    """Binance id -> unified symbol for the configured symbols: {'ETHUSDT': 'ETH/USDT'}."""
    return {exchange_symbol(s): s for s in symbols}


def _kline_intervals(timeframes: Iterable[str]) -> list[str]:
    tfs = list(timeframes)
    for tf in tfs:
        if tf not in KLINE_INTERVALS:
            raise ValueError(f"timeframe {tf!r} is not a Binance kline interval: "
                             f"{', '.join(KLINE_INTERVALS)}")
    return tfs


def stream_names(symbols: Iterable[str], timeframes: Iterable[str],
                 depth: bool = True) -> list[str]:
    """Stream names per symbol: ethusdt@kline_1s, ..., ethusdt@trade, ethusdt@depth@100ms."""
    tfs = list(timeframes)
    names: list[str] = []
    for symbol in symbols:
        sid = exchange_symbol(symbol).lower()
        names += [f"{sid}@kline_{tf}" for tf in tfs]
        names.append(f"{sid}@trade")
        if depth:
            names.append(f"{sid}@depth@100ms")
    return names


def _payload(msg: Any, event: str) -> Mapping[str, Any]:
    """The raw payload of `event`; a combined-stream envelope is unwrapped."""
    if isinstance(msg, Mapping) and "stream" in msg and "data" in msg:
        msg = msg["data"]
    if not isinstance(msg, Mapping):
        raise ValueError(f"expected a JSON object, got {type(msg).__name__}")
    if msg.get("e") != event:
        raise ValueError(f"expected a {event!r} event, got e={msg.get('e')!r}")
    return msg


def _unified(symbols: Mapping[str, str], raw: Any) -> str:
    try:
        return symbols[raw]
    except (KeyError, TypeError):
        raise ValueError(f"unknown symbol {raw!r}; configured: {sorted(symbols)}") from None


def event_time_ms(msg: Any) -> int:
    """The exchange's event time ``E`` (market time, UTC ms) of a payload or envelope."""
    data = msg["data"] if isinstance(msg, Mapping) and "data" in msg else msg
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return whole_ms(data, "E", f"{data.get('e', 'event')!r} event")


def parse_kline(msg: Any, symbols: Mapping[str, str]) -> tuple[str, str, list, bool]:
    """Kline payload -> (symbol, tf, [ts, o, h, l, c, v], closed). Raises ValueError."""
    data = _payload(msg, "kline")
    k = field(data, "k", "kline event")
    if not isinstance(k, Mapping):
        raise ValueError(f"kline field 'k' is not an object: {k!r}")
    symbol = _unified(symbols, field(k, "s", "kline"))
    tf = field(k, "i", "kline")
    closed = field(k, "x", "kline")
    if not isinstance(tf, str) or not isinstance(closed, bool):
        raise ValueError(f"kline interval {tf!r} / closed flag {closed!r} have the wrong type")
    row = [whole_ms(k, "t", "kline")] + [number(k, key, "kline") for key in "ohlcv"]
    return symbol, tf, row, closed


def parse_trade(msg: Any, symbols: Mapping[str, str]) -> tuple[str, int, float, float, str]:
    """Trade payload -> (symbol, trade time ms, price, amount, side). Raises ValueError.

    The taker's side: "sell" when the buyer was the maker (``m`` true), else "buy".
    """
    data = _payload(msg, "trade")
    symbol = _unified(symbols, field(data, "s", "trade"))
    maker = field(data, "m", "trade")
    if not isinstance(maker, bool):
        raise ValueError(f"trade field 'm' is not a boolean: {maker!r}")
    price, amount = number(data, "p", "trade"), number(data, "q", "trade")
    if price <= 0 or amount < 0:
        raise ValueError(f"trade needs price > 0 and amount >= 0, got p={price} q={amount}")
    return symbol, whole_ms(data, "T", "trade"), price, amount, "sell" if maker else "buy"


def parse_depth(msg: Any, symbols: Mapping[str, str]) -> DepthDiff:
    """depthUpdate payload -> DepthDiff. Raises ValueError."""
    data = _payload(msg, "depthUpdate")
    symbol = _unified(symbols, field(data, "s", "depthUpdate"))
    first, final = whole_ms(data, "U", "depthUpdate"), whole_ms(data, "u", "depthUpdate")
    if first > final:
        raise ValueError(f"depthUpdate has U {first} > u {final}")
    return DepthDiff(symbol, whole_ms(data, "E", "depthUpdate"), first, final,
                     parse_levels(field(data, "b", "depthUpdate"), "bid"),
                     parse_levels(field(data, "a", "depthUpdate"), "ask"))


# ---------------------------------------------------------------------------------------------
# The stream


class BinanceStream(ExchangeStream):
    """Live Binance spot data for a few symbols over one reconnecting websocket.

    Callbacks run on the event loop running ``run``: ``on_candle(symbol, tf, row, closed)``
    (closed is always True), ``on_trade(symbol, ts, price, amount, side)``,
    ``on_book(symbol, ts, bids, asks)``. An exception raised by a callback ends ``run``.

    ``snapshot(symbol)`` and ``backfill(symbol, tf, since_ms, until_ms)`` are REST calls
    (sync or async). Exceptions of ``temporary_errors`` from them are logged, counted and retried
    later. One of ``book_errors`` (permanent ones) from a symbol's snapshot fails that symbol's
    book only: shown in ``health()["books_failed"]`` and retried every ``max_backoff_s`` or so
    while the other symbols stream on. Anything else propagates out of ``run``. Without
    ``snapshot`` no depth is streamed.
    ``ping_interval_s``/``ping_timeout_s`` are the websocket pings that keep the connection.
    """

    name = "binance"

    def __init__(
        self,
        symbols: Sequence[str],
        timeframes: Sequence[str] = ("1s", "1m"),
        url: str = DEFAULT_URL,
        *,
        snapshot: SnapshotFn | None = None,
        backfill: BackfillFn | None = None,
        on_candle: Callable[[str, str, list, bool], Any] | None = None,
        on_trade: Callable[[str, int, float, float, str], Any] | None = None,
        on_book: Callable[[str, int, list, list], Any] | None = None,
        book_levels: int = 20,
        max_backoff_s: float = 30.0,
        initial_backoff_s: float = 0.5,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0,
        open_timeout_s: float = 10.0,
        temporary_errors: tuple[type[BaseException], ...] = (OSError,),
        book_errors: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        super().__init__(url.rstrip("/"), initial_backoff_s=initial_backoff_s,
                         max_backoff_s=max_backoff_s, rng=rng, ws_ping_interval_s=ping_interval_s,
                         ws_ping_timeout_s=ping_timeout_s, open_timeout_s=open_timeout_s,
                         clock=clock)
        self.symbols, self.timeframes = list(symbols), _kline_intervals(timeframes)
        self.ids = symbol_map(self.symbols)
        self.tf_ms = {tf: parse_timeframe(tf) for tf in self.timeframes}
        self.streams = stream_names(self.symbols, self.timeframes, depth=snapshot is not None)
        self.snapshot, self.backfill = snapshot, backfill
        self.on_candle, self.on_trade, self.on_book = on_candle, on_trade, on_book
        self.book_levels = book_levels
        self.temporary_errors, self.book_errors = temporary_errors, book_errors
        self.books_failed: dict[str, dict[str, Any]] = {}  # symbol -> reason, failures
        self.books = {s: DepthBook(s) for s in self.symbols}
        self.candle_gaps = self._gaps = CandleGaps(self.tf_ms, backfill, self._forward,
                                                   temporary_errors, self._reject)
        # Last forwarded closed candle per (symbol, tf). Seed it with the store's last candle
        # before run() to have the gap since then backfilled on connect.
        self.last_candle_ts = self._gaps.last_ts
        self._last_book_ms: dict[str, int] = {}
        self._snapshot_after: dict[str, float] = {}  # loop time before which not to refetch
        self._snapshot_failures: dict[str, int] = {}
        self.snapshot_errors = 0

    @property
    def stream_url(self) -> str:
        return f"{self.url}/stream?streams={'/'.join(self.streams)}"

    @property
    def backfilled(self) -> int:
        """Candles forwarded from backfill."""
        return self._gaps.backfilled

    @property
    def backfill_errors(self) -> int:
        return self._gaps.errors

    def _forward(self, symbol: str, tf: str, row: list) -> None:
        if self.on_candle is not None:
            self.on_candle(symbol, tf, row, True)

    # -- the base's hooks ---------------------------------------------------------------------

    def _connect_url(self) -> str:
        return self.stream_url

    def _on_connect(self) -> None:
        for book in self.books.values():  # diffs sent while away are lost
            book.reset()
        self._snapshot_after.clear()

    def _resync_count(self) -> int:
        return sum(b.resyncs for b in self.books.values())

    def _health_extra(self) -> dict[str, Any]:
        return {"backfill_errors": self.backfill_errors, "snapshot_errors": self.snapshot_errors,
                "books_failed": {s: dict(f) for s, f in self.books_failed.items()}}

    async def _on_message(self, raw: str | bytes) -> None:
        self.session_worked = True  # any message: the connection works
        try:
            kind, parsed = self._parse(raw)
        except ValueError as exc:  # counted; the stream goes on
            self._reject(exc, raw)
            return
        if kind == "kline":
            if parsed[3]:  # the forming candle repaints until it closes; only closed ones go on
                await self._gaps.closed(*parsed[:3])
        elif kind == "trade":
            if self.on_trade is not None:
                self.on_trade(*parsed)
        else:
            await self._on_depth(parsed)

    # -- messages -----------------------------------------------------------------------------

    def _parse(self, raw: str | bytes) -> tuple[str, Any]:
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            raise BadMessage("not_json", "not JSON") from None
        event_ms = event_time_ms(msg)  # also checks that msg and its data are objects
        kind = msg.get("data", msg).get("e")
        if kind == "kline":
            parsed: Any = parse_kline(msg, self.ids)
            if parsed[1] not in self.tf_ms:
                raise ValueError(f"kline interval {parsed[1]!r} was not subscribed")
        elif kind == "trade":
            parsed = parse_trade(msg, self.ids)
        elif kind == "depthUpdate" and self.snapshot is not None:
            parsed = parse_depth(msg, self.ids)
        else:
            raise BadMessage("unexpected_event", f"unexpected event type {kind!r}")
        self._event_at(event_ms)
        return kind, parsed

    # -- books --------------------------------------------------------------------------------

    async def _on_depth(self, diff: DepthDiff) -> None:
        book = self.books[diff.symbol]
        applied = book.apply(diff)
        if book.needs_snapshot:
            applied = await self._resnapshot(book)
        if applied:
            self._publish(book)

    async def _resnapshot(self, book: DepthBook) -> bool:
        """Fetch a snapshot for a book that needs one; True if it synced with diffs applied."""
        assert self.snapshot is not None
        loop = asyncio.get_running_loop()
        if loop.time() < self._snapshot_after.get(book.symbol, 0.0):
            return False
        try:
            snap = await call_rest(self.snapshot, book.symbol)
            synced = book.apply_snapshot(snap)
        except self.book_errors as exc:  # this symbol's book only: shown, retried slowly
            self._book_failed(book.symbol, exc, loop.time())
            return False
        except (ValueError, *self.temporary_errors) as exc:
            self.snapshot_errors += 1
            failures = self._snapshot_failures.get(book.symbol, 0)
            self._snapshot_failures[book.symbol] = failures + 1
            delay = self.backoff_delay(failures)
            self._snapshot_after[book.symbol] = loop.time() + delay
            log.warning("%s depth snapshot failed (%r); retrying after %.2f s",
                        book.symbol, exc, delay)
            return False
        self._snapshot_failures.pop(book.symbol, None)
        if self.books_failed.pop(book.symbol, None) is not None:
            log.info("%s depth book recovered", book.symbol)
        if not synced:  # older than the buffered diffs: a newer one, but not on every diff
            self._snapshot_after[book.symbol] = loop.time() + self.initial_backoff_s
            return False
        return book.last_event_ms is not None

    def _book_failed(self, symbol: str, exc: BaseException, now: float) -> None:
        self.snapshot_errors += 1
        failed = self.books_failed.setdefault(symbol, {"reason": "", "failures": 0})
        failed["failures"] += 1
        failed["reason"] = f"{type(exc).__name__}: {exc}"[:200]
        delay = self.max_backoff_s * (0.5 + 0.5 * self.rng.random())  # jittered, not hammered
        failed["retry_at_ms"] = int((self.clock() + delay) * 1000)
        self._snapshot_after[symbol] = now + delay
        log.warning("%s depth book failed (%s, #%d); the other symbols go on; retrying after "
                    "%.1f s", symbol, failed["reason"], failed["failures"], delay)

    def _publish(self, book: DepthBook) -> None:
        ts = book.last_event_ms
        last = self._last_book_ms.get(book.symbol)
        if ts is None or (last is not None and ts - last < BOOK_MIN_INTERVAL_MS):
            return  # the next diff's book includes this one's changes
        bids, asks = book.top(self.book_levels)
        if not bids or not asks:
            return
        self._last_book_ms[book.symbol] = ts
        if self.on_book is not None:
            self.on_book(book.symbol, ts, bids, asks)
