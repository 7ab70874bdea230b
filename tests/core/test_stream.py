"""The exchange-stream base (core.market.stream): backoff, health, log throttling, keepalive and
idle timeout, the gap-fill hook and candle gaps, and a reconnect after a dropped socket for both
exchange streams, each against a local websockets server on 127.0.0.1 (bounded in time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from core.market.binance_stream import BinanceStream
from core.market.bybit_stream import BybitStream
from core.market.stream import CandleGaps, ExchangeStream
from core.market.wire import backoff_delay
from tests.core.fake_binance_ws import FakeBinance, kline_msg, trade_msg

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


# -- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt, cap", [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0),
                                          (60, 10.0), (10_000, 10.0)])
def test_backoff_jitter_stays_within_zero_and_the_capped_doubling(attempt, cap):
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(500)]
    assert min(delays) >= 0.0 and max(delays) <= cap
    # Full jitter: spread over the whole range (500 uniform draws: both tails are hit).
    assert min(delays) < 0.1 * cap and max(delays) > 0.9 * cap


def test_stream_backoff_uses_its_own_rng_and_bounds():
    stream = ExchangeStream("ws://unused", initial_backoff_s=0.25, max_backoff_s=1.0,
                            rng=random.Random(7))
    expected = random.Random(7)
    caps = [0.25, 0.5, 1.0, 1.0]
    assert [stream.backoff_delay(a) for a in range(4)] == [expected.uniform(0.0, c) for c in caps]


# -- health, market time and rejections (no connection) ---------------------------------------


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_health_counts_frames_per_second_over_the_last_minute():
    clock = Clock(500.5)
    stream = ExchangeStream("ws://unused", clock=clock)
    assert stream.health() == {
        "connected": False, "last_message_ms": None, "message_age_s": None,
        "messages_per_s": 0.0, "reconnects": 0, "forced_reconnects": 0, "rejected": 0, "resyncs": 0,
        "rejected_by_reason": {}, "connected_s": None}
    assert stream.market_now_ms() == 500_500 - 1000  # no exchange time yet: local - margin
    for _ in range(4):
        stream._arrived()
    stream._event_at(T0)
    stream._event_at(T0 - 5)  # an older event never moves exchange time back
    clock.t = 504.5
    h = stream.health()
    assert h["messages_per_s"] == pytest.approx(4 / 4.5)  # 4 frames over the 4.5 s seen
    assert h["message_age_s"] == pytest.approx(4.0) and h["last_message_ms"] == T0
    assert stream.market_now_ms() == T0 + 4000  # exchange time plus local time since
    clock.t = 600.0
    assert stream.health()["messages_per_s"] == 0.0  # out of the 60 s window


def test_market_time_never_runs_back_when_older_events_arrive():
    """An exchange back with an older clock: its events arrive later than the newest one seen;
    they neither move market time back nor restart its count from the older time."""
    clock = Clock(100.0)
    stream = ExchangeStream("ws://unused", clock=clock)
    stream.local_offset_ms = -3_600_000  # the exchange's clock, measured, before any message
    assert stream.market_now_ms() == 100_000 - 3_600_000 - 1000
    stream._arrived()
    stream._event_at(T0)
    clock.t = 103.0
    assert stream.market_now_ms() == T0 + 3000
    stream._arrived()  # the restarted exchange's first message, 2 s older than T0
    stream._event_at(T0 - 2000)
    assert stream.market_now_ms() == T0 + 3000  # not T0 - 2000, not T0
    clock.t = 104.0
    assert stream.market_now_ms() == T0 + 4000  # still counting from the newest event
    stream._arrived()
    stream._event_at(T0 + 3500)  # newer, but behind what was already said: held there
    assert stream.market_now_ms() == T0 + 4000
    clock.t = 105.0
    assert stream.market_now_ms() == T0 + 4500


def test_rejections_are_counted_and_their_logging_throttled(caplog):
    stream = ExchangeStream("ws://unused")
    stream.name = "test"
    with caplog.at_level(logging.WARNING, logger="core.market.stream"):
        for i in range(2000):
            stream._reject(ValueError(f"bad {i}"), "x" * 500)
    logged = [r.getMessage() for r in caplog.records]
    # The first five, then every 1000th: 1000 and 2000.
    assert len(logged) == 7 and stream.rejected == 2000
    assert logged[0] == "test stream: rejected message #1: bad 0: " + "x" * 200
    assert logged[-1].startswith("test stream: rejected message #2000: bad 1999")


# -- the base's connection against a local server ---------------------------------------------


class Probe(ExchangeStream):
    """The smallest subclass: subscribes, pings, records what the hooks see."""

    name = "probe"

    def __init__(self, url: str, **kw):
        super().__init__(url, **kw)
        self.events: list[tuple] = []

    def _subscribe_frames(self):
        return [{"op": "sub", "n": 1}, {"op": "sub", "n": 2}]

    def _ping_frame(self):
        return {"op": "ping"}

    def _on_connect(self):
        self.events.append(("connect",))

    async def _fill_gaps(self):
        self.events.append(("fill", self.connected))

    async def _on_message(self, raw):
        self.session_worked = True
        self.events.append(("message", raw))


async def serve_script(handler, run, timeout=5.0):
    """Serve ``handler`` on a free local port and await ``run(url)``."""
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        return await asyncio.wait_for(run(url), timeout)


def test_subscribe_keepalive_idle_timeout_and_the_gap_fill_hook():
    received: list[tuple[int, dict]] = []
    connections = []

    async def handler(ws):  # says "hello" once, then only listens: the client must time out
        connections.append(ws)
        n = len(connections)
        await ws.send("hello")
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                received.append((n, json.loads(raw)))

    async def run(url):
        stream = Probe(url, keepalive_s=0.02, idle_timeout_s=0.15, initial_backoff_s=0.01,
                       max_backoff_s=0.01, rng=random.Random(0))
        stop = asyncio.Event()
        task = asyncio.create_task(stream.run(stop))
        while sum(e[0] == "message" for e in stream.events) < 2:  # "hello" on both
            await asyncio.sleep(0.01)
        stop.set()
        await task
        return stream

    stream = asyncio.run(serve_script(handler, run))
    first = [m for n, m in received if n == 1]
    assert first[:2] == [{"op": "sub", "n": 1}, {"op": "sub", "n": 2}]  # subscribed first
    assert first[2:] and all(m == {"op": "ping"} for m in first[2:])  # then pinged
    assert len(first[2:]) >= 3  # every 0.02 s until 0.15 s of silence ended the connection
    # Each connection: reset, then the gap-fill hook (connected), then the messages.
    assert stream.events == 2 * [("connect",), ("fill", True), ("message", "hello")]
    assert len(connections) == 2
    assert stream.reconnects == 1 and stream.health()["connected"] is False


# -- candle gaps ------------------------------------------------------------------------------


def test_candle_gaps_fill_from_backfill_in_order_without_repeats():
    forwarded, asked = [], []

    def backfill(symbol, tf, since, until):
        asked.append((since, until))
        # Like REST: out of order, a bad row, and the still-forming candle at the end.
        return [[T0 + 3000, 1, 1, 1, 1, 1], [T0 + 2000, 1, 1, 1, 1, 1], ["bad"],
                [T0 + 4000, 1, 1, 1, 1, 1]]

    rejected = []
    gaps = CandleGaps({"1s": 1000}, backfill, lambda s, tf, row: forwarded.append(row[0]),
                      (OSError,), lambda exc, raw: rejected.append(raw))

    async def main():
        await gaps.closed("ETH/USDT", "1s", [T0 + 1000, 1, 1, 1, 1, 1])
        await gaps.closed("ETH/USDT", "1s", [T0 + 1000, 1, 1, 1, 1, 1])  # a repeat: skipped
        await gaps.closed("ETH/USDT", "1s", [T0 + 4000, 1, 1, 1, 1, 1])  # 2 and 3 missing
        await gaps.fill_all(T0 + 5500)  # a reconnect before candle 5 closed: nothing to do

    asyncio.run(main())
    assert forwarded == [T0 + 1000, T0 + 2000, T0 + 3000, T0 + 4000]
    assert asked == [(T0 + 2000, T0 + 3999)] and rejected == [["bad"]]
    assert gaps.backfilled == 2 and gaps.errors == 0


# -- a dropped socket, for each exchange stream -----------------------------------------------


def test_binance_reconnects_after_a_dropped_socket():
    sid = "ETHUSDT"
    closed = [("send", kline_msg(sid, "1s", 1000, T0 + i * 1000, (1, 2, 0.5, 1.5, 1), True))
              for i in range(2)]
    sessions = [[closed[0], ("send", trade_msg(sid, T0 + 1500, 1.5, 0.1, True)), ("drop",)],
                [closed[1]]]
    candles, trades = [], []

    async def main():
        async with FakeBinance(sessions) as fake:
            stream = BinanceStream(["ETH/USDT"], timeframes=("1s",), url=fake.url,
                                   backfill=lambda *a: [], initial_backoff_s=0.01,
                                   max_backoff_s=0.02, rng=random.Random(3),
                                   on_candle=lambda *a: candles.append(a),
                                   on_trade=lambda *a: trades.append(a))
            stop = asyncio.Event()
            task = asyncio.create_task(stream.run(stop))
            async with asyncio.timeout(5):
                while len(candles) < 2:
                    await asyncio.sleep(0.005)
            health = stream.health()
            stop.set()
            await asyncio.wait_for(task, 3)
            return fake, stream, health

    fake, stream, live = asyncio.run(main())
    assert len(fake.paths) == 2 and fake.paths[0] == fake.paths[1]  # the same subscription
    assert [c[2][0] for c in candles] == [T0, T0 + 1000] and len(trades) == 1
    assert live["connected"] is True and live["reconnects"] == 1
    assert list(stream.backoff_delays) == [random.Random(3).uniform(0.0, 0.01)]  # attempt 0
    assert stream.health()["connected"] is False


def bybit_snapshot(ts, bid):
    data = {"s": "ETHUSDT", "b": [[str(bid), "1"]], "a": [[str(bid + 1), "1"]], "u": 10,
            "seq": 1}
    return json.dumps({"topic": "orderbook.50.ETHUSDT", "type": "snapshot", "ts": ts,
                       "data": data})


def test_bybit_reconnects_after_a_dropped_socket():
    subscribes: list[int] = []

    async def handler(ws):  # a book, then the TCP connection is cut (no close frame)
        n = len(subscribes) + 1
        async for raw in ws:
            if json.loads(raw)["op"] == "subscribe":
                subscribes.append(n)
                await ws.send(bybit_snapshot(T0 + n, 2000.0 + n))
                if n == 1:
                    ws.transport.abort()
                    return

    async def run(url):
        books = []
        stream = BybitStream(["ETH/USDT"], url=url, initial_backoff_s=0.01, max_backoff_s=0.02,
                             rng=random.Random(4), ping_interval_s=1.0,
                             on_book=lambda *a: books.append(a))
        stop = asyncio.Event()
        task = asyncio.create_task(stream.run(stop))
        while len(books) < 2:
            await asyncio.sleep(0.005)
        live = stream.health()
        stop.set()
        await task
        return stream, books, live

    stream, books, live = asyncio.run(serve_script(handler, run))
    assert subscribes == [1, 2]  # subscribed again on the new connection
    assert [(b[0], b[1], b[2], b[3][0, 0]) for b in books] == [
        ("bybit", "ETH/USDT", T0 + 1, 2001.0), ("bybit", "ETH/USDT", T0 + 2, 2002.0)]
    assert live["connected"] is True and live["reconnects"] == 1
    assert live["last_message_ms"] == T0 + 2
    assert list(stream.backoff_delays) == [random.Random(4).uniform(0.0, 0.01)]  # attempt 0
