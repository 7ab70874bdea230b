"""Live-exchange ingest: messages/s the feed takes from a local Binance stream, and the latency
from a kline's send to its 1s candle in the candle store.

    .venv/bin/python -m bench.exchange_ingest [--seconds 20000] [--paced 5] [--no-deflate]

A small websockets server on 127.0.0.1 (a free port, its own thread and event loop) plays
Binance's combined stream for ETH/USDT and BTC/USDT: per symbol and market second ``--trades``
trades, depth diffs (in sequence after the REST snapshot the client is handed, so the book
syncs once and stays in sync; each one changes the top 20 and is published as a book) and the
closed 1s kline, consecutive seconds from 2024-01-01. Messages are JSON-encoded before the clock starts (tests/core/fake_binance_ws.py's
builders); the server negotiates permessage-deflate as Binance does (``--no-deflate``: plain).

The client is the product's path: BinanceStream(timeframes=("1s",)) on its own thread's event
loop, closed 1s klines -> MarketFeed.candle, trades -> feed.trade, books -> feed.book, a real
CandleStore with config.yaml's timeframes and buffers (1s -> 1m/1h/1d aggregation).

Two cases, each a fresh server, stream, feed and store:

- flood: ``--seconds`` market seconds per symbol, ``--flood-diffs`` diffs per symbol and
  second (2 by default, to keep the run short: depth diffs are the costly kind), sent as fast
  as the server can write. Throughput = messages the stream handled / wall time from the first message's arrival to
  the last kline's candle in the store; also 1s candles/s into the store.
- paced: one market second of both symbols per ``--tick-ms`` (default 2 x (1 kline + 1 trade
  + ``--diffs`` 10, Binance's @100ms rate) per 10 ms = 2,400 msg/s), for ``--paced`` wall seconds: closer to live load.

Latency, per 1s kline: "send->store" from the server's time.perf_counter() just before
ws.send (kept in a dict shared with the client; same process, Binance's format has no send
time) to the CandleStore subscriber's perf_counter when that candle is added; "arrive->store"
from the message's arrival in the stream's read loop (``ExchangeStream._arrived``, observed through
the stream's injectable ``clock``, which it calls once per message on arrival) to the same point. Under the flood
send->store is mostly queueing in the socket buffers (the backlog), arrive->store is the cost
of handling. "us/msg" is the median gap between consecutive arrivals under the flood, per
message kind: what each kind costs the stream's loop (websockets receive + inflate + parse +
feed + store). Server and client share one process and its GIL, so rates are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections import Counter

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from core.market.binance_stream import BinanceStream
from core.market.books import OrderBooks
from core.market.candles import Candle, CandleStore
from core.market.feed import MarketFeed
from tests.core.fake_binance_ws import depth_msg, kline_msg, trade_msg

SYMBOLS = {"ETH/USDT": ("ETHUSDT", 2000.0), "BTC/USDT": ("BTCUSDT", 40000.0)}
TIMEFRAMES = ("1s", "1m", "1h", "1d")
CAPACITY = {"1s": 3600, "1m": 1440, "1h": 1000, "1d": 400}  # config.yaml's market.buffer
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
LEVELS = 20  # per side in the snapshot
FIRST_ID = 1000  # U of the first diff; the snapshot's lastUpdateId is FIRST_ID - 1
START_DELAY_S = 0.3  # the server waits this long after the handshake (the client is reading)


def snapshot_levels(base: float) -> tuple[list, list]:
    bids = [[base - 0.5 - i * 0.5, 1.0] for i in range(LEVELS)]
    asks = [[base + 0.5 + i * 0.5, 1.0] for i in range(LEVELS)]
    return bids, asks


def snapshot(symbol: str) -> dict:
    """The REST depth snapshot, as ExchangeRest hands it on: lastUpdateId as ccxt's nonce."""
    bids, asks = snapshot_levels(SYMBOLS[symbol][1])
    return {"bids": bids, "asks": asks, "nonce": FIRST_ID - 1}


