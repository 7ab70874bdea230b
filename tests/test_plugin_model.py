"""A fourth model, added the way the docs say: one file (its config, network and learner, all
declared on the class) plus one registry line (``MODELS["tiny"] = TinyLearner``). Nothing in
core/ or dashboard/ names it, yet it predicts, resolves, trains, checkpoints, and appears in
/status and on the page."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.app import create_app
from dashboard.training_view import model_card
from nn import registry
from nn.base import Learner, seeded
from nn.contract import (
    N_SCALARS,
    TRADE_ACTIONS,
    Experience,
    Look,
    ModelOutput,
    Observation,
    Outcome,
    setting,
)
from tests.test_live_training import make_services, run

# -- the model's one file ----------------------------------------------------------------------


@dataclass(frozen=True)
class TinyConfig:
    enabled: bool = setting(True, "predict and train this model")
    learning_rate: float = setting(0.01, "SGD's learning rate", gt=0, lt=1)


class TinyLearner(Learner):
    """Logistic regression from the hand-made scalars to BUY/SELL/HOLD, trained on whether the
    candle moved beyond the HOLD band."""

    name = "tiny"
    Config = TinyConfig
    actions = TRADE_ACTIONS
    look = Look("Tiny · logistic", {"BUY": "star", "SELL": "star"})

    def __init__(self, cfg: TinyConfig, timeframes, device="cpu", seed: int = 0):
        super().__init__(device)
        self.cfg, self.timeframes = cfg, tuple(timeframes)
        self.net = seeded(lambda: nn.Linear(N_SCALARS, len(self.actions)), seed, self.device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.learning_rate)
        self.rng = np.random.default_rng(seed)

    @property
    def network(self) -> nn.Module:
        return self.net

    def encode(self, obs: Observation) -> np.ndarray:
        return np.asarray(obs.scalars, np.float32)

    def predict(self, state: np.ndarray, timeframe: str) -> ModelOutput:
        with self.lock, torch.no_grad():
            probs = F.softmax(self.net(torch.as_tensor(state)[None]), dim=-1)[0]
        action = int(probs.argmax())
        return ModelOutput(action, float(probs[action]))

    def experience(self, outcome: Outcome) -> Experience:
        label = 0 if outcome.change > outcome.hold_band else (
            1 if outcome.change < -outcome.hold_band else 2)
        return Experience(outcome.state, self.actions.index(outcome.action), outcome.reward,
                          timeframe=outcome.timeframe, label=label)

    def learn(self, experiences: list[Experience]) -> dict | None:
        x = torch.as_tensor(np.stack([e.state for e in experiences]))
        y = torch.as_tensor([e.label for e in experiences])
        loss = F.cross_entropy(self.net(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        with self.lock:
            self.optimizer.step()
        self.record_loss(loss.item())
        return {"loss": loss.item()}

    def state_dict(self) -> dict:
        return {"config": asdict(self.cfg), "network": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "train_steps": self.train_steps,
                "losses": list(self.losses), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        with self.lock:
            self.net.load_state_dict(state["network"])
        self.load_training_state(state, self.cfg.learning_rate)


# -- the registry line, and what the rest of Tickwise makes of it ------------------------------


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "tiny", TinyLearner)


def test_a_registered_model_predicts_resolves_trains_and_checkpoints(tmp_path, tiny):
    services = make_services(tmp_path, **{"models.tiny.learning_rate": 0.05})
    live = services.training
    assert list(live.learners)[-1] == "tiny"
    assert live.learners["tiny"].cfg.learning_rate == 0.05  # its config section, validated
    live.start()
    run(services, 40)  # 20 hours of 30m bars: 1h candles close, predictions resolve
    made = live.store.recent(limit=1000, model="tiny")
    assert made and {p["action"] for p in made} <= set(TRADE_ACTIONS)
    assert any(p["status"] == "resolved" for p in made)
    learner = live.learners["tiny"]
    assert learner.train_steps > 0 and math.isfinite(learner.loss_5ma())
    live.stop()  # writes every model's checkpoint, the new one's too
    info = live.checkpoints.latest_info("tiny")
    assert info is not None and info["step"] == learner.train_steps
    fresh = TinyLearner(TinyConfig(learning_rate=0.05), live.timeframes, seed=99)
    _, state = live.checkpoints.load_latest("tiny")
    fresh.load_state_dict(state)
    x = torch.ones(1, N_SCALARS)
    assert torch.equal(fresh.net(x), learner.net(x))
    services.stop()


def test_a_registered_model_appears_in_status_and_on_the_page(tmp_path, tiny):
    services = make_services(tmp_path)
    live = services.training
    live.start()
    run(services, 10)
    client = create_app(services.config, services.market, live).server.test_client()
    live.read.invalidate()  # the copy published at start is stale
    status = client.get("/api/live-training/status").get_json()
    card = status["models"]["tiny"]
    assert card["title"] == "Tiny · logistic"
    assert card["parameters"] == 3 * N_SCALARS + 3  # sum(p.numel()) of Linear(17, 3)
    assert card["prediction_count"] == sum(status["prediction_counts"]["tiny"].values()) > 0
    rendered = str(model_card("tiny", card, status["timeframes"]).to_plotly_json())
    assert "Tiny · logistic" in rendered
    overlays = live.read.overlays("ETH/USDT", "1h")
    assert overlays["tiny"]["look"]["markers"] == {"BUY": "star", "SELL": "star"}
    rows = client.get("/api/live-training/predictions?model=tiny&limit=5").get_json()
    assert rows["predictions"] and {p["model"] for p in rows["predictions"]} == {"tiny"}
    services.stop()


def test_a_bad_value_in_the_new_models_section_is_refused(tmp_path, tiny):
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="models.tiny.learning_rate"):
        make_services(tmp_path, **{"models.tiny.learning_rate": 2.0})
