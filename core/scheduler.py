"""APScheduler wiring. Intervals are market time, divided by the clock's speed.

Jobs run in the scheduler's thread pool, ``coalesce=True, max_instances=1``: a slow job never
piles up, and the close-processing job (prediction) and the training job run in different
threads, so prediction never waits on training.
"""

from __future__ import annotations

import logging

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from core.training import LiveTrainingService

MIN_WALL_INTERVAL_S = 0.02  # APScheduler's own resolution makes shorter intervals meaningless


def job_intervals(base_tf_s: float, signal_s: float, speed: float,
                  flush_s: float = 0.5) -> dict[str, float]:
    """Wall-clock seconds between runs of each job, from market-time intervals (``flush_s``,
    the prediction store's writes, is wall time already)."""
    def wall(market_s: float) -> float:
        return max(MIN_WALL_INTERVAL_S, market_s / speed)

    return {
        "process_closes": wall(base_tf_s),
        "train": wall(base_tf_s),
        "signal": wall(signal_s),
        "expire": wall(60.0),
        "flush": max(MIN_WALL_INTERVAL_S, flush_s),
    }


def build_scheduler(service: LiveTrainingService) -> BackgroundScheduler:
    """A scheduler with the live-training jobs added; the caller starts it (once).

    A run skipped because the previous one is still going is by design (coalesce): the next
    run handles everything queued. APScheduler warns about each; only its errors are logged.
    """
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    # Every run would otherwise log two INFO lines (many per second at replay speed).
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    cfg = service.cfg
    base_s = service.tf_ms[service.market.store.base_tf] / 1000
    intervals = job_intervals(base_s, cfg.scheduler.signal_interval_s, service.market.clock.speed,
                              cfg.scheduler.store_flush_s)
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 5},
        timezone="UTC",
    )
    jobs = {
        "process_closes": service.process_closes,
        "train": service.train_due,
        "signal": service.signal_job,
        "expire": service.expire_job,
        "flush": service.flush_job,
    }
    for name, job in jobs.items():
        scheduler.add_job(service.guarded, "interval", args=(name, job),
                          seconds=intervals[name], id=name, name=name)
    return scheduler