def build_script(seconds: int, trades: int, diffs: int) -> list[list[tuple[str, str, tuple]]]:
    """One group per market second: per symbol its trades, depth diffs, then the closed kline.

    Each message is (JSON text, kind, key); key is (symbol, ts) for klines, else ().
    """
    groups = []
    update_id = {sym: FIRST_ID for sym in SYMBOLS}
    step = max(1, 1000 // max(1, diffs))
    for k in range(seconds):
        ts = T0 + k * 1000
        group = []
        for sym, (sid, base) in SYMBOLS.items():
            bids, asks = snapshot_levels(base)
            for i in range(trades):
                msg = trade_msg(sid, ts + 1 + i * (998 // max(1, trades)), base + k % 100 * 0.01,
                                0.01 + i % 5 * 0.01, (k + i) % 2 == 0, k * trades + i)
                group.append((json.dumps(msg), "trade", ()))
            for j in range(diffs):
                n = update_id[sym]
                bid, ask = bids[n % LEVELS][0], asks[n * 7 % LEVELS][0]
                msg = depth_msg(sid, min(ts + (j + 1) * step, ts + 1000), n, n,
                                [[bid, 1.0 + n % 9 * 0.25]],
                                [[ask, 1.0 + n % 5 * 0.5], [base + 100.0, 0.0]])
                update_id[sym] = n + 1
                group.append((json.dumps(msg), "depth", ()))
            price = base + k % 100 * 0.01
            msg = kline_msg(sid, "1s", 1000, ts, (price, price + 1, price - 1, price + 0.5,
                                                  1.0 + k % 5), True)
            group.append((json.dumps(msg), "kline", (sym, ts)))
        groups.append(group)
    return groups


class Server:
    """Plays the script to the first connection (flood, or one group per tick), then closes.

    A reconnect gets silence until the client goes away.
    """

    def __init__(self, groups: list, tick_s: float | None, deflate: bool):
        self.groups, self.tick_s = groups, tick_s
        self.compression = "deflate" if deflate else None
        self.sent: dict[tuple, float] = {}  # (symbol, ts) of each kline -> perf_counter at send
        self.first_send: float | None = None
        self.last_send: float | None = None
        self.connections = 0
        self.url = ""
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, ping_interval=None,
                         compression=self.compression) as server:
            self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self.ready.set()
            await self._stop.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        if self.connections > 1:
            await ws.wait_closed()
            return
        await asyncio.sleep(START_DELAY_S)
        sent, clock = self.sent, time.perf_counter
        self.first_send = clock()
        if self.tick_s is None:
            for group in self.groups:
                for text, _, key in group:
                    if key:
                        sent[key] = clock()
                    await ws.send(text)
        else:
            start = clock()
            for i, group in enumerate(self.groups):
                delay = start + i * self.tick_s - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                for text, _, key in group:
                    if key:
                        sent[key] = clock()
                    await ws.send(text)
        self.last_send = clock()
        await ws.close()

    def start(self) -> Server:
        self.thread.start()
        if not self.ready.wait(5):
            raise RuntimeError("the local server did not start")
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5)


class Client:
    """BinanceStream -> MarketFeed -> CandleStore on its own thread's event loop."""

    def __init__(self, server: Server, last_key: tuple):
        self.server, self.last_key = server, last_key
        self.store = CandleStore(list(SYMBOLS), TIMEFRAMES, CAPACITY)
        self.feed = MarketFeed(self.store, OrderBooks())
        self.store.subscribe(self._on_close)
        self.stream = BinanceStream(
            list(SYMBOLS), timeframes=("1s",), url=server.url, snapshot=snapshot,
            backfill=lambda *a: [], on_candle=self._on_candle, on_trade=self.feed.trade,
            on_book=self.feed.book, clock=self._clock)
        self.calls: list[float] = []  # perf_counter of each clock() call: one per message
        self.send_to_store: list[float] = []  # seconds, per 1s candle
        self.arrive_to_store: list[float] = []
        self.end: float | None = None  # the last kline's candle is in the store
        self.done = threading.Event()
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _clock(self) -> float:
        self.calls.append(time.perf_counter())
        return time.time()

    def _on_candle(self, symbol: str, tf: str, row: list, closed: bool) -> None:
        if closed and tf == "1s":
            self.feed.candle(symbol, row)

    def _on_close(self, symbol: str, tf: str, candle: Candle) -> None:
        if tf != "1s":
            return
        now = time.perf_counter()
        key = (symbol, candle.ts)
        self.send_to_store.append(now - self.server.sent[key])
        self.arrive_to_store.append(now - self.calls[-1])
        if key == self.last_key:
            self.end = now
            assert self._stop is not None
            self._stop.set()  # on the stream's loop: it closes the connection
            self.done.set()

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            self.loop = asyncio.get_running_loop()
            self.ready.set()
            await self.stream.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported, and the wait ends
            self.error = exc
            self.done.set()

    def start(self) -> Client:
        self.thread.start()
        self.ready.wait(5)
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and not self._stop.is_set():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    def arrivals(self) -> list[float]:
        """Arrival time of each message (the stream's clock calls once the server sent)."""
        first = self.server.first_send
        return [t for t in self.calls if first is not None and t >= first]


