"""Live training, composed: the signal cycle, training, the signal desk and the read model.

``LiveTraining`` owns what is on or off (``active``) and runs the jobs of the one job table
(core/live/jobs.py), each safe to run concurrently; the app's scheduler and the evaluate
command both call them, with the market time passed in where a job needs it.

Resolution goes on while training is stopped (so nothing pending is lost); predicting and
training only while active. ``stop`` lets a cycle or training step already under way finish
before it writes the checkpoints, so they hold every step and nothing changes after it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from core.config import Config
from core.live.backends import TrainingBackend
from core.live.challengers import Challengers
from core.live.control import install_control
from core.live.cycle import Cycle
from core.live.events import EventBus, feed_state
from core.live.jobs import job_table
from core.live.learning import Learning, Rates
from core.live.models import observation_window
from core.live.read_model import ReadModel
from core.live.signals import SignalDesk
from core.market.candles import Candle
from core.market.service import MarketService
from core.observations import ObservationBuilder
from core.predictions import NewPrediction, PredictionStore
from core.rewards import hold_band
from nn.base import Learner
from nn.checkpoints import CheckpointManager

log = logging.getLogger(__name__)
REFERENCE = "BTC/USDT"  # the symbol whose moves the others' signals lean on


@dataclass
class JobError:
    type: str
    message: str
    count: int = 0
    last_wall_ts: float = 0.0


class LiveTraining:
    def __init__(self, cfg: Config, market: MarketService, store: PredictionStore,
                 learners: dict[str, Learner], checkpoints: CheckpointManager,
                 backend: TrainingBackend | None = None):
        self.cfg = cfg
        self.market = market
        self.store = store
        self.learners = learners
        self.checkpoints = checkpoints
        self.tf_ms = market.store.tf_ms
        # Models predict, learn from and are scored on real timeframes only (candles finer
        # than the source's bars are interpolated toward the bar's close: its future).
        self.timeframes = tuple(market.model_timeframes)
        self._modelled = frozenset(self.timeframes)
        # Per timeframe, the move up to which "no move" (HOLD) is right: every score's band.
        bands = {tf: hold_band(self.tf_ms[tf], cfg.signal.fee_rate) for tf in self.timeframes}
        self.builder = ObservationBuilder(market.store, market.books, observation_window(cfg),
                                          reference=REFERENCE, cob=market.cob,
                                          timeframes=self.timeframes)
        self.cycle = Cycle(store, learners, self.builder, self.tf_ms, bands,
                           cfg.training.trade_weight)
        self.learning = Learning(learners, self.timeframes, dict(cfg.training.batch_size),
                                 checkpoints, cfg.training.checkpoint_every,
                                 cfg.training.checkpoint_interval_s, backend=backend)
        self.desk = SignalDesk(cfg.signal, market.store, REFERENCE)
        # One meter of what each model costs, for the cycle and training (core/live/costs.py).
        self.costs = self.learning.costs = self.cycle.costs
        # What happens, numbered, for GET /api/live-training/events (core/live/events.py).
        self.events = self.cycle.events = self.learning.events = EventBus(
            cfg.server.events_backlog, cfg.server.event_streams)
        # What runs how often (core/live/jobs.py): the scheduler's and the evaluator's table.
        self.jobs = job_table(self.tf_ms[market.store.base_tf] / 1000,
                              cfg.scheduler.signal_interval_s, cfg.scheduler.store_flush_s)
        self.read = ReadModel(self)
        self.challengers = Challengers(self)  # shadow copies (core/live/challengers.py)
        self.control = install_control(self)  # pause, freeze, roll back, stale (control.py)
        self.challengers.listeners.append(
            lambda record: self.events.publish(
                "promotion", {k: v for k, v in record.items() if k != "type"}))
        self.schedule = None  # the jobs' liveness once a scheduler runs them (core/scheduler.py)
        self.active = False
        self.started_at_ms: int | None = None
        self.errors: dict[str, JobError] = {}
        self.prediction_rate = Rates()
        self.last_predictions: dict[str, dict] = {}  # model -> its newest stored prediction
        self._lock = threading.Lock()
        self._cycle_lock = threading.Lock()  # held by process_closes (stop waits for it)
        self._training_job = threading.Lock()  # held by train_due (stop waits for it)
        market.store.subscribe(self._on_close)

    # -- control ------------------------------------------------------------------------

    def start(self, now_ms: int | None = None) -> dict:
        with self._lock:
            if not self.active:
                self.active = True
                self.started_at_ms = self.market.clock.now_ms() if now_ms is None else now_ms
                self.prediction_rate.restart()
                self.learning.batch_rate.restart()
                self.learning.set_active(True)
                self.events.publish("state", {"training": "started",
                                              "market_ms": self.started_at_ms})
                log.info("live training started")
        self.read.invalidate()
        return self.read.status_json()

    def stop(self, save: bool = True) -> dict:
        """Stop predicting and training. A cycle or training job already past its check of
        ``active`` finishes first, so nothing is predicted or trained once this returns and
        the checkpoints written here (unless ``save`` is off) hold every step."""
        with self._lock:
            was_active = self.active
            self.active = False
        with self._cycle_lock, self._training_job:  # wait for the jobs in flight
            pass
        self.learning.set_active(False)
        if was_active and save:
            self.learning.save_checkpoints()
            log.info("live training stopped")
        if was_active:
            self.events.publish("state", {"training": "stopped",
                                          "market_ms": self.market.clock.now_ms()})
        self.read.invalidate()
        return self.read.status_json()

    def load_checkpoints(self) -> dict[str, str]:
        return self.learning.load_checkpoints()

    # -- jobs (core/live/jobs.py) ----------------------------------------------------------

    def guarded(self, name: str, job) -> None:
        """Run a job; an error is recorded by type in the status and the next run goes on."""
        try:
            job()
        except Exception as exc:  # the top of a job: report by type, never swallow silently
            err = self.errors.setdefault(name, JobError(type(exc).__name__, str(exc)))
            err.type, err.message = type(exc).__name__, str(exc)[:300]
            err.count += 1
            err.last_wall_ts = time.time()
            if err.count <= 3 or err.count % 100 == 0:
                log.exception("job %s failed (%s, %d times)", name, err.type, err.count)

    def _on_close(self, symbol: str, tf: str, candle: Candle) -> None:
        if tf in self._modelled:  # interpolated candles are drawn, never predicted or scored
            self.cycle.on_close(symbol, tf, candle)

    def process_closes(self) -> int:
        """Resolve and predict for every queued candle close (core/live/cycle.py); returns
        how many were handled. The first error of a close left out is raised once the good
        ones are recorded (``guarded`` reports it)."""
        with self._cycle_lock:
            queued = len(self.cycle.closes)
            experiences, rows, ids, failed = self.cycle.run(predicting=self.active)
            for model, tf, exp in experiences:
                self.learning.queue(model, tf, exp)
            self._predicted(rows, ids)
        self.challengers.check()  # promotes the promotable when training.auto_promote
        if failed:
            raise failed[0]
        return queued

    def _predicted(self, rows: list[NewPrediction], ids: list[int]) -> None:
        """Once stored: each model's newest prediction, the votes the signal fuses."""
        for pid, row in zip(ids, rows, strict=True):
            self.last_predictions[row.model] = {
                "id": pid, "symbol": row.symbol, "timeframe": row.timeframe,
                "action": row.action, "confidence": row.confidence,
                "created_ts": row.created_ts, "target_ts": row.target_ts}
        self.desk.note(rows, ids)
        if rows:
            self.prediction_rate.add(len(rows))

    def train_due(self) -> int:
        """One training step for every (model, timeframe) with a full batch waiting."""
        with self._training_job:
            return self.learning.train_batches(self.take_due())

    def take_due(self) -> list:
        """Every full batch waiting (none unless active); see core/live/learning.py."""
        return self.learning.take_due() if self.active else []

    def job_interval_s(self, name: str) -> float | None:
        """Market seconds between runs of job ``name`` (None for a wall-time job)."""
        return next(job.market_s for job in self.jobs if job.name == name)

    def signal_job(self, now_ms: int) -> None:
        if not self.active:
            return
        executed = self.desk.run(now_ms)
        if executed:
            self.store.mark_executed(executed)

    def expire_job(self, now_ms: int) -> int:
        cutoff = now_ms - int(self.cfg.scheduler.prediction_expiry_s * 1000)
        return self.store.expire_closed_before(cutoff, now_ms)

    def flush_job(self) -> int:
        """Write what the store recorded since the last flush (see core/predictions/); and
        the feed's state to the event stream when it changed (a wall-time job: 2 per s)."""
        written = self.store.flush()
        self.events.publish_change("feed", "feed", feed_state(self.market))
        return written
