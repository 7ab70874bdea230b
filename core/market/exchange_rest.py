"""REST access to an exchange through ccxt: candle history in pages, order-book snapshots.

Every ccxt call goes through ``_call``, which converts ccxt's exceptions into Tickwise's
(core.market.exchange_errors), inside a method wrapped by the one ``_retried`` decorator: it
retries temporary errors with exponential backoff and jitter and gives up after ``retries``
attempts; permanent errors are raised at once. A long backfill retries each page on its own,
so a failure late in the history does not fetch the early pages again.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
import tenacity

from core.market.exchange_errors import (
    PermanentExchangeError,
    TemporaryExchangeError,
    convert_ccxt,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (candles fetched so far, candles expected)
T = TypeVar("T")

# Per-call candle limit when ccxt's `features` does not say (Binance spot's is 1000).
DEFAULT_OHLCV_LIMIT = 500

# Options that keep load_markets to the one request a spot dashboard needs. Binance otherwise
# also loads USD-M and COIN-M futures (fapi/dapi exchangeInfo), and with API keys set ccxt would
# call signed sapi endpoints (fetchCurrencies: capital/config/getall; fetchMargins, on by
# default: margin/allPairs and margin/isolated/allPairs), which a key without margin
# permission turns into a permanent error. Keys are not given to ccxt at all (see
# ExchangeRest); these options say the same thing twice.
_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot",
                "fetchMargins": False},
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _point_at(urls: dict, base_url: str) -> None:
    """Rewrite every URL in ccxt's ``urls['api']`` (nested dicts too) to base_url's scheme and
    host, keeping ccxt's path: https://api.binance.com/api/v3 -> http://127.0.0.1:8123/api/v3."""
    base = base_url.rstrip("/")
    for key, value in urls.items():
        if isinstance(value, dict):
            _point_at(value, base_url)
        elif isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            urls[key] = base + parts.path + (f"?{parts.query}" if parts.query else "")


def _retried(method: Callable[..., T]) -> Callable[..., T]:
    """Retry an ExchangeRest method on TemporaryExchangeError with the instance's policy."""

    @functools.wraps(method)
    def wrapper(self: ExchangeRest, *args: Any, **kwargs: Any) -> T:
        retrying = self._retrying.copy()  # a copy per call: its statistics are per call
        try:
            return retrying(method, self, *args, **kwargs)
        except TemporaryExchangeError as exc:
            log.warning("%s: giving up after %d attempts: %s", method.__name__,
                      retrying.statistics.get("attempt_number", 1), exc)
            raise

    return wrapper


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    name = getattr(state.fn, "__name__", "call")
    log.warning("%s attempt %d failed, retrying in %.2f s: %s", name, state.attempt_number,
                wait, exc)


ENV_API_KEY = "EXCHANGE_API_KEY"
ENV_API_SECRET = "EXCHANGE_API_SECRET"  # noqa: S105 - the variable's name, not a secret


def credentials_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """API credentials from the environment only (never from config.yaml), or None."""
    env = os.environ if environ is None else environ
    key, secret = env.get(ENV_API_KEY), env.get(ENV_API_SECRET)
    if not key and not secret:
        return None
    if not (key and secret):
        raise ValueError(f"set both {ENV_API_KEY} and {ENV_API_SECRET}, or neither")
    return {"apiKey": key, "secret": secret}


