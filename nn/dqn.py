"""Dueling Double DQN with prioritised replay: the network, the maths, and the learner.

Reads top to bottom like CleanRL's ``dqn.py``: the Q-network only computes Q-values; the
learner owns the target network, optimiser, replay buffer and epsilon-greedy exploration.

- Dueling heads (Wang et al. 2016): Q = V + A - mean(A), so V carries the state's value and
  A only the relative merit of each action.
- Double DQN targets (van Hasselt et al. 2016): the online net picks the next action, the
  target net values it, which curbs the overestimation of a plain max over the target net.
- Prioritised replay (nn/buffers.py) with importance-sampling weights in the loss; each
  distinct state, candle window and CNN hidden row is stored there once (nn/state_store.py).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nn.base import (
    TRADE_ACTIONS,
    Experience,
    Learner,
    Look,
    ModelOutput,
    Observation,
    argmax_row,
    seeded,
    softmax_row,
)
from nn.buffers import COLUMN_BYTES, PrioritizedReplayBuffer
from nn.contract import N_SCALARS, setting
from nn.dqn_state import CNN_CLASSES, StateEncoder  # noqa: F401 - CNN_CLASSES re-exported


@dataclass(frozen=True)
class DQNConfig:
    """models.dqn in config.yaml."""

    enabled: bool = setting(True, "predict and train this model")
    learning_rate: float = setting(1e-4, "Adam's learning rate", gt=0, lt=1)
    gamma: float = setting(0.99, "discount of the next state's value", ge=0, le=1)
    epsilon_start: float = setting(0.3, "exploration: a random action with this probability at "
                                   "first,", ge=0, le=1)
    epsilon_decay: float = setting(0.995, "multiplied in after every training step,", gt=0, le=1)
    epsilon_min: float = setting(0.05, "never below this", ge=0, le=1)
    window: int = setting(60, "candles per timeframe in the state, for the symbol and BTC",
                          ge=8, le=300)
    hidden: int = setting(256, "width of the dueling network's layers", ge=8, le=8192)
    buffer_size: int = setting(50_000, "prioritised replay capacity", ge=64, le=10_000_000)
    target_sync_steps: int = setting(100, "training steps between target-network syncs", ge=1)
    per_alpha: float = setting(0.6, "prioritisation strength (0 = uniform sampling)", ge=0, le=1)
    per_beta_start: float = setting(0.4, "importance-sampling correction at first, annealed to "
                                    "1 over", ge=0, le=1)
    per_beta_steps: int = setting(10_000, "this many training steps", ge=1)


MIN_BATCH = 8  # learn() trains on at least this many sampled experiences
GRAD_CLIP = 10.0  # max global grad norm


def dueling_combine(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """value [B, 1], advantage [B, A] -> Q [B, A] = V + A - mean_a(A)."""
    return value + advantage - advantage.mean(dim=1, keepdim=True)


def double_dqn_targets(rewards: torch.Tensor, dones: torch.Tensor, next_q_online: torch.Tensor,
                       next_q_target: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - done) * Q_target(s', argmax_a Q_online(s', a)); returns [B]."""
    next_actions = next_q_online.argmax(dim=1, keepdim=True)  # [B, 1]
    next_q = next_q_target.gather(1, next_actions).squeeze(1)  # [B]
    return rewards + gamma * (1.0 - dones) * next_q  # [B]


