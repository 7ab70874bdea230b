"""End to end: the bundled replay with live training on, driven through the service's jobs.

The replay is advanced one real bar at a time (30m: ``at_real_resolution``, as the evaluator
does; the models predict the real 1h and 1d candles, exactly as in the app on this recording)
and the scheduler's jobs are called in order (process closes, train, signal, expire), so the
run is deterministic and fast; the browser test exercises the app's 1s stream under the real
APScheduler, and tests/core/test_training.py the 1s stream's exclusion of interpolated candles.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.clock import ManualClock
from core.config import load_config
from core.market.service import at_real_resolution
from core.services import build_services
from dashboard.app import create_app

ROOT = Path(__file__).resolve().parents[1]
SEC = 1000
BAR = 30 * 60 * SEC  # the default recording's real bars


def make_services(runtime: Path, stream_seconds: bool = False, **overrides):
    """The app's services on the default replay: one step per real 30m bar, or with
    ``stream_seconds`` the app's own 1s stream (1s and 1m interpolated)."""
    cfg = load_config(ROOT / "config.yaml", {"market.source": "replay", "runtime_dir": str(runtime),
                                             "models.dqn.buffer_size": 2000, **overrides},
                      environ={})
    if not stream_seconds:
        cfg = at_real_resolution(cfg)
    services = build_services(cfg)
    services.market.source.backfill()
    # Market time moves only when run() moves it (no wall clock in these tests).
    services.market.clock = ManualClock(services.market.source.start_ms)
    return services


