"""Composition root: every service built from the config, started and stopped together.

``build_services`` only constructs (nothing starts, no thread, no scheduler); ``start`` does
the backfill, loads checkpoints, starts the market pump and the scheduler, once, in the
serving process. app.py, the end-to-end tests and the benchmarks all use this one path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

from core.config import Config
from core.kernels import warm_up
from core.live.models import build_learners
from core.live.service import LiveTraining
from core.market.service import MarketService, build_market
from core.predictions import PredictionStore
from core.scheduler import build_scheduler
from nn.checkpoints import CheckpointManager

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: Config
    market: MarketService
    training: LiveTraining
    scheduler: BackgroundScheduler | None = None
    loaded_checkpoints: dict | None = None

    def start(self) -> None:
        if self.scheduler is not None:
            return
        warm_up()  # compile (first run on a machine) or load the kernels, before any job
        if self.config.models.load_checkpoints:
            self.loaded_checkpoints = self.training.load_checkpoints()
            for name, path in self.loaded_checkpoints.items():
                log.info("model %s resumed from %s", name, path)
        self.market.start()
        self.scheduler = build_scheduler(self.training)
        self.scheduler.start()
        if self.config.training.start_active:
            self.training.start()

    def stop(self) -> None:
        self.training.stop()  # writes the final checkpoints
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        self.market.stop()
        self.training.store.close()


def build_services(cfg: Config) -> Services:
    market = build_market(cfg)
    runtime = cfg.runtime_path
    runtime.mkdir(parents=True, exist_ok=True)
    store = PredictionStore(runtime / "predictions.sqlite")
    checkpoints = CheckpointManager(runtime / "checkpoints", cfg.training.keep_checkpoints)
    training = LiveTraining(cfg, market, store,
                                   build_learners(cfg, market.model_timeframes), checkpoints)
    return Services(cfg, market, training)
