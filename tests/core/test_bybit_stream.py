"""Tests for core.market.bybit_stream: the book rules by hand, then the stream against a local
websockets server that speaks Bybit's v5 public format (127.0.0.1 only, each test bounded)."""

import asyncio
import contextlib
import json
import random
import socket

import numpy as np
import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from core.market.books import BookMessageError, BookSequenceError, BybitBook
from core.market.bybit_stream import BybitStream, bybit_id
from core.market.wire import backoff_delay

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
ETH, BTC = "orderbook.50.ETHUSDT", "orderbook.50.BTCUSDT"


def book_msg(kind, u, bids, asks, ts=T0, topic=ETH, symbol="ETHUSDT"):
    """A Bybit v5 orderbook message; levels as strings, the way Bybit sends them."""
    def levels(side):
        return [[str(p), str(s)] for p, s in side]

    data = {"s": symbol, "b": levels(bids), "a": levels(asks), "u": u, "seq": 1000 + int(u)}
    return {"topic": topic, "type": kind, "ts": ts, "data": data, "cts": ts - 5}


SNAPSHOT = book_msg("snapshot", 100, [(2000.0, 1), (1999.5, 2), (1999.0, 3)],
                    [(2000.5, 1), (2001.0, 2), (2001.5, 3)])


# ---- BybitBook ------------------------------------------------------------------------------


def test_snapshot_then_deltas_update_insert_delete():
    book = BybitBook("ETHUSDT")
    assert book.apply(SNAPSHOT) and book.ready
    # Delete the best bid (size "0"), change the best ask's size, insert a new ask level.
    assert book.apply(book_msg("delta", 101, [(2000.0, 0)], [(2000.5, 4), (2000.8, 0.5)]))
    bids, asks = book.top(2)
    np.testing.assert_allclose(bids, [[1999.5, 2], [1999.0, 3]])
    np.testing.assert_allclose(asks, [[2000.5, 4], [2000.8, 0.5]])
    # Deleting a level the book does not have is harmless; u need not be consecutive.
    assert book.apply(book_msg("delta", 105, [(1990.0, 0)], []))
    assert (book.update_id, book.seq, book.ts) == (105, 1105, T0)
    assert len(book.bids) == 2 and len(book.asks) == 4


def test_delta_before_snapshot_is_ignored():
    book = BybitBook("ETHUSDT")
    assert book.apply(book_msg("delta", 5, [(2000.0, 1)], [(2001.0, 1)])) is False
    assert not book.ready and not book.bids


def test_new_snapshot_and_u_of_1_reset_the_book():
    book = BybitBook("ETHUSDT")
    book.apply(SNAPSHOT)
    book.apply(book_msg("snapshot", 200, [(1990.0, 1)], [(1991.0, 1)]))
    assert book.bids == {1990.0: 1.0} and book.asks == {1991.0: 1.0}
    # u = 1: Bybit restarted its service; the message replaces the book even if marked delta.
    book.apply(book_msg("delta", 1, [(1980.0, 2)], [(1981.0, 2)]))
    assert book.bids == {1980.0: 2.0} and book.asks == {1981.0: 2.0} and book.update_id == 1


def test_update_id_going_back_is_a_sequence_error_and_resets():
    book = BybitBook("ETHUSDT")
    book.apply(SNAPSHOT)
    with pytest.raises(BookSequenceError, match="u=100 after u=100"):
        book.apply(book_msg("delta", 100, [(1999.0, 5)], []))
    assert not book.ready and not book.bids  # waits for a fresh snapshot


def test_crossed_book_is_a_sequence_error():
    book = BybitBook("ETHUSDT")
    book.apply(SNAPSHOT)
    with pytest.raises(BookSequenceError, match="crossed"):
        book.apply(book_msg("delta", 101, [(2000.5, 1)], []))  # bid at the best ask
    assert not book.ready


