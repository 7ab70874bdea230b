"""What each model costs (core/live/costs.py): the last minute's percentiles, CPU per wall
second, the cycle's shared part and its load against the job's interval; and, through the live
loop, that each model is charged for its own work only."""

from __future__ import annotations

import time
from time import perf_counter, thread_time

import pytest

from core.live.costs import CycleMeter, ModelCosts, Window, percentile


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q=0"):
        percentile(values, 0)


def test_the_window_keeps_the_last_minute_only():
    clock = FakeClock()
    window = Window(60.0, clock)
    for i in range(100):  # 1 ms .. 100 ms, one each 0.5 s from 1000 to 1049.5
        window.add((i + 1) / 1000, cpu_s=0.001)
        clock.now += 0.5
    assert window.summary() == {"n": 100, "p50_ms": 50.0, "p99_ms": 99.0}
    clock.now += 20.0  # at 1070 the minute begins at 1010: the first 20 are out
    assert window.summary() == {"n": 80, "p50_ms": 60.0, "p99_ms": 100.0}
    assert window.cpu_s() == pytest.approx(0.080)
    clock.now += 60.0
    assert window.summary() == {"n": 0, "p50_ms": None, "p99_ms": None}
    assert window.cpu_s() == 0.0


def test_cpu_fraction_is_cpu_seconds_per_wall_second_of_what_the_window_covers():
    clock = FakeClock()
    costs = ModelCosts(60.0, clock)
    costs.window("cnn", "share").add(0.010, cpu_s=0.5)  # began 10 ms before now
    costs.window("cnn", "train").add(0.020, cpu_s=1.5)
    clock.now += 10.0  # covered: since the earlier work began (10.02 s): 2 CPU s over it
    assert costs.model("cnn")["cpu_fraction"] == pytest.approx(2.0 / 10.02, abs=1e-4)
    clock.now += 100.0  # a full minute covered, and both samples out of it
    assert costs.model("cnn")["cpu_fraction"] == 0.0
    assert costs.model("never-ran") == {
        "forward_ms": {"n": 0, "p50_ms": None, "p99_ms": None},
        "cycle_share_ms": {"n": 0, "p50_ms": None, "p99_ms": None},
        "train_step_ms": {"n": 0, "p50_ms": None, "p99_ms": None},
        "cpu_fraction": 0.0, "window_s": 60.0}


def test_a_cycle_splits_into_each_models_share_and_the_shared_rest():
    costs = ModelCosts()
    meter = CycleMeter()
    meter.start = (perf_counter() - 0.100, thread_time())  # a cycle that began 100 ms ago
    meter.shares = {"cnn": [0.030, 0.0], "dqn": [0.020, 0.0]}
    meter.forwards = {"cnn": [0.010, 0.0]}
    costs.end(meter)
    cycle = costs.cycle(interval_s=0.5)
    assert cycle["total_ms"]["p50_ms"] == pytest.approx(100.0, abs=20)
    assert cycle["shared_ms"]["p50_ms"] == pytest.approx(50.0, abs=20)  # 100 - 30 - 20
    assert cycle["load"] == pytest.approx(cycle["total_ms"]["p99_ms"] / 500, abs=1e-4)
    assert cycle["interval_ms"] == 500.0
    assert costs.model("cnn")["cycle_share_ms"]["p50_ms"] == 30.0
    assert costs.model("cnn")["forward_ms"]["p50_ms"] == 10.0
    assert costs.model("dqn")["forward_ms"]["n"] == 0  # no forward of its own timed
    assert costs.cycle(None)["load"] is None  # not scheduled: nothing to compare with


def test_the_meter_adds_up_a_models_calls_and_counts_cpu_not_waiting():
    meter = CycleMeter()
    for _ in range(2):
        wall, cpu = perf_counter(), thread_time()
        time.sleep(0.02)  # waiting: wall time, next to no CPU
        meter.add("cob", wall, cpu, forward=True)
    wall, cpu = perf_counter(), thread_time()
    end = thread_time() + 0.03
    while thread_time() < end:  # busy: CPU
        pass
    meter.add("cob", wall, cpu)
    share_wall, share_cpu = meter.shares["cob"]
    assert share_wall >= 0.07
    assert 0.03 <= share_cpu < 0.06  # the busy 30 ms, not the 40 ms asleep
    assert meter.forwards["cob"][0] >= 0.04 and meter.forwards["cob"][1] < 0.02


def test_a_training_step_is_timed_where_it_runs():
    costs = ModelCosts()
    wall, cpu = perf_counter(), thread_time()
    time.sleep(0.03)
    costs.train_step("dqn", wall, cpu)
    train = costs.model("dqn")["train_step_ms"]
    assert train["n"] == 1 and train["p50_ms"] >= 30.0
    assert costs.model("dqn")["cpu_fraction"] < 0.5  # asleep, not computing


def test_the_live_loop_charges_each_model_for_its_own_work(tmp_path, monkeypatch):
    from core.scheduler import build_scheduler, job_intervals
    from tests.test_live_training import make_services, run

    services = make_services(tmp_path)
    training = services.training
    cob = training.learners["cob"]
    decide = cob.decide

    def slow_decide(observations, states):  # 100 ms more of the order-book model's forward
        time.sleep(0.1)
        return decide(observations, states)

    monkeypatch.setattr(cob, "decide", slow_decide)
    training.start()
    try:
        run(services, 40)
        status = training.read.status()
        models, cycle = status.models, status.cycle
        assert models["cob"].costs["forward_ms"]["p50_ms"] >= 100.0
        assert models["cob"].costs["cycle_share_ms"]["p50_ms"] >= 100.0
        cycles = cycle["total_ms"]["n"]
        assert cycles >= 15  # a 1h close every other 30m bar
        for name, m in models.items():
            if name != "cob":  # the others are not charged for the order-book model's sleep
                assert m.costs["forward_ms"]["p50_ms"] < 100.0, name
            # one forward per cycle (every cycle predicts from its newest closes)
            assert m.costs["forward_ms"]["n"] == cycles, name
            # every training step timed, where it ran
            assert m.costs["train_step_ms"]["n"] == m.train_steps > 0, name
            assert 0.0 < m.costs["cpu_fraction"] <= 1.05, name  # one thread: at most a core
        assert cycle["total_ms"]["p50_ms"] >= 100.0 > cycle["shared_ms"]["p50_ms"]
        assert cycle["interval_ms"] is None and cycle["load"] is None  # no scheduler here
        build_scheduler(training)  # built, not started: the cycle's interval is now known
        speed = services.market.clock.speed
        job = job_intervals(training.jobs, speed)["process_closes"]
        # the cycle has until the next closes: the finest model timeframe (1h here, the 30m
        # bars' 1s candles are interpolated) at the clock's speed, at least the job's interval
        finest_s = min(training.tf_ms[tf] for tf in training.timeframes) / 1000
        assert finest_s == 3600.0
        interval = max(job, finest_s / speed)
        cycle = training.read.status().cycle
        assert cycle["interval_ms"] == pytest.approx(interval * 1000)
        assert cycle["load"] == pytest.approx(cycle["total_ms"]["p99_ms"] / (interval * 1000),
                                              abs=1e-4)
    finally:
        services.stop()


def test_a_window_nobody_reads_keeps_only_the_last_minute():
    clock = FakeClock()
    window = Window(60.0, clock)
    for _ in range(10_000):  # ten samples a second for 1,000 s, never summarised
        window.add(0.001)
        clock.now += 0.1
    assert len(window._samples) <= 601
