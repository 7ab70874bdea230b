"""Tests for core.market.exchange_rest and exchange_errors against a local fake Binance.

Nothing here leaves 127.0.0.1: the fake server (tests/core/fake_binance_rest.py) speaks
Binance's public spot REST, and ExchangeRest's URLs are pointed at it with base_url.
"""

import copy
import logging
import socket
import time

import ccxt
import pytest

from core.market import exchange_rest
from core.market.books import OrderBooks
from core.market.candles import CandleStore
from core.market.exchange_errors import (
    ExchangeError,
    PermanentExchangeError,
    TemporaryExchangeError,
    convert_ccxt,
)
from core.market.exchange_rest import ExchangeRest
from core.market.feed import MarketFeed
from tests.core.fake_binance_rest import (
    INTERNAL,
    OVERLOADED,
    T0,
    TOO_MANY,
    FakeBinance,
    kline_series,
)

SYM = "ETH/USDT"
MIN = 60_000
KLINES = "/api/v3/klines"
INFO = "/api/v3/exchangeInfo"
DEPTH = "/api/v3/depth"
SERIES = kline_series(T0, 2_600)  # 1m ETHUSDT candles T0 .. T0 + 2599 min
LOGGER = "core.market.exchange_rest"


def as_ccxt(row: list) -> list:
    """What ccxt makes of one of Binance's 12-column klines."""
    return [row[0], *(float(x) for x in row[1:6])]


@pytest.fixture
def fake():
    server = FakeBinance()
    server.klines[("ETHUSDT", "1m")] = SERIES
    server.books["ETHUSDT"] = {
        "lastUpdateId": 987_654_321,
        "bids": [["2000.10", "1.5"], ["2000.00", "2.25"], ["1999.50", "0.1"]],
        "asks": [["2000.20", "0.5"], ["2000.30", "3.0"]],
    }
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def saved_markets():
    """Markets as a saved file would hold them: loaded once from a fake exchangeInfo."""
    server = FakeBinance().start()
    try:
        with ExchangeRest(base_url=server.url, retries=1, timeout_ms=2_000) as rest:
            markets = rest.load_markets()
    finally:
        server.stop()
    return markets


def make_rest(fake, markets=None, **kwargs) -> ExchangeRest:
    options = {"timeout_ms": 2_000, "retries": 3, "backoff_s": 0.001, "max_backoff_s": 0.01}
    options.update(kwargs)
    return ExchangeRest(base_url=fake.url, markets=copy.deepcopy(markets), **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- paging ----------------------------------------------------------------------------------

def test_2500_candles_take_three_pages_in_order_without_duplicates(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest:
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 2_500 * MIN)

    assert rows == [as_ccxt(r) for r in SERIES[:2_500]]
    times = [r[0] for r in rows]
    assert times == sorted(set(times))
    assert fake.count(KLINES) == 3
    assert fake.count(INFO) == 0  # saved markets: no exchangeInfo request
    pages = fake.params(KLINES)
    assert [p["symbol"] for p in pages] == ["ETHUSDT"] * 3
    assert [p["interval"] for p in pages] == ["1m"] * 3
    # Binance's spot cap of 1000 per call, then only the 500 still missing.
    assert [int(p["limit"]) for p in pages] == [1_000, 1_000, 500]
    # Each page starts just after the newest candle of the one before.
    assert [int(p["startTime"]) for p in pages] == [T0, T0 + 999 * MIN + 1, T0 + 1_999 * MIN + 1]


def test_until_and_unaligned_since_are_respected(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest:
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0 + 30_000, T0 + 10 * MIN)
    # The first open at or after since is T0 + 1 min; the candle opening at until is excluded.
    assert [r[0] for r in rows] == [T0 + k * MIN for k in range(1, 10)]
    assert fake.count(KLINES) == 1
    assert int(fake.params(KLINES)[0]["limit"]) == 9


def test_empty_range_makes_no_request(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest:
        assert rest.fetch_ohlcv_all(SYM, "1m", T0 + 5 * MIN, T0 + 5 * MIN) == []
    assert fake.count(KLINES) == 0


def test_progress_is_reported_after_every_page(fake, saved_markets, caplog):
    calls = []
    with caplog.at_level(logging.INFO, logger=LOGGER), make_rest(fake, saved_markets) as rest:
        rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 2_500 * MIN,
                             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1_000, 2_500), (2_000, 2_500), (2_500, 2_500)]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("2500/2500 candles after page 3" in m for m in infos)