class DuelingQNetwork(nn.Module):
    def __init__(self, state_dim: int, n_actions: int = 3, hidden: int = 256):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(state_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.value = nn.Linear(hidden, 1)
        self.advantage = nn.Linear(hidden, n_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)  # [B, hidden]
        return dueling_combine(self.value(h), self.advantage(h))  # [B, A]


class DQNLearner(Learner):
    """Trading agent over TRADE_ACTIONS; the state's layout is StateEncoder's
    (nn/dqn_state.py)."""

    name = "dqn"
    Config = DQNConfig
    actions = TRADE_ACTIONS
    uses = ("cnn",)  # the CNN's hidden layers and action probabilities join the state
    look = Look("DQN · dueling double", {"BUY": "circle", "SELL": "circle"}, executed_only=True)

    def __init__(self, cfg: DQNConfig, timeframes: tuple[str, ...], n_scalars: int = N_SCALARS,
                 cnn_hidden_dim: int = 64, device: torch.device | str = "cpu", seed: int = 0):
        super().__init__(device)
        if not timeframes:
            raise ValueError("DQNLearner needs at least one timeframe")
        self.cfg = cfg
        self.timeframes = tuple(timeframes)
        self.n_scalars = n_scalars
        self.cnn_hidden_dim = cnn_hidden_dim
        self.encoder = StateEncoder(self.timeframes, n_scalars, cfg.window, cnn_hidden_dim)
        self.state_dim = self.encoder.dim
        n_actions = len(self.actions)
        self.q_network = seeded(lambda: DuelingQNetwork(self.state_dim, n_actions, cfg.hidden),
                                seed, self.device)
        self.target_network = copy.deepcopy(self.q_network)
        self.target_network.requires_grad_(False)
        # Predictions use this published copy (see Learner.publish); training the online net.
        self.inference_net = self._inference_copy(self.q_network)
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=cfg.learning_rate,
                                          foreach=True)  # one kernel per op for all tensors
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(seeds[0])  # exploration
        # Each distinct state, window and CNN hidden row stored once (nn/state_store.py).
        self.buffer = PrioritizedReplayBuffer(
            cfg.buffer_size, cfg.per_alpha, cfg.per_beta_start, cfg.per_beta_steps,
            seed=int(seeds[1].generate_state(1)[0]), layout=self.encoder.layout,
        )
        self._epsilon = cfg.epsilon_start
        self._published_epsilon = self._epsilon  # the epsilon predictions explore with

    # -- Learner interface -------------------------------------------------------------

    @property
    def network(self) -> nn.Module:
        return self.q_network

    @property
    def epsilon(self) -> float:
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {value}")
        self._epsilon = self._published_epsilon = float(value)

    def encode(self, obs: Observation) -> np.ndarray:
        """The state [state_dim] float32: see :meth:`StateEncoder.encode` (nn/dqn_state.py)."""
        return self.encoder.encode(obs)

    def predict(self, state: np.ndarray, timeframe: str) -> ModelOutput:
        """Epsilon-greedy action; confidence = softmax(Q)[action].

        Q-values are expected returns, not logits, so the softmax is only a monotone, scale-
        dependent measure of how far the chosen action's Q stands above the others: 1/3 when
        all three are equal, near 1 when one dominates by a few reward units. It is reported
        for the chosen action, so an explored (random) action usually has low confidence.
        """
        return self.predict_many([state], [timeframe])[0]

    def predict_many(self, states: list[np.ndarray], timeframes: list[str]) -> list[ModelOutput]:
        """``predict`` for several states in one forward pass; the exploration draws are made
        row by row in order, so the result equals calling ``predict`` on each in turn."""
        if not states:
            return []
        if len(states) != len(timeframes):
            raise ValueError(f"dqn: {len(states)} states but {len(timeframes)} timeframes")
        unknown = set(timeframes).difference(self.timeframes)
        if unknown:
            raise ValueError(f"dqn: timeframes {sorted(unknown)} not in {self.timeframes}")
        shapes = {np.shape(state) for state in states}
        if shapes != {(self.state_dim,)}:
            raise ValueError(f"dqn: states of shapes {sorted(shapes)}, expected "
                             f"({self.state_dim},)")
        x = torch.from_numpy(np.stack(states)).to(self.device, torch.float32)  # [N, D]
        outs = []
        with self.lock:
            with torch.inference_mode():  # no autograd bookkeeping at all
                q = self.inference_net(x).tolist()  # [N][A]
            for row in q:
                explored = bool(self.rng.random() < self._published_epsilon)
                action = int(self.rng.integers(len(self.actions))) if explored else argmax_row(row)
                outs.append(ModelOutput(action=action, confidence=softmax_row(row)[action],
                                        explored=explored))
        return outs

    def learn(self, experiences: list[Experience]) -> dict[str, float] | None:
        """Store ``experiences``, then one Double-DQN step on a prioritised batch."""
        bad = [e.action for e in experiences if not 0 <= e.action < len(self.actions)]
        if bad:
            raise ValueError(f"dqn: actions {bad} outside [0, {len(self.actions)})")
        self.buffer.add_many(experiences)  # each at the current maximum priority
        batch_size = max(len(experiences), MIN_BATCH)
        if len(self.buffer) < batch_size:
            return None
        beta = self.buffer.beta(self.train_steps)
        batch = self.buffer.sample(batch_size, step=self.train_steps)
        t = self._tensor
        states, next_states = t(batch.states), t(batch.next_states)  # [B, D]
        actions, rewards, dones, weights = (t(batch.actions), t(batch.rewards), t(batch.dones),
                                            t(batch.weights))  # [B] each

        self.q_network.train()
        with torch.no_grad():
            td_target = double_dqn_targets(rewards, dones, self.q_network(next_states),
                                           self.target_network(next_states),
                                           self.cfg.gamma)  # [B]
        q = self.q_network(states).gather(1, actions.unsqueeze(1)).squeeze(1)  # [B]
        loss = (weights * F.smooth_l1_loss(q, td_target, reduction="none")).mean()
        value = loss.item()
        if not math.isfinite(value):
            # Refuse to step: NaN weights would poison every later prediction.
            raise FloatingPointError(f"dqn: non-finite loss {value} at step "
                                     f"{self.train_steps}; weights left unchanged")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.q_network.parameters(), GRAD_CLIP)
        with self.lock:
            self.optimizer.step()

        td_abs = (td_target - q.detach()).abs()  # [B]
        self.buffer.update_priorities(batch.indices, td_abs.cpu().numpy())
        self.record_loss(value)  # also counts the step
        self._epsilon = max(self.cfg.epsilon_min, self._epsilon * self.cfg.epsilon_decay)
        if self.train_steps % self.cfg.target_sync_steps == 0:
            self.sync_target()
        self._stepped()
        return {"loss": value, "td_abs_mean": float(td_abs.mean()),
                "epsilon": self._epsilon, "beta": beta}

    def _snapshot(self, clone: bool) -> dict:
        return {"weights": self._weights(clone),
                "epsilon": self._epsilon}

    def _install(self, snapshot: dict) -> None:
        self._load_weights(snapshot["weights"])
        self._published_epsilon = snapshot["epsilon"]

    def sync_target(self) -> None:
        with self.lock:
            self.target_network.load_state_dict(self.q_network.state_dict())

    # -- checkpoints and memory --------------------------------------------------------

    def _layout(self) -> dict:
        return {"timeframes": list(self.timeframes), "n_scalars": self.n_scalars,
                "cnn_hidden_dim": self.cnn_hidden_dim, "state_dim": self.state_dim,
                "hidden": self.cfg.hidden}

    def state_dict(self) -> dict:
        """Everything to resume exactly except the replay buffer (a copy, taken under lock)."""
        with self.lock:
            return copy.deepcopy({
                "q_network": self.q_network.state_dict(),
                "target_network": self.target_network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epsilon": self._epsilon,
                "train_steps": self.train_steps,
                "losses": list(self.losses),
                "config": dataclasses.asdict(self.cfg),
                "layout": self._layout(),
                "rng": self.rng.bit_generator.state,
            })

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the current config's learning rate applies after."""
        if state["layout"] != self._layout():
            raise ValueError(f"dqn checkpoint was built for {state['layout']}, "
                             f"this learner is {self._layout()}")
        with self.lock:
            self.q_network.load_state_dict(state["q_network"])
            self.target_network.load_state_dict(state["target_network"])
            self.load_training_state(state, self.cfg.learning_rate)
            self.epsilon = state["epsilon"]
            self.publish()

    def tensors(self):
        yield from super().tensors()
        yield from self.target_network.parameters()

    def buffer_bytes(self) -> int:
        """The replay buffer plus the published copy of the weights."""
        weights = self.inference_net.state_dict().values()
        return self.buffer.nbytes() + sum(t.numel() * t.element_size() for t in weights)

    def replay_bytes(self, state: np.ndarray) -> int:
        """What one experience adds to the replay in the live loop, where its state is the
        next state of the one before it in its stream and shares every window and CNN hidden
        row but those of the timeframe that closed (nn/state_store.py): one state (its own
        values, the ids of its parts), at most two new windows (the symbol's and the
        reference's) and one new hidden row, and the ring's columns. An experience that
        shares nothing (no stream) costs up to two states with all their parts."""
        return COLUMN_BYTES + self.buffer.store.state_bytes(self.encoder.new_parts)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device)
