"""GET /api/health's judgement (core/health.py) and the scheduler's job liveness
(core/scheduler.py ``JobLiveness``): alive, or dead with a reason a person can act on."""

from __future__ import annotations

from types import SimpleNamespace

from apscheduler import events

from core.health import DISCONNECTED_GRACE_S, feed_liveness, health
from core.scheduler import LATE_FLOOR_S, LATE_INTERVALS, JobLiveness


class FakeClock:
    def __init__(self, now: float = 500.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(code: int, job_id: str | None = None):
    return SimpleNamespace(code=code, job_id=job_id)


def running_scheduler(clock) -> JobLiveness:
    liveness = JobLiveness({"process_closes": 0.05, "expire": 4.0}, clock)
    liveness.on_event(event(events.EVENT_SCHEDULER_START))
    return liveness


def test_a_scheduler_whose_jobs_fire_is_alive():
    clock = FakeClock()
    liveness = running_scheduler(clock)
    for _ in range(100):
        clock.now += 0.05
        liveness.on_event(event(events.EVENT_JOB_SUBMITTED, "process_closes"))
        liveness.on_event(event(events.EVENT_JOB_EXECUTED, "process_closes"))
    report = liveness.report()
    assert report["alive"] and report["state"] == "running" and report["reasons"] == []
    assert report["jobs"]["process_closes"]["last_start_s_ago"] == 0.0
    assert report["jobs"]["process_closes"]["running_s"] is None
    # expire (every 4 s) has not fired in these 5 s, but is late only after 5 intervals
    assert report["jobs"]["expire"]["late_after_s"] == max(LATE_INTERVALS * 4.0, LATE_FLOOR_S)


def test_a_hung_job_makes_the_scheduler_dead_with_the_reason():
    clock = FakeClock()
    liveness = running_scheduler(clock)
    liveness.on_event(event(events.EVENT_JOB_SUBMITTED, "process_closes"))
    liveness.on_event(event(events.EVENT_JOB_SUBMITTED, "expire"))
    liveness.on_event(event(events.EVENT_JOB_EXECUTED, "expire"))
    clock.now += LATE_FLOOR_S + 1  # the cycle never finished; expire (20 s) not late yet
    report = liveness.report()
    assert not report["alive"]
    assert report["reasons"] == ["job process_closes (every 0.05 s) has been running for 11 s"]
    assert report["jobs"]["process_closes"]["running_s"] == LATE_FLOOR_S + 1
    clock.now += 10  # 21 s: expire has missed its five runs too
    assert "job expire (every 4 s) has not started for 21 s" in liveness.report()["reasons"]


def test_a_stopped_or_never_started_scheduler_is_dead():
    clock = FakeClock()
    liveness = JobLiveness({"process_closes": 0.05}, clock)
    assert liveness.report()["reasons"] == ["the scheduler is not started"]
    liveness.on_event(event(events.EVENT_SCHEDULER_START))
    clock.now += LATE_FLOOR_S + 5  # started, yet the job never fired
    assert liveness.report()["reasons"] == [
        "job process_closes (every 0.05 s) has not started for 15 s"]
    liveness.on_event(event(events.EVENT_SCHEDULER_SHUTDOWN))
    assert liveness.report()["reasons"][0] == "the scheduler is stopped"


def snapshot(running=True, state="running", feeds=None, error=None) -> dict:
    return {"running": running, "feeds": feeds or {},
            "supervisor": {"state": state, "last_error": error}}


def test_a_feed_is_dead_when_the_source_stops_or_a_stream_stalls_or_stays_disconnected():
    assert feed_liveness(snapshot())["alive"]
    dead = feed_liveness(snapshot(False, "restarting", error="ConnectionError: refused"))
    assert dead["reasons"] == ["the market source is restarting "
                               "(last error: ConnectionError: refused)"]
    feeds = {"binance": {"state": "stalled", "stalled": {"for_s": 42.0}},
             "bybit": {"state": "disconnected", "message_age_s": 3.0}}  # reconnecting: grace
    out = feed_liveness(snapshot(feeds=feeds))
    assert out["reasons"] == ["feed binance is stalled: nothing accepted for 42 s"]
    assert out["feeds"] == {"binance": "stalled", "bybit": "disconnected"}
    feeds["bybit"]["message_age_s"] = DISCONNECTED_GRACE_S + 1
    assert "feed bybit is disconnected (last message 31 s ago)" in \
        feed_liveness(snapshot(feeds=feeds))["reasons"]


def test_health_is_200_only_when_both_live():
    clock = FakeClock()
    liveness = running_scheduler(clock)
    liveness.on_event(event(events.EVENT_JOB_SUBMITTED, "process_closes"))
    liveness.on_event(event(events.EVENT_JOB_SUBMITTED, "expire"))
    code, body = health(snapshot(), liveness.report())
    assert (code, body["status"], body["reasons"]) == (200, "ok", [])
    code, body = health(snapshot(running=False, state="stopped"), liveness.report())
    assert (code, body["reasons"]) == (503, ["the market source is stopped"])
    code, body = health(snapshot(), None)
    assert code == 503 and "no scheduler runs the jobs" in body["reasons"][0]
