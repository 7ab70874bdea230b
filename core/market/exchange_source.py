"""Exchange source: live market data through the same market feed as the replay.

At start it backfills each symbol and timeframe over REST (ccxt, paged, retried), finest
timeframe first, then rebuilds the forming candles from the finer history. Then it runs the
websocket streams in one asyncio loop on the pump thread:

- Binance: closed 1s klines -> ``feed.candle`` (the store aggregates 1m/1h/1d from them),
  trades -> ``feed.trade``, the depth book (REST snapshot + diffs) -> ``feed.book``;
  after a reconnect the stream backfills the missed 1s candles over REST.
- The second exchange's (Bybit's) books -> ``feed.book(..., exchange="bybit")``, validated
  like Binance's, then into the consolidated order book.

Market time comes from the exchange (the candles' and books' own times) and never runs
backwards. The exchange's clock is measured (``ServerTime``: server time minus local, refreshed
every ``exchange.time_sync_s``): backfill windows, the closed-candle cut-off and the streams'
time before their first message use it, not the local clock. ``health()`` gives each feed's
state for the page and the status: connected, disconnected, or STALLED (connected, yet nothing
accepted by the feed for ``exchange.stall_after_s``), with rejections by reason and the skew.
A permanent error on one symbol's book snapshot fails that book only (retried, shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from core.clock import Clock
from core.config import Config
from core.market.binance_stream import BinanceStream
from core.market.books import OrderBook
from core.market.bybit_stream import BybitStream
from core.market.cob import ConsolidatedBooks
from core.market.exchange_errors import (
    ExchangeError,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from core.market.exchange_rest import ExchangeRest
from core.market.exchange_time import ServerTime
from core.market.feed import MarketFeed
from core.market.stream import ExchangeStream
from core.timeframes import bucket_start

log = logging.getLogger(__name__)


class ExchangeClock:
    """Market time from the exchange: its newest event time plus local time since it arrived
    (the exchange's measured time until the first message); never runs backwards. Speed 1."""

    speed = 1.0

    def __init__(self, stream: ExchangeStream):
        self.stream = stream

    def now_ms(self) -> int:
        return self.stream.market_now_ms()


class ExchangeSource:
    kind = "exchange"

    def __init__(self, cfg: Config, feed: MarketFeed, cob: ConsolidatedBooks, rest: ExchangeRest,
                 clock: Clock):
        self.cfg = cfg
        self.feed = feed
        self.store = feed.store
        self.cob = cob
        self.rest = rest
        self.clock = clock
        self.base_tf = self.store.base_tf
        self.progress: dict[str, dict] = {}  # "ETH/USDT 1m" -> {"done", "total", "state"}
        self.errors: list[str] = []
        self.backfilled = threading.Event()
        self.server_time = ServerTime(rest.clock_skew_ms if rest is not None else None,
                                      cfg.exchange.time_sync_s)
        if rest is not None:
            rest.now_ms = self.server_time.now_ms  # the closed-candle cut-off: exchange time
        self._accepted_at: dict[str, float] = {}  # feed -> stream clock of its last accepted
        symbols = self.store.symbols
        # The exchange's own 1m klines are subscribed too, to check the store's aggregation
        # of the 1s candles against them (``aggregation`` in describe()).
        self.check_tf = "1m" if "1m" in self.store.timeframes and self.base_tf != "1m" else None
        self.aggregation = {"checked": 0, "mismatches": 0, "last_mismatch": None}
        self._exchange_candles: dict[tuple[str, int], list] = {}
        self.binance = BinanceStream(
            symbols, timeframes=(self.base_tf,) + ((self.check_tf,) if self.check_tf else ()),
            url=cfg.exchange.ws_url,
            snapshot=self._snapshot, backfill=self._gap_rows,
            on_candle=self._on_candle, on_trade=self._on_trade, on_book=self._on_book,
            book_levels=cfg.replay.book_levels,
            temporary_errors=(OSError, TemporaryExchangeError),
            book_errors=(PermanentExchangeError,),
        )
        self.bybit = None
        if cfg.exchange.cob_exchange == "bybit":
            self.bybit = BybitStream(symbols, url=cfg.exchange.cob_ws_url,
                                     on_book=self._on_exchange_book,
                                     book_levels=cfg.replay.book_levels)
            feed.exchange_book_listeners.append(self._to_cob)

    # -- REST ----------------------------------------------------------------------------

    def _snapshot(self, symbol: str) -> dict:
        return self.rest.fetch_order_book(symbol, limit=max(100, self.cfg.replay.book_levels))

    def _gap_rows(self, symbol: str, tf: str, since_ms: int, until_ms: int) -> list[list]:
        return self.rest.fetch_ohlcv_all(symbol, tf, since_ms, until_ms)

    def sync_clock(self) -> None:
        """Measure the exchange's clock; the streams use it until their first message."""
        self.server_time.refresh()
        for stream in self._streams().values():
            stream.local_offset_ms = self.server_time.skew_ms

    def backfill(self) -> None:
        """History per symbol and timeframe (finest first) up to the exchange's now, then the
        forming candles."""
        self.sync_clock()
        now = self.server_time.now_ms()
        for symbol in self.store.symbols:
            for tf in self.store.timeframes:
                tf_ms = self.store.tf_ms[tf]
                until = bucket_start(now, tf_ms)  # closed candles only
                since = until - self.store.capacity(tf) * tf_ms
                key = f"{symbol} {tf}"
                self.progress[key] = {"done": 0, "total": self.store.capacity(tf),
                                      "state": "fetching"}

                def report(done: int, total: int, key: str = key) -> None:
                    self.progress[key].update(done=done, total=total)

                try:
                    rows = self.rest.fetch_ohlcv_all(symbol, tf, since, until, progress=report)
                except ExchangeError as exc:
                    self.progress[key]["state"] = f"failed: {type(exc).__name__}"
                    self.errors.append(f"backfill {key}: {exc}"[:300])
                    log.warning("backfill %s failed: %s", key, exc)
                    continue
                accepted = self.feed.backfill(symbol, tf, rows)
                self.progress[key].update(done=accepted, state="done" if rows else "empty")
                if not rows:
                    self.errors.append(f"backfill {key}: the exchange returned no candles in "
                                       f"[{since}, {until})")
                log.info("backfill %s: %d candles", key, accepted)
            self.store.rebuild_forming(symbol)
            last = self.store.last_ts(symbol)
            if last is not None:
                self.binance.last_candle_ts[(symbol, self.base_tf)] = last
        self.backfilled.set()

    # -- stream callbacks ----------------------------------------------------------------

    def _on_candle(self, symbol: str, tf: str, row: list, closed: bool) -> None:
        if not closed:
            return
        if tf == self.base_tf:
            self._accepted("binance", self.feed.candle(symbol, row))
        elif tf == self.check_tf:
            self._exchange_candles[(symbol, int(row[0]))] = row
        self._check_aggregation(symbol)

    def _check_aggregation(self, symbol: str) -> None:
        """Compare the exchange's closed 1m candles with the store's aggregation of 1s ones."""
        if not self._exchange_candles:
            return
        mine = {int(r[0]): r for r in self.store.closed(symbol, self.check_tf, 5)}
        for key in [k for k in self._exchange_candles if k[0] == symbol and k[1] in mine]:
            theirs = self._exchange_candles.pop(key)
            ours = mine[key[1]]
            self.aggregation["checked"] += 1
            if not all(abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
                       for a, b in zip(theirs[1:6], ours[1:6])):
                self.aggregation["mismatches"] += 1
                self.aggregation["last_mismatch"] = {
                    "symbol": symbol, "ts": key[1], "exchange": [float(x) for x in theirs[1:6]],
                    "aggregated": [float(x) for x in ours[1:6]]}
        if len(self._exchange_candles) > 100:  # minutes we never aggregated (a gap): drop
            for key in sorted(self._exchange_candles, key=lambda k: k[1])[:-100]:
                del self._exchange_candles[key]

    def _on_trade(self, symbol: str, ts: int, price: float, amount: float, side: str) -> None:
        self._accepted("binance", self.feed.trade(symbol, ts, price, amount, side))

    def _on_book(self, symbol: str, ts: int, bids, asks) -> None:
        self._accepted("binance", self.feed.book(symbol, ts, bids, asks))

    def _on_exchange_book(self, exchange: str, symbol: str, ts: int, bids, asks) -> None:
        """A second exchange's book: through the feed like every book."""
        self._accepted(exchange, self.feed.book(symbol, ts, bids, asks, exchange=exchange))

    def _accepted(self, feed: str, result: object) -> None:
        """The feed took what ``feed`` sent (not None): it is not stalled."""
        if result is not None:
            stream = self._streams().get(feed)
            self._accepted_at[feed] = stream.clock() if stream is not None else time.time()

    def _to_cob(self, book: OrderBook) -> None:
        """A second exchange's book the feed accepted -> the consolidated book. (The source's
        own books reach it through the feed's book_listeners, wired in core/market/service.py.)"""
        self.cob.put(book.exchange, book)

    # -- running -------------------------------------------------------------------------

    def run(self, clock: Clock, stop: threading.Event) -> None:
        """The pump thread: the streams in one asyncio loop until ``stop`` is set."""
        asyncio.run(self._main(stop))

    async def _main(self, stop: threading.Event) -> None:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
            done.set()

        tasks = [self.binance.run(done), watch(), self._keep_time(done), self._unstall(done)]
        if self.bybit is not None:
            tasks.append(self.bybit.run(done))
        await asyncio.gather(*tasks)

    async def _keep_time(self, done: asyncio.Event) -> None:
        """Re-measure the exchange's clock every exchange.time_sync_s while streaming."""
        while not done.is_set():
            if self.server_time.due():
                await asyncio.to_thread(self.sync_clock)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=1.0)

    async def _unstall(self, done: asyncio.Event) -> None:
        """A feed STALLED for exchange.stalled_reconnect_s more is reconnected: a connection
        that delivers nothing usable (a half-dead socket, a changed subscription) is not
        waited on forever. Checked every second."""
        after = self.cfg.exchange.stalled_reconnect_s
        while after > 0 and not done.is_set():
            for name, stream in self._streams().items():
                stalled = self._feed_health(name, stream).get("stalled")
                if stalled and stalled["for_s"] >= self.cfg.exchange.stall_after_s + after:
                    await stream.reconnect(f"STALLED: nothing accepted for "
                                           f"{stalled['for_s']:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=min(1.0, after))

    def _streams(self) -> dict[str, ExchangeStream]:
        streams: dict[str, ExchangeStream] = {"binance": self.binance}
        if self.bybit is not None:
            streams["bybit"] = self.bybit
        return streams

    def health(self) -> dict:
        return {name: self._feed_health(name, s) for name, s in self._streams().items()}

    def _feed_health(self, name: str, stream: ExchangeStream) -> dict:
        """One feed: the stream's health, the exchange's clock skew, and its state: STALLED
        when connected yet nothing it sent was accepted for exchange.stall_after_s."""
        health = {**stream.health(), **self.server_time.health()}
        now = stream.clock()
        accepted = self._accepted_at.get(name)
        health["accepted_age_s"] = None if accepted is None else max(0.0, now - accepted)
        state = "connected" if stream.connected else "disconnected"
        if stream.connected and stream.connected_since_s is not None:
            quiet = now - max(stream.connected_since_s, accepted or 0.0)
            if quiet >= self.cfg.exchange.stall_after_s:
                state = "stalled"
                reasons = dict(stream.rejected_by_reason)
                for reason, count in self.feed.rejected_by_reason().items():
                    reasons[reason] = reasons.get(reason, 0) + count
                health["stalled"] = {"for_s": quiet, "rejected_by_reason": reasons}
        health["state"] = state
        return health

    def describe(self) -> dict:
        return {
            "source": "exchange",
            "recording": self.cfg.exchange.name,
            "description": f"live {self.cfg.exchange.name} spot market"
                           + (f", order book consolidated with {self.cfg.exchange.cob_exchange}"
                              if self.bybit is not None else ""),
            "licence": f"Market data from {self.cfg.exchange.name}"
                       + (f" and {self.cfg.exchange.cob_exchange}" if self.bybit else ""),
            "bar_timeframe": self.base_tf,
            "interpolated_timeframes": [],
            "books": "live",
            "trades": "live",
            "lap": 0,
            "ended": False,
            "on_end": "n/a",
            "backfill": dict(self.progress),
            "aggregation_check": dict(self.aggregation),
            "feeds": self.health(),
            "errors": self.errors[-5:],
            # API keys are never used: public market data needs none (core/market/exchange_rest.py).
            "authenticated": False,
            "api_keys": ("set, unused (market data is public)"
                         if self.rest is not None and self.rest.keys_set else "none"),
        }

    def lag_ms(self, now_ms: int) -> int:
        """How old the newest candle is beyond one candle (0 while the stream keeps up)."""
        last = self.store.last_ts(self.store.symbols[0])
        if last is None:
            return 0
        return max(0, now_ms - last - 2 * self.store.tf_ms[self.base_tf])


def probe(rest: ExchangeRest, timeout_s: float) -> str | None:
    """None if the exchange answers within timeout_s, else why not (for source: auto)."""
    result: list = []

    def call() -> None:
        try:
            rest.load_markets()
            result.append(None)
        except Exception as exc:  # any failure means "not reachable now"; reported, not hidden
            result.append(f"{type(exc).__name__}: {exc}"[:200])

    thread = threading.Thread(target=call, daemon=True, name="exchange-probe")
    started = time.monotonic()
    thread.start()
    thread.join(timeout_s)
    if not result:
        return f"no answer within {timeout_s:g} s"
    log.info("exchange probe took %.2f s", time.monotonic() - started)
    return result[0]