def test_history_ending_early_stops_on_an_empty_page(fake, saved_markets, caplog):
    # The fake holds 2,600 candles; ask for 3,000: pages of 1000, 1000, 600, then an empty one.
    with make_rest(fake, saved_markets) as rest:
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 3_000 * MIN)
    assert len(rows) == 2_600
    assert fake.count(KLINES) == 4
    assert any("got 2600 of 3000 candles" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_overlapping_pages_are_deduplicated(fake, saved_markets):
    """Exchanges that repeat the `since` candle: each page also brings the previous page's last."""
    with make_rest(fake, saved_markets) as rest:
        real = rest.exchange.fetch_ohlcv
        previous: list[list] = []

        def overlapping(symbol, tf, since, limit):
            page = real(symbol, tf, since, limit)
            out = previous[-1:] + page
            previous[:] = page
            return out

        rest.exchange.fetch_ohlcv = overlapping
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 2_100 * MIN)
    assert rows == [as_ccxt(r) for r in SERIES[:2_100]]


def test_a_page_that_does_not_advance_ends_the_loop(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest:
        first_page = rest.exchange.fetch_ohlcv(SYM, "1m", T0, 1_000)
        calls = []

        def stuck(symbol, tf, since, limit):
            calls.append(since)
            return first_page  # always the same candles, whatever `since` says

        rest.exchange.fetch_ohlcv = stuck
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 2_500 * MIN)
    assert len(calls) == 2
    assert rows == [as_ccxt(r) for r in SERIES[:1_000]]


def test_the_forming_candle_is_never_returned(fake, saved_markets, monkeypatch):
    forming = T0 + 2_599 * MIN  # the fake's newest candle, 30 s into its minute "now"
    monkeypatch.setattr(exchange_rest, "_now_ms", lambda: forming + 30_000)
    with make_rest(fake, saved_markets) as rest:
        rows = rest.fetch_ohlcv_all(SYM, "1m", forming - 5 * MIN, forming + 60 * MIN)
    assert [r[0] for r in rows] == [forming - k * MIN for k in range(5, 0, -1)]
    assert fake.count(KLINES) == 1  # the page ended at the forming candle: no second call


def test_candle_end_follows_the_calendar_for_months():
    rest = ExchangeRest(markets={})
    jan_2024, feb_2024, jan_2025 = 1_704_067_200_000, 1_706_745_600_000, 1_735_689_600_000
    dec_2024 = 1_733_011_200_000
    assert rest.candle_end_ms(jan_2024, "1M") == feb_2024
    assert rest.candle_end_ms(dec_2024, "1M") == jan_2025
    assert rest.candle_end_ms(jan_2024, "1w") == jan_2024 + 7 * 86_400_000
    assert rest.candle_end_ms(jan_2024, "1m") == jan_2024 + MIN


def test_rows_pass_market_feed_backfill_validation(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest:
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 2_500 * MIN)
    store = CandleStore([SYM, "BTC/USDT"], ("1m", "5m"), {"1m": 3_000, "5m": 600})
    feed = MarketFeed(store, OrderBooks())
    assert feed.backfill(SYM, "1m", rows) == 2_500
    assert feed.rejected_by_reason() == {}
    assert store.closed(SYM, "1m", 3_000)[:, 0].tolist() == [float(r[0]) for r in rows]


# -- markets ---------------------------------------------------------------------------------

def test_markets_load_lazily_once_and_are_retried(fake):
    fake.fail_next = [503]
    with make_rest(fake) as rest:
        assert fake.count(INFO) == 0  # nothing at construction
        rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 10 * MIN)
        rest.fetch_order_book(SYM, limit=5)
        markets = rest.load_markets()
    assert fake.count(INFO) == 2  # one 503, one success, then never again
    assert {"ETH/USDT", "BTC/USDT"} <= set(markets)
    assert markets[SYM]["id"] == "ETHUSDT" and markets[SYM]["spot"]
    # Spot only: no futures exchangeInfo (fapi/dapi), no sapi currencies.
    assert {p for p, _ in fake.requests} == {INFO, KLINES, DEPTH}


