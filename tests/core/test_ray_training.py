"""training.backend ray: each learner trained by a Ray actor (core/live/ray_training.py).

One local Ray of 2 CPUs for the whole module (started here, as the issue asks; the backend
uses it instead of starting its own). Ray is an optional extra (requirements-scale.txt), which
the test set-up installs.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard.training_view import panel_stats
from tests.test_live_training import ROOT, make_services, run, run_days

ray = pytest.importorskip("ray")

# Dropout draws its masks from the process's global torch generator, which the thread backend
# shares among all models and each actor has its own of: without it a step is the same
# arithmetic in either place (same weights, optimiser, replay sampler seeds, 1 torch thread).
EXACT = {"models.cnn.window": 32, "models.dqn.window": 16, "models.dqn.hidden": 64,
         "models.cnn.dropout": 0.0, "training.checkpoint_every": 100_000}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield
    ray.shutdown()


def _evaluated(runtime: Path, backend: str) -> tuple[list[tuple], dict]:
    """Two market days of the evaluate loop (30m bars) on ``backend``: the stored
    predictions and each model's training steps."""
    from core.services import start_backend

    services = make_services(runtime, **EXACT, **{"training.backend": backend})
    start_backend(services.training)
    steps = run_days(services, 2)
    with sqlite3.connect(runtime / "predictions.sqlite") as db:
        rows = db.execute("SELECT model, symbol, timeframe, created_ts, action, confidence, pred_high, "
                          "pred_low, pred_close, model_step FROM predictions ORDER BY id").fetchall()
    return rows, steps


def test_ray_backend_predicts_exactly_as_the_thread_backend(tmp_path, local_ray):
    import torch

    # Training in this process on torch.threads threads, as app.py sets it (the actors do).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threaded, thread_steps = _evaluated(tmp_path / "thread", "thread")
    finally:
        torch.set_num_threads(threads)
    on_ray, ray_steps = _evaluated(tmp_path / "ray", "ray")
    assert ray_steps == thread_steps and min(ray_steps.values()) >= 3, ray_steps
    assert len(on_ray) == len(threaded) > 2 * 3 * 40
    assert max(row[-1] for row in on_ray) >= 3  # later predictions came from trained weights
    assert on_ray == threaded  # action, confidence, predicted close and weights' step


def _backend_status(services) -> dict:
    services.training.read.invalidate()
    return services.training.read.status().to_json()["training_backend"]


def test_a_lost_actor_is_reported_recreated_and_training_goes_on(tmp_path, local_ray,
                                                                monkeypatch):
    services = make_services(tmp_path / "rt", **EXACT, **{
        "models.dqn.enabled": False, "training.backend": "ray", "ray.actor_retry_s": 0.2,
        "ray.actor_retry_max_s": 0.4, "ray.sync_every": 2})
    services.training.start()
    learners, backend = services.training.learners, services.training.learning.backend
    try:
        run(services, 48)  # 24 hours of 30m bars: every model trains a few steps
        before = learners["cnn"].train_steps
        assert before >= 3 and _backend_status(services)["actors"]["cnn"] == "ok"
        ray.kill(backend.slots["cnn"].actor)
        waited = sum(len(b) for b in services.training.learning.waiting["cnn"].values())
        run(services, 8)  # the next cnn batch finds the actor gone
        status = _backend_status(services)
        assert status["actors"]["cnn"].startswith("lost: "), status
        assert "retry in" in status["actors"]["cnn"]
        assert status["actors"]["cob"] == "ok"  # the other models train on
        page = str(panel_stats({**services.training.read.status_json(max_age_s=0),
                                "training_backend": status}))
        assert "training on ray" in page and "cnn lost: " in page
        # The batch it could not train is back in its queue: nothing dropped.
        assert sum(len(b) for b in services.training.learning.waiting["cnn"].values()) > waited
        assert services.training.learning.dropped_experiences["cnn"] == 0
        # A checkpoint due meanwhile holds the newest copy, the one it will be recreated from.
        services.training.learning.save_checkpoint("cnn")
        copy_step = backend.slots["cnn"].state["train_steps"]
        assert services.training.checkpoints.latest_info("cnn")["step"] == copy_step
        assert before - 1 <= copy_step <= before
        time.sleep(0.5)  # past the backoff
        run(services, 24)
        status = _backend_status(services)
        assert status["actors"]["cnn"] == "ok" and status["restarts"] == {"cnn": 1}, status
        # Recreated from the newest copy (every 2 steps): at most 1 step lost, then on.
        assert status["lost_steps"].get("cnn", 0) <= 1
        assert learners["cnn"].train_steps > before
        assert learners["cnn"].published_steps == learners["cnn"].train_steps
        _checkpoint_and_roll_back(services)
        _promote_a_challenger(services, monkeypatch)
    finally:
        services.stop()


