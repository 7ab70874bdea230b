"""APScheduler wiring: the jobs of core/live/jobs.py, their market intervals divided by the
clock's speed (never below MIN_WALL_INTERVAL_S); a job that needs the market time gets the
market clock's reading when it runs.

Jobs run in the scheduler's thread pool, ``coalesce=True, max_instances=1``: a slow job never
piles up, and the close-processing job (prediction) and the training job run in different
threads, so prediction never waits on training.
"""

from __future__ import annotations

import logging

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from core.live.jobs import Job
from core.live.service import LiveTraining

MIN_WALL_INTERVAL_S = 0.02  # APScheduler's own resolution makes shorter intervals meaningless


def job_intervals(jobs: tuple[Job, ...], speed: float) -> dict[str, float]:
    """Wall-clock seconds between runs of each job at the clock's ``speed``."""
    return {job.name: job.wall_interval(speed, MIN_WALL_INTERVAL_S) for job in jobs}


def _runner(live: LiveTraining, job: Job):
    method = getattr(live, job.method)
    if job.timed:
        clock = live.market.clock
        return lambda: method(clock.now_ms())
    return method


def build_scheduler(live: LiveTraining) -> BackgroundScheduler:
    """A scheduler with the live-training jobs added; the caller starts it (once).

    A run skipped because the previous one is still going is by design (coalesce): the next
    run handles everything queued. APScheduler warns about each; only its errors are logged.
    """
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    # Every run would otherwise log two INFO lines (many per second at replay speed).
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    jobs = live.jobs
    intervals = job_intervals(jobs, live.market.clock.speed)
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 5},
        timezone="UTC",
    )
    for job in jobs:
        scheduler.add_job(live.guarded, "interval", args=(job.name, _runner(live, job)),
                          seconds=intervals[job.name], id=job.name, name=job.name)
    return scheduler