@pytest.mark.parametrize("msg", [
    {"topic": ETH, "type": "delta", "ts": T0},  # no data
    book_msg("delta", "101", [], []),  # u as a string
    book_msg("delta", 101, [("abc", 1)], []),
    book_msg("delta", 101, [(2000.0, -1)], []),
    book_msg("delta", 101, [], [], symbol="BTCUSDT"),
    {**book_msg("delta", 101, [], []), "type": "update"},
])
def test_malformed_message_leaves_the_book_alone(msg):
    book = BybitBook("ETHUSDT")
    book.apply(SNAPSHOT)
    before = (dict(book.bids), dict(book.asks), book.update_id)
    with pytest.raises(BookMessageError):
        book.apply(msg)
    assert (book.bids, book.asks, book.update_id) == before


def test_book_keeps_only_depth_levels():
    book = BybitBook("ETHUSDT", depth=2)
    book.apply(SNAPSHOT)
    assert sorted(book.bids) == [1999.5, 2000.0] and sorted(book.asks) == [2000.5, 2001.0]


def test_backoff_is_full_jitter_capped():
    rng = random.Random(0)
    for attempt, cap in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0), (500, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= cap
        assert max(delays) > cap / 2  # spread over the whole range, not clustered at 0


def test_bybit_id():
    assert bybit_id("ETH/USDT") == "ETHUSDT"
    assert bybit_id("BTC/USDT:USDT") == "BTCUSDT"
    assert bybit_id("ETHUSDT") == "ETHUSDT"


def test_health_rate_and_age_with_a_fake_clock():
    now = [1000.0]
    calls = []
    stream = BybitStream(["ETH/USDT"], clock=lambda: now[0],
                         on_book=lambda *args: calls.append(args))
    for raw in (json.dumps(SNAPSHOT), "[1, 2]", json.dumps({"success": True, "op": "ping",
                                                            "ret_msg": "pong"})):
        stream._arrived()  # what the reader does for every frame
        stream._handle(raw)
    now[0] += 2.0
    h = stream.health()
    assert h["messages_per_s"] == pytest.approx(3 / 2.0)  # 3 frames over the 2 s seen so far
    assert h["message_age_s"] == pytest.approx(2.0)
    assert h["last_message_ms"] == T0  # market time of the snapshot, not the local clock
    assert (h["rejected"], stream.last_pong_ms, len(calls)) == (1, 1_000_000, 1)
    now[0] += 120.0  # everything has left the 60 s window
    assert stream.health()["messages_per_s"] == 0.0


# ---- stream against a local server ----------------------------------------------------------


class FakeBybit:
    """Bybit v5 public websocket, scripted: acks subscribe/unsubscribe, answers pings (unless
    ``pong`` is False) and calls ``on_subscribe(conn, ws, topics)`` after each subscribe."""

    def __init__(self, on_subscribe=None, pong=True, refuse=False):
        self.on_subscribe = on_subscribe
        self.pong = pong
        self.refuse = refuse
        self.received = []  # (connection number, message) for every client message
        self.connections = 0
        self.sockets = []  # server side of each connection, in order

    def ops(self, conn=None):
        return [m["op"] for c, m in self.received if conn in (None, c) and m["op"] != "ping"]

    def pings(self, conn):
        return [m for c, m in self.received if c == conn and m["op"] == "ping"]

    async def handler(self, ws):
        self.connections += 1
        self.sockets.append(ws)
        conn = self.connections
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                msg = json.loads(raw)
                self.received.append((conn, msg))
                if msg["op"] == "ping" and self.pong:
                    await ws.send(json.dumps({"success": True, "ret_msg": "pong",
                                              "conn_id": "c1", "req_id": "", "op": "ping"}))
                elif msg["op"] in ("subscribe", "unsubscribe"):
                    ret = "error:handler not found" if self.refuse else ""
                    await ws.send(json.dumps({"success": not self.refuse, "ret_msg": ret,
                                              "conn_id": "c1", "req_id": msg.get("req_id", ""),
                                              "op": msg["op"]}))
                    if msg["op"] == "subscribe" and self.on_subscribe and not self.refuse:
                        await self.on_subscribe(conn, ws, msg["args"])


async def run_against(server, stream, stop, timeout=5.0):
    """Serve ``server`` on a free local port, point ``stream`` at it, run until ``stop``."""
    async with serve(server.handler, "127.0.0.1", 0) as srv:
        stream.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        await asyncio.wait_for(stream.run(stop), timeout)


def recorder(stop, until):
    """on_book that records calls (with the stream's health) and sets ``stop`` when ``until``."""
    calls = []

    def on_book(exchange, symbol, ts, bids, asks):
        calls.append((exchange, symbol, ts, bids.copy(), asks.copy()))
        if until(calls):
            stop.set()

    return calls, on_book


async def two_sessions(conn, ws, topics):
    """The first connection: a snapshot, two deltas and a bad frame; later ones a new book."""
    if conn == 1:
        await ws.send(json.dumps(SNAPSHOT))
        await ws.send(json.dumps(book_msg("delta", 101, [(2000.0, 0)], [(2000.5, 4)],
                                          ts=T0 + 20)))
        await ws.send(json.dumps(book_msg("delta", 102, [(2000.2, 0.7)], [], ts=T0 + 40)))
        await ws.send("{not json")
    else:  # after the drop: a fresh snapshot with other prices
        await ws.send(json.dumps(book_msg("snapshot", 1, [(2100.0, 1)], [(2101.0, 1)],
                                          ts=T0 + 5000)))


def test_stream_end_to_end_with_drop_and_reconnect():
    async def main():
        stop = asyncio.Event()
        calls, on_book = recorder(stop, lambda c: c[-1][3][0, 0] == 2100.0)
        server = FakeBybit(two_sessions)
        stream = BybitStream(["ETH/USDT"], on_book=on_book, book_levels=2,
                             initial_backoff_s=0.01, max_backoff_s=0.05, rng=random.Random(0),
                             ping_interval_s=0.05, idle_timeout_s=2.0)
        health_connected = []

        async def drop_after_two_pings():
            while len(server.pings(1)) < 2 or len(calls) < 3:
                await asyncio.sleep(0.01)
            health_connected.append(stream.health())
            await server.sockets[0].close()  # the server drops the client

        dropper = asyncio.create_task(drop_after_two_pings())
        await run_against(server, stream, stop)
        await dropper
        return server, stream, calls, health_connected[0]

    server, stream, calls, live = asyncio.run(main())

    # Subscribed on both connections, with Bybit's topic name for the unified symbol.
    subs = [m for _, m in server.received if m["op"] == "subscribe"]
    assert [m["args"] for m in subs] == [[ETH], [ETH]]
    assert server.connections == 2
    assert server.pings(1)[0]["op"] == "ping"

    # on_book: exchange, unified symbol, message ts, top 2 levels after each message.
    assert [c[:3] for c in calls] == [("bybit", "ETH/USDT", T0), ("bybit", "ETH/USDT", T0 + 20),
                                      ("bybit", "ETH/USDT", T0 + 40),
                                      ("bybit", "ETH/USDT", T0 + 5000)]
    np.testing.assert_allclose(calls[0][3], [[2000.0, 1], [1999.5, 2]])
    np.testing.assert_allclose(calls[0][4], [[2000.5, 1], [2001.0, 2]])
    np.testing.assert_allclose(calls[1][3], [[1999.5, 2], [1999.0, 3]])  # best bid deleted
    np.testing.assert_allclose(calls[1][4], [[2000.5, 4], [2001.0, 2]])  # size replaced
    np.testing.assert_allclose(calls[2][3], [[2000.2, 0.7], [1999.5, 2]])  # new best bid
    np.testing.assert_allclose(calls[3][3], [[2100.0, 1]])  # new connection: new book only

    assert live["connected"] is True and live["messages_per_s"] > 0
    assert live["message_age_s"] < 1.0
    assert live["last_message_ms"] == T0 + 40  # market time of the newest book message
    assert stream.last_pong_ms is not None
    h = stream.health()
    assert (h["connected"], h["reconnects"], h["rejected"], h["resyncs"]) == (False, 1, 1, 0)
    assert set(h) == {"connected", "last_message_ms", "message_age_s", "messages_per_s",
                      "reconnects", "forced_reconnects", "rejected", "resyncs", "rejected_by_reason", "connected_s"}
    assert h["rejected_by_reason"] == {"not_json": 1}


def test_stream_resubscribes_a_topic_whose_update_id_goes_back():
    async def main():
        stop = asyncio.Event()
        calls, on_book = recorder(stop, lambda c: c[-1][3][0, 0] == 2200.0)

        async def on_subscribe(conn, ws, topics):
            if topics == [ETH, BTC]:  # the first subscription: both symbols in one request
                await ws.send(json.dumps(book_msg("snapshot", 10, [(50000, 1)], [(50001, 1)],
                                                  topic=BTC, symbol="BTCUSDT")))
                await ws.send(json.dumps(book_msg("snapshot", 10, [(2000, 1)], [(2001, 1)])))
                await ws.send(json.dumps(book_msg("delta", 11, [(2000, 2)], [])))
                await ws.send(json.dumps(book_msg("delta", 11, [(2000, 3)], [])))  # u repeats
            else:  # the resubscription: a fresh snapshot
                await ws.send(json.dumps(book_msg("snapshot", 50, [(2200, 1)], [(2201, 1)])))

        server = FakeBybit(on_subscribe)
        stream = BybitStream(["ETH/USDT", "BTC/USDT"], on_book=on_book, initial_backoff_s=0.01,
                             ping_interval_s=1.0)
        await run_against(server, stream, stop)
        return server, stream, calls

    server, stream, calls = asyncio.run(main())
    assert server.connections == 1 and stream.reconnects == 0
    assert stream.resyncs == 1 and stream.rejected == 0
    assert server.ops() == ["subscribe", "unsubscribe", "subscribe"]
    assert [m["args"] for _, m in server.received if m["op"] != "ping"] == [[ETH, BTC], [ETH],
                                                                            [ETH]]
    # BTC, ETH snapshot, ETH delta u=11, then (the repeated u=11 dropped) the new ETH snapshot.
    assert [(c[1], c[3][0, 0]) for c in calls] == [("BTC/USDT", 50000), ("ETH/USDT", 2000),
                                                   ("ETH/USDT", 2000), ("ETH/USDT", 2200)]
    assert calls[2][3][0, 1] == 2  # the delta applied; the repeat (size 3) never was


def test_silent_connection_times_out_and_refused_subscribe_is_rejected():
    async def main():
        stop = asyncio.Event()
        server = FakeBybit(pong=False, refuse=True)  # acks with success false, never pongs
        stream = BybitStream(["ETH/USDT"], initial_backoff_s=0.01, max_backoff_s=0.02,
                             rng=random.Random(1), ping_interval_s=0.05, idle_timeout_s=0.2)

        async def stop_after_two_connections():
            while server.connections < 2:
                await asyncio.sleep(0.01)
            stop.set()

        stopper = asyncio.create_task(stop_after_two_connections())
        await run_against(server, stream, stop)
        await stopper
        return server, stream

    server, stream = asyncio.run(main())
    assert stream.reconnects >= 1  # the idle timeout ended the first connection
    assert stream.rejected >= 1  # the refused subscribe
    assert len(server.pings(1)) >= 2  # the client kept pinging into the silence


def test_connection_refused_retries_with_backoff_until_stopped():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        stop = asyncio.Event()
        stream = BybitStream(["ETH/USDT"], url=f"ws://127.0.0.1:{port}", initial_backoff_s=0.01,
                             max_backoff_s=0.02, rng=random.Random(2), open_timeout_s=1.0)
        task = asyncio.create_task(stream.run(stop))
        while stream.reconnects < 3:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 2.0)
        return stream

    stream = asyncio.run(asyncio.wait_for(main(), 5.0))
    h = stream.health()
    assert h["connected"] is False and h["last_message_ms"] is None and h["message_age_s"] is None
    assert h["reconnects"] >= 3
