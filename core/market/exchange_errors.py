"""Tickwise's own exchange errors, and the one place ccxt's exceptions are mapped onto them.

Jobs catch these by category at their top: a ``TemporaryExchangeError`` is worth retrying (the
network, the exchange being busy or down), a ``PermanentExchangeError`` is not (a bad symbol, a
rejected request, a missing feature). Each carries the exchange and the operation that failed;
the ccxt exception it came from is kept as ``__cause__``.
"""

from __future__ import annotations

import ccxt


class ExchangeError(Exception):
    """An exchange call failed. ``exchange`` and ``operation`` name where (e.g. "binance",
    "fetch_ohlcv ETH/USDT 1m")."""

    def __init__(self, message: str, exchange: str = "", operation: str = ""):
        super().__init__(message)
        self.exchange = exchange
        self.operation = operation

    def __str__(self) -> str:
        where = " ".join(p for p in (self.exchange, self.operation) if p)
        message = super().__str__()
        return f"{where}: {message}" if where else message


class TemporaryExchangeError(ExchangeError):
    """Likely to succeed if tried again later: timeouts, refused connections, 5xx, rate limits."""


class PermanentExchangeError(ExchangeError):
    """Trying again will not help: unknown symbol, bad request, unsupported call, auth."""


# ccxt's hierarchy (ccxt/base/errors.py) splits BaseError into ExchangeError (the exchange
# understood and refused the request: AuthenticationError, PermissionDenied, BadRequest,
# BadSymbol, ArgumentsRequired, NotSupported, OperationRejected, InvalidOrder...) and
# OperationFailed (the operation did not get through). Only the latter is worth a retry.
_TEMPORARY: tuple[type[BaseException], ...] = (
    # NetworkError (RequestTimeout, ExchangeNotAvailable, OnMaintenance, DDoSProtection,
    # RateLimitExceeded, InvalidNonce, ChecksumError), BadResponse (a garbled or empty body),
    # CancelPending, and OperationFailed itself: ccxt's binance raises that for Binance's
    # -1001 "Internal error; unable to process your request. Please try again." (sent with
    # HTTP 5xx, which would otherwise have been ExchangeNotAvailable).
    ccxt.OperationFailed,
    # Raw socket failures from code that talks to an exchange without ccxt (websockets):
    # refused or reset connections, DNS failures (socket.gaierror), timeouts.
    OSError,
)


# HTTP statuses that say the server, not the request, failed (Binance: "5XX ... the issue is on
# Binance's side"; 429/418: rate limited or banned for a while).
_RETRYABLE_STATUS = frozenset({418, 429}) | frozenset(range(500, 600))


def convert_ccxt(exc: BaseException, exchange: str = "", operation: str = "",
                 http_status: int | None = None) -> ExchangeError:
    """The Tickwise error for a ccxt exception (``raise convert_ccxt(e, ...) from e``).

    Temporary: ccxt.OperationFailed and its subclasses (NetworkError, RequestTimeout,
    ExchangeNotAvailable, DDoSProtection, RateLimitExceeded, InvalidNonce, BadResponse...) and
    OSError. Permanent: ccxt.ExchangeError's subclasses (AuthenticationError, PermissionDenied,
    BadRequest, BadSymbol, ArgumentsRequired, NotSupported, InvalidOrder...) and anything else.
    A bare ccxt.ExchangeError is ccxt's "unclassified" fallback: permanent, unless the HTTP
    status of the response says the server failed (5xx, 429, 418). ccxt's binance raises it for
    an error code it has no entry for, such as spot's 503 {"code": -1008, "msg": "Server is
    currently overloaded ... Please try again in a few minutes."}.

    An ExchangeError of ours passes through unchanged. The original is set as ``__cause__``.
    """
    if isinstance(exc, ExchangeError):
        return exc
    temporary = isinstance(exc, _TEMPORARY) or (
        type(exc) is ccxt.ExchangeError and http_status in _RETRYABLE_STATUS)
    cls = TemporaryExchangeError if temporary else PermanentExchangeError
    message = str(exc) or "(no message)"
    if http_status is not None:
        message = f"{message} (HTTP {http_status})"
    converted = cls(f"{type(exc).__name__}: {message}", exchange=exchange, operation=operation)
    converted.__cause__ = exc
    return converted
