"""Binance stream: parsers and the local book by hand, then the whole client against a local
websockets server speaking Binance's combined-stream format (tests/core/fake_binance_ws.py)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Callable

import pytest

from core.market.binance_stream import (
    BinanceStream,
    DepthBook,
    DepthDiff,
    exchange_symbol,
    parse_depth,
    parse_kline,
    parse_trade,
    stream_names,
    symbol_map,
)
from tests.core.fake_binance_ws import FakeBinance, depth_msg, kline_msg, trade_msg

SYM, SID = "ETH/USDT", "ETHUSDT"
IDS = {SID: SYM}
T0 = 1_700_000_040_000  # a whole minute, UTC ms


# -- pure helpers ---------------------------------------------------------------------------


def test_stream_names_and_symbols():
    assert stream_names(["ETH/USDT", "BTC/USDT"], ["1s", "1m"]) == [
        "ethusdt@kline_1s", "ethusdt@kline_1m", "ethusdt@trade", "ethusdt@depth@100ms",
        "btcusdt@kline_1s", "btcusdt@kline_1m", "btcusdt@trade", "btcusdt@depth@100ms"]
    assert stream_names([SYM], ["1m"], depth=False) == ["ethusdt@kline_1m", "ethusdt@trade"]
    assert symbol_map(["ETH/USDT", "btc/usdt"]) == {"ETHUSDT": "ETH/USDT", "BTCUSDT": "btc/usdt"}
    for bad in ("ETHUSDT", "BTC/USDT:USDT", "/USDT"):
        with pytest.raises(ValueError, match="not a spot symbol"):
            exchange_symbol(bad)


def test_parse_kline_closed_and_forming():
    closed = kline_msg(SID, "1m", 60_000, T0, (10.0, 12.5, 9.0, 11.0, 5.25), closed=True)
    assert parse_kline(closed, IDS) == (SYM, "1m", [T0, 10.0, 12.5, 9.0, 11.0, 5.25], True)
    assert parse_kline(closed["data"], IDS) == parse_kline(closed, IDS)  # raw payload too
    forming = kline_msg(SID, "1s", 1000, T0, (10.0, 10.0, 10.0, 10.0, 0.0), closed=False)
    assert parse_kline(forming, IDS) == (SYM, "1s", [T0, 10.0, 10.0, 10.0, 10.0, 0.0], False)


def test_parse_trade_side_from_maker_flag():
    # m=True: the buyer was the maker, so the taker sold.
    assert parse_trade(trade_msg(SID, T0 + 5, 2000.5, 0.25, True), IDS) == (
        SYM, T0 + 5, 2000.5, 0.25, "sell")
    assert parse_trade(trade_msg(SID, T0 + 6, 2001.0, 1.0, False), IDS)[4] == "buy"


def _mutated(msg: dict, path: tuple, value: object) -> dict:
    msg = json.loads(json.dumps(msg))
    node = msg
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return msg


KLINE = kline_msg(SID, "1m", 60_000, T0, (10.0, 12.0, 9.0, 11.0, 5.0), closed=True)
TRADE = trade_msg(SID, T0, 10.0, 1.0, True)


@pytest.mark.parametrize("msg, parser, match", [
    (_mutated(KLINE, ("data", "k"), KeyError), parse_kline, "no field 'k'"),
    (_mutated(KLINE, ("data", "k", "o"), "abc"), parse_kline, "'o' is not a number"),
    (_mutated(KLINE, ("data", "k", "c"), "NaN"), parse_kline, "not a finite number"),
    (_mutated(KLINE, ("data", "k", "s"), "DOGEUSDT"), parse_kline, "unknown symbol"),
    (_mutated(KLINE, ("data", "k", "x"), "true"), parse_kline, "wrong type"),
    (_mutated(KLINE, ("data", "k", "t"), 1.5), parse_kline, "whole milliseconds"),
    (_mutated(KLINE, ("data", "e"), "trade"), parse_kline, "expected a 'kline' event"),
    (_mutated(TRADE, ("data", "m"), 1), parse_trade, "'m' is not a boolean"),
    (_mutated(TRADE, ("data", "p"), "0"), parse_trade, "price > 0"),
    (_mutated(TRADE, ("data", "T"), KeyError), parse_trade, "no field 'T'"),
    ([1, 2], parse_trade, "JSON object"),
    (depth_msg(SID, T0, 5, 4, [], []), parse_depth, "U 5 > u 4"),
    (depth_msg(SID, T0, 1, 2, [[1.0]], []), parse_depth, "not \\[price, size\\]"),
    (depth_msg(SID, T0, 1, 2, [], [[1.0, -2.0]]), parse_depth, "size >= 0"),
])
def test_malformed_messages_raise_value_error(msg, parser, match):
    with pytest.raises(ValueError, match=match):
        parser(msg, IDS)


# -- DepthBook by hand ----------------------------------------------------------------------


def diff(first: int, final: int, bids=(), asks=(), event_ms: int = T0) -> DepthDiff:
    return DepthDiff(SYM, event_ms, first, final, [tuple(x) for x in bids],
                     [tuple(x) for x in asks])


SNAPSHOT = {"bids": [["100.0", "1"], ["99.0", "2"]], "asks": [["101.0", "1"], ["102.0", "3"]],
            "nonce": 100}


def test_depth_book_buffers_drops_stale_and_bridges():
    book = DepthBook(SYM)
    assert book.apply(diff(95, 98, bids=[(100.0, 5.0)])) is False  # no snapshot yet: buffered
    assert book.apply(diff(99, 101, bids=[(100.0, 0.0)], asks=[(101.0, 2.0)],
                           event_ms=T0 + 7)) is False
    assert (book.needs_snapshot, book.buffered) == (True, 2)

    assert book.apply_snapshot(SNAPSHOT) is True
    # 95..98 is stale (u <= 100) and dropped; 99..101 bridges (U <= 101 <= u): bid 100 goes,
    # ask 101 becomes 2.
    assert book.last_update_id == 101 and book.last_event_ms == T0 + 7
    assert book.top(5) == ([[99.0, 2.0]], [[101.0, 2.0], [102.0, 3.0]])

    # Next U must be 102. Removing a level we never had (150) is normal.
    assert book.apply(diff(102, 103, bids=[(99.5, 4.0)], asks=[(102.0, 0.0), (150.0, 0.0)]))
    assert book.top(5) == ([[99.5, 4.0], [99.0, 2.0]], [[101.0, 2.0]])
    assert book.top(1) == ([[99.5, 4.0]], [[101.0, 2.0]])
    assert book.apply(diff(100, 103, bids=[(1.0, 1.0)])) is False  # already covered: stale
    assert book.last_update_id == 103 and book.resyncs == 0


def test_depth_book_gap_forces_a_new_snapshot():
    book = DepthBook(SYM)
    assert book.apply_snapshot(SNAPSHOT) and book.top(1) == ([[100.0, 1.0]], [[101.0, 1.0]])
    assert book.apply(diff(101, 102, asks=[(101.0, 0.5)]))
    assert book.apply(diff(104, 105, bids=[(100.0, 9.0)])) is False  # 103 is missing
    assert book.needs_snapshot and book.resyncs == 1 and book.buffered == 1
    assert book.top(5) == ([], [])  # nothing served from a broken book

    # A snapshot taken at 104 bridges the buffered 104..105 (U <= 105 <= u).
    fresh = {"bids": [[100.0, 3.0]], "asks": [[101.0, 0.5]], "nonce": 104}
    assert book.apply_snapshot(fresh) is True
    assert book.top(5) == ([[100.0, 9.0]], [[101.0, 0.5]]) and book.last_update_id == 105


def test_depth_book_first_event_rule():
    book = DepthBook(SYM)
    assert book.apply_snapshot(SNAPSHOT)  # nothing buffered: the next diff must bridge 101
    assert book.apply(diff(103, 104)) is False and book.needs_snapshot and book.resyncs == 1

    book = DepthBook(SYM)
    book.apply(diff(110, 112, bids=[(99.0, 7.0)]))
    # A snapshot older than the buffered diffs (101 < U=110) cannot be bridged: fetch again.
    assert book.apply_snapshot(SNAPSHOT) is False and book.needs_snapshot and book.buffered == 1
    assert book.resyncs == 0 and book.top(5) == ([], [])  # not a gap; nothing was loaded
    # One taken mid-event (111 inside 110..112) is fine: sizes are absolute.
    assert book.apply_snapshot({**SNAPSHOT, "nonce": 111}) is True
    assert book.top(5)[0] == [[100.0, 1.0], [99.0, 7.0]] and book.last_update_id == 112


def test_depth_book_rejects_malformed_snapshot():
    with pytest.raises(ValueError, match="no field 'nonce'"):
        DepthBook(SYM).apply_snapshot({"bids": [], "asks": []})


# -- a scripted exchange ----------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1000.25):
        self.t = t

    def __call__(self) -> float:
        return self.t


BOOK0 = ({100.0: 1.0, 99.5: 2.0, 99.0: 3.0}, {101.0: 1.0, 101.5: 2.0, 102.0: 3.0})  # at id 100


def make_diffs(n: int, seed: int = 7) -> list[tuple[int, int, list, list]]:
    """n contiguous diffs (U, u, bids, asks) after update id 100; bids < 101 <= asks."""
    rng = random.Random(seed)
    out, first = [], 101
    for _ in range(n):
        final = first + rng.randint(0, 2)
        bids = [[rng.choice([98.0, 98.5, 99.0, 99.5, 100.0, 100.5]),
                 rng.choice([0.0, 0.5, 1.0, 2.5])] for _ in range(rng.randint(1, 3))]
        asks = [[rng.choice([101.0, 101.5, 102.0, 102.5, 103.0]),
                 rng.choice([0.0, 0.75, 1.5])] for _ in range(rng.randint(1, 3))]
        out.append((first, final, bids, asks))
        first = final + 1
    return out


def book_at(diffs: list, update_id: int) -> tuple[dict, dict]:
    """The exchange's full book after every diff with u <= update_id."""
    bids, asks = dict(BOOK0[0]), dict(BOOK0[1])
    for _, final, b, a in diffs:
        if final > update_id:
            break
        for side, levels in ((bids, b), (asks, a)):
            for price, size in levels:
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)
    return bids, asks


