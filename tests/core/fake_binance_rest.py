"""A local stand-in for Binance's public spot REST API, for tests that must not touch a network.

Serves /api/v3/exchangeInfo, /api/v3/klines, /api/v3/depth and /api/v3/time on 127.0.0.1 the
way Binance does (same JSON shapes, same parameter rules and error bodies), from in-memory data.
Every request is recorded, and failures can be scripted: a queue of HTTP statuses to answer
first, a status to answer always, a delay before answering, a symbol whose depth snapshot always
fails. Its clock can be skewed (``clock_offset_ms``). Like a public-only server, it refuses
every signed request (a ``signature`` parameter or an ``X-MBX-APIKEY`` header) with 401 and
counts them in ``signed_refused``.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
               "30m": 1_800_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}
MAX_KLINES = 1000  # Binance spot: default 500, max 1000 per call
MAX_DEPTH = 5000


def kline(open_ms: int, interval_ms: int, i: int) -> list:
    """Binance's 12-column kline row; prices are a deterministic wave, all consistent OHLC."""
    mid = 2000.0 + 50.0 * math.sin(i / 37.0) + 0.01 * i
    o = round(mid, 2)
    c = round(mid + 1.5 * math.sin(i / 3.0), 2)
    h = round(max(o, c) + 0.75, 2)
    lo = round(min(o, c) - 0.5, 2)
    v = round(1.0 + (i % 17) * 0.25, 3)
    return [open_ms, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{v:.8f}",
            open_ms + interval_ms - 1, f"{v * c:.8f}", 10 + i % 7, f"{v / 2:.8f}",
            f"{v * c / 2:.8f}", "0"]


def kline_series(start_ms: int, count: int, interval: str = "1m") -> list[list]:
    step = INTERVAL_MS[interval]
    return [kline(start_ms + k * step, step, k) for k in range(count)]


def _symbol_info(symbol: str, base: str, quote: str) -> dict:
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True,
        "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
             "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00010000", "maxQty": "9000.00000000",
             "stepSize": "0.00010000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


SYMBOLS = {"ETHUSDT": ("ETH", "USDT"), "BTCUSDT": ("BTC", "USDT")}


def _error(code: int, msg: str) -> dict:
    return {"code": code, "msg": msg}


# Binance's answers when it is overloaded or rate limiting (spot API docs, "General Info").
OVERLOADED = (503, _error(-1008, "Server is currently overloaded with other requests. "
                                 "Please try again in a few minutes."))
INTERNAL = (500, _error(-1001, "Internal error; unable to process your request. "
                               "Please try again."))
TOO_MANY = (429, _error(-1003, "Too much request weight used; current limit is 6000 request "
                               "weight per 1 MINUTE."))


@dataclass
class FakeBinance:
    """In-memory Binance. Fill ``klines[(symbol_id, interval)]`` and ``books[symbol_id]``."""

    klines: dict[tuple[str, str], list[list]] = field(default_factory=dict)
    books: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Failures to answer first, in order, then always: a status alone gets the plain-text body
    # Binance's gateway sends ("Service Unavailable."), or give (status, json_body).
    fail_next: list[int | tuple[int, object]] = field(default_factory=list)
    fail_always: int | tuple[int, object] | None = None
    delay_s: float = 0.0
    clock_offset_ms: int = 0  # the server's clock minus the local one
    depth_errors: dict[str, tuple[int, object]] = field(default_factory=dict)  # symbol id ->
    signed_refused: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeBinance:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = fake.answer(self.path, dict(self.headers))
                text = isinstance(body, str)
                data = body.encode() if text else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain" if text else
                                     "application/json;charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a timeout test): nothing to report

            def log_message(self, *args):  # keep pytest output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p == path)

    def params(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [q for p, q in self.requests if p == path]

    # -- routing ---------------------------------------------------------------------------
    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    def answer(self, raw_path: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
        """(status, JSON-able body or plain text) for one GET."""
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        signed = "signature" in query or any(
            k.lower() == "x-mbx-apikey" for k in (headers or {}))
        with self._lock:
            self.requests.append((parts.path, query))
            if signed:
                self.signed_refused += 1
                return 401, _error(-2015, "Invalid API-key, IP, or permissions for action.")
            scripted = self.fail_next.pop(0) if self.fail_next else self.fail_always
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(scripted, int):
            return scripted, "Service Unavailable."
        if scripted is not None:
            return scripted
        route = {"/api/v3/exchangeInfo": self._exchange_info, "/api/v3/klines": self._klines,
                 "/api/v3/depth": self._depth, "/api/v3/ping": lambda q: (200, {}),
                 "/api/v3/time": lambda q: (200, {"serverTime": self.now_ms()})}.get(parts.path)
        if route is None:
            return 404, {"code": -1, "msg": f"unknown route {parts.path}"}
        try:
            return route(query)
        except ValueError:
            return 400, _error(-1100, "Illegal characters found in a parameter.")

    def _exchange_info(self, q: dict) -> tuple[int, object]:
        return 200, {
            "timezone": "UTC", "serverTime": self.now_ms(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [],
            "symbols": [_symbol_info(s, b, qa) for s, (b, qa) in SYMBOLS.items()],
        }

    def _klines(self, q: dict) -> tuple[int, object]:
        symbol = q.get("symbol")
        if not symbol:
            return 400, _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null,"
                                      " or malformed.")
        if symbol not in SYMBOLS:
            return 400, _error(-1121, "Invalid symbol.")
        interval = q.get("interval")
        if interval not in INTERVAL_MS:
            return 400, _error(-1120, "Invalid interval.")
        limit = int(q.get("limit", 500))
        if not 1 <= limit <= MAX_KLINES:
            return 400, _error(-1130, "Data sent for parameter 'limit' is not valid.")
        rows = self.klines.get((symbol, interval), [])
        opens = [r[0] for r in rows]
        start, end = q.get("startTime"), q.get("endTime")
        lo = bisect.bisect_left(opens, int(start)) if start is not None else None
        hi = bisect.bisect_right(opens, int(end)) if end is not None else len(rows)
        if lo is None:  # no startTime: the newest `limit` up to endTime
            lo = max(0, hi - limit)
        return 200, rows[lo:min(hi, lo + limit)]

    def _depth(self, q: dict) -> tuple[int, object]:
        symbol = q.get("symbol")
        if symbol not in SYMBOLS:
            return 400, _error(-1121, "Invalid symbol.")
        if symbol in self.depth_errors:
            return self.depth_errors[symbol]
        limit = int(q.get("limit", 100))
        if not 1 <= limit <= MAX_DEPTH:
            return 400, _error(-1100, "Illegal characters found in parameter 'limit'; "
                                      "legal range is '1' to '5000'.")
        book = self.books.get(symbol, {"lastUpdateId": 1, "bids": [], "asks": []})
        return 200, {"lastUpdateId": book["lastUpdateId"], "bids": book["bids"][:limit],
                     "asks": book["asks"][:limit]}