def _checkpoint_and_roll_back(services) -> None:
    """A checkpoint holds the actor's state; after a rollback its actor trains on from it."""
    learning, cob = services.training.learning, services.training.learners["cob"]
    learning.save_checkpoint("cob")
    saved = cob.train_steps
    _, state = services.training.checkpoints.load_step("cob", saved)
    assert state["train_steps"] == saved
    run(services, 16)
    assert cob.train_steps > saved
    slot = learning.backend.slots["cob"]
    worker = ray.get(slot.actor.pid.remote())
    services.training.control.rollback("cob", {"step": saved})
    assert cob.train_steps == saved and slot.stale
    run(services, 16)
    assert cob.train_steps > saved and not slot.stale  # trained on from the loaded state,
    assert ray.get(slot.actor.pid.remote()) == worker  # rebuilt in its worker, not a new one


def test_an_unreachable_ray_address_stops_start_up_in_one_line(tmp_path, monkeypatch,
                                                               capsys):
    import app

    monkeypatch.chdir(ROOT)
    for key, value in {"TICKWISE_TRAINING__BACKEND": "ray",
                       "TICKWISE_RAY__ADDRESS": "127.0.0.1:9",
                       "TICKWISE_RAY__CONNECT_TIMEOUT_S": "2",
                       "TICKWISE_MARKET__SOURCE": "replay",
                       "TICKWISE_RUNTIME_DIR": str(tmp_path / "rt")}.items():
        monkeypatch.setenv(key, value)
    assert app.main(["--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickwise: ray.address '127.0.0.1:9': cannot connect"), err
    assert "\n" not in err and "Traceback" not in err


def test_a_bad_ray_address_is_a_config_error():
    from core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="ray.address.*'http://x' is not host:port"):
        load_config(ROOT / "config.yaml", {"ray.address": "http://x"}, environ={})


def test_the_default_run_never_imports_ray(tmp_path):
    code = ("import sys; from tests.test_live_training import make_services, run; "
            f"s = make_services(__import__('pathlib').Path({str(tmp_path)!r})); "
            "s.training.start(); run(s, 20); s.stop(); "
            "assert s.training.learning.backend.kind == 'thread'; "
            "print('ray' in sys.modules, any(m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"]


def _promote_a_challenger(services, monkeypatch) -> None:
    """A challenger trains in its own actor; promoted, its actor's weights become the
    model's, under the model's step count, and train on."""
    import torch

    live, learning = services.training, services.training.learning
    live.challengers.start("cob", {"from": "champion"})
    run(services, 16)
    challenger = live.learners["cob~challenger"]
    trained = challenger.train_steps - live.challengers.slots["cob"].started_step
    assert trained >= 1 and learning.backend.slots["cob~challenger"].actor is not None
    weights = learning.state_dict("cob~challenger")["network"]  # from its actor
    promotable = type("Promotable", (), {"promotable": True, "reason": "test",
                                         "to_json": lambda self: {}})()
    monkeypatch.setattr(live.challengers, "compare", lambda *a, **k: promotable)
    step = live.learners["cob"].train_steps
    live.challengers.promote("cob")
    cob = live.learners["cob"]
    assert cob is challenger and cob.train_steps == step + trained
    assert "cob~challenger" not in learning.backend.slots
    promoted = learning.state_dict("cob")["network"]  # before its new actor: the local copy
    assert all(torch.equal(weights[k], promoted[k]) for k in weights)
    run(services, 16)
    assert cob.train_steps > step + trained  # its new actor goes on from the promoted state
