"""A challenger that goes wrong never costs its champion, or any other model, a prediction:
kept running, lost nothing."""

from __future__ import annotations

import dataclasses

import numpy as np

from core.live.challengers import challenger_name
from tests.test_live_training import make_services, run

FAST = {"models.cnn.window": 32, "models.dqn.enabled": False, "models.cob.enabled": True,
        "training.checkpoint_every": 100_000}


def diverge(learner, **broken) -> None:
    """``learner``'s outputs from now on carry ``broken`` values (a blown-up network)."""
    decide = learner.decide
    learner.decide = lambda observations, states: [
        dataclasses.replace(out, **broken) for out in decide(observations, states)]


def test_a_diverged_challenger_loses_only_its_own_predictions(tmp_path):
    services = make_services(tmp_path, **FAST)
    try:
        live = services.training
        live.start()
        live.challengers.start("cnn", {"learning_rate": 0.01})
        diverge(live.learners[challenger_name("cnn")],
                ohlcv=np.array([np.nan, 1e308, 0, np.inf, 1e9]))
        live.challengers.start("cob", {"hidden": 16})
        diverge(live.learners[challenger_name("cob")], confidence=float("nan"))
        run(services, 2 * 48)
        counts = live.store.counts()
        assert not live.errors  # no job failed
        made = {m: sum(c.values()) for m, c in counts.items()}
        assert made["cnn"] == made["cob"] > 2 * 2 * 24  # every close of 1h and 1d, both coins
        assert made.get(challenger_name("cnn"), 0) == made.get(challenger_name("cob"), 0) == 0
        assert "relative" in live.cycle.challenger_errors[challenger_name("cnn")]
        assert "confidence" in live.cycle.challenger_errors[challenger_name("cob")]
        card = live.read.status().models["cnn"].challenger
        assert card["last_error"] and card["skill"]["n"] == 0
    finally:
        services.stop()
