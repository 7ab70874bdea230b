"""Tests for core.scheduler: wall intervals by hand and the jobs a built scheduler holds."""

from datetime import timedelta
from types import SimpleNamespace

import pytest

from core.live.jobs import job_table
from core.scheduler import MIN_WALL_INTERVAL_S, build_scheduler, job_intervals


def intervals(bar_s, signal_s, speed, flush_s=0.5):
    return job_intervals(job_table(bar_s, signal_s, flush_s), speed)


def test_job_intervals_at_speed_15():
    out = intervals(bar_s=1.0, signal_s=10.0, speed=15.0)
    assert out["process_closes"] == pytest.approx(1 / 15)  # 0.0667 wall s per 1 s candle
    assert out["train"] == pytest.approx(1 / 15)
    assert out["signal"] == pytest.approx(10 / 15)  # 0.667
    assert out["expire"] == pytest.approx(60 / 15)  # 4.0
    assert out["flush"] == 0.5  # wall time: not divided by the speed
    assert set(out) == {"process_closes", "train", "signal", "expire", "flush"}


def test_job_intervals_at_real_time():
    out = intervals(bar_s=60.0, signal_s=10.0, speed=1.0)
    assert out == {"process_closes": 60.0, "train": 60.0, "signal": 10.0, "expire": 60.0,
                   "flush": 0.5}


def test_job_intervals_floor_at_min_wall_interval():
    out = intervals(bar_s=1.0, signal_s=10.0, speed=1000.0)
    # 1 / 1000 = 0.001 and 10 / 1000 = 0.01 are below the floor; 60 / 1000 = 0.06 is not
    assert out["process_closes"] == MIN_WALL_INTERVAL_S
    assert out["train"] == MIN_WALL_INTERVAL_S
    assert out["signal"] == MIN_WALL_INTERVAL_S
    assert out["expire"] == pytest.approx(0.06)


class FakeService:
    """What build_scheduler reads from the live service (core/live/service.py), and nothing
    else: its job table, the market clock and the jobs."""

    def __init__(self, speed: float, signal_interval_s: float, bar_s: float = 1.0):
        self.jobs = job_table(bar_s, signal_interval_s, flush_s=0.5)
        self.market = SimpleNamespace(clock=SimpleNamespace(speed=speed, now_ms=lambda: 42))
        self.calls: list[str] = []

    def guarded(self, name, job):
        self.calls.append(name)
        job()

    def process_closes(self):
        return 0

    def train_due(self):
        return 0

    def signal_job(self, now_ms):
        self.calls.append(("signal at", now_ms))

    def expire_job(self, now_ms):
        self.calls.append(("expire at", now_ms))

    def flush_job(self):
        return 0


def test_build_scheduler_adds_the_five_jobs():
    service = FakeService(speed=15.0, signal_interval_s=10.0)
    scheduler = build_scheduler(service)
    # Started paused: job defaults are applied, nothing runs.
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"process_closes", "train", "signal", "expire", "flush"}
        expected = {  # wall seconds: market seconds / 15
            "process_closes": (service.process_closes, 1 / 15),
            "train": (service.train_due, 1 / 15),
            "signal": (None, 10 / 15),  # called with the market clock's time
            "expire": (None, 60 / 15),
            "flush": (service.flush_job, 0.5),  # wall seconds: the same at any speed
        }
        for name, (func, seconds) in expected.items():
            job = jobs[name]
            assert job.func == service.guarded
            assert job.args[0] == name
            if func is not None:
                assert job.args[1] == func
            assert job.trigger.interval == timedelta(seconds=seconds)
            assert job.coalesce is True
            assert job.max_instances == 1
            assert job.misfire_grace_time == 5
        assert service.calls == []
        jobs["signal"].args[1]()  # the market time is read when the job runs
        jobs["expire"].args[1]()
        assert service.calls == [("signal at", 42), ("expire at", 42)]
    finally:
        scheduler.shutdown(wait=False)


def test_build_scheduler_uses_the_bar_and_signal_interval():
    service = FakeService(speed=2.0, signal_interval_s=30.0, bar_s=60.0)
    scheduler = build_scheduler(service)
    jobs = {job.id: job for job in scheduler.get_jobs()}  # pending: never started
    # 60 s / 2 = 30 s; signal 30 / 2 = 15 s; expire 60 / 2 = 30 s
    assert jobs["process_closes"].trigger.interval == timedelta(seconds=30)
    assert jobs["train"].trigger.interval == timedelta(seconds=30)
    assert jobs["signal"].trigger.interval == timedelta(seconds=15)
    assert jobs["expire"].trigger.interval == timedelta(seconds=30)
    assert not scheduler.running