def run(services, steps: int, start_ms: int | None = None) -> int:
    """Advance the replay ``steps`` of its streamed timeframe (30m bars, or 1s candles),
    running the jobs like the scheduler: closes and training every step, signals every 10
    market seconds and expiry every minute (every step for bars)."""
    src, training = services.market.source, services.training
    step = src.base_ms
    signal_every, expire_every = max(1, 10 * SEC // step), max(1, 60 * SEC // step)
    now = src.next_ts if start_ms is None else start_ms
    for i in range(steps):
        now += step
        src.emit_until(now)
        services.market.clock.set(now)
        training.process_closes()
        training.train_due()
        if i % signal_every == signal_every - 1:
            training.signal_job(now)
        if i % expire_every == expire_every - 1:
            training.expire_job(now)
    return now


def run_days(services, days: float) -> dict[str, int]:
    """The evaluate command's loop (training on its own thread, weights installed at fixed
    market times) over ``days`` market days from the replay's start, training on; each
    model's training steps. The services are stopped after."""
    from core.evaluator import run_loop

    services.training.start()
    start = services.market.source.start_ms
    try:
        run_loop(services, start, start + int(days * 86_400_000), progress=False)
        return {n: lrn.train_steps for n, lrn in services.training.learners.items()}
    finally:
        services.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runtime = tmp_path_factory.mktemp("runtime")
    services = make_services(runtime)
    services.training.start()
    run(services, 150)
    yield services
    services.stop()


def test_every_model_predicts_resolves_and_trains(trained):
    status = trained.training.read.status().to_json()
    assert status["active"] is True
    counts = status["prediction_counts"]
    for name in ("cnn", "dqn", "cob"):
        m = status["models"][name]
        assert counts[name]["resolved"] > 100, counts
        assert m["train_steps"] >= 3, (name, m["train_steps"])
        assert m["loss_5ma"] is not None and math.isfinite(m["loss_5ma"])
        assert m["parameters"] == sum(p.numel() for p in trained.training.learners[name]
                                      .network.parameters())
        assert m["state"] == "ACTIVE"
        # Only the real timeframes are predicted: 1h every hour, 1d at midnight.
        assert set(m["accuracy"]) <= {"1h", "1d"} and "1h" in m["accuracy"]
        assert sum(v["resolved"] for v in m["accuracy"].values()) == counts[name]["resolved"]
    for name in ("cnn", "dqn", "cob"):
        q = status["models"][name]["quality"]
        # Over the model's last 1,000 resolved predictions: its own measures per symbol and
        # timeframe, each beside its naive baseline with an interval, and a headline verdict.
        assert q is not None and q["rows"] == min(1000, counts[name]["resolved"])
        learner = trained.training.learners[name]
        assert {(g["symbol"], g["timeframe"]) for g in q["groups"]} >= {
            ("ETH/USDT", "1h"), ("BTC/USDT", "1h")}
        for group in q["groups"]:
            assert set(group["scores"]) <= set(learner.scores)
            accuracy = group["scores"]["accuracy"]
            assert accuracy["baseline"] in ("always_hold", "buy_and_hold", "momentum")
            assert accuracy["ci"] is None or accuracy["ci"][0] <= accuracy["value"] <= \
                accuracy["ci"][1]
        assert q["headline"]["verdict"] in ("learning", "no skill yet", "worse than baseline",
                                            "too few rows")
        assert q["headline"]["text"]
        assert sum(b["count"] for b in q["reliability"]) == q["rows"]
    cnn_groups = status["models"]["cnn"]["quality"]["groups"]
    assert all("range_skill_ewma" in g["scores"] for g in cnn_groups)
    import json

    json.dumps(status, allow_nan=False)  # valid JSON: no NaN reaches the REST status
    dqn = status["models"]["dqn"]
    # epsilon decays x0.995 per training step from 0.3.
    assert dqn["epsilon"] == pytest.approx(0.3 * 0.995 ** dqn["train_steps"])
    assert dqn["epsilon"] < 0.3
    assert status["signal_generation"]["last_signal_ms"] is not None


def test_resolved_predictions_carry_actuals_and_rewards(trained):
    rows = trained.training.store.recent(limit=50, status="resolved")
    assert len(rows) == 50
    for row in rows:
        assert row["actual_close"] > 0 and math.isfinite(row["reward"])
        assert row["resolved_ts"] >= row["target_ts"]
        candle = [c for c in trained.market.store.closed(row["symbol"], row["timeframe"])
                  if int(c[0]) == row["target_ts"]]
        if candle:  # the store keeps the last hour of 1s: the actual is the real candle
            assert row["actual_close"] == pytest.approx(candle[0][4])


def test_rest_status_agrees_with_the_store(trained):
    client = create_app(trained.config, trained.market, trained.training).server.test_client()
    trained.training.read.invalidate()  # the copy published before the run is stale
    status = client.get("/api/live-training/status").get_json()
    counts = trained.training.store.counts()
    for name, m in status["models"].items():
        assert m["prediction_count"] >= counts[name]["resolved"]
        assert sum(counts[name].values()) == m["prediction_count"]
    listed = client.get("/api/live-training/predictions?limit=5&model=dqn&status=resolved")
    body = listed.get_json()
    assert listed.status_code == 200 and len(body["predictions"]) == 5
    assert all(p["model"] == "dqn" and p["status"] == "resolved" for p in body["predictions"])
    ids = [p["id"] for p in body["predictions"]]
    assert ids == sorted(ids, reverse=True)  # newest first


@pytest.mark.parametrize(("query", "fragment"), [
    ("limit=0", "use 1 to 1000"),
    ("limit=abc", "not an integer"),
    ("model=lstm", "use one of: cnn, dqn, cob"),
    ("symbol=DOGE/USDT", "ETH/USDT"),
    ("timeframe=5m", "30m, 1h, 1d"),
    ("status=done", "pending, resolved, expired"),
    ("colour=red", "unknown parameter"),
])
def test_bad_prediction_queries_get_400_saying_what_is_allowed(trained, query, fragment):
    client = create_app(trained.config, trained.market, trained.training).server.test_client()
    response = client.get(f"/api/live-training/predictions?{query}")
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]


def test_wrong_method_gets_405_and_start_stop_are_idempotent(tmp_path):
    services = make_services(tmp_path)
    client = create_app(services.config, services.market, services.training).server.test_client()
    response = client.get("/api/live-training/start")
    assert response.status_code == 405 and "POST" in response.get_json()["error"]
    assert client.post("/api/live-training/status").status_code == 405
    assert client.post("/api/live-training/start").get_json()["active"] is True
    assert client.post("/api/live-training/start").get_json()["active"] is True
    stopped = client.post("/api/live-training/stop").get_json()
    assert stopped["active"] is False
    assert client.post("/api/live-training/stop").get_json()["active"] is False
    # Stop wrote a checkpoint per model.
    assert all(stopped["models"][m]["checkpoint"] for m in ("cnn", "dqn", "cob"))
    services.stop()


