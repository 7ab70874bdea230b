"""APScheduler wiring: the jobs of core/live/jobs.py, their market intervals divided by the
clock's speed (never below MIN_WALL_INTERVAL_S); a job that needs the market time gets the
market clock's reading when it runs.

Jobs run in the scheduler's thread pool, ``coalesce=True, max_instances=1``: a slow job never
piles up, and the close-processing job (prediction) and the training job run in different
threads, so prediction never waits on training.

``JobLiveness`` follows the scheduler's own events (started, stopped, each job submitted and
finished): GET /api/health (core/health.py) reports it dead when it is not running or a job
has not started for several of its intervals (hung, or the scheduler's thread gone).
"""

from __future__ import annotations

import logging
import threading
import time

from apscheduler import events
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from core.live.jobs import Job
from core.live.service import LiveTraining

MIN_WALL_INTERVAL_S = 0.02  # APScheduler's own resolution makes shorter intervals meaningless
LATE_INTERVALS = 5  # a job that has not started for this many of its intervals is late ...
LATE_FLOOR_S = 10.0  # ... and never before this (above APScheduler's 5 s misfire grace)


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
    live.schedule = JobLiveness(intervals)
    scheduler.add_listener(live.schedule.on_event, JobLiveness.EVENTS)
    return scheduler


class JobLiveness:
    """Whether the scheduler runs and its jobs fire: when each last started (the scheduler's
    own events, ``on_event``), against its wall interval. GET /api/health reads ``report``."""

    EVENTS = (events.EVENT_SCHEDULER_START | events.EVENT_SCHEDULER_SHUTDOWN
              | events.EVENT_SCHEDULER_PAUSED | events.EVENT_SCHEDULER_RESUMED
              | events.EVENT_JOB_SUBMITTED | events.EVENT_JOB_EXECUTED | events.EVENT_JOB_ERROR)

    def __init__(self, intervals: dict[str, float], clock=time.monotonic):
        self.intervals = intervals  # job -> wall seconds between runs
        self.clock = clock
        self.state = "not started"  # running, paused, stopped
        self.since: float | None = None  # when it last started or resumed
        self.started: dict[str, float] = {}  # job -> when it last started
        self.finished: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_event(self, event) -> None:
        now, code = self.clock(), event.code
        with self._lock:
            if code & (events.EVENT_SCHEDULER_START | events.EVENT_SCHEDULER_RESUMED):
                self.state, self.since = "running", now
            elif code & events.EVENT_SCHEDULER_PAUSED:
                self.state = "paused"
            elif code & events.EVENT_SCHEDULER_SHUTDOWN:
                self.state = "stopped"
            elif code & events.EVENT_JOB_SUBMITTED:
                self.started[event.job_id] = now
            else:  # executed or failed (the jobs' own errors are caught by ``guarded``)
                self.finished[event.job_id] = now

    def report(self, now: float | None = None) -> dict:
        """{alive, state, reasons, jobs: name -> {interval_s, last_start_s_ago, running_s,
        late_after_s}}: dead when not running or a job has not started for LATE_INTERVALS of
        its intervals (at least LATE_FLOOR_S): a hung job, a dead scheduler thread."""
        now = self.clock() if now is None else now
        with self._lock:
            state, since = self.state, self.since
            started, finished = dict(self.started), dict(self.finished)
        reasons = [] if state == "running" else [f"the scheduler is {state}"]
        jobs = {}
        for name, interval in self.intervals.items():
            late_after = max(LATE_INTERVALS * interval, LATE_FLOOR_S)
            last = started.get(name)
            busy = last is not None and finished.get(name, -1.0) < last
            jobs[name] = {"interval_s": interval, "late_after_s": late_after,
                          "last_start_s_ago": None if last is None else round(now - last, 3),
                          "running_s": round(now - last, 3) if busy else None}
            quiet = now - (last if last is not None else since if since is not None else now)
            if state == "running" and quiet > late_after:
                reasons.append(f"job {name} (every {interval:g} s) " + (
                    f"has been running for {quiet:.0f} s" if busy else
                    f"has not started for {quiet:.0f} s"))
        return {"alive": not reasons, "state": state, "reasons": reasons, "jobs": jobs}
