"""Binance spot market data over one combined websocket stream: closed candles, trades, books.

One connection to ``{url}/stream?streams=a/b/c`` carries, per configured symbol, a kline stream
per timeframe, the trade stream and the 100 ms diff-depth stream. Messages arrive wrapped as
``{"stream": name, "data": payload}``; payloads follow Binance's documented spot formats.

- Candles: only CLOSED klines (``k.x`` true) are forwarded. Binance pushes the forming candle
  every 1-2 s and its values change until it closes; the candle store takes closed candles only,
  so forming updates are ignored.
- Gaps: the last forwarded closed candle per (symbol, timeframe) is remembered. After a
  reconnect, and whenever a closed kline arrives more than one period after it, the missing
  closed candles come from ``backfill`` and are forwarded in order before the live one; live
  klines at or before the last forwarded one are skipped, so nothing is missing or repeated.
- Books: ``DepthBook`` follows Binance's "how to manage a local order book correctly"
  (buffer diffs, REST snapshot, drop ``u <= lastUpdateId``, first diff must bridge
  ``lastUpdateId + 1``, then each ``U`` is the previous ``u + 1``; anything else re-snapshots).
- Time: market time is the exchange's event time ``E``; the local clock only measures message
  age and rate.

Symbols are ccxt unified ("ETH/USDT"); timestamps UTC ms; candle rows ``[ts, o, h, l, c, v]``;
book levels ``[[price, size], ...]`` best first.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI, WebSocketException

from core.market.wire import backoff_delay, parse_levels
from core.timeframes import parse_timeframe

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://stream.binance.com:9443"
# Kline intervals Binance streams that core.timeframes can express (no 1w / 1M).
KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                   "1d", "3d")
BOOK_MIN_INTERVAL_MS = 100  # on_book at most this often per symbol, in market time
LOCAL_CLOCK_MARGIN_MS = 1000  # local clock minus this stands in for exchange time until a message
RATE_WINDOW_S = 60  # messages_per_s averages over this many seconds
_LOG_FIRST = 5  # log the first few rejections, then every 1000th

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


def _field(obj: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return obj[key]
    except (KeyError, TypeError):
        raise ValueError(f"{what} has no field {key!r}") from None


def _num(obj: Mapping[str, Any], key: str, what: str) -> float:
    raw = _field(obj, key, what)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{what} field {key!r} is not a number: {raw!r}") from None
    if not math.isfinite(value) or isinstance(raw, bool):
        raise ValueError(f"{what} field {key!r} is not a finite number: {raw!r}")
    return value


def _ms(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = _num(obj, key, what)
    if not value.is_integer() or value < 0:
        raise ValueError(f"{what} field {key!r} is not whole milliseconds: {obj[key]!r}")
    return int(value)


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
    return _ms(data, "E", f"{data.get('e', 'event')!r} event")


def parse_kline(msg: Any, symbols: Mapping[str, str]) -> tuple[str, str, list, bool]:
    """Kline payload -> (symbol, tf, [ts, o, h, l, c, v], closed). Raises ValueError."""
    data = _payload(msg, "kline")
    k = _field(data, "k", "kline event")
    if not isinstance(k, Mapping):
        raise ValueError(f"kline field 'k' is not an object: {k!r}")
    symbol = _unified(symbols, _field(k, "s", "kline"))
    tf = _field(k, "i", "kline")
    closed = _field(k, "x", "kline")
    if not isinstance(tf, str) or not isinstance(closed, bool):
        raise ValueError(f"kline interval {tf!r} / closed flag {closed!r} have the wrong type")
    row = [_ms(k, "t", "kline")] + [_num(k, key, "kline") for key in ("o", "h", "l", "c", "v")]
    return symbol, tf, row, closed


def parse_trade(msg: Any, symbols: Mapping[str, str]) -> tuple[str, int, float, float, str]:
    """Trade payload -> (symbol, trade time ms, price, amount, side). Raises ValueError.

    The taker's side: "sell" when the buyer was the maker (``m`` true), else "buy".
    """
    data = _payload(msg, "trade")
    symbol = _unified(symbols, _field(data, "s", "trade"))
    maker = _field(data, "m", "trade")
    if not isinstance(maker, bool):
        raise ValueError(f"trade field 'm' is not a boolean: {maker!r}")
    price, amount = _num(data, "p", "trade"), _num(data, "q", "trade")
    if price <= 0 or amount < 0:
        raise ValueError(f"trade needs price > 0 and amount >= 0, got p={price} q={amount}")
    return symbol, _ms(data, "T", "trade"), price, amount, "sell" if maker else "buy"


class DepthDiff(NamedTuple):
    symbol: str
    event_ms: int  # E, market time
    first_id: int  # U
    final_id: int  # u
    bids: list[tuple[float, float]]  # absolute sizes; 0 removes the level
    asks: list[tuple[float, float]]


def parse_depth(msg: Any, symbols: Mapping[str, str]) -> DepthDiff:
    """depthUpdate payload -> DepthDiff. Raises ValueError."""
    data = _payload(msg, "depthUpdate")
    symbol = _unified(symbols, _field(data, "s", "depthUpdate"))
    first, final = _ms(data, "U", "depthUpdate"), _ms(data, "u", "depthUpdate")
    if first > final:
        raise ValueError(f"depthUpdate has U {first} > u {final}")
    return DepthDiff(symbol, _ms(data, "E", "depthUpdate"), first, final,
                     parse_levels(_field(data, "b", "depthUpdate"), "bid"),
                     parse_levels(_field(data, "a", "depthUpdate"), "ask"))


def candle_row(row: Any) -> list:
    """A backfilled OHLCV row -> [int ts, o, h, l, c, v] floats. Raises ValueError."""
    if not isinstance(row, (list, tuple)) or len(row) < 6:
        raise ValueError(f"expected [ts, open, high, low, close, volume], got {row!r}")
    values = dict(zip("tohlcv", row[:6], strict=True))
    return [_ms(values, "t", "row")] + [_num(values, key, "row") for key in "ohlcv"]


# ---------------------------------------------------------------------------------------------
# Local order book


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
        nonce = _ms(snapshot, "nonce", "snapshot")
        bids = parse_levels(_field(snapshot, "bids", "snapshot"), "bid")
        asks = parse_levels(_field(snapshot, "asks", "snapshot"), "ask")
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
# The stream


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Await an async callable; run a sync one (blocking REST) in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    return await result if inspect.isawaitable(result) else result


class BinanceStream:
    """Live Binance spot data for a few symbols over one reconnecting websocket.

    Callbacks run on the event loop running ``run``: ``on_candle(symbol, tf, row, closed)``
    (closed is always True), ``on_trade(symbol, ts, price, amount, side)``,
    ``on_book(symbol, ts, bids, asks)``. An exception raised by a callback ends ``run``.

    ``snapshot(symbol)`` and ``backfill(symbol, tf, since_ms, until_ms)`` are REST calls
    (sync or async). Exceptions of ``temporary_errors`` from them are logged, counted and retried
    later; anything else propagates out of ``run``. Without ``snapshot`` no depth is streamed.
    """

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
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        for tf in timeframes:
            if tf not in KLINE_INTERVALS:
                raise ValueError(f"timeframe {tf!r} is not a Binance kline interval: "
                                 f"{', '.join(KLINE_INTERVALS)}")
        self.symbols = list(symbols)
        self.timeframes = list(timeframes)
        self.url = url.rstrip("/")
        self.ids = symbol_map(self.symbols)
        self.tf_ms = {tf: parse_timeframe(tf) for tf in self.timeframes}
        self.streams = stream_names(self.symbols, self.timeframes, depth=snapshot is not None)
        self.snapshot, self.backfill = snapshot, backfill
        self.on_candle, self.on_trade, self.on_book = on_candle, on_trade, on_book
        self.book_levels = book_levels
        self.max_backoff_s, self.initial_backoff_s = max_backoff_s, initial_backoff_s
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.open_timeout_s = open_timeout_s
        self.temporary_errors = temporary_errors
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()

        self.books = {s: DepthBook(s) for s in self.symbols}
        # Last forwarded closed candle per (symbol, tf). Seed it with the store's last candle
        # before run() to have the gap since then backfilled on connect.
        self.last_candle_ts: dict[tuple[str, str], int] = {}
        self._last_book_ms: dict[str, int] = {}
        self._snapshot_after: dict[str, float] = {}  # loop time before which not to refetch
        self._snapshot_failures: dict[str, int] = {}
        self._connected = False
        self._last_event_ms: int | None = None  # market time of the newest message
        self._last_recv_s: float | None = None  # local clock when the last message arrived
        self._session_messages = 0
        self._rate: deque[list[int]] = deque()  # [whole second, messages] buckets
        self._lock = threading.Lock()  # health() is read from other threads
        self.backoff_delays: deque[float] = deque(maxlen=100)  # the delays slept, newest last
        self.reconnects = 0
        self.rejected = 0
        self.backfilled = 0  # candles forwarded from backfill
        self.backfill_errors = 0
        self.snapshot_errors = 0

    # -- public -------------------------------------------------------------------------------

    @property
    def stream_url(self) -> str:
        return f"{self.url}/stream?streams={'/'.join(self.streams)}"

    def backoff_delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff_s, initial_backoff_s * 2**attempt)] s."""
        return backoff_delay(attempt, self.initial_backoff_s, self.max_backoff_s, self.rng)

    def health(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            since = int(now) - RATE_WINDOW_S + 1
            buckets = [(sec, n) for sec, n in self._rate if sec >= since]
        rate = 0.0
        if buckets:  # average over the window, or over what was seen of it so far
            span = min(float(RATE_WINDOW_S), max(1.0, now - buckets[0][0]))
            rate = sum(n for _, n in buckets) / span
        return {
            "connected": self._connected,
            "last_message_ms": self._last_event_ms,
            "message_age_s": None if self._last_recv_s is None else now - self._last_recv_s,
            "messages_per_s": rate,
            "reconnects": self.reconnects,
            "rejected": self.rejected,
            "resyncs": sum(b.resyncs for b in self.books.values()),
            "backfill_errors": self.backfill_errors,
            "snapshot_errors": self.snapshot_errors,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, reconnecting with capped, fully jittered backoff."""
        attempt = 0
        while not stop.is_set():
            self._session_messages = 0
            try:
                await self._session(stop)
            except InvalidURI:
                raise
            except (OSError, WebSocketException) as exc:  # refused, timeout, dropped, bad status
                log.warning("binance stream connection failed: %r", exc)
            finally:
                self._connected = False
            if stop.is_set():
                break
            if self._session_messages:
                attempt = 0  # the connection worked; start the backoff over
            delay = self.backoff_delay(attempt)
            attempt += 1
            self.reconnects += 1
            self.backoff_delays.append(delay)
            log.info("binance stream reconnecting in %.3f s (reconnect #%d)", delay,
                     self.reconnects)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    # -- connection ---------------------------------------------------------------------------

    async def _session(self, stop: asyncio.Event) -> None:
        async with connect(self.stream_url, ping_interval=self.ping_interval_s,
                           ping_timeout=self.ping_timeout_s, open_timeout=self.open_timeout_s,
                           close_timeout=2) as ws:
            self._connected = True
            for book in self.books.values():  # diffs sent while away are lost
                book.reset()
            self._snapshot_after.clear()
            closer = asyncio.create_task(self._close_on_stop(stop, ws))
            try:
                await self._fill_gaps()
                async for raw in ws:  # ends when the connection closes normally
                    await self._handle(raw)
            finally:
                closer.cancel()

    @staticmethod
    async def _close_on_stop(stop: asyncio.Event, ws: ClientConnection) -> None:
        await stop.wait()
        await ws.close()

    def market_now_ms(self) -> int:
        """Public: the exchange's time now (see _market_now_ms); the exchange source's clock."""
        return self._market_now_ms()

    def _market_now_ms(self) -> int:
        """Exchange time now: the newest event time plus local time since it arrived.

        Latency makes this lag the exchange slightly, so a candle it calls closed is closed.
        """
        now = self.clock()
        if self._last_event_ms is None or self._last_recv_s is None:  # no exchange time yet
            return int(now * 1000) - LOCAL_CLOCK_MARGIN_MS
        return self._last_event_ms + int(max(0.0, now - self._last_recv_s) * 1000)

    # -- messages -----------------------------------------------------------------------------

    def _count(self, now: float) -> None:
        sec = int(now)
        with self._lock:
            if self._rate and self._rate[-1][0] == sec:
                self._rate[-1][1] += 1
            else:
                self._rate.append([sec, 1])
            while self._rate[0][0] <= sec - RATE_WINDOW_S:
                self._rate.popleft()
        self._last_recv_s = now
        self._session_messages += 1

    def _reject(self, exc: ValueError, raw: Any) -> None:
        self.rejected += 1
        if self.rejected <= _LOG_FIRST or self.rejected % 1000 == 0:
            log.warning("rejected binance message #%d: %s: %.200s", self.rejected, exc, raw)

    def _parse(self, raw: str | bytes) -> tuple[str, Any]:
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            raise ValueError("not JSON") from None
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
            raise ValueError(f"unexpected event type {kind!r}")
        self._last_event_ms = max(self._last_event_ms or 0, event_ms)
        return kind, parsed

    async def _handle(self, raw: str | bytes) -> None:
        self._count(self.clock())
        try:
            kind, parsed = self._parse(raw)
        except ValueError as exc:  # counted; the stream goes on
            self._reject(exc, raw)
            return
        if kind == "kline":
            await self._on_kline(*parsed)
        elif kind == "trade":
            if self.on_trade is not None:
                self.on_trade(*parsed)
        else:
            await self._on_depth(parsed)

    # -- candles ------------------------------------------------------------------------------

    async def _on_kline(self, symbol: str, tf: str, row: list, closed: bool) -> None:
        if not closed:
            return  # the forming candle repaints until it closes; only closed ones go on
        key = (symbol, tf)
        last = self.last_candle_ts.get(key)
        ts = row[0]
        if last is not None and ts <= last:
            return  # already forwarded (by backfill or before a reconnect)
        if last is not None and ts > last + self.tf_ms[tf]:
            if not await self._fill(symbol, tf, last + self.tf_ms[tf], ts - 1, closed_by_ms=ts):
                return  # hold the live candle: the next closed one retries the whole gap
        self._forward(symbol, tf, row)

    def _forward(self, symbol: str, tf: str, row: list) -> None:
        self.last_candle_ts[(symbol, tf)] = row[0]
        if self.on_candle is not None:
            self.on_candle(symbol, tf, row, True)

    async def _fill_gaps(self) -> None:
        """After a reconnect: the closed candles missed since the last forwarded ones."""
        now_ms = self._market_now_ms()
        for (symbol, tf), last in list(self.last_candle_ts.items()):
            since = last + self.tf_ms[tf]
            if since + self.tf_ms[tf] <= now_ms:  # at least one candle has closed since
                await self._fill(symbol, tf, since, now_ms, closed_by_ms=now_ms)

    async def _fill(self, symbol: str, tf: str, since_ms: int, until_ms: int,
                    closed_by_ms: int) -> bool:
        """Forward backfilled candles with ts > last and ts + tf <= closed_by_ms, in order.

        False if the backfill failed with a temporary error (the gap stays to retry later).
        """
        if self.backfill is None:
            log.warning("%s %s: candles %d..%d missing and no backfill given", symbol, tf,
                        since_ms, until_ms)
            return True
        try:
            rows = await _call(self.backfill, symbol, tf, since_ms, until_ms)
        except self.temporary_errors as exc:
            self.backfill_errors += 1
            log.warning("%s %s backfill %d..%d failed: %r", symbol, tf, since_ms, until_ms, exc)
            return False
        tf_ms = self.tf_ms[tf]
        good = []
        for raw in rows or ():
            try:
                row = candle_row(raw)
            except ValueError as exc:
                self._reject(exc, raw)
                continue
            if row[0] >= since_ms and row[0] + tf_ms <= closed_by_ms:  # REST adds the forming one
                good.append(row)
        for row in sorted(good, key=lambda r: r[0]):
            if row[0] > self.last_candle_ts.get((symbol, tf), -1):
                self._forward(symbol, tf, row)
                self.backfilled += 1
        return True

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
            snap = await _call(self.snapshot, book.symbol)
            synced = book.apply_snapshot(snap)
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
        if not synced:  # older than the buffered diffs: a newer one, but not on every diff
            self._snapshot_after[book.symbol] = loop.time() + self.initial_backoff_s
            return False
        return book.last_event_ms is not None

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
