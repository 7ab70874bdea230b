"""The read model: everything the page and the REST API show, built here and nowhere else.

The page's callbacks and the REST handlers ask this object, never the store, the learners or
the jobs: ``status()`` (a typed :class:`LiveStatus`, the JSON of /status), ``predictions``
(validated query of the stored predictions), ``overlays`` (a chart's newest predictions per
model) and ``looks`` (how each model is drawn). Store reads answer from the store's in-memory
index; nothing here writes.

The status is cached: a stale copy is refreshed on a background thread while callers keep
getting the current one, so no request waits for the store's aggregates or the models'
baseline comparison (hundreds of ms with many predictions stored), and twenty clients
arriving together start one refresh, not twenty.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import verdicts
from core.live.quality import QualityCache
from core.predictions import STATUSES

if TYPE_CHECKING:
    from core.live.service import LiveTraining

log = logging.getLogger(__name__)


@dataclass
class ModelStatus:
    """One model's card."""

    name: str
    title: str
    look: dict  # how the chart draws it: markers per action, executed only
    parameters: int  # sum(p.numel()) of its network
    train_steps: int
    prediction_count: int  # predictions made, all statuses (a running total: retention keeps it)
    loss_5ma: float | None  # None before the first training step
    loss_history: list[float]
    epsilon: float | None  # None for models that do not explore
    last_prediction: dict | None
    device: str
    memory_bytes: int
    active: bool
    state: str  # ACTIVE, IDLE (trained, stopped) or UNTRAINED
    checkpoint: dict | None  # the newest: {file (relative to the checkpoint folder), step, bytes}
    checkpoint_warning: str | None  # checkpoints skipped at start (unreadable, refused, unfit)
    resumed_from_step: int | None  # the step of the checkpoint loaded at start; None: fresh
    accuracy: dict  # timeframe -> {resolved, correct, accuracy}
    quality: dict | None  # scores with baselines and intervals; None before any resolved
    timeframes: dict  # timeframe -> "trained and scored" or "not scored: interpolated"
    role: str  # "champion", or "challenger": a shadow copy that never trades
    challenger: dict | None  # the running challenger: overrides, skill beside the champion's
    promotions: list  # the challengers promoted to this model (core/live/challengers.py)
    costs: dict  # forward, cycle share, train step p50/p99 and CPU, last minute (core/live/costs.py)
    # active/paused/frozen, steps, rollback, kept steps, staleness (core/live/control.py)
    control: dict
    stale: bool  # STALE: no training step or no resolution for training.stale_after_s


