"""The exchange source end to end against local servers speaking Binance's REST and websocket
protocols: backfill over REST, closed 1s klines, trades and the depth book over the stream,
all through the market feed; a recording of the session replays to the same candles; and
source: auto falls back to the replay when the exchange cannot be reached."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from core.config import load_config
from core.market.recorder import Recorder
from core.market.recording import load_recording
from core.market.replay import ReplaySource
from core.market.service import build_market
from core.timeframes import bucket_start
from tests.core.fake_binance_rest import FakeBinance as FakeRest
from tests.core.fake_binance_rest import kline_series
from tests.core.fake_binance_ws import FakeBinance as FakeWs
from tests.core.fake_binance_ws import depth_msg, kline_msg, trade_msg

SYMBOLS = {"ETH/USDT": "ETHUSDT", "BTC/USDT": "BTCUSDT"}
CAPACITY = {"1s": 120, "1m": 60, "1h": 48, "1d": 10}
TF_MS = {"1s": 1000, "1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
LIVE_SECONDS = 8


class WsServer:
    """The websocket fake on its own event loop thread (the source runs its own loop)."""

    def __init__(self, sessions):
        self.sessions = sessions
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.fake = None
        self._stop = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       daemon=True)

    async def _main(self):
        self._stop = asyncio.Event()
        async with FakeWs(self.sessions) as fake:
            self.fake = fake
            self.ready.set()
            await self._stop.wait()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5)


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def exchange(tmp_path):
    now = int(time.time() * 1000)
    # The live session covers the 20 seconds just gone (sent at once, so every event time is
    # in the past, as a real exchange's are); REST history ends where it begins.
    first = bucket_start(now, 1000) - 20_000
    rest = FakeRest()
    for sid in SYMBOLS.values():
        for tf, count in CAPACITY.items():
            end = first if tf == "1s" else bucket_start(now, TF_MS[tf])
            rest.klines[(sid, tf)] = kline_series(end - count * TF_MS[tf], count, tf)
        rest.books[sid] = {"lastUpdateId": 100, "bids": [["1999.0", "1.0"], ["1998.0", "2.0"]],
                           "asks": [["2001.0", "1.5"], ["2002.0", "3.0"]]}
    rest.start()
    # Closed 1s klines (one forming kline too, which must be ignored), a trade and a depth
    # diff per second.
    script = [("sleep", 0.5)]
    for k in range(LIVE_SECONDS):
        ts = first + k * 1000
        for sid in SYMBOLS.values():
            price = 2000.0 + k
            script.append(("send", kline_msg(sid, "1s", 1000, ts, (price, price + 1, price - 1,
                                                                   price + 0.5, 1.0 + k), True)))
            script.append(("send", trade_msg(sid, ts + 500, price, 0.1, k % 2 == 0, k)))
            script.append(("send", depth_msg(sid, ts + 900, 101 + k, 101 + k,
                                             [[1999.0 + k * 0.1, 1.0 + k]], [])))
    script.append(("send", kline_msg("ETHUSDT", "1s", 1000, first + LIVE_SECONDS * 1000,
                                     (1.0, 1.0, 1.0, 1.0, 1.0), False)))
    # The exchange's own 1m kline of the backfilled minute before `first`, as Binance sends it
    # (the source checks the store's aggregation of 1s candles against it).
    minute = bucket_start(first - 1000, 60_000)
    script.append(("send", kline_msg("ETHUSDT", "1m", 60_000, minute,
                                     (1.0, 2.0, 0.5, 1.5, 9.0), True,
                                     event_ms=first + LIVE_SECONDS * 1000)))
    with WsServer([script]) as ws:
        cfg = load_config("config.yaml", {
            "market.source": "exchange", "market.buffer": CAPACITY,
            "exchange.rest_url": rest.url, "exchange.ws_url": ws.fake.url,
            "exchange.cob_exchange": "none", "runtime_dir": str(tmp_path / "rt"),
        }, environ={})
        market = build_market(cfg)
        yield market, first, rest
        market.stop()
    rest.stop()


def test_backfill_stream_and_book_through_the_feed(exchange, tmp_path):
    market, first, rest = exchange
    assert market.source.kind == "exchange"
    recorder = Recorder(tmp_path / "rec", "live-test", "local fake session", {"source": "test"},
                        "test data")
    recorder.attach(market.feed)
    market.start()
    assert wait_until(lambda: market.store.last_ts("BTC/USDT") == first + (LIVE_SECONDS - 1) * 1000)
    source = market.source
    # Backfill: every symbol and timeframe filled to its capacity over REST, paged by ccxt.
    assert all(p["state"] == "done" for p in source.progress.values()), source.progress
    for sym in SYMBOLS:
        for tf, count in CAPACITY.items():
            # 1s: REST history stops 20 s back, where the live session starts.
            expected = count - 21 + LIVE_SECONDS if tf == "1s" else count - 1
            assert len(market.store.closed(sym, tf)) >= expected, (sym, tf)
    # Stream: exactly the closed 1s klines, in order after the backfill, none forming.
    eth = market.store.closed("ETH/USDT", "1s")
    live = eth[eth[:, 0] >= first]
    assert live[:, 0].tolist() == [first + k * 1000 for k in range(LIVE_SECONDS)]
    assert live[:, 4].tolist() == [2000.5 + k for k in range(LIVE_SECONDS)]
    # Book: the REST snapshot (lastUpdateId 100) plus diffs 101.. in sequence.
    assert wait_until(lambda: market.books.get("ETH/USDT") is not None)
    book = market.books.get("ETH/USDT")
    assert book.asks[0].tolist() == [2001.0, 1.5] and not book.synthetic
    cob = market.consolidated_book("ETH/USDT")
    assert cob is not None and cob.exchanges == ("binance",)
    # Health of the feed, as the page and the status show it.
    health = market.snapshot()["feeds"]["binance"]
    assert health["connected"] is True and health["rejected"] == 0
    assert market.feed.stats.accepted[("ETH/USDT", "trade")] == LIVE_SECONDS
    assert rest.count("/api/v3/depth") >= 2  # one snapshot per symbol

    # The recording of this session replays to the same 1s candles.
    market.stop()
    recorder.close()
    rec = load_recording(tmp_path / "rec")
    from core.market.books import OrderBooks
    from core.market.candles import CandleStore
    from core.market.feed import MarketFeed

    store = CandleStore(("ETH/USDT",), ("1s", "1m"), {"1s": 200, "1m": 10})
    replay = ReplaySource(rec, MarketFeed(store, OrderBooks()), symbols=("ETH/USDT",),
                          start_ms=first)
    replay.emit_until(first + LIVE_SECONDS * 1000)
    np.testing.assert_array_equal(store.closed("ETH/USDT", "1s"), live)
    assert replay.describe()["books"] == "recorded"


def test_auto_falls_back_to_the_replay_with_a_banner(tmp_path):
    cfg = load_config("config.yaml", {
        "market.source": "auto", "exchange.rest_url": "http://127.0.0.1:9",
        "exchange.connect_timeout_s": 3, "runtime_dir": str(tmp_path),
    }, environ={})
    started = time.monotonic()
    market = build_market(cfg)
    assert time.monotonic() - started < 10
    snap = market.snapshot()
    assert snap["source"]["source"] == "replay"
    assert snap["notice_level"] == "warning" and "unreachable" in snap["notice"]


def test_the_stores_1m_aggregation_is_checked_against_the_exchanges_1m_klines(tmp_path):
    from core.market.books import OrderBooks
    from core.market.candles import CandleStore
    from core.market.cob import ConsolidatedBooks
    from core.market.exchange_source import ExchangeSource
    from core.market.feed import MarketFeed

    cfg = load_config("config.yaml", {"exchange.cob_exchange": "none"}, environ={})
    store = CandleStore(("ETH/USDT",), ("1s", "1m"), {"1s": 200, "1m": 10})
    source = ExchangeSource(cfg, MarketFeed(store, OrderBooks()), ConsolidatedBooks(),
                            rest=None, clock=None)
    t0 = 1_704_067_200_000
    for k in range(60):  # minute 0: open 100, closes rising by 0.1, volume 1 each
        source._on_candle("ETH/USDT", "1s", [t0 + k * 1000, 100 + k / 10, 100.5 + k / 10,
                                             99.5 + k / 10, 100.1 + k / 10, 1.0], True)
    # By hand: o 100, h 100.5 + 5.9 = 106.4, l 99.5, c 100.1 + 5.9 = 106.0, v 60.
    source._on_candle("ETH/USDT", "1m", [t0, "100", "106.4", "99.5", "106.0", "60"], True)
    assert source.aggregation == {"checked": 1, "mismatches": 0, "last_mismatch": None}
    for k in range(60):  # minute 1, and the exchange reports 61 instead of 60 of volume
        source._on_candle("ETH/USDT", "1s", [t0 + 60_000 + k * 1000, 110, 111, 109, 110, 1.0],
                          True)
    source._on_candle("ETH/USDT", "1m", [t0 + 60_000, 110, 111, 109, 110, 61], True)
    assert source.aggregation["checked"] == 2 and source.aggregation["mismatches"] == 1
    assert source.aggregation["last_mismatch"]["aggregated"][4] == 60.0


def bybit_msg(kind, u, ts, bids, asks):
    """A Bybit v5 orderbook message for ETHUSDT, levels as strings as Bybit sends them."""
    data = {"s": "ETHUSDT", "b": [[str(p), str(q)] for p, q in bids],
            "a": [[str(p), str(q)] for p, q in asks], "u": u, "seq": u}
    return json.dumps({"topic": "orderbook.50.ETHUSDT", "type": kind, "ts": ts, "data": data})


def test_bybit_books_enter_through_the_feed_and_bad_ones_are_rejected_with_a_reason():
    from core.market.books import OrderBooks
    from core.market.candles import CandleStore
    from core.market.cob import ConsolidatedBooks
    from core.market.exchange_source import ExchangeSource
    from core.market.feed import MarketFeed

    cfg = load_config("config.yaml", {"exchange.cob_exchange": "bybit"}, environ={})
    feed = MarketFeed(CandleStore(("ETH/USDT",), ("1s", "1m"), {"1s": 10, "1m": 10}),
                      OrderBooks())
    cob = ConsolidatedBooks()
    source = ExchangeSource(cfg, feed, cob, rest=None, clock=None)
    t0 = 1_704_067_200_000
    bybit = source.bybit
    # The stream's own path: a snapshot, then a delta whose time goes back (update id fine).
    assert bybit._handle(bybit_msg("snapshot", 10, t0 + 100, [(2000, 1)], [(2001, 1)])) is None
    assert bybit._handle(bybit_msg("delta", 11, t0 + 50, [(2000, 2)], [])) is None
    # What the stream hands on, if it ever were a crossed or broken book.
    bybit.on_book("bybit", "ETH/USDT", t0 + 200, np.array([[2002.0, 1.0]]),
                  np.array([[2001.0, 1.0]]))
    bybit.on_book("bybit", "ETH/USDT", t0 + 300, np.array([[np.nan, 1.0]]),
                  np.array([[2001.0, 1.0]]))
    assert feed.rejected_by_reason() == {"out_of_order": 1, "crossed_book": 1, "not_finite": 1}
    assert feed.stats.accepted[("ETH/USDT", "book_bybit")] == 1
    assert feed.books.get("ETH/USDT") is None  # the source's own book is not Bybit's
    assert feed.books.get("ETH/USDT", "bybit").ts == t0 + 100
    book = cob.consolidated("ETH/USDT", t0 + 400)  # only the accepted book got through
    assert book is not None and book.exchanges == ("bybit",)
    assert (book.best_bid, book.best_ask) == (2000.0, 2001.0)
    assert len(cob.fresh("ETH/USDT", t0 + 400)[0]) == 1


def test_api_keys_come_from_the_environment_and_never_show(tmp_path, caplog, monkeypatch):
    import json
    import logging

    from core.market.exchange_rest import credentials_from_env

    assert credentials_from_env({}) is None
    with pytest.raises(ValueError, match="set both"):
        credentials_from_env({"EXCHANGE_API_KEY": "k"})
    secret = "s3cr3t-value-1234"
    monkeypatch.setenv("EXCHANGE_API_KEY", "key-value-5678")
    monkeypatch.setenv("EXCHANGE_API_SECRET", secret)
    cfg = load_config("config.yaml", {
        "market.source": "exchange", "exchange.rest_url": "http://127.0.0.1:9",
        "exchange.cob_exchange": "none", "runtime_dir": str(tmp_path)}, environ={})
    from core.market.exchange_rest import ExchangeRest

    with caplog.at_level(logging.DEBUG):
        market = build_market(cfg)
        rest = ExchangeRest(base_url="http://127.0.0.1:9", retries=1,
                            credentials=credentials_from_env())
        try:
            rest.fetch_order_book("ETH/USDT")  # fails: nothing listens there
        except Exception as exc:  # noqa: BLE001 - we only look at what it says
            message = str(exc) + repr(rest)
        else:
            message = ""
    shown = json.dumps(market.snapshot(), default=str) + repr(market.source.rest) + message
    # Found, and not used: public market data needs no key, so none goes to ccxt at all.
    assert market.source.describe()["api_keys"] == "set, unused (market data is public)"
    assert market.source.describe()["authenticated"] is False
    assert market.source.rest.exchange.apiKey in (None, "")
    for value in (secret, "key-value-5678"):
        assert value not in shown
        assert value not in caplog.text


def test_market_time_follows_the_exchanges_event_times(exchange):
    market, first, _ = exchange
    market.start()
    assert wait_until(lambda: market.store.last_ts("ETH/USDT") == first + (LIVE_SECONDS - 1) * 1000)
    # Market time is the newest exchange event time plus local time since it arrived: this
    # session's events are ~12 s old, so market time is ~12 s behind the wall clock here.
    now = market.clock.now_ms()
    last_event = market.source.binance.health()["last_message_ms"]
    assert last_event <= now < last_event + 5_000
    assert now < time.time() * 1000 - 5_000
