"""The base of every exchange stream: one reconnecting websocket, its health, and the hooks
that a protocol fills in.

``ExchangeStream.run`` owns the connection. It connects to ``_connect_url()``, sends
``_subscribe_frames()``, keeps the connection alive (websocket pings by the websockets library
every ``ws_ping_interval_s``; for exchanges that want their own, ``_ping_frame()`` every
``keepalive_s``; with ``idle_timeout_s``, a connection silent that long is dead), hands every
frame to ``_on_message`` and, after a drop or a failed connect, reconnects with capped, fully
jittered exponential backoff (``core.market.wire.backoff_delay``). The backoff starts over
after a connection that worked (``session_worked``, which the subclass sets).

It keeps what the page and the status show about a feed (``health()``): connected, the
exchange time of the newest message, its age, messages per second over the last minute,
reconnects, rejected messages (logged, throttled) and book resyncs.

A subclass speaks one exchange's protocol: it builds the URL and frames, parses messages into
candles, trades and books for its callbacks, and resyncs its local books. ``_on_connect`` runs
on each new connection (local books are stale: reset them) and ``_fill_gaps`` after it, before
the first message is read: the gap-fill hook. By default it has ``candle_gaps`` (a
``CandleGaps``, for a stream that carries candles) fetch the closed candles missed while away.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI, WebSocketException

from core.market.exchange_time import MonotonicMs
from core.market.wire import backoff_delay, candle_row

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60  # messages_per_s averages over this many seconds
LOCAL_CLOCK_MARGIN_MS = 1000  # local clock minus this stands in for exchange time until a message
_LOG_FIRST = 5  # log the first few rejections, then every 1000th


class BadMessage(ValueError):
    """A message that cannot be used, with the short reason it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


