"""The market service: clock, source, feed, candle store and books composed, with a pump thread.

``build_market`` wires the parts from the config; ``start`` starts the pump thread, which
backfills history and runs the source under a ``SourceSupervisor`` (restarted with backoff
whenever it stops with an error; nothing starts at import or construction); ``snapshot`` is
the read-only view that the dashboard and REST read.
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
from core.market.supervisor import SourceSupervisor

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
    supervisor: SourceSupervisor | None = None  # built from the config unless given
    # The timeframes models predict, train on and are scored on: real ones only (see
    # ``model_timeframes``); the others are streamed and drawn.
    model_timeframes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.model_timeframes:
            self.model_timeframes = model_timeframes(self.config, self.source)
        if self.supervisor is None:
            ex = self.config.exchange
            resume = self.clock.resume if isinstance(self.clock, ReplayClock) else None
            self.supervisor = SourceSupervisor(
                self.source, self.clock, initial_s=ex.restart_backoff_s,
                max_s=ex.restart_max_backoff_s, on_backfilled=resume)

    def timeframe_roles(self) -> dict[str, dict]:
        """Per timeframe: whether models train on and are scored on it, and if not, why."""
        interpolated = set(interpolated_timeframes(self.source))
        roles = {}
        for tf in self.store.timeframes:
            if tf in self.model_timeframes:
                roles[tf] = {"scored": True, "label": "trained and scored"}
            elif tf in interpolated:
                roles[tf] = {"scored": False, "reason": "interpolated",
                             "label": "not scored: interpolated"}
            else:
                roles[tf] = {"scored": False, "reason": "not in market.model_timeframes",
                             "label": "not scored: not a model timeframe"}
        return roles

    def start(self) -> None:
        """Start the pump thread: backfill history, then stream. Idempotent; returns at once
        (an exchange backfill takes seconds; its progress is in the snapshot)."""
        if self.started:
            return
        self._stop.clear()
        # The replay clock resumes once the backfill is done (market time runs from the
        # replay's start, then); a failed source is restarted by the supervisor.
        self._thread = threading.Thread(target=self.supervisor.run, args=(self._stop,),
                                        name="market-pump", daemon=True)
        self._thread.start()
        self.started = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.started = False

    def consolidated_book(self, symbol: str):
        """The consolidated book as of the newest data the source delivered (a fast replay's
        data trails its clock by a few market seconds; books are stale by data time)."""
        now = self.clock.now_ms()
        return self.cob.consolidated(symbol, now - self.source.lag_ms(now))

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
            "running": self.started and self.supervisor.running,
            "supervisor": self.supervisor.status(),
        }


def interpolated_timeframes(source) -> list[str]:
    """Timeframes the source does not really deliver (finer than the replay's bars)."""
    return list(source.describe().get("interpolated_timeframes", []))


def model_timeframes(cfg: Config, source) -> tuple[str, ...]:
    """``market.model_timeframes`` or, when null, every configured timeframe the source
    delivers for real. A candle interpolated inside a coarser real bar carries that bar's
    future (the path ends at its close), so no model may learn from it or be scored on it:
    naming one is an error, and so is a source with no real timeframe at all."""
    fake = interpolated_timeframes(source)
    wanted = cfg.market.model_timeframes
    if wanted is None:
        real = tuple(tf for tf in cfg.market.timeframes if tf not in fake)
        if not real:
            raise SystemExit(
                f"every timeframe of market.timeframes ({', '.join(cfg.market.timeframes)}) is "
                f"interpolated by this source: models would learn the interpolation, not the "
                f"market. Add a timeframe the source delivers for real.")
        return real
    bad = [tf for tf in wanted if tf in fake]
    if bad:
        raise SystemExit(
            f"market.model_timeframes names {', '.join(bad)}, which this source interpolates "
            f"inside its real bars: models may not learn from or be scored on them. Real ones: "
            f"{', '.join(tf for tf in cfg.market.timeframes if tf not in fake) or 'none'}.")
    return tuple(wanted)


def at_real_resolution(cfg: Config) -> Config:
    """The config that runs the same loop once per real bar of the replay's recording: the
    candle store streams the recording's own bars (30m or 1m) and aggregates the configured
    timeframes they tile exactly, and the models predict the configured timeframes that are
    real. Nothing interpolated is made at all, so a market day of 30m bars is 48 steps, not
    86,400. The learners see the same inputs as in the app on the same recording (their
    timeframes are the real ones there too), so a model evaluated this way is the one the
    page shows learning. Symbols the recording lacks are left out.
    """
    from dataclasses import replace

    from core.timeframes import parse_timeframe

    recording = load_recording(find_recording(cfg.replay.recording, cfg.recordings_dir))
    symbols = tuple(s for s in cfg.market.symbols if s in recording.symbols) or recording.symbols
    bar_tf = recording.candle_stream(symbols[0]).timeframe or "1s"
    bar_ms = parse_timeframe(bar_tf)
    wanted = cfg.market.model_timeframes or cfg.market.timeframes
    real = tuple(tf for tf in wanted
                 if parse_timeframe(tf) >= bar_ms and parse_timeframe(tf) % bar_ms == 0)
    if not real:
        raise SystemExit(f"recording '{recording.name}' has {bar_tf} bars: none of "
                         f"{', '.join(wanted)} is real at that resolution")
    timeframes = tuple(sorted({bar_tf, *real}, key=parse_timeframe))
    buffer = dict(cfg.market.buffer)
    if bar_tf not in buffer:  # enough bars to rebuild the next timeframe's history
        buffer[bar_tf] = 2 * buffer[real[0]] * parse_timeframe(real[0]) // bar_ms
    buffer = {tf: buffer[tf] for tf in timeframes}
    market = replace(cfg.market, symbols=symbols, timeframes=timeframes, buffer=buffer,
                     model_timeframes=real, source="replay")
    return replace(cfg, market=market)


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
    # The replay's (synthetic or recorded) book is one exchange of the consolidated book; it
    # comes every book_interval_s market seconds, so it is fresh for two of those.
    feed.book_listeners.append(lambda book: cob.put("replay", book))
    cob.stale_after_ms = max(cob.stale_after_ms, 2 * cfg.replay.book_interval_s * 1000)
    service = MarketService(cfg, clock, store, books, feed, source, cob, notice)
    service.notice_level = level
    return service