def test_stop_waits_for_the_training_step_in_flight_and_checkpoints_it(tmp_path):
    import threading

    services = make_services(tmp_path)
    training, src = services.training, services.market.source
    training.start()
    now = src.next_ts
    for _ in range(40):  # closes only: 1h experiences pile up, nothing trains yet
        now += BAR
        src.emit_until(now)
        services.market.clock.set(now)
        training.process_closes()
    cob = training.learners["cob"]
    assert cob.train_steps == 0
    entered, release = threading.Event(), threading.Event()
    learn = cob.learn

    def slow_learn(batch):  # a step that is still running when Stop is pressed
        entered.set()
        release.wait(10)
        return learn(batch)

    cob.learn = slow_learn
    job = threading.Thread(target=training.train_due)
    job.start()
    assert entered.wait(10)
    stopped = {}
    stopper = threading.Thread(target=lambda: stopped.update(training.stop()))
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive(), "stop returned while a training step was running"
    release.set()
    job.join(10)
    stopper.join(10)
    # The step finished before stop wrote its checkpoint, and the checkpoint holds it.
    assert cob.train_steps >= 1
    assert stopped["active"] is False
    assert stopped["models"]["cob"]["checkpoint"]["step"] == cob.train_steps
    # Stopped: a later cycle resolves but predicts nothing, a later job trains nothing.
    made = len(training.store.recent(limit=1000))
    assert made > 0
    steps = {n: lrn.train_steps for n, lrn in training.learners.items()}
    now += 2 * BAR  # an hour closes
    src.emit_until(now)
    services.market.clock.set(now)
    training.process_closes()
    training.train_due()
    assert len(training.store.recent(limit=1000)) == made
    assert {n: lrn.train_steps for n, lrn in training.learners.items()} == steps
    services.stop()


def test_untrained_models_say_so(tmp_path):
    services = make_services(tmp_path)
    status = services.training.read.status().to_json()
    for m in status["models"].values():
        assert m["state"] == "UNTRAINED" and m["loss_5ma"] is None and m["train_steps"] == 0
    assert status["signal_generation"]["state"] == "INACTIVE"
    services.stop()


def test_restart_resumes_from_checkpoint_and_resolves_old_pending(tmp_path):
    first = make_services(tmp_path)
    first.training.start()
    end = run(first, 90)
    learners = first.training.learners
    steps = {n: lrn.train_steps for n, lrn in learners.items()}
    epsilon = learners["dqn"].epsilon
    probe = np.random.default_rng(0).normal(size=learners["dqn"].state_dim).astype(np.float32)
    with learners["dqn"].lock:
        import torch
        q_before = learners["dqn"].q_network(torch.from_numpy(probe)[None]).detach().numpy()
    first.training.stop()  # writes checkpoints
    pending = first.training.store.counts()
    first.training.store.close()
    first.market.stop()
    assert sum(v["pending"] for v in pending.values()) > 0

    second = make_services(tmp_path)
    loaded = second.training.load_checkpoints()
    assert set(loaded) == {"cnn", "dqn", "cob"}
    again = second.training.learners
    assert {n: lrn.train_steps for n, lrn in again.items()} == steps
    assert again["dqn"].epsilon == epsilon
    import torch
    q_after = again["dqn"].q_network(torch.from_numpy(probe)[None]).detach().numpy()
    np.testing.assert_array_equal(q_before, q_after)
    # The replay starts over; once it passes the old pending targets, they resolve.
    run(second, (end - second.market.source.next_ts) // BAR + 2)
    after = second.training.store.counts()
    assert sum(v["pending"] for v in after.values()) <= 6  # only the newest round may wait
    second.stop()


WARM_UP_THEN_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from core import kernels
from tests.test_live_training import make_services, run
kernels.warm_up()
before = {{name: list(k.signatures) for name, k in kernels.dispatchers().items()}}
services = make_services(Path({runtime!r}))
services.training.start()
run(services, 6)  # 30m bars, three 1h closes, training and signals
services.stop()
after = {{name: list(k.signatures) for name, k in kernels.dispatchers().items()}}
new = {{name: [str(s) for s in sigs if s not in before[name]] for name, sigs in after.items()}}
print({{name: sigs for name, sigs in new.items() if sigs}})
"""


def test_warm_up_compiles_every_kernel_the_cycle_needs(tmp_path):
    # In a fresh process: after warm_up (what Services.start and the evaluator call), a minute
    # of live training compiles nothing more, so no job stalls ~1 s per kernel on a new machine.
    import subprocess
    import sys

    code = WARM_UP_THEN_RUN.format(root=str(ROOT), runtime=str(tmp_path / "runtime"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "{}"