def top_of(bids: dict, asks: dict, n: int = 20) -> tuple[list, list]:
    return ([[p, bids[p]] for p in sorted(bids, reverse=True)[:n]],
            [[p, asks[p]] for p in sorted(asks)[:n]])


class SnapshotOracle:
    """REST depth: the k-th call returns the exchange's book as of update id nonces[k]."""

    def __init__(self, diffs: list, nonces: list[int]):
        self.diffs, self.nonces, self.calls = diffs, nonces, []

    def __call__(self, symbol: str) -> dict:
        nonce = self.nonces[len(self.calls)]
        self.calls.append(symbol)
        bids, asks = top_of(*book_at(self.diffs, nonce), n=1000)
        return {"bids": bids, "asks": asks, "nonce": nonce}


def depth_step(diffs: list, j: int, event_ms: int) -> tuple:
    first, final, bids, asks = diffs[j]
    return ("send", depth_msg(SID, event_ms, first, final, bids, asks))


class Recorder:
    def __init__(self):
        self.candles: list[tuple] = []
        self.trades: list[tuple] = []
        self.books: list[tuple] = []

    def candle(self, symbol, tf, row, closed):
        self.candles.append((symbol, tf, row, closed))

    def trade(self, *args):
        self.trades.append(args)

    def book(self, *args):
        self.books.append(args)