class ExchangeRest:
    """A ccxt exchange's public REST API with converted errors and retries.

    exchange_id: a ccxt id ("binance"). timeout_ms: per HTTP request (ccxt's default would be
    10 s too, but is set explicitly so a dropped connection never hangs longer). base_url: send
    every request to this scheme://host[:port] instead (tests use a local server). markets:
    saved ccxt market structures (list or dict by symbol), so no load_markets request is made;
    without them markets load on first use. retries: attempts per call, the first included.
    backoff_s, max_backoff_s: exponential backoff start and cap between attempts (plus up to
    backoff_s of random jitter). Each page or snapshot is retried on its own.
    """

    def __init__(self, exchange_id: str = "binance", timeout_ms: int = 10_000,
                 base_url: str | None = None,
                 markets: Mapping[str, dict] | Sequence[dict] | None = None,
                 retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 credentials: Mapping[str, str] | None = None):
        """credentials: {"apiKey", "secret"} from the environment (see ``credentials_from_env``).
        Public market data needs none, so they are not handed to ccxt: no request this class
        makes is signed, and ccxt cannot add a private call of its own (as binance's market
        loading does with keys set). ``keys_set`` says they were found; they are never logged,
        shown, returned or kept."""
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        cls = getattr(ccxt, exchange_id, None)
        if not (isinstance(cls, type) and issubclass(cls, ccxt.Exchange)):
            raise ValueError(f"{exchange_id!r} is not a ccxt exchange id")
        self.id = exchange_id
        options = {"fetchCurrencies": False, **_OPTIONS.get(exchange_id, {})}
        self.exchange: ccxt.Exchange = cls(
            {"timeout": timeout_ms, "enableRateLimit": True, "options": options})
        self.keys_set = bool(credentials)
        self.authenticated = False  # public calls only, keys or not
        # "Now" for the closed-candle cut-off: the exchange's time once the source has measured
        # its clock's skew (ExchangeSource sets it), the local clock until then.
        self.now_ms: Callable[[], int] = _now_ms
        if base_url:
            _point_at(self.exchange.urls["api"], base_url)
        if markets is not None:
            self.exchange.set_markets(markets)
        # The HTTP status of this thread's latest response: ccxt's exceptions do not carry it,
        # and convert_ccxt needs it to tell a 5xx from a refused request.
        self._http = threading.local()
        on_rest_response = self.exchange.on_rest_response

        def record_status(code: Any, *args: Any) -> Any:
            self._http.status = int(code) if code is not None else None
            return on_rest_response(code, *args)

        self.exchange.on_rest_response = record_status
        self._markets_lock = threading.Lock()
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TemporaryExchangeError),
            # backoff_s * 2**(attempt - 1) capped at max_backoff_s, plus 0..backoff_s jitter
            # (tenacity 8.2's API; wait_exponential_jitter's `initial` is deprecated in 9.2).
            wait=tenacity.wait_exponential(multiplier=backoff_s, max=max_backoff_s)
            + tenacity.wait_random(0, backoff_s),
            stop=tenacity.stop_after_attempt(retries),
            before_sleep=_log_retry,
            reraise=True,
        )

    def __repr__(self) -> str:  # never the credentials
        return f"ExchangeRest({self.id!r}, keys_set={self.keys_set})"

    def __enter__(self) -> ExchangeRest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        self.exchange.close()

    # -- ccxt call sites ---------------------------------------------------------------------
    def _call(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one ccxt call; its exceptions leave as Tickwise ExchangeErrors."""
        self._http.status = None
        try:
            return fn(*args, **kwargs)
        except ccxt.BaseError as exc:
            raise convert_ccxt(exc, self.id, operation, self._http.status) from exc

    def load_markets(self) -> dict[str, dict]:
        """ccxt market structures by symbol, loaded once (retried) unless given at construction.

        Save them and pass them as ``markets=`` to skip the request next time."""
        if not self.exchange.markets:
            with self._markets_lock:  # two threads asking at once make one request
                if not self.exchange.markets:
                    self._load_markets()
        return self.exchange.markets

    @_retried
    def _load_markets(self) -> None:
        self._call("load_markets", self.exchange.load_markets)

    def _market(self, symbol: str, operation: str) -> dict:
        self.load_markets()
        return self._call(operation, self.exchange.market, symbol)

    @_retried
    def _fetch_ohlcv_page(self, symbol: str, tf: str, since_ms: int, limit: int) -> list[list]:
        operation = f"fetch_ohlcv {symbol} {tf} since {since_ms}"
        return self._call(operation, self.exchange.fetch_ohlcv, symbol, tf, since_ms, limit)

    @_retried
    def _fetch_order_book(self, symbol: str, limit: int) -> tuple[dict, int]:
        book = self._call(f"fetch_order_book {symbol}", self.exchange.fetch_order_book,
                          symbol, limit)
        return book, self.now_ms()

    # -- public API ----------------------------------------------------------------------------
    def timeframe_ms(self, tf: str) -> int:
        if tf not in (self.exchange.timeframes or {}):
            raise PermanentExchangeError(
                f"timeframe {tf!r} is not offered; choose from {list(self.exchange.timeframes)}",
                self.id, "fetch_ohlcv")
        return int(self.exchange.parse_timeframe(tf) * 1000)

    def ohlcv_limit(self, symbol: str) -> int:
        """Candles one fetch_ohlcv call may return for this market (ccxt's ``features``)."""
        market = self._market(symbol, "ohlcv_limit")
        node = (self.exchange.features or {}).get(market["type"]) or {}
        if market["type"] in ("swap", "future"):
            node = node.get("linear" if market.get("linear") else "inverse") or {}
        limit = (node.get("fetchOHLCV") or {}).get("limit")
        return int(limit) if limit else DEFAULT_OHLCV_LIMIT

    def candle_end_ms(self, ts: int, tf: str) -> int:
        """When the candle of tf opening at ts closes (the next one's open time). Exact for
        calendar months too (ccxt's parse_timeframe counts them as 30 days)."""
        if tf.endswith("M"):
            start = datetime.fromtimestamp(ts // 1000, tz=UTC)
            months = start.month - 1 + int(tf[:-1])
            end = datetime(start.year + months // 12, months % 12 + 1, 1, tzinfo=UTC)
            return int(end.timestamp()) * 1000
        return ts + self.timeframe_ms(tf)

    def fetch_ohlcv_all(self, symbol: str, tf: str, since_ms: int, until_ms: int,
                        progress: Progress | None = None) -> list[list]:
        """Closed candles with since_ms <= open time < until_ms, oldest first, no duplicates.

        Pages forward from since_ms with the exchange's per-call limit (Binance spot: 1000),
        each page retried on its own. Stops once the next candle would open at or after
        until_ms, or when a page is empty or does not move past the previous one. A candle
        still forming by the local clock is left out. Rows are ccxt's [ts_ms, o, h, l, c, v].
        progress(done, expected) is called after every page; expected is counted from the
        timeframe's length (an estimate for weeks and months).
        """
        tf_ms = self.timeframe_ms(tf)
        limit = self.ohlcv_limit(symbol)
        now = self.now_ms()
        first = -(-since_ms // tf_ms) * tf_ms  # first open at or after since_ms (regular tfs)
        expected = max(0, -(-(min(until_ms, now - tf_ms + 1) - first) // tf_ms))
        rows: dict[int, list] = {}
        cursor, next_open, pages = since_ms, since_ms, 0
        # Go on while a closed candle could still open before until_ms.
        while next_open < until_ms and self.candle_end_ms(next_open, tf) <= now:
            # Ask for no more than are left (an undercount only costs one more page).
            wanted = -(-(until_ms - max(next_open, first)) // tf_ms)
            page = self._fetch_ohlcv_page(symbol, tf, cursor, max(1, min(limit, wanted)))
            pages += 1
            last = max((int(r[0]) for r in page), default=None)
            for row in page:
                ts = int(row[0])
                if since_ms <= ts < until_ms and self.candle_end_ms(ts, tf) <= now:
                    rows.setdefault(ts, [ts, *row[1:6]])  # some exchanges repeat `since`
            expected = max(expected, len(rows))
            log.info("%s %s %s: %d/%d candles after page %d", self.id, symbol, tf, len(rows),
                     expected, pages)
            if progress is not None:
                progress(len(rows), expected)
            if last is None or last < cursor:
                break
            cursor, next_open = last + 1, self.candle_end_ms(last, tf)
        if len(rows) < expected:
            log.warning("%s %s %s: got %d of %d candles expected in [%d, %d) (gaps on the "
                        "exchange?)", self.id, symbol, tf, len(rows), expected, since_ms,
                        until_ms)
        return [rows[ts] for ts in sorted(rows)]

    def fetch_order_book(self, symbol: str, limit: int = 100) -> dict:
        """A REST snapshot: {"bids": [[price, size], ...] best first, "asks": likewise,
        "ts": ms, "nonce": the exchange's update id (Binance lastUpdateId)}.

        ts is the exchange's timestamp when the response has one (Binance futures' "T"), else
        the local time the response arrived (Binance spot depth carries none).
        """
        self._market(symbol, f"fetch_order_book {symbol}")
        book, received_ms = self._fetch_order_book(symbol, limit)
        return {
            "bids": [[float(level[0]), float(level[1])] for level in book["bids"]],
            "asks": [[float(level[0]), float(level[1])] for level in book["asks"]],
            "ts": int(book["timestamp"]) if book.get("timestamp") is not None else received_ms,
            "nonce": book.get("nonce"),
        }

    def clock_skew_ms(self) -> int:
        """The exchange's clock minus the local one, ms: its server time against the middle
        of the local times the request left and the answer came (public; one attempt: the
        caller keeps its last measurement and tries again later)."""
        sent = _now_ms()
        server = int(self._call("fetch_time", self.exchange.fetch_time))
        received = _now_ms()
        return server - (sent + received) // 2