def test_unknown_timeframe_is_permanent_and_sends_nothing(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest, pytest.raises(PermanentExchangeError,
                                                               match="timeframe '7m'"):
        rest.fetch_ohlcv_all(SYM, "7m", T0, T0 + 10 * MIN)
    assert fake.requests == []


# -- retries and errors ----------------------------------------------------------------------

def test_two_503s_then_success_is_retried(fake, saved_markets, caplog):
    fake.fail_next = [503, 503]
    with caplog.at_level(logging.WARNING, logger=LOGGER), \
            make_rest(fake, saved_markets, retries=5) as rest:
        rows = rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 500 * MIN)
    assert rows == [as_ccxt(r) for r in SERIES[:500]]
    assert fake.count(KLINES) == 3
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2
    assert "attempt 1 failed" in retries[0] and "attempt 2 failed" in retries[1]
    assert "ExchangeNotAvailable" in retries[0]


@pytest.mark.parametrize(("failure", "ccxt_name"), [
    (OVERLOADED, "ExchangeError"),  # 503 {-1008 overloaded}: unclassified by ccxt, 5xx decides
    (INTERNAL, "OperationFailed"),  # 500 {-1001 internal error}
    (TOO_MANY, "DDoSProtection"),  # 429 {-1003 request weight}: ccxt's binance checks 429 first
    (502, "ExchangeNotAvailable"),  # a gateway's plain-text error page
    (504, "RequestTimeout"),
], ids=["503-overloaded", "500-internal", "429-weight", "502-plain", "504-plain"])
def test_binance_error_answers_are_retried(fake, saved_markets, caplog, failure, ccxt_name):
    fake.fail_next = [failure]
    with make_rest(fake, saved_markets) as rest:
        book = rest.fetch_order_book(SYM)
    assert book["nonce"] == 987_654_321
    assert fake.count(DEPTH) == 2
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 1 and f": {ccxt_name}: " in retries[0]


def test_a_server_that_always_503s_gives_up_after_retries(fake, saved_markets):
    fake.fail_always = 503
    with make_rest(fake, saved_markets, retries=4) as rest, \
            pytest.raises(TemporaryExchangeError) as info:
        rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 500 * MIN)
    assert fake.count(KLINES) == 4
    assert isinstance(info.value.__cause__, ccxt.ExchangeNotAvailable)
    assert info.value.exchange == "binance"
    assert info.value.operation.startswith("fetch_ohlcv ETH/USDT 1m")


def test_a_symbol_missing_from_markets_is_permanent_without_a_request(fake, saved_markets):
    with make_rest(fake, saved_markets) as rest, \
            pytest.raises(PermanentExchangeError) as info:
        rest.fetch_ohlcv_all("DOGE/USDT", "1m", T0, T0 + 10 * MIN)
    assert isinstance(info.value.__cause__, ccxt.BadSymbol)
    assert fake.requests == []


def test_a_symbol_the_exchange_rejects_is_permanent_without_retries(fake, saved_markets):
    markets = copy.deepcopy(saved_markets)
    sol = copy.deepcopy(markets[SYM])
    sol.update(id="SOLUSDT", symbol="SOL/USDT", base="SOL", baseId="SOL", lowercaseId="solusdt")
    markets["SOL/USDT"] = sol  # listed in our saved markets, delisted on the exchange
    with make_rest(fake, markets, retries=5) as rest, \
            pytest.raises(PermanentExchangeError, match="Invalid symbol") as info:
        rest.fetch_ohlcv_all("SOL/USDT", "1m", T0, T0 + 10 * MIN)
    assert isinstance(info.value.__cause__, ccxt.BadSymbol)  # Binance's -1121
    assert fake.count(KLINES) == 1