def run_case(groups: list, tick_s: float | None, deflate: bool, timeout: float) -> dict:
    server = Server(groups, tick_s, deflate).start()
    last_sym = list(SYMBOLS)[-1]
    client = Client(server, (last_sym, groups[-1][-1][2][1])).start()
    finished = client.done.wait(timeout)
    client.stop()
    server.stop()
    if client.error is not None:
        raise client.error
    arrivals = client.arrivals()
    kinds = [kind for group in groups for _, kind, _ in group]
    end = client.end if client.end is not None else time.perf_counter()
    wall = end - arrivals[0] if arrivals else float("nan")
    stats = client.feed.stats
    accepted = Counter()
    for (_, kind), n in stats.accepted.items():
        accepted[kind] += n
    gaps: dict[str, float] = {}
    if tick_s is None and len(arrivals) == len(kinds):  # flood: median gap to the next arrival
        diffs = np.diff(np.asarray(arrivals))
        by_kind = np.asarray(kinds[:-1])
        gaps = {k: float(np.median(diffs[by_kind == k])) * 1e6 for k in ("kline", "trade", "depth")
                if (by_kind == k).any()}
    health = client.stream.health()
    return {
        "finished": finished, "sent": len(kinds), "messages": len(arrivals), "wall": wall,
        "candles": accepted["candle"], "accepted": dict(accepted),
        "send_ms": np.asarray(client.send_to_store) * 1000,
        "arrive_ms": np.asarray(client.arrive_to_store) * 1000, "us_per_msg": gaps,
        "feed_rejected": client.feed.rejected_by_reason(), "stream_rejected": health["rejected"],
        "resyncs": health["resyncs"], "reconnects": health["reconnects"],
        "closed": {tf: client.store.closed_count[(last_sym, tf)] for tf in TIMEFRAMES},
        "send_s": (server.last_send or end) - (server.first_send or end),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=20_000,
                   help="market seconds (closed 1s klines) per symbol in the flood")
    p.add_argument("--trades", type=int, default=1, help="trades per symbol and market second")
    p.add_argument("--flood-diffs", type=int, default=2,
                   help="flood: depth diffs per symbol and market second")
    p.add_argument("--diffs", type=int, default=10,
                   help="paced: depth diffs per symbol and market second (Binance: 10 at @100ms)")
    p.add_argument("--paced", type=float, default=5.0, help="wall seconds of the paced case")
    p.add_argument("--tick-ms", type=float, default=10.0,
                   help="paced: wall ms per market second (both symbols)")
    p.add_argument("--no-deflate", action="store_true", help="no permessage-deflate")
    p.add_argument("--timeout", type=float, default=45.0, help="wall limit per case, s")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    paced_n = max(1, int(args.paced * 1000 / args.tick_ms))
    t_build = time.perf_counter()
    flood = build_script(args.seconds, args.trades, args.flood_diffs)
    paced = build_script(paced_n, args.trades, args.diffs)
    per_s = len(paced[0])
    print(f"2 symbols; per symbol and market second 1 closed 1s kline, {args.trades} trade(s) "
          f"and {args.flood_diffs} (flood) / {args.diffs} (paced) depth diffs; "
          f"{'plain' if args.no_deflate else 'permessage-deflate'}; "
          f"scripts built in {time.perf_counter() - t_build:.1f} s")
    cases = (("flood", flood, None),
             (f"paced {per_s / args.tick_ms * 1000:,.0f}/s", paced, args.tick_ms / 1000))
    results = []
    print(f"{'case':<17}{'messages':>10}{'wall s':>8}{'msg/s':>9}{'1s cand/s':>10}"
          f"{'send->store ms p50/p99/max':>29}{'arrive->store ms p50/p99/max':>31}")
    for label, groups, tick_s in cases:
        r = run_case(groups, tick_s, not args.no_deflate, args.timeout)
        results.append((label, r))
        s, a = r["send_ms"], r["arrive_ms"]
        lat = (f"{np.percentile(s, 50):>9.2f}{np.percentile(s, 99):>9.2f}{s.max():>11.2f}"
               if len(s) else f"{'-':>29}")
        hlat = (f"{np.percentile(a, 50):>11.3f}{np.percentile(a, 99):>9.3f}{a.max():>11.3f}"
                if len(a) else f"{'-':>31}")
        note = "" if r["finished"] else f"  (timed out: {r['messages']}/{r['sent']})"
        print(f"{label:<17}{r['messages']:>10,}{r['wall']:>8.2f}{r['messages'] / r['wall']:>9,.0f}"
              f"{r['candles'] / r['wall']:>10,.0f}{lat}{hlat}{note}")
    for label, r in results:
        costs = ", ".join(f"{k} {v:.0f}" for k, v in r["us_per_msg"].items())
        print(f"{label}: server sent for {r['send_s']:.2f} s; accepted {r['accepted']}; "
              f"closed per symbol {r['closed']}; feed rejected {r['feed_rejected'] or 0}, "
              f"stream rejected {r['stream_rejected']}, resyncs {r['resyncs']}, "
              f"reconnects {r['reconnects']}" + (f"; us/msg by kind: {costs}" if costs else ""))


if __name__ == "__main__":
    main()