def make_stream(url: str, rec: Recorder, **kw) -> BinanceStream:
    kw.setdefault("initial_backoff_s", 0.001)
    kw.setdefault("max_backoff_s", 0.004)
    return BinanceStream([SYM], url=url, on_candle=rec.candle, on_trade=rec.trade,
                         on_book=rec.book, **kw)


async def run_until(stream: BinanceStream, done: Callable[[], bool], timeout: float = 5.0):
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not done():
                if task.done():
                    task.result()
                    raise AssertionError("the stream stopped by itself")
                await asyncio.sleep(0.005)
    finally:
        stop.set()
        await asyncio.wait_for(task, 3.0)


def c1s(i: int) -> tuple[float, ...]:
    return (100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1.0 + i)  # o, h, l, c, v of candle i


def closed_1s(i: int) -> tuple:
    return ("send", kline_msg(SID, "1s", 1000, T0 + i * 1000, c1s(i), closed=True))


def forming_1s(i: int) -> tuple:
    partial = (100.0 + i, 100.2 + i, 99.9 + i, 100.1 + i, 0.5)
    return ("send", kline_msg(SID, "1s", 1000, T0 + i * 1000, partial, closed=False))


def row_1s(i: int) -> list:
    return [T0 + i * 1000, *c1s(i)]


