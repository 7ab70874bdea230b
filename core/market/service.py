"""The market service: clock, source, feed, candle store and books composed, with a pump thread.

``build_market`` wires the parts from the config; ``start`` backfills history and starts the
pump (nothing starts at import or construction); ``snapshot`` is the read-only view that the
dashboard and REST read.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from core.clock import Clock, ReplayClock, WallClock
from core.config import Config, parse_time
from core.market.books import OrderBooks
from core.market.candles import CandleStore
from core.market.cob import ConsolidatedBooks
from core.market.feed import MarketFeed
from core.market.recording import find_recording, load_recording
from core.market.replay import ReplaySource

log = logging.getLogger(__name__)


@dataclass
class MarketService:
    config: Config
    clock: Clock
    store: CandleStore
    books: OrderBooks
    feed: MarketFeed
    source: ReplaySource
    cob: ConsolidatedBooks = field(default_factory=ConsolidatedBooks)
    notice: str = ""  # why this source was chosen, shown on the page
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: bool = False
    notice_level: str = "info"  # "warning" when auto fell back to the replay
    pump_error: bool = False

    def start(self) -> None:
        """Start the pump thread: backfill history, then stream. Idempotent; returns at once
        (an exchange backfill takes seconds; its progress is in the snapshot)."""
        if self.started:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._pump, name="market-pump", daemon=True)
        self._thread.start()
        self.started = True

    def _pump(self) -> None:
        try:
            self.source.backfill()
            if isinstance(self.clock, ReplayClock):
                self.clock.resume()  # market time runs from the replay start, now
            log.info("market source %s streaming from %d", self.source.kind, self.clock.now_ms())
            self.source.run(self.clock, self._stop)
        except Exception:  # the pump's top: logged with its traceback, shown as not running
            log.exception("market source %s stopped with an error", self.source.kind)
            self.pump_error = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.started = False

    def consolidated_book(self, symbol: str):
        return self.cob.consolidated(symbol, self.clock.now_ms())

    def snapshot(self) -> dict:
        """Everything the page header and the market status endpoint show, computed here."""
        now = self.clock.now_ms()
        prices = {}
        for symbol in self.store.symbols:
            last = self.store.last_price(symbol)
            day = self.store.forming(symbol, self.store.timeframes[-1])
            prices[symbol] = {
                "last": last,
                "change_pct": None if last is None or day is None
                else (last / day.open - 1.0) * 100.0,
            }
        return {
            "market_time_ms": now,
            "speed": self.clock.speed,
            "source": self.source.describe(),
            "notice": self.notice,
            "notice_level": self.notice_level,
            "feeds": self.source.health() if hasattr(self.source, "health") else {},
            "lag_ms": self.source.lag_ms(now),
            "candles_accepted": self.feed.accepted_total(),
            "rejected": self.feed.rejected_by_reason(),
            "prices": prices,
            "running": self.started and not self.pump_error,
        }


def build_market(cfg: Config) -> MarketService:
    """Compose the market parts from the config. Starts nothing (but source: auto probes the
    exchange for up to exchange.connect_timeout_s to choose)."""
    m = cfg.market
    store = CandleStore(m.symbols, m.timeframes, dict(m.buffer))
    books = OrderBooks()
    feed = MarketFeed(store, books)
    cob = ConsolidatedBooks(bucket_bps=cfg.exchange.cob_bucket_bps)
    if m.source in ("auto", "exchange"):
        from core.market.exchange_rest import ExchangeRest, credentials_from_env
        from core.market.exchange_source import ExchangeSource, probe

        rest = ExchangeRest(cfg.exchange.name, cfg.exchange.timeout_ms,
                            base_url=cfg.exchange.rest_url,
                            retries=2 if m.source == "auto" else 5,
                            credentials=credentials_from_env())
        why = probe(rest, cfg.exchange.connect_timeout_s) if m.source == "auto" else None
        if why is None:
            feed.book_listeners.append(lambda book: cob.put(cfg.exchange.name, book))
            from core.market.exchange_source import ExchangeClock

            source = ExchangeSource(cfg, feed, cob, rest, WallClock())
            clock = ExchangeClock(source.binance)  # market time from the exchange's events
            notice = "" if m.source == "exchange" else f"auto: connected to {cfg.exchange.name}"
            return MarketService(cfg, clock, store, books, feed, source, cob, notice)
        rest.close()
        log.warning("auto: %s unreachable (%s); falling back to the bundled replay",
                    cfg.exchange.name, why)
        return _replay_market(cfg, store, books, feed, cob,
                              f"auto: {cfg.exchange.name} is unreachable ({why}); replaying "
                              "bundled history", "warning")
    return _replay_market(cfg, store, books, feed, cob, "", "info")


def _replay_market(cfg: Config, store: CandleStore, books: OrderBooks, feed: MarketFeed,
                   cob: ConsolidatedBooks, notice: str, level: str) -> MarketService:
    m = cfg.market
    recording = load_recording(find_recording(cfg.replay.recording, cfg.recordings_dir))
    missing = [s for s in m.symbols if s not in recording.symbols]
    if missing:
        raise SystemExit(
            f"replay.recording '{recording.name}' has no data for {', '.join(missing)}; it has "
            f"{', '.join(recording.symbols)}. Set market.symbols (TICKWISE_MARKET__SYMBOLS) to match."
        )
    start = parse_time(cfg.replay.start) if cfg.replay.start else None
    source = ReplaySource(
        recording, feed, symbols=m.symbols, start_ms=start,
        warmup_days=cfg.replay.warmup_days, on_end=cfg.replay.on_end, seed=cfg.replay.seed,
        book_levels=cfg.replay.book_levels, book_interval_s=cfg.replay.book_interval_s,
    )
    # Paused at the replay's start until start(): market time does not run during the backfill.
    clock = ReplayClock(source.start_ms, cfg.replay.speed, paused=True)
    # The replay's (synthetic or recorded) book is one exchange of the consolidated book.
    feed.book_listeners.append(lambda book: cob.put("replay", book))
    service = MarketService(cfg, clock, store, books, feed, source, cob, notice)
    service.notice_level = level
    return service
