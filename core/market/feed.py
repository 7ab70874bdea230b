"""The market feed: the one door every source's data comes through, replay and exchange alike.

It validates and normalises raw rows at the edge (ccxt's OHLCV shape ``[ts_ms, o, h, l, c, v]``
for candles; ``(price, size)`` levels for books), rejects bad ones with a counted, logged reason
that names the symbol and timestamp, and passes good data on to the candle store and the order
books. A bad row never stops the rows around it. Books of a second exchange (Bybit's, for the
consolidated book) come through here too, named by ``exchange``, and are checked the same way.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.market.books import OrderBook, OrderBooks
from core.market.candles import Candle, CandleStore

log = logging.getLogger(__name__)

# Reasons a message is rejected; the status shows their counts.
MALFORMED = "malformed"
NOT_FINITE = "not_finite"
NON_POSITIVE = "non_positive_price"
HIGH_BELOW_LOW = "high_below_low"
OUTSIDE_RANGE = "open_close_outside_high_low"
NEGATIVE_VOLUME = "negative_volume"
MISALIGNED = "misaligned_timestamp"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
UNKNOWN_SYMBOL = "unknown_symbol"
CROSSED_BOOK = "crossed_book"
UNSORTED_BOOK = "unsorted_book"

_LOG_FIRST = 5  # log the first few rejections of each reason, then every 1000th


class Rejected(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_candle(row: Sequence, tf_ms: int) -> Candle:
    """Validate one OHLCV row; return a Candle or raise Rejected with the reason."""
    if isinstance(row, dict):
        try:
            row = [row[k] for k in ("ts", "open", "high", "low", "close", "volume")]
        except KeyError as exc:
            raise Rejected(MALFORMED, f"missing field {exc.args[0]!r}") from None
    if not isinstance(row, (list, tuple, np.ndarray)) or len(row) < 6:
        raise Rejected(MALFORMED, f"expected [ts, open, high, low, close, volume], got {row!r}")
    try:
        ts_f = float(row[0])
        o, h, lo, c, v = (float(x) for x in row[1:6])
    except (TypeError, ValueError):
        raise Rejected(MALFORMED, f"non-numeric field in {list(row[:6])!r}") from None
    if not all(math.isfinite(x) for x in (ts_f, o, h, lo, c, v)):
        raise Rejected(NOT_FINITE, f"NaN or infinite value in {list(row[:6])!r}")
    if not ts_f.is_integer() or ts_f < 0:
        raise Rejected(MALFORMED, f"timestamp {row[0]!r} is not whole UTC milliseconds")
    ts = int(ts_f)
    if ts % tf_ms:
        raise Rejected(MISALIGNED, f"timestamp {ts} is not on a {tf_ms} ms boundary")
    if min(o, h, lo, c) <= 0:
        raise Rejected(NON_POSITIVE, f"prices must be > 0: o={o} h={h} l={lo} c={c}")
    if h < lo:
        raise Rejected(HIGH_BELOW_LOW, f"high {h} < low {lo}")
    if not (lo <= o <= h and lo <= c <= h):
        raise Rejected(OUTSIDE_RANGE, f"open {o} or close {c} outside [low {lo}, high {h}]")
    if v < 0:
        raise Rejected(NEGATIVE_VOLUME, f"volume {v} < 0")
    return Candle(ts, o, h, lo, c, v)


def parse_levels(levels: Sequence, side: str) -> np.ndarray:
    """Book levels [[price, size], ...] -> float array [K, 2]; sizes 0 are dropped."""
    try:
        arr = np.asarray(levels, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise Rejected(MALFORMED, f"{side} levels are not [[price, size], ...]") from None
    if not np.isfinite(arr).all():
        raise Rejected(NOT_FINITE, f"NaN or infinite value in {side} levels")
    if (arr[:, 0] <= 0).any() or (arr[:, 1] < 0).any():
        raise Rejected(NON_POSITIVE, f"{side} levels need price > 0 and size >= 0")
    return arr[arr[:, 1] > 0]


@dataclass
class FeedStats:
    accepted: Counter = field(default_factory=Counter)  # (symbol, kind) -> count
    rejected: Counter = field(default_factory=Counter)  # (symbol, reason) -> count
    last_message_ms: dict[str, int] = field(default_factory=dict)  # symbol -> market ts


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    ts: int  # exchange time, UTC ms
    price: float
    amount: float  # base currency
    side: str  # "buy" (taker bought) or "sell"


BookListener = Callable[[OrderBook], None]
TradeListener = Callable[[Trade], None]


class MarketFeed:
    """Validates candles, trades and books from any source and hands them on."""

    def __init__(self, store: CandleStore, books: OrderBooks):
        self.store = store
        self.books = books
        self.stats = FeedStats()
        self._lock = threading.Lock()
        self._last_trade_ts: dict[str, int] = {}
        self.trade_listeners: list[TradeListener] = []
        self.book_listeners: list[BookListener] = []  # books of the source's own market
        self.exchange_book_listeners: list[BookListener] = []  # other exchanges' (book.exchange)

    def trade(self, symbol: str, ts: int, price: float, amount: float, side: str) -> Trade | None:
        """One public trade; rejected if malformed, non-positive or older than the last one."""
        try:
            if symbol not in self.store.symbols:
                raise Rejected(UNKNOWN_SYMBOL, f"{symbol!r} is not one of {self.store.symbols}")
            try:
                ts_f, p, a = float(ts), float(price), float(amount)
            except (TypeError, ValueError):
                raise Rejected(MALFORMED, f"non-numeric trade {ts!r}, {price!r}, {amount!r}") from None
            if not all(math.isfinite(x) for x in (ts_f, p, a)):
                raise Rejected(NOT_FINITE, f"NaN or infinite value in trade at {ts!r}")
            if not ts_f.is_integer() or ts_f < 0:
                raise Rejected(MALFORMED, f"trade timestamp {ts!r} is not whole UTC milliseconds")
            if p <= 0 or a <= 0:
                raise Rejected(NON_POSITIVE, f"trade price {p} and amount {a} must be > 0")
            if side not in ("buy", "sell"):
                raise Rejected(MALFORMED, f"trade side {side!r} is not buy or sell")
            last = self._last_trade_ts.get(symbol)
            if last is not None and ts_f < last:
                raise Rejected(OUT_OF_ORDER, f"trade at {int(ts_f)} arrived after {last}")
        except Rejected as exc:
            self._reject(symbol, exc, f"trade at {ts!r}")
            return None
        trade = Trade(symbol, int(ts_f), p, a, side)
        self._last_trade_ts[symbol] = trade.ts
        self._accept(symbol, "trade", trade.ts)
        for listener in self.trade_listeners:
            listener(trade)
        return trade

    def _reject(self, symbol: str, exc: Rejected, where: str) -> None:
        with self._lock:
            self.stats.rejected[(symbol, exc.reason)] += 1
            n = sum(c for (_, r), c in self.stats.rejected.items() if r == exc.reason)
        if n <= _LOG_FIRST or n % 1000 == 0:
            log.warning("rejected %s %s (%s #%d): %s", symbol, where, exc.reason, n, exc.detail)

    def _accept(self, symbol: str, kind: str, ts: int) -> None:
        with self._lock:
            self.stats.accepted[(symbol, kind)] += 1
            self.stats.last_message_ms[symbol] = ts

    def candle(self, symbol: str, row: Sequence) -> Candle | None:
        """One closed candle of the finest timeframe; returns it if accepted, else None."""
        tf = self.store.base_tf
        candle = None
        try:
            if symbol not in self.store.symbols:
                raise Rejected(UNKNOWN_SYMBOL, f"{symbol!r} is not one of {self.store.symbols}")
            candle = parse_candle(row, self.store.tf_ms[tf])
            last = self.store.last_ts(symbol)
            if last is not None and candle.ts == last:
                raise Rejected(DUPLICATE, f"a candle at {candle.ts} was already accepted")
            if last is not None and candle.ts < last:
                raise Rejected(OUT_OF_ORDER, f"candle at {candle.ts} arrived after {last}")
            sealed = self.store.sealed_until()
            if candle.ts < sealed:
                raise Rejected(OUT_OF_ORDER, f"candle at {candle.ts} arrived after its periods "
                                             f"were closed (data up to {sealed} was complete)")
        except Rejected as exc:
            where = f"{tf} candle at {candle.ts}" if candle else f"{tf} candle {str(row)[:80]}"
            self._reject(symbol, exc, where)
            return None
        self.store.add(symbol, candle)
        self._accept(symbol, "candle", candle.ts)
        return candle

    def candles(self, symbol: str, rows: Sequence[Sequence]) -> int:
        """Many candle rows in order; returns how many were accepted."""
        return sum(self.candle(symbol, row) is not None for row in rows)

    def backfill(self, symbol: str, tf: str, rows: Sequence[Sequence]) -> int:
        """Closed history of one timeframe (exchange fetch_ohlcv pages, or the replay's warm-up).

        Each row is validated like a streamed candle; bad, duplicate and out-of-order rows are
        rejected and counted, the good ones are seeded into the store. Returns how many.
        """
        tf_ms = self.store.tf_ms[tf]
        known = symbol in self.store.symbols
        stored = self.store.closed(symbol, tf, 1) if known else np.empty((0, 6))
        # Pages may overlap what an earlier backfill seeded (ccxt repeats the `since` candle).
        last_ts = int(stored[0, 0]) if len(stored) else None
        good: list[tuple[float, ...]] = []
        for row in rows:
            try:
                if not known:
                    raise Rejected(UNKNOWN_SYMBOL, f"{symbol!r} is not one of {self.store.symbols}")
                candle = parse_candle(row, tf_ms)
                if last_ts is not None and candle.ts == last_ts:
                    raise Rejected(DUPLICATE, f"a {tf} candle at {candle.ts} was already accepted")
                if last_ts is not None and candle.ts < last_ts:
                    raise Rejected(OUT_OF_ORDER, f"{tf} candle at {candle.ts} after {last_ts}")
            except Rejected as exc:
                self._reject(symbol, exc, f"backfill {tf} row {row!r}"[:120])
                continue
            good.append(candle.as_row())
            last_ts = candle.ts
        if good:
            self.store.seed(symbol, tf, np.array(good).reshape(-1, 6))
        with self._lock:
            self.stats.accepted[(symbol, f"backfill_{tf}")] += len(good)
        return len(good)

    def book(self, symbol: str, ts: int, bids: Sequence, asks: Sequence,
             synthetic: bool = False, exchange: str = "") -> OrderBook | None:
        """A full order-book snapshot; returns it if accepted, else None.

        ``exchange`` names the exchange of a book that is not the source's own market (a second
        exchange's, for the consolidated book). Such a book is checked the same way, ordered
        against that exchange's previous book, kept apart in ``books`` (``get(symbol,
        exchange)``), counted as ``book_{exchange}`` and handed to ``exchange_book_listeners``
        instead of ``book_listeners``.
        """
        try:
            ts, b, a = self._check_book(symbol, ts, bids, asks, exchange)
        except Rejected as exc:
            self._reject(symbol, exc, f"{exchange} book at {ts!r}".lstrip())
            return None
        book = OrderBook(symbol, ts, b, a, synthetic, exchange)
        self.books.put(book)
        self._accept(symbol, f"book_{exchange}" if exchange else "book", ts)
        for listener in self.exchange_book_listeners if exchange else self.book_listeners:
            listener(book)
        return book

    def _check_book(self, symbol: str, ts: int, bids: Sequence, asks: Sequence,
                    exchange: str) -> tuple[int, np.ndarray, np.ndarray]:
        """(ts, bids [K, 2], asks [K, 2]) of a valid book; raises Rejected with the reason."""
        try:
            ts_f = float(ts)
        except (TypeError, ValueError):
            raise Rejected(MALFORMED, f"book timestamp {ts!r} is not a number") from None
        if not math.isfinite(ts_f) or not ts_f.is_integer() or ts_f < 0:
            raise Rejected(MALFORMED, f"book timestamp {ts!r} is not whole UTC milliseconds")
        if symbol not in self.store.symbols:
            raise Rejected(UNKNOWN_SYMBOL, f"{symbol!r} is not one of {self.store.symbols}")
        b = parse_levels(bids, "bid")
        a = parse_levels(asks, "ask")
        if len(b) == 0 or len(a) == 0:
            raise Rejected(MALFORMED, "a book needs at least one bid and one ask")
        if (np.diff(b[:, 0]) >= 0).any() or (np.diff(a[:, 0]) <= 0).any():
            raise Rejected(UNSORTED_BOOK, "bids must fall and asks rise strictly in price")
        if b[0, 0] >= a[0, 0]:
            raise Rejected(CROSSED_BOOK, f"best bid {b[0, 0]} >= best ask {a[0, 0]}")
        previous = self.books.get(symbol, exchange)
        if previous is not None and ts_f <= previous.ts:
            raise Rejected(OUT_OF_ORDER, f"book at {int(ts_f)} is not after {previous.ts}")
        return int(ts_f), b, a

    def rejected_by_reason(self) -> dict[str, int]:
        with self._lock:
            out: Counter = Counter()
            for (_, reason), count in self.stats.rejected.items():
                out[reason] += count
            return dict(out)

    def accepted_total(self) -> int:
        with self._lock:
            return sum(self.stats.accepted.values())