# -- end to end -----------------------------------------------------------------------------


def test_stream_end_to_end():
    diffs = make_diffs(8)
    offsets = (0, 100, 200, 240, 300, 400, 500, 600)  # 240 is inside 100 ms of 200
    event_ms = [T0 + x for x in offsets]
    minute = ("send", kline_msg(SID, "1m", 60_000, T0 - 60_000, (9.0, 9.5, 8.5, 9.25, 70.0), True))
    script = [
        forming_1s(0), minute, closed_1s(0), depth_step(diffs, 0, event_ms[0]),
        ("send", trade_msg(SID, T0 + 10, 2000.5, 0.25, True, 1)),
        depth_step(diffs, 1, event_ms[1]), depth_step(diffs, 2, event_ms[2]),
        ("raw", "not json"),
        forming_1s(1), closed_1s(1),
        ("ping",),  # the client library answers with a pong; the connection stays
        depth_step(diffs, 3, event_ms[3]),
        ("send", trade_msg(SID, T0 + 20, 2001.0, 1.5, False, 2)),
        ("send", {"stream": "ethusdt@kline_1s", "data": {"e": "kline", "E": T0, "s": SID}}),
        ("send", {"stream": "ethusdt@aggTrade", "data": {"e": "aggTrade", "E": T0, "s": SID}}),
        depth_step(diffs, 4, event_ms[4]),
        ("sleep", 0.2),  # several client keepalive pings (every 0.05 s) go out and come back
        closed_1s(2), depth_step(diffs, 5, event_ms[5]), depth_step(diffs, 6, event_ms[6]),
        depth_step(diffs, 7, event_ms[7]), closed_1s(3), forming_1s(4), closed_1s(4),
    ]
    rec, clock = Recorder(), FakeClock(1000.25)
    seen_connected = []
    oracle = SnapshotOracle(diffs, [diffs[0][1]])  # taken right after the first diff

    async def main():
        async with FakeBinance([script]) as fake:
            stream = make_stream(fake.url, rec, snapshot=oracle, clock=clock,
                                 ping_interval_s=0.05, ping_timeout_s=1.0)
            assert stream.health() == {
                "connected": False, "last_message_ms": None, "message_age_s": None,
                "messages_per_s": 0.0, "reconnects": 0, "forced_reconnects": 0, "rejected": 0,
                "resyncs": 0,
                "backfill_errors": 0, "snapshot_errors": 0, "books_failed": {},
                "rejected_by_reason": {}, "connected_s": None}

            def done():
                if rec.trades and not seen_connected:
                    seen_connected.append(stream.health()["connected"])
                return len(rec.candles) == 6

            await run_until(stream, done)
            return fake, stream

    fake, stream = asyncio.run(main())
    assert fake.paths == ["/stream?streams=ethusdt@kline_1s/ethusdt@kline_1m/ethusdt@trade/"
                          "ethusdt@depth@100ms"]
    # Exactly the closed klines, in order; forming ones never come through.
    assert rec.candles == [(SYM, "1m", [T0 - 60_000, 9.0, 9.5, 8.5, 9.25, 70.0], True)] + [
        (SYM, "1s", row_1s(i), True) for i in range(5)]
    assert rec.trades == [(SYM, T0 + 10, 2000.5, 0.25, "sell"), (SYM, T0 + 20, 2001.0, 1.5, "buy")]

    # Books: diff 0 is covered by the snapshot; 240 falls within 100 ms of 200 and is folded
    # into the book published at 300. Each published book is the exchange's book at that time.
    assert [b[1] for b in rec.books] == [T0 + x for x in (100, 200, 300, 400, 500, 600)]
    truth = {event_ms[j]: top_of(*book_at(diffs, diffs[j][1])) for j in range(8)}
    for symbol, ts, bids, asks in rec.books:
        assert symbol == SYM and (bids, asks) == truth[ts]
    assert oracle.calls == [SYM]

    assert len(fake.pong_latencies) == 1 and len(fake.paths) == 1  # pings kept it alive
    assert seen_connected == [True]
    n = len(fake.sent)
    health = stream.health()
    assert health == {
        "connected": False, "last_message_ms": T0 + 5000,  # newest exchange event time
        "message_age_s": 0.0, "messages_per_s": n / 1.0,  # all within the first second
        "reconnects": 0, "forced_reconnects": 0, "rejected": 3, "resyncs": 0, "backfill_errors": 0,
        "snapshot_errors": 0, "books_failed": {}, "connected_s": None,
        "rejected_by_reason": {"not_json": 1, "malformed": 1, "unexpected_event": 1}}
    clock.t = 1030.25
    health = stream.health()
    assert health["message_age_s"] == pytest.approx(30.0)
    assert health["messages_per_s"] == pytest.approx(n / 30.25)  # seen over 30.25 s so far
    clock.t = 1100.0
    assert stream.health()["messages_per_s"] == 0.0  # nothing in the last 60 s