async def call_rest(fn: Callable[..., Any], *args: Any) -> Any:
    """Await an async callable; run a sync one (blocking REST) in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    return await result if inspect.isawaitable(result) else result


class CandleGaps:
    """Closed candles per (symbol, timeframe) forwarded in order, none missing or repeated, across
    reconnects and gaps in the live stream.

    ``last_ts`` holds the last forwarded candle per (symbol, tf); seed it with the store's last
    candle to have the gap since then filled on connect. A closed candle more than one period
    after it, and a reconnect, fetch the missing ones from ``backfill(symbol, tf, since_ms,
    until_ms)`` (REST, sync or async; OHLCV rows) and forward them first. Exceptions of
    ``temporary_errors`` from it are counted in ``errors`` and the gap is retried later.
    """

    def __init__(self, tf_ms: Mapping[str, int], backfill: Callable[..., Any] | None,
                 forward: Callable[[str, str, list], Any],
                 temporary_errors: tuple[type[BaseException], ...],
                 reject: Callable[[Any, Any], None]) -> None:
        self.tf_ms, self.backfill, self.forward = tf_ms, backfill, forward
        self.temporary_errors, self.reject = temporary_errors, reject
        self.last_ts: dict[tuple[str, str], int] = {}
        self.backfilled = 0  # candles forwarded from backfill
        self.errors = 0  # backfills that failed (temporary errors)

    async def closed(self, symbol: str, tf: str, row: list) -> None:
        """A live closed candle ``[ts, o, h, l, c, v]``."""
        last = self.last_ts.get((symbol, tf))
        ts, tf_ms = row[0], self.tf_ms[tf]
        if last is not None and ts <= last:
            return  # already forwarded (by backfill or before a reconnect)
        if last is not None and ts > last + tf_ms:
            if not await self.fill(symbol, tf, last + tf_ms, ts - 1, closed_by_ms=ts):
                return  # hold the live candle: the next closed one retries the whole gap
        self._forward(symbol, tf, row)

    async def fill_all(self, now_ms: int) -> None:
        """After a reconnect: the closed candles missed since the last forwarded ones."""
        for (symbol, tf), last in list(self.last_ts.items()):
            since = last + self.tf_ms[tf]
            if since + self.tf_ms[tf] <= now_ms:  # at least one candle has closed since
                await self.fill(symbol, tf, since, now_ms, closed_by_ms=now_ms)

    async def fill(self, symbol: str, tf: str, since_ms: int, until_ms: int,
                   closed_by_ms: int) -> bool:
        """Forward backfilled candles with ts > last and ts + tf <= closed_by_ms, in order.

        False if the backfill failed with a temporary error (the gap stays to retry later).
        """
        if self.backfill is None:
            log.warning("%s %s: candles %d..%d missing and no backfill given", symbol, tf,
                        since_ms, until_ms)
            return True
        try:
            rows = await call_rest(self.backfill, symbol, tf, since_ms, until_ms)
        except self.temporary_errors as exc:
            self.errors += 1
            log.warning("%s %s backfill %d..%d failed: %r", symbol, tf, since_ms, until_ms, exc)
            return False
        tf_ms = self.tf_ms[tf]
        good = []
        for raw in rows or ():
            try:
                row = candle_row(raw)
            except ValueError as exc:
                self.reject(exc, raw)
                continue
            if row[0] >= since_ms and row[0] + tf_ms <= closed_by_ms:  # REST adds the forming one
                good.append(row)
        for row in sorted(good, key=lambda r: r[0]):
            if row[0] > self.last_ts.get((symbol, tf), -1):
                self._forward(symbol, tf, row)
                self.backfilled += 1
        return True

    def _forward(self, symbol: str, tf: str, row: list) -> None:
        self.last_ts[(symbol, tf)] = row[0]
        self.forward(symbol, tf, row)


class ExchangeStream:
    """One exchange's market data over one reconnecting websocket; subclasses fill the hooks.

    Callbacks run on the event loop running ``run``; an exception raised by one ends ``run``.
    """

    name = "exchange"  # in logs
    close_timeout_s = 2.0  # how long to wait for the server's close frame

    def __init__(
        self,
        url: str,
        *,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
        ws_ping_interval_s: float | None = 20.0,
        ws_ping_timeout_s: float | None = 20.0,
        keepalive_s: float | None = None,
        idle_timeout_s: float | None = None,
        open_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.initial_backoff_s, self.max_backoff_s = initial_backoff_s, max_backoff_s
        self.rng = rng if rng is not None else random.Random()
        self.ws_ping_interval_s, self.ws_ping_timeout_s = ws_ping_interval_s, ws_ping_timeout_s
        self.keepalive_s, self.idle_timeout_s = keepalive_s, idle_timeout_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock
        self.connected = False
        self.session_worked = False  # the current connection delivered data (set by subclasses)
        self.reconnects = 0
        self.forced_reconnects = 0  # connections closed by ``reconnect`` (a STALLED feed)
        self.rejected = 0
        self.resyncs = 0
        self.backoff_delays: deque[float] = deque(maxlen=100)  # the delays slept, newest last
        self._last_event_ms: int | None = None  # exchange time of the newest message
        self._last_recv_s: float | None = None  # local clock when the last frame arrived
        self._anchor_recv_s: float | None = None  # local clock when _last_event_ms arrived
        self.connected_since_s: float | None = None  # local clock of the current connection
        self.local_offset_ms = 0  # exchange minus local clock (measured by the source)
        self.rejected_by_reason: Counter[str] = Counter()
        self._market_now = MonotonicMs(self._market_now_raw)
        self._rate: deque[list[int]] = deque()  # [whole second, frames] buckets
        self._lock = threading.Lock()  # health() is read from other threads
        self._ws: ClientConnection | None = None
        self.candle_gaps: CandleGaps | None = None  # set by a stream that carries candles

    # -- hooks --------------------------------------------------------------------------------

    def _connect_url(self) -> str:
        return self.url

    def _subscribe_frames(self) -> list[dict[str, Any]]:
        """JSON frames sent right after connecting (none: the URL says what to stream)."""
        return []

    def _ping_frame(self) -> dict[str, Any]:
        """The application-level ping sent every ``keepalive_s`` (when that is set)."""
        raise NotImplementedError

    def _on_connect(self) -> None:
        """A new connection: what was buffered from the last one is stale."""

    async def _fill_gaps(self) -> None:
        """After each (re)connect, before the first message: fetch what was missed while away."""
        if self.candle_gaps is not None:
            await self.candle_gaps.fill_all(self.market_now_ms())

    async def _on_message(self, raw: str | bytes) -> None:
        raise NotImplementedError

    def _resync_count(self) -> int:
        return self.resyncs

    def _health_extra(self) -> dict[str, Any]:
        return {}

    # -- public -------------------------------------------------------------------------------

    def backoff_delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff_s, initial_backoff_s * 2**attempt)] s."""
        return backoff_delay(attempt, self.initial_backoff_s, self.max_backoff_s, self.rng)

    def market_now_ms(self) -> int:
        """Exchange time now: the newest event time plus local time since it arrived (before
        any, the local clock plus ``local_offset_ms``, less a margin). Latency makes this lag
        the exchange slightly, so a candle it calls closed is closed. Never less than an
        earlier answer from exchange time: an exchange back with an older clock holds it until
        it catches up. (The stand-in before the first message is only that: the first event
        time replaces it; it lags the exchange by the margin, so that is not a step back.)"""
        if self._last_event_ms is None or self._anchor_recv_s is None:
            return int(self.clock() * 1000) + self.local_offset_ms - LOCAL_CLOCK_MARGIN_MS
        return self._market_now()

    def _market_now_raw(self) -> int:
        assert self._last_event_ms is not None and self._anchor_recv_s is not None
        return self._last_event_ms + int(max(0.0, self.clock() - self._anchor_recv_s) * 1000)

    def health(self) -> dict[str, Any]:
        """What the page and the status show about this feed."""
        now = self.clock()
        with self._lock:
            since = int(now) - RATE_WINDOW_S + 1
            buckets = [(sec, n) for sec, n in self._rate if sec >= since]
            recv = self._last_recv_s
        rate = 0.0
        if buckets:  # average over the window, or over what was seen of it so far (>= 1 s)
            span = min(float(RATE_WINDOW_S), max(1.0, now - buckets[0][0]))
            rate = sum(n for _, n in buckets) / span
        return {
            "connected": self.connected,
            "last_message_ms": self._last_event_ms,
            "message_age_s": None if recv is None else max(0.0, now - recv),
            "messages_per_s": rate,
            "reconnects": self.reconnects,
            "forced_reconnects": self.forced_reconnects,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "connected_s": None if not self.connected or self.connected_since_s is None
            else max(0.0, now - self.connected_since_s),
            "resyncs": self._resync_count(),
            **self._health_extra(),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop`` is set, reconnecting with capped, fully jittered backoff."""
        attempt = 0
        while not stop.is_set():
            self.session_worked = False
            try:
                await self._session(stop)
            except InvalidURI:
                raise  # a configuration error: retrying cannot fix it
            except (OSError, WebSocketException) as exc:  # refused, timed out, dropped, status
                log.warning("%s stream: connection failed: %r", self.name, exc)
            finally:
                self.connected = False
            if stop.is_set():
                break
            if self.session_worked:
                attempt = 0  # the connection worked; start the backoff over
            delay = self.backoff_delay(attempt)
            attempt += 1
            self.reconnects += 1
            self.backoff_delays.append(delay)
            log.info("%s stream: reconnecting in %.3f s (reconnect #%d)", self.name, delay,
                     self.reconnects)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def reconnect(self, reason: str) -> bool:
        """Close the current connection so that ``run`` opens a new one (and fills the gap):
        for a feed that is connected yet delivers nothing usable. False if not connected."""
        ws = self._ws
        if ws is None:
            return False
        self.forced_reconnects += 1
        log.warning("%s stream: reconnecting: %s", self.name, reason)
        await ws.close()
        return True

    async def send(self, *frames: dict[str, Any]) -> None:
        """Send JSON frames on the current connection."""
        assert self._ws is not None, "not connected"
        for frame in frames:
            await self._ws.send(json.dumps(frame))

    # -- connection ---------------------------------------------------------------------------

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection, until ``stop`` is set (returns) or the connection ends."""
        async with connect(self._connect_url(), ping_interval=self.ws_ping_interval_s,
                           ping_timeout=self.ws_ping_timeout_s, open_timeout=self.open_timeout_s,
                           close_timeout=self.close_timeout_s) as ws:
            self._ws = ws
            self.connected = True
            self.connected_since_s = self.clock()
            log.info("%s stream: connected", self.name)
            self._on_connect()
            await self.send(*self._subscribe_frames())
            tasks = [asyncio.create_task(self._read(ws)), asyncio.create_task(stop.wait())]
            if self.keepalive_s:
                tasks.append(asyncio.create_task(self._keepalive(self.keepalive_s)))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._ws = None
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _keepalive(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.send(self._ping_frame())

    async def _read(self, ws: ClientConnection) -> None:
        await self._fill_gaps()
        idle = self.idle_timeout_s
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + idle if idle else None) as deadline:
                async for raw in ws:  # ends when the connection closes normally
                    if idle:
                        deadline.reschedule(loop.time() + idle)
                    self._arrived()
                    await self._on_message(raw)
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(f"no message for {idle} s") from None
            raise

    # -- counters -----------------------------------------------------------------------------

    def _arrived(self) -> None:
        """A frame arrived: count it (one clock call per frame)."""
        now = self.clock()
        sec = int(now)
        with self._lock:
            if self._rate and self._rate[-1][0] == sec:
                self._rate[-1][1] += 1
            else:
                self._rate.append([sec, 1])
            while self._rate[0][0] <= sec - RATE_WINDOW_S:
                self._rate.popleft()
            self._last_recv_s = now

    def _event_at(self, event_ms: int) -> None:
        """The exchange's time of a message just taken (market time, UTC ms)."""
        if self._last_event_ms is None or event_ms > self._last_event_ms:
            self._last_event_ms = event_ms
            self._anchor_recv_s = self._last_recv_s  # older events do not move the anchor

    def _reject(self, why: Any, raw: Any = None) -> None:
        """Count a message that cannot be used, by reason (a BadMessage's, else "malformed");
        log the first few, then every 1000th."""
        self.rejected += 1
        self.rejected_by_reason[getattr(why, "reason", "malformed")] += 1
        if self.rejected <= _LOG_FIRST or self.rejected % 1000 == 0:
            log.warning("%s stream: rejected message #%d: %s%s", self.name, self.rejected, why,
                        "" if raw is None else f": {str(raw)[:200]}")