@dataclass
class LiveStatus:
    """GET /api/live-training/status, and what the page shows."""

    active: bool
    started_at: int | None
    timeframes: dict  # per timeframe: scored or not, and why
    market_time_ms: int
    clock_speed: float
    source: dict
    predictions_per_second: float
    training_batches_per_minute: float
    signal_generation: dict
    paper: dict
    models: dict[str, ModelStatus]
    direction: dict  # whether any model calls the direction better than its baselines
    errors: dict
    prediction_counts: dict
    dropped_experiences: dict
    cycle: dict  # the cycle's total and shared time against its wall interval (core/live/costs.py)
    # Where models train: {kind: thread|ray, address, actors: {model: "ok" | "lost: why;
    # retry in N s" | "not started"}, restarts, lost_steps} (core/live/backends.py)
    training_backend: dict
    # The prediction store's database: {backend, where, state OK|DOWN, down_since, error,
    # retry_in_s, queued_rows, outages, last_write, symbols} (core/predictions/health.py)
    store: dict

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ReadModel:
    STATUS_MAX_STALE_S = 2.0  # an older copy is recomputed on the request, not in background

    def __init__(self, live: LiveTraining):
        self.live = live
        self.quality = QualityCache(live.store, live.learners, live.cfg)
        self._cache: tuple[float, dict] | None = None
        self._first = threading.Lock()  # the first computation
        self._refreshing = threading.Lock()  # held while a background refresh runs

    # -- queries ----------------------------------------------------------------------------

    def choices(self) -> dict[str, tuple[str, ...]]:
        """What a predictions query may name."""
        store = self.live.market.store
        # A shared store lists other processes' symbols too (core/predictions/postgres.py).
        listed = self.live.store.symbols_listed() if self.live.store.shared else ()
        return {"model": tuple(self.live.learners),
                "symbol": tuple(dict.fromkeys((*store.symbols, *listed))),
                "timeframe": store.timeframes, "status": STATUSES}

    def predictions(self, limit: int = 50, **where) -> list[dict]:
        return self.live.store.recent(limit=limit, **where)

    def predictions_version(self) -> int:
        """Changes whenever what :meth:`predictions` would list does."""
        return self.live.store.version

    def looks(self) -> dict[str, dict]:
        return {name: dataclasses.asdict(lrn.look) for name, lrn in self.live.learners.items()}

    def overlays(self, symbol: str, timeframe: str, limit: int = 20) -> dict[str, dict]:
        """Per model, in a fixed order: how it is drawn and its newest predictions on one
        chart."""
        return {name: {"look": dataclasses.asdict(lrn.look),
                       "predictions": self.live.store.recent(limit=limit, model=name,
                                                             symbol=symbol, timeframe=timeframe)}
                for name, lrn in self.live.learners.items()}

    # -- status -----------------------------------------------------------------------------

    def status_json(self, max_age_s: float = 0.5) -> dict:
        """The published status, at most ``max_age_s`` old plus one refresh."""
        cached = self._cache
        if cached is None or time.monotonic() - cached[0] > self.STATUS_MAX_STALE_S:
            # Nothing published yet (start, stop), or nobody asked for a while: compute it
            # here, once; callers arriving meanwhile wait for that one computation.
            with self._first:
                cached = self._cache
                if cached is None or time.monotonic() - cached[0] > self.STATUS_MAX_STALE_S:
                    cached = self._cache = (time.monotonic(), self.status().to_json())
                return cached[1]
        if time.monotonic() - cached[0] > max_age_s and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="status-refresh", daemon=True).start()
        return cached[1]

    def invalidate(self) -> None:
        """The next read recomputes (after start/stop, or when a caller must see the jobs'
        latest effects)."""
        self._cache = None

    def _refresh(self) -> None:
        try:
            self._cache = (time.monotonic(), self.status().to_json())
        except Exception:  # keep serving the last good copy; say why
            log.exception("status refresh failed")
        finally:
            self._refreshing.release()

    def status(self) -> LiveStatus:
        live, market = self.live, self.live.market
        counts = live.store.counts()
        quality = self.quality.get(sum(c.get("resolved", 0) for c in counts.values()))
        now = market.clock.now_ms()
        prices = {s: p for s in market.store.symbols
                  if (p := market.store.last_price(s)) is not None}
        desk = live.desk
        signalling = (live.active and desk.last_signal_ms is not None
                      and now - desk.last_signal_ms
                      <= 3 * live.job_interval_s("signal") * 1000)
        return LiveStatus(
            active=live.active, started_at=live.started_at_ms,
            timeframes=market.timeframe_roles(), market_time_ms=now,
            clock_speed=market.clock.speed,
            source={**market.source.describe(), "lag_ms": market.source.lag_ms(now),
                    "rejected": market.feed.rejected_by_reason()},
            predictions_per_second=round(live.prediction_rate.per_second(), 3),
            training_batches_per_minute=round(live.learning.batch_rate.per_second() * 60, 2),
            signal_generation={
                "state": "ACTIVE" if signalling else "INACTIVE",
                "last_signal_ms": desk.last_signal_ms,
                "signals": {s: dataclasses.asdict(sig) for s, sig in desk.signals.items()}},
            paper=desk.paper.snapshot(prices),
            models=self._models(counts, quality),
            direction=verdicts.direction_summary(
                [g for q in quality.values() if q for g in q["groups"]]),
            errors={k: dataclasses.asdict(v) for k, v in live.errors.items()},
            prediction_counts=counts,
            dropped_experiences=dict(live.learning.dropped_experiences),
            cycle=live.costs.cycle(self._cycle_interval_s()),
            training_backend=live.learning.backend.status(list(live.learners)),
            store=live.store.health_status(),
        )

    def _models(self, counts: dict, quality: dict) -> dict[str, ModelStatus]:
        live = self.live
        accuracy = live.store.accuracy()
        roles = {tf: role["label"] for tf, role in live.market.timeframe_roles().items()}
        models = {}
        for name, lrn in list(live.learners.items()):  # challengers come and go
            steps = lrn.train_steps
            trainer = live.learning.backend.learner_status(name)  # a Ray actor's epsilon...
            models[name] = ModelStatus(
                name=name, title=lrn.look.title, look=dataclasses.asdict(lrn.look),
                parameters=lrn.parameters_count(), train_steps=steps,
                prediction_count=sum(counts.get(name, {}).values()),
                loss_5ma=lrn.loss_5ma(), loss_history=list(lrn.losses)[-50:],
                epsilon=trainer.get("epsilon", lrn.epsilon),
                last_prediction=live.last_predictions.get(name), device=str(lrn.device),
                memory_bytes=trainer.get("memory_bytes", lrn.memory_bytes()), active=live.active,
                state=_state(live.active, steps, control := live.control.describe(name)),
                checkpoint=self._checkpoint(name),
                checkpoint_warning=live.checkpoints.warnings.get(name),
                resumed_from_step=live.learning.resumed_from.get(name),
                accuracy={tf: v for (m, tf), v in accuracy.items() if m == name},
                quality=quality.get(name), timeframes=roles, costs=live.costs.model(name),
                control=control, stale=control["staleness"]["stale"],
                **live.challengers.card(name))
        return models

    def _cycle_interval_s(self) -> float | None:
        """Wall seconds a cycle has before the next closes arrive: the finest model timeframe
        at the clock's speed, never below the interval the scheduler runs the cycle's job at
        (core/scheduler.py); None when no scheduler runs it (the evaluate command). A run of
        the job with nothing closed costs nothing, so the job's own interval alone (20 ms at
        x600 on a 1s bar) would call a 1h cycle of 15 ms "behind" when it has 6 s."""
        schedule = self.live.schedule
        job = None if schedule is None else schedule.intervals.get("process_closes")
        if job is None:
            return None
        finest_s = min(self.live.tf_ms[tf] for tf in self.live.timeframes) / 1000
        return max(job, finest_s / max(self.live.market.clock.speed, 1e-9))

    def _checkpoint(self, name: str) -> dict | None:
        """The newest checkpoint, named relative to the checkpoint folder (no absolute path
        leaves the server)."""
        info = self.live.checkpoints.latest_info(name)
        if info is None:
            return None
        return {"file": f"{name}/{Path(info['path']).name}", "step": info["step"],
                "bytes": info["bytes"]}


def _state(active: bool, steps: int, control: dict) -> str:
    """The card's state: PAUSED or FROZEN (core/live/control.py), else ACTIVE while training
    is on, IDLE (trained, stopped) or UNTRAINED."""
    if control["state"] != "active":
        return control["state"].upper()
    if not active:
        return "IDLE" if steps else "UNTRAINED"
    return "ACTIVE"