def test_depth_gap_refetches_snapshot():
    diffs = make_diffs(7, seed=11)
    event_ms = [T0 + 100 * j for j in range(7)]
    script = [depth_step(diffs, j, event_ms[j]) for j in (0, 1, 2, 4, 5, 6)]  # 3 never comes
    rec = Recorder()
    oracle = SnapshotOracle(diffs, [diffs[0][1], diffs[4][1]])

    async def main():
        async with FakeBinance([script]) as fake:
            stream = make_stream(fake.url, rec, snapshot=oracle, timeframes=("1m",))
            await run_until(stream, lambda: bool(rec.books) and rec.books[-1][1] == event_ms[6])
            return stream

    stream = asyncio.run(main())
    assert oracle.calls == [SYM, SYM]
    # 4 breaks the sequence: the book is dropped, a snapshot at 4 is fetched, 5 bridges it.
    assert [b[1] for b in rec.books] == [event_ms[j] for j in (1, 2, 5, 6)]
    for _, ts, bids, asks in rec.books:
        j = event_ms.index(ts)
        assert (bids, asks) == top_of(*book_at(diffs, diffs[j][1]))
    assert stream.health()["resyncs"] == 1 and stream.health()["reconnects"] == 0


def test_failed_snapshot_is_counted_and_retried():
    diffs = make_diffs(4, seed=5)
    event_ms = [T0 + 100 * j for j in range(4)]
    oracle = SnapshotOracle(diffs, [diffs[1][1]])
    failed: list[str] = []

    def snapshot(symbol):
        if not failed:
            failed.append(symbol)
            raise TimeoutError("REST timed out")  # an OSError: temporary by default
        return oracle(symbol)

    script = [depth_step(diffs, 0, event_ms[0]), ("sleep", 0.02),  # past the retry delay
              *(depth_step(diffs, j, event_ms[j]) for j in (1, 2, 3))]
    rec = Recorder()

    async def main():
        async with FakeBinance([script]) as fake:
            stream = make_stream(fake.url, rec, snapshot=snapshot, timeframes=("1m",))
            await run_until(stream, lambda: bool(rec.books) and rec.books[-1][1] == event_ms[3])
            return stream

    stream = asyncio.run(main())
    assert failed == [SYM] and oracle.calls == [SYM]
    assert [b[1] for b in rec.books] == [event_ms[2], event_ms[3]]
    for _, ts, bids, asks in rec.books:
        assert (bids, asks) == top_of(*book_at(diffs, diffs[event_ms.index(ts)][1]))
    health = stream.health()
    assert health["snapshot_errors"] == 1 and health["resyncs"] == 0