def test_a_refused_connection_is_temporary_and_fails_fast(saved_markets):
    rest = ExchangeRest(base_url=f"http://127.0.0.1:{free_port()}", markets=saved_markets,
                        timeout_ms=500, retries=2, backoff_s=0.001, max_backoff_s=0.01)
    start = time.monotonic()
    with rest, pytest.raises(TemporaryExchangeError) as info:
        rest.fetch_order_book(SYM)
    assert time.monotonic() - start < 2.0
    assert isinstance(info.value.__cause__, ccxt.NetworkError)


def test_a_slow_server_times_out_as_temporary(fake, saved_markets):
    fake.delay_s = 0.5
    with make_rest(fake, saved_markets, timeout_ms=100, retries=2) as rest, \
            pytest.raises(TemporaryExchangeError) as info:
        rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 10 * MIN)
    assert isinstance(info.value.__cause__, ccxt.RequestTimeout)
    assert fake.count(KLINES) == 2


# -- order book ------------------------------------------------------------------------------

def test_fetch_order_book_returns_levels_and_last_update_id(fake, saved_markets):
    before = int(time.time() * 1000)
    with make_rest(fake, saved_markets) as rest:
        book = rest.fetch_order_book(SYM, limit=50)
    assert set(book) == {"bids", "asks", "ts", "nonce"}
    assert book["nonce"] == 987_654_321
    assert book["bids"] == [[2000.10, 1.5], [2000.00, 2.25], [1999.50, 0.1]]
    assert book["asks"] == [[2000.20, 0.5], [2000.30, 3.0]]
    # Binance spot depth has no timestamp: ts is when the response arrived.
    assert before <= book["ts"] <= int(time.time() * 1000)
    assert fake.params(DEPTH) == [{"symbol": "ETHUSDT", "limit": "50"}]
    feed = MarketFeed(CandleStore([SYM], ("1m",), {"1m": 10}), OrderBooks())
    assert feed.book(SYM, book["ts"], book["bids"], book["asks"]) is not None


# -- error conversion ------------------------------------------------------------------------

CONVERSIONS = [
    (ccxt.NetworkError, TemporaryExchangeError),
    (ccxt.RequestTimeout, TemporaryExchangeError),
    (ccxt.ExchangeNotAvailable, TemporaryExchangeError),
    (ccxt.OnMaintenance, TemporaryExchangeError),
    (ccxt.DDoSProtection, TemporaryExchangeError),
    (ccxt.RateLimitExceeded, TemporaryExchangeError),
    (ccxt.InvalidNonce, TemporaryExchangeError),
    (ccxt.ChecksumError, TemporaryExchangeError),
    (ccxt.BadResponse, TemporaryExchangeError),
    (ccxt.NullResponse, TemporaryExchangeError),
    (ConnectionRefusedError, TemporaryExchangeError),
    (socket.gaierror, TemporaryExchangeError),
    (TimeoutError, TemporaryExchangeError),
    (ccxt.ExchangeError, PermanentExchangeError),
    (ccxt.AuthenticationError, PermanentExchangeError),
    (ccxt.PermissionDenied, PermanentExchangeError),
    (ccxt.AccountSuspended, PermanentExchangeError),
    (ccxt.BadRequest, PermanentExchangeError),
    (ccxt.BadSymbol, PermanentExchangeError),
    (ccxt.ArgumentsRequired, PermanentExchangeError),
    (ccxt.NotSupported, PermanentExchangeError),
    (ccxt.InvalidOrder, PermanentExchangeError),
    (ccxt.InsufficientFunds, PermanentExchangeError),
    (ccxt.OperationRejected, PermanentExchangeError),
    (ccxt.OperationFailed, TemporaryExchangeError),
    (ccxt.CancelPending, TemporaryExchangeError),
    (ccxt.BaseError, PermanentExchangeError),
]


@pytest.mark.parametrize(("ccxt_cls", "expected"), CONVERSIONS,
                         ids=[c.__name__ for c, _ in CONVERSIONS])
def test_convert_ccxt_maps_each_class(ccxt_cls, expected):
    original = ccxt_cls("binance GET https://api.binance.com/api/v3/klines 503")
    converted = convert_ccxt(original, "binance", "fetch_ohlcv ETH/USDT 1m")
    assert type(converted) is expected
    assert converted.__cause__ is original
    assert converted.exchange == "binance"
    assert converted.operation == "fetch_ohlcv ETH/USDT 1m"
    assert str(converted).startswith(f"binance fetch_ohlcv ETH/USDT 1m: {ccxt_cls.__name__}: ")
    assert "api/v3/klines 503" in str(converted)


