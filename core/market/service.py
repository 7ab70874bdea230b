"""The market service: clock, source, feed, candle store and books composed, with a pump thread.

``build_market`` wires the parts from the config; ``start`` backfills history and starts the
pump (nothing starts at import or construction); ``snapshot`` is the read-only view that the
dashboard and REST read.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from core.clock import Clock, ReplayClock
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

    def start(self) -> None:
        """Backfill history, then pump the source in a daemon thread. Idempotent."""
        if self.started:
            return
        self.source.backfill()
        if isinstance(self.clock, ReplayClock):
            self.clock.resume()  # market time runs from the replay start, now
        self._stop.clear()
        self._thread = threading.Thread(target=self.source.run, args=(self.clock, self._stop),
                                        name="market-pump", daemon=True)
        self._thread.start()
        self.started = True
        log.info("market source %s started at %d", self.source.kind, self.clock.now_ms())

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
            "lag_ms": self.source.lag_ms(now),
            "candles_accepted": self.feed.accepted_total(),
            "rejected": self.feed.rejected_by_reason(),
            "prices": prices,
            "running": self.started,
        }


def build_market(cfg: Config) -> MarketService:
    """Compose the market parts from the config. Starts nothing."""
    m = cfg.market
    notice = ""
    if m.source == "exchange":
        raise SystemExit(
            "market.source 'exchange': the live exchange source is not built yet (issue #4); "
            "use 'replay' or 'auto'"
        )
    if m.source == "auto":
        notice = "auto: no live exchange source is built yet (issue #4), replaying bundled history"
    recording = load_recording(find_recording(cfg.replay.recording, cfg.recordings_dir))
    missing = [s for s in m.symbols if s not in recording.symbols]
    if missing:
        raise SystemExit(
            f"replay.recording '{recording.name}' has no data for {', '.join(missing)}; it has "
            f"{', '.join(recording.symbols)}. Set market.symbols (TICKWISE_MARKET__SYMBOLS) to match."
        )
    store = CandleStore(m.symbols, m.timeframes, dict(m.buffer))
    books = OrderBooks()
    feed = MarketFeed(store, books)
    start = parse_time(cfg.replay.start) if cfg.replay.start else None
    source = ReplaySource(
        recording, feed, symbols=m.symbols, start_ms=start,
        warmup_days=cfg.replay.warmup_days, on_end=cfg.replay.on_end, seed=cfg.replay.seed,
        book_levels=cfg.replay.book_levels, book_interval_s=cfg.replay.book_interval_s,
    )
    # Paused at the replay's start until start(): market time does not run during the backfill.
    clock = ReplayClock(source.start_ms, cfg.replay.speed, paused=True)
    cob = ConsolidatedBooks(bucket_bps=cfg.exchange.cob_bucket_bps)
    # The replay's (synthetic or recorded) book is one exchange of the consolidated book.
    feed.book_listeners.append(lambda book: cob.put("replay", book))
    return MarketService(cfg, clock, store, books, feed, source, cob, notice)