def test_reconnect_backfills_missed_candles_without_gap_or_duplicate():
    series = {T0 + i * 1000: row_1s(i) for i in range(13)}  # the exchange's closed 1s candles
    diffs = make_diffs(8, seed=3)
    clock = FakeClock(1000.25)
    calls: list[tuple] = []

    def backfill(symbol, tf, since_ms, until_ms):
        calls.append((symbol, tf, since_ms, until_ms))
        # Like REST: every candle that opened in the range, the still-forming one included.
        return [list(r) for ts, r in series.items() if since_ms <= ts <= until_ms]

    held: dict[str, BinanceStream] = {}

    def caught_up() -> bool:  # the client has read everything of session 1
        return held["stream"].health()["last_message_ms"] == T0 + 5500

    def advance():  # 3 s pass while the connection is down
        clock.t += 3.0

    session1 = [forming_1s(0), closed_1s(0), depth_step(diffs, 0, T0 + 100),
                depth_step(diffs, 1, T0 + 200), closed_1s(1), closed_1s(2),
                depth_step(diffs, 2, T0 + 300), forming_1s(3), closed_1s(3), closed_1s(4),
                forming_1s(5), ("until", caught_up), ("call", advance), ("drop",)]
    session2 = [closed_1s(7),  # already backfilled: skipped
                depth_step(diffs, 5, T0 + 9100), forming_1s(8), closed_1s(8),
                depth_step(diffs, 6, T0 + 9200), closed_1s(10),  # 9 was never sent
                depth_step(diffs, 7, T0 + 9300), closed_1s(11)]
    rec = Recorder()
    oracle = SnapshotOracle(diffs, [diffs[0][1], diffs[5][1]])

    async def main():
        async with FakeBinance([session1, session2]) as fake:
            stream = make_stream(fake.url, rec, timeframes=("1s",), snapshot=oracle,
                                 backfill=backfill, clock=clock, rng=random.Random(1))
            held["stream"] = stream
            await run_until(stream, lambda: bool(rec.candles)
                            and rec.candles[-1][2][0] == T0 + 11_000
                            and bool(rec.books) and rec.books[-1][1] == T0 + 9300)
            return fake, stream

    fake, stream = asyncio.run(main())
    assert len(fake.paths) == 2 and fake.paths[0] == fake.paths[1]
    # On reconnect: exchange time is the last event (forming candle 5, E = T0 + 5.5 s) plus the
    # 3 s that passed, so 5, 6 and 7 are closed and 8 (forming at T0 + 8.5 s) is left out.
    # Later the live 10 arrives after 8: candle 9 is fetched before it.
    assert calls == [(SYM, "1s", T0 + 5000, T0 + 8500), (SYM, "1s", T0 + 9000, T0 + 9999)]
    assert rec.candles == [(SYM, "1s", row_1s(i), True) for i in range(12)]
    assert stream.backfilled == 4
    health = stream.health()
    assert health["reconnects"] == 1 and health["resyncs"] == 0 and health["rejected"] == 0
    # The book is rebuilt from a new snapshot after the reconnect (diffs 3 and 4 were lost).
    assert oracle.calls == [SYM, SYM]
    assert [b[1] for b in rec.books] == [T0 + 200, T0 + 300, T0 + 9200, T0 + 9300]
    for _, ts, bids, asks in rec.books:
        j = {T0 + 200: 1, T0 + 300: 2, T0 + 9200: 6, T0 + 9300: 7}[ts]
        assert (bids, asks) == top_of(*book_at(diffs, diffs[j][1]))