@pytest.mark.parametrize(("ccxt_cls", "status", "expected"), [
    (ccxt.ExchangeError, 503, TemporaryExchangeError),  # unclassified, but the server failed
    (ccxt.ExchangeError, 500, TemporaryExchangeError),
    (ccxt.ExchangeError, 429, TemporaryExchangeError),
    (ccxt.ExchangeError, 400, PermanentExchangeError),  # unclassified, the request's fault
    (ccxt.ExchangeError, None, PermanentExchangeError),
    (ccxt.BadSymbol, 500, PermanentExchangeError),  # a classified error keeps its category
    (ccxt.RequestTimeout, None, TemporaryExchangeError),
])
def test_convert_ccxt_uses_the_http_status_for_unclassified_errors(ccxt_cls, status, expected):
    converted = convert_ccxt(ccxt_cls("binance {}"), "binance", "fetch_order_book", status)
    assert type(converted) is expected
    if status is not None:
        assert f"(HTTP {status})" in str(converted)


def test_convert_ccxt_passes_our_own_errors_through():
    ours = PermanentExchangeError("already converted", "binance", "load_markets")
    assert convert_ccxt(ours, "bybit", "other") is ours
    assert issubclass(TemporaryExchangeError, ExchangeError)
    assert issubclass(PermanentExchangeError, ExchangeError)
    assert not issubclass(ExchangeError, ccxt.BaseError)  # callers never catch ccxt's by accident


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not a ccxt exchange"):
        ExchangeRest("nosuchexchange")
    with pytest.raises(ValueError, match="retries"):
        ExchangeRest(retries=0)


def test_base_url_rewrites_every_api_url_and_sets_timeout():
    with ExchangeRest(base_url="http://127.0.0.1:9", timeout_ms=1_234) as rest:
        api = rest.exchange.urls["api"]
        assert api["public"] == "http://127.0.0.1:9/api/v3"
        assert api["sapi"] == "http://127.0.0.1:9/sapi/v1"
        assert api["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
        assert rest.exchange.timeout == 1_234
        assert rest.exchange.enableRateLimit is True


def test_with_keys_set_every_call_is_public_so_a_server_refusing_signed_ones_serves_it(fake):
    """ccxt's binance loads margin pairs and currencies over signed sapi endpoints when it has
    keys; a key without that permission made market loading fail for good. The keys never
    reach ccxt, so nothing is signed: the fake answers every signed request 401."""
    rest = ExchangeRest(base_url=fake.url, retries=1,
                        credentials={"apiKey": "key-1", "secret": "secret-2"})
    assert SYM in rest.load_markets()
    assert rest.fetch_order_book(SYM)["nonce"] == 987_654_321
    assert len(rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 10 * MIN)) == 10
    assert rest.keys_set and not rest.authenticated
    assert fake.signed_refused == 0
    assert [p for p, _ in fake.requests if not p.startswith("/api/v3/")] == []
    assert "key-1" not in repr(rest) and "secret-2" not in repr(rest)


def test_clock_skew_is_the_servers_time_minus_the_local_one(fake):
    fake.clock_offset_ms = -3_600_000
    rest = ExchangeRest(base_url=fake.url, retries=1)
    assert abs(rest.clock_skew_ms() + 3_600_000) < 1_000
    fake.fail_always = OVERLOADED
    with pytest.raises(TemporaryExchangeError):
        rest.clock_skew_ms()  # one attempt: the source keeps its last measurement
    assert fake.count("/api/v3/time") == 2


def test_the_closed_candle_cut_off_is_the_exchanges_now(fake):
    """The newest candles by the exchange's clock are closed even if the local clock lags."""
    rest = ExchangeRest(base_url=fake.url, retries=1)
    rest.now_ms = lambda: T0 + 10 * MIN  # the exchange's now: minute 9 has closed
    assert [r[0] for r in rest.fetch_ohlcv_all(SYM, "1m", T0, T0 + 60 * MIN)][-1] == T0 + 9 * MIN
