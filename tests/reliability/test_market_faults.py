"""The market's fault matrix: the exchange source against local servers speaking Binance's REST
and websocket protocols while they misbehave. Every test asserts "kept running, lost nothing":
the source is still streaming (or back), and the 1s candles in the store run without a gap or a
duplicate from the start of the REST history to the last candle the exchange closed.

Rows: dropped connections; garbage frames (and a feed that accepts nothing: STALLED); skipped
depth update ids; a server that refuses signed calls while API keys are set; an exchange back
with an older clock; an exchange clock an hour off; one symbol's book snapshot failing for good;
an unexpected exception inside the source.
"""

from __future__ import annotations

import threading
import time

import ccxt
import pytest

from core.config import load_config
from core.market.exchange_rest import _point_at
from core.market.service import build_market
from core.market.supervisor import SourceSupervisor
from core.timeframes import bucket_start
from dashboard.callbacks import header_view
from tests.core.fake_binance_rest import FakeBinance as FakeRest
from tests.core.fake_binance_rest import kline, kline_series
from tests.core.fake_binance_ws import depth_msg, kline_msg, trade_msg
from tests.core.test_exchange_source import WsServer, wait_until

SIDS = {"ETH/USDT": "ETHUSDT", "BTC/USDT": "BTCUSDT"}
CAPACITY = {"1s": 120, "1m": 30, "1h": 12, "1d": 10}
TF_MS = {"1s": 1000, "1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
REST_LAG_S = 20  # the REST 1s history ends this long before the server's now; live covers it


def server_now(offset_ms: int = 0) -> int:
    return int(time.time() * 1000) + offset_ms


def make_rest(offset_ms: int = 0) -> tuple[FakeRest, int]:
    """A started REST fake with full history; returns it and the first live second."""
    now = server_now(offset_ms)
    first = bucket_start(now, 1000) - REST_LAG_S * 1000
    rest = FakeRest(clock_offset_ms=offset_ms)
    for sid in SIDS.values():
        for tf, count in CAPACITY.items():
            end = first if tf == "1s" else bucket_start(now, TF_MS[tf])
            rest.klines[(sid, tf)] = kline_series(end - count * TF_MS[tf], count, tf)
        rest.books[sid] = {"lastUpdateId": 100, "bids": [["1999.0", "1.0"]],
                           "asks": [["2001.0", "1.5"]]}
    return rest.start(), first


def second(first: int, k: int, event_ms: int | None = None) -> list:
    """Steps sending the closed 1s kline k (0 = first) of each symbol."""
    ts = first + k * 1000
    price = 2000.0 + k
    return [("send", kline_msg(sid, "1s", 1000, ts, (price, price + 1, price - 1, price + 0.5,
                                                      1.0 + k), True, event_ms=event_ms))
            for sid in SIDS.values()]


def seconds(first: int, ks, **kw) -> list:
    return [step for k in ks for step in second(first, k, **kw)]


def on_rest(rest: FakeRest, first: int, ks) -> tuple:
    """A step that puts 1s klines k in ks on the REST server (what a gap fill will find)."""
    def add() -> None:
        for sid in SIDS.values():
            rows = rest.klines[(sid, "1s")]
            rows += [kline(first + k * 1000, 1000, 10_000 + k) for k in ks
                     if first + k * 1000 > rows[-1][0]]
    return ("call", add)


def config(rest: FakeRest, ws_url: str, tmp_path, source: str = "exchange", **extra):
    return load_config("config.yaml", {
        "market.source": source, "market.buffer": CAPACITY,
        "exchange.rest_url": rest.url, "exchange.ws_url": ws_url,
        "exchange.cob_exchange": "none", "exchange.restart_backoff_s": 0.05,
        "exchange.restart_max_backoff_s": 0.2, "runtime_dir": str(tmp_path / "rt"), **extra,
    }, environ={})


def assert_lost_nothing(market, first: int, last_k: int) -> None:
    """Kept running, lost nothing: every 1s candle from the REST history's start to live
    second last_k, once each, in every symbol; the source is running."""
    for sym in SIDS:
        ts = market.store.closed(sym, "1s")[:, 0].astype(int).tolist()
        assert ts[-1] == first + last_k * 1000, (sym, ts[-5:])
        assert ts[0] <= first - 90 * 1000, sym  # the REST history came first
        gaps = [(a, b) for a, b in zip(ts, ts[1:], strict=False) if b - a != 1000]
        assert not gaps, (sym, gaps)
    snap = market.snapshot()
    assert snap["running"] is True, snap["supervisor"]


def last_is(market, first: int, k: int):
    return lambda: all(market.store.last_ts(s) == first + k * 1000 for s in SIDS)


@pytest.fixture
def rest():
    fake, first = make_rest()
    fake.first = first
    yield fake
    fake.stop()


def run_market(cfg):
    market = build_market(cfg)
    market.start()
    return market


def test_dropped_connections_lose_no_candle(rest, tmp_path):
    first = rest.first
    # An abort can lose what was still buffered: REST has every second that closed (as the
    # exchange's would); 4 and 5 were never streamed at all.
    sessions = [
        [*seconds(first, range(0, 4)), on_rest(rest, first, range(0, 6)), ("drop",)],
        [*seconds(first, range(6, 10)), on_rest(rest, first, range(6, 10)), ("drop",)],
        seconds(first, range(10, 13)),
    ]
    with WsServer(sessions) as ws:
        market = run_market(config(rest, ws.fake.url, tmp_path))
        try:
            assert wait_until(last_is(market, first, 12))
            assert_lost_nothing(market, first, 12)
            feed = market.snapshot()["feeds"]["binance"]
            assert feed["reconnects"] >= 2 and feed["state"] == "connected"
            assert market.snapshot()["supervisor"]["restarts"] == 0  # the stream coped alone
        finally:
            market.stop()


def test_garbage_is_rejected_and_a_feed_that_accepts_nothing_shows_stalled(rest, tmp_path):
    first = rest.first
    seen: dict = {}
    holder: dict = {}

    def stalled() -> bool:
        snap = holder["market"].snapshot()
        feed = snap["feeds"]["binance"]
        if feed["state"] == "stalled":
            seen.update(feed, footer=header_view(snap)["feed"])
            return True
        return False

    garbage = [("raw", "{not json"), ("raw", '{"stream": "x", "data": {"e": "aggTrade", '
                                             '"E": 1}}')] * 5
    sessions = [[*seconds(first, range(0, 3)), *garbage, ("sleep", 0.7), ("until", stalled),
                 *seconds(first, range(3, 6))]]
    with WsServer(sessions) as ws:
        market = holder["market"] = build_market(
            config(rest, ws.fake.url, tmp_path, **{"exchange.stall_after_s": 0.5}))
        market.start()
        try:
            assert wait_until(last_is(market, first, 5))
            assert_lost_nothing(market, first, 5)
            assert seen["stalled"]["for_s"] >= 0.5
            assert seen["stalled"]["rejected_by_reason"] == {"not_json": 5,
                                                             "unexpected_event": 5}
            assert seen["connected"] is True
            assert "binance: STALLED" in seen["footer"], seen["footer"]
            assert "(not_json 5, unexpected_event 5)" in seen["footer"]
            assert market.snapshot()["feeds"]["binance"]["state"] == "connected"  # accepting
        finally:
            market.stop()


def test_a_feed_stalled_for_long_is_reconnected_and_loses_nothing(rest, tmp_path):
    first = rest.first
    garbage = [("raw", "{not json")] * 3
    # The first connection goes on sending only garbage; the second delivers again.
    sessions = [[*seconds(first, range(0, 3)), *garbage, ("sleep", 30)],
                [*seconds(first, range(3, 6))]]
    with WsServer(sessions) as ws:
        market = build_market(config(rest, ws.fake.url, tmp_path, **{
            "exchange.stall_after_s": 0.5, "exchange.stalled_reconnect_s": 0.5}))
        market.start()
        try:
            assert wait_until(last_is(market, first, 5))
            assert_lost_nothing(market, first, 5)
            snap = market.snapshot()
            feed = snap["feeds"]["binance"]
            assert feed["forced_reconnects"] == 1 and feed["reconnects"] >= 1
            assert feed["state"] == "connected"
            assert "(1 for stalling)" in header_view(snap)["feed"]
        finally:
            market.stop()


def test_skipped_depth_ids_resync_the_book(rest, tmp_path):
    first = rest.first

    def diff(k: int, update_id: int, bid: float) -> tuple:
        return ("send", depth_msg("ETHUSDT", first + k * 1000 + 900, update_id, update_id,
                                  [[bid, 1.0]], []))

    holder: dict = {}

    def synced_at(bid: float):
        def check() -> bool:
            book = holder["market"].books.get("ETH/USDT")
            return book is not None and book.bids[0][0] == bid
        return ("until", check)

    def newer_snapshot() -> None:
        rest.books["ETHUSDT"] = {"lastUpdateId": 109, "bids": [["1990.0", "5.0"]],
                                 "asks": [["2001.0", "1.5"]]}

    sessions = [[*second(first, 0), diff(0, 101, 1999.1), *second(first, 1), diff(1, 102, 1999.2),
                 synced_at(1999.2), ("call", newer_snapshot), *second(first, 2), diff(2, 110, 1999.3),  # 103-109 lost
                 *second(first, 3), ("sleep", 0.2), diff(3, 111, 1999.4), *second(first, 4)]]
    with WsServer(sessions) as ws:
        market = holder["market"] = build_market(config(rest, ws.fake.url, tmp_path))
        market.start()
        try:
            assert wait_until(last_is(market, first, 4))
            assert wait_until(lambda: market.books.get("ETH/USDT") is not None
                              and market.books.get("ETH/USDT").bids[0][0] == 1999.4)
            assert_lost_nothing(market, first, 4)
            feed = market.snapshot()["feeds"]["binance"]
            assert feed["resyncs"] == 1 and rest.count("/api/v3/depth") >= 2
        finally:
            market.stop()


def test_a_server_that_refuses_signed_calls_serves_a_source_with_keys_set(
        rest, tmp_path, monkeypatch):
    first = rest.first
    monkeypatch.setenv("EXCHANGE_API_KEY", "key-abc")
    monkeypatch.setenv("EXCHANGE_API_SECRET", "secret-xyz")
    # The server does refuse them: ccxt with the keys and its defaults loads margin pairs
    # (a signed sapi call) and gets the 401 that used to stop the source.
    keyed = ccxt.binance({"apiKey": "key-abc", "secret": "secret-xyz",
                          "options": {"fetchMarkets": {"types": ["spot"]}}})
    _point_at(keyed.urls["api"], rest.url)
    with pytest.raises(ccxt.AuthenticationError):
        keyed.load_markets()
    assert rest.signed_refused >= 1
    refused_before = rest.signed_refused
    private_before = sum(1 for p, _ in rest.requests if p.startswith("/sapi"))
    with WsServer([seconds(first, range(0, 4))]) as ws:
        # source: auto probes load_markets: it must pass, not fall back to the replay.
        market = run_market(config(rest, ws.fake.url, tmp_path, source="auto"))
        try:
            assert market.source.kind == "exchange", market.notice
            assert wait_until(last_is(market, first, 3))
            assert_lost_nothing(market, first, 3)
            assert rest.signed_refused == refused_before  # no signed call at all
            assert sum(1 for p, _ in rest.requests if p.startswith("/sapi")) == private_before
        finally:
            market.stop()


def test_an_exchange_back_with_an_older_clock_moves_market_time_forward_only(rest, tmp_path):
    first = rest.first
    times: list[int] = []
    done = threading.Event()
    sessions = [
        [*seconds(first, range(0, 6)), ("sleep", 0.3), ("drop",)],
        # Restarted with an older clock: it replays seconds 2..5 with older event times first.
        [*seconds(first, range(2, 6), event_ms=first + 1500), ("sleep", 0.2),
         *seconds(first, range(6, 9))],
    ]
    with WsServer(sessions) as ws:
        market = run_market(config(rest, ws.fake.url, tmp_path))

        def sample() -> None:
            # From the first message on: before it, market time is a stand-in (the exchange's
            # measured clock less a margin) that the first event time replaces; this fake's
            # events are 20 s old, so that replacement is a step back here (not live).
            wait_until(lambda: market.source.binance.health()["last_message_ms"] is not None)
            while not done.is_set():
                times.append(market.clock.now_ms())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            assert wait_until(last_is(market, first, 8))
            time.sleep(0.1)
            done.set()
            sampler.join(2)
            assert_lost_nothing(market, first, 8)
            went_back = [(a, b) for a, b in zip(times, times[1:], strict=False) if b < a]
            assert not went_back and len(times) > 100, went_back[:3]
            assert market.feed.rejected_by_reason().get("duplicate", 0) == 0
            assert market.snapshot()["feeds"]["binance"]["reconnects"] == 1
        finally:
            done.set()
            market.stop()


@pytest.mark.parametrize("offset_ms", [-3_600_000, 3_600_000])
def test_an_exchange_clock_an_hour_off_still_backfills_and_shows_the_skew(offset_ms, tmp_path):
    rest, first = make_rest(offset_ms)
    try:
        with WsServer([seconds(first, range(0, 4))]) as ws:
            market = run_market(config(rest, ws.fake.url, tmp_path))
            try:
                assert wait_until(last_is(market, first, 3))
                assert_lost_nothing(market, first, 3)
                source = market.source
                assert all(p["state"] == "done" for p in source.progress.values()), \
                    source.progress
                assert len(market.store.closed("ETH/USDT", "1m")) >= CAPACITY["1m"] - 1
                feed = market.snapshot()["feeds"]["binance"]
                assert abs(feed["clock_skew_ms"] - offset_ms) < 2_000, feed["clock_skew_ms"]
                # Market time is the exchange's, not the local clock's.
                assert abs(market.clock.now_ms() - server_now(offset_ms)) < 30_000
            finally:
                market.stop()
    finally:
        rest.stop()


def test_one_symbols_book_failing_for_good_leaves_the_others_streaming(rest, tmp_path):
    first = rest.first
    rest.depth_errors["BTCUSDT"] = (400, {"code": -1121, "msg": "Invalid symbol."})

    def heal() -> None:
        rest.depth_errors.clear()

    def book_steps(k: int) -> list:
        return [("send", depth_msg(sid, first + k * 1000 + 900, 101 + k, 101 + k,
                                   [[1999.0 + k * 0.1, 1.0]], [])) for sid in SIDS.values()]

    failing = [s for k in range(0, 8) for s in (*second(first, k), *book_steps(k),
                                                ("sleep", 0.1))]
    healed = [s for k in range(8, 12) for s in (*second(first, k), *book_steps(k),
                                                ("sleep", 0.1))]
    holder: dict = {}

    def failures() -> int:
        failed = holder["market"].snapshot()["feeds"]["binance"]["books_failed"]
        holder["failed"] = failed
        return failed.get("BTC/USDT", {}).get("failures", 0) >= 2

    sessions = [[*failing, ("until", failures), ("call", heal), *healed]]
    with WsServer(sessions) as ws:
        market = holder["market"] = build_market(config(rest, ws.fake.url, tmp_path))
        market.source.binance.max_backoff_s = 0.2  # retry the failed book quickly
        market.start()
        try:
            assert wait_until(last_is(market, first, 11))
            assert_lost_nothing(market, first, 11)
            failed = holder["failed"]["BTC/USDT"]
            assert "BadSymbol" in failed["reason"] and failed["retry_at_ms"] > 0
            assert market.books.get("ETH/USDT") is not None  # the other symbol's book went on
            assert wait_until(lambda: market.books.get("BTC/USDT") is not None)  # retried, back
            feed = market.snapshot()["feeds"]["binance"]
            assert feed["books_failed"] == {} and feed["reconnects"] == 0
            assert market.snapshot()["supervisor"]["restarts"] == 0
        finally:
            market.stop()


def test_an_unexpected_exception_in_the_source_is_shown_and_the_source_restarted(
        rest, tmp_path):
    first = rest.first
    sessions = [
        [*seconds(first, range(0, 3)), ("send", trade_msg("ETHUSDT", first + 2500, 2002.0, 0.1,
                                                          True)), *seconds(first, range(3, 5))],
        [("sleep", 0.2), *seconds(first, range(3, 8))],
    ]
    with WsServer(sessions) as ws:
        cfg = config(rest, ws.fake.url, tmp_path, **{"exchange.restart_backoff_s": 0.6,
                                                     "exchange.restart_max_backoff_s": 1.0})
        market = build_market(cfg)
        calls = []

        def broken_trade(*args) -> None:
            calls.append(args)
            raise RuntimeError("a bug in the trade handler")

        market.source.binance.on_trade = broken_trade
        market.start()
        try:
            assert wait_until(lambda: market.snapshot()["supervisor"]["state"] == "restarting")
            snap = market.snapshot()
            assert snap["running"] is False
            sup = snap["supervisor"]
            assert sup["last_error"] == "RuntimeError: a bug in the trade handler"
            assert sup["failures"] == 1 and 0 < sup["next_retry_in_s"] <= 0.6
            footer = header_view(snap)["feed"]
            assert footer.startswith("source STOPPED (RuntimeError: a bug in the trade handler)"
                                     ": restart #1 in "), footer
            assert wait_until(last_is(market, first, 7))
            assert_lost_nothing(market, first, 7)
            sup = market.snapshot()["supervisor"]
            assert (sup["state"], sup["restarts"], sup["failures"]) == ("running", 1, 1)
        finally:
            market.stop()


class FlakySource:
    """Fails ``fail`` times, then runs until stopped."""

    kind = "flaky"

    def __init__(self, fail: int):
        self.fail, self.backfills, self.runs = fail, 0, 0

    def backfill(self) -> None:
        self.backfills += 1

    def run(self, clock, stop) -> None:
        self.runs += 1
        if self.runs <= self.fail:
            raise ConnectionError(f"failure {self.runs}")
        stop.wait()


def test_the_supervisor_backs_off_exponentially_with_jitter_up_to_its_cap():
    from core.clock import ManualClock

    source = FlakySource(fail=6)
    sup = SourceSupervisor(source, ManualClock(), initial_s=0.01, max_s=0.04)
    stop = threading.Event()
    thread = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    thread.start()
    assert wait_until(lambda: sup.state == "running" and source.runs == 7, timeout=5)
    stop.set()
    thread.join(2)
    assert sup.state == "stopped" and (sup.restarts, sup.failures) == (6, 6)
    assert source.backfills == 1  # a backfill that worked is not repeated
    caps = [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]  # doubling, capped at max_s
    assert all(cap / 2 <= d <= cap for d, cap in zip(sup.delays, caps, strict=True)), sup.delays
    assert len(set(sup.delays)) == 6  # jittered
    assert sup.last_error == "ConnectionError: failure 6"