def test_backfill_failure_holds_the_live_candle_until_the_gap_fills():
    attempts: list[tuple] = []

    def backfill(symbol, tf, since_ms, until_ms):
        attempts.append((since_ms, until_ms))
        if len(attempts) == 1:
            raise ConnectionResetError("REST down")  # an OSError: temporary by default
        return [row_1s(i) for i in range(13) if since_ms <= T0 + i * 1000 <= until_ms]

    script = [closed_1s(0), closed_1s(2), closed_1s(3)]
    rec = Recorder()

    async def main():
        async with FakeBinance([script]) as fake:
            stream = make_stream(fake.url, rec, timeframes=("1s",), backfill=backfill)
            await run_until(stream, lambda: len(rec.candles) == 4)
            return stream

    stream = asyncio.run(main())
    assert attempts == [(T0 + 1000, T0 + 1999), (T0 + 1000, T0 + 2999)]
    assert [c[2][0] for c in rec.candles] == [T0 + i * 1000 for i in range(4)]
    assert stream.health()["backfill_errors"] == 1


def test_backoff_grows_with_full_jitter_and_cap():
    stream = BinanceStream([SYM], initial_backoff_s=0.5, max_backoff_s=4.0, rng=random.Random(3))
    expected_rng = random.Random(3)
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [stream.backoff_delay(a) for a in range(6)]
    assert delays == [expected_rng.uniform(0.0, cap) for cap in caps]
    assert all(0.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == 6  # jittered, not a fixed schedule

    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stream = BinanceStream([SYM], url=f"ws://127.0.0.1:{port}", initial_backoff_s=0.001,
                           max_backoff_s=0.004, rng=random.Random(5))
    asyncio.run(run_until(stream, lambda: stream.reconnects >= 5))
    expected_rng = random.Random(5)
    expected = [expected_rng.uniform(0.0, cap) for cap in (0.001, 0.002, 0.004, 0.004, 0.004)]
    assert list(stream.backoff_delays)[:5] == expected  # never reset: no connection worked
    assert stream.health()["connected"] is False


def test_backoff_starts_over_after_a_connection_that_worked():
    # Each connection drops; the first and fourth delivered a candle before dropping.
    sessions = [[closed_1s(0), ("drop",)], [("drop",)], [("drop",)], [closed_1s(1), ("drop",)], []]
    rec = Recorder()

    async def main():
        async with FakeBinance(sessions) as fake:
            stream = make_stream(fake.url, rec, timeframes=("1s",), max_backoff_s=0.1,
                                 rng=random.Random(9))
            await run_until(stream, lambda: len(fake.paths) == 5 and len(rec.candles) == 2)
            return stream

    stream = asyncio.run(main())
    expected_rng = random.Random(9)
    caps = (0.001, 0.002, 0.004, 0.001)  # grows while connections fail, resets after data
    assert list(stream.backoff_delays) == [expected_rng.uniform(0.0, c) for c in caps]
    assert stream.health()["reconnects"] == 4


def test_rejects_unknown_timeframe():
    with pytest.raises(ValueError, match="not a Binance kline interval"):
        BinanceStream([SYM], timeframes=("7m",))
