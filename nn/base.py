"""The one small interface every model offers the rest of Tickwise.

A model is an ``nn.Module`` (the network, in its own file) plus a learner that owns the
optimiser, target network, buffer and exploration. The live-training service sees only
:class:`Learner`:

- ``encode(obs) -> state``: the numpy array this model predicts from and later learns from
  (stored with the prediction so it can be trained on once the candle closes);
- ``predict(state, timeframe) -> ModelOutput``;
- ``learn(experiences) -> dict | None``: one training step on a batch, or None if it has too
  few experiences yet;
- ``experience(outcome) -> Experience | None``: the model's own rule for what a resolved
  prediction teaches it (a label, a reward), and ``scores``: the measures it is judged by
  (core/scoring). The core's cycle only calls them;
- ``status() -> dict``; ``state_dict()`` / ``load_state_dict()``; ``memory_bytes()``.

What a model declares about itself, as class attributes: ``name``, ``Config`` (its config
dataclass, the section ``models.<name>`` of config.yaml), ``actions``, ``scores``, ``look``
(how the page draws it) and ``uses`` (other models whose outputs it reads: the cycle runs
those first and hands over what they ``offer`` in ``obs.extras[<their name>]``).

Adding a model means a new module with a Learner subclass and one line in ``nn/registry.py``.
"""

from __future__ import annotations

import copy
import math
import threading
from abc import ABC, abstractmethod
from collections import deque
from typing import ClassVar

import numpy as np
import torch

from nn.contract import (  # noqa: F401 - re-exported for the models
    DIRECTION_ACTIONS,
    TRADE_ACTIONS,
    Experience,
    Look,
    ModelOutput,
    Observation,
    Outcome,
)


def softmax_row(logits: list[float]) -> list[float]:
    """Softmax of one row of a few logits, in Python floats. After a forward pass the outputs
    are read with one ``tolist()`` and the few numbers are handled here: cheaper than more
    tensor or array calls on [B, 2..3] values (each one ~5 us once the forward has filled
    the caches)."""
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    total = sum(e)
    return [v / total for v in e]


def argmax_row(values: list[float]) -> int:
    """Index of the first largest value (``torch.argmax``'s choice on ties)."""
    return values.index(max(values))


# The measures of core/scoring every action model is judged by; a model with a candle
# forecast adds its own (nn/cnn.py).
ACTION_SCORES = ("ic", "balanced_accuracy", "precision", "coverage", "brier_skill", "ece",
                 "pnl", "accuracy")


def seeded(build, seed: int, device: torch.device) -> torch.nn.Module:
    """``build()`` with its weights drawn from ``seed``, on ``device``, leaving torch's global
    random state as it was (two learners never disturb each other's initialisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(device)


class Learner(ABC):
    """Shared bookkeeping: counters, loss history, the prediction/weights lock, memory."""

    name: str = "model"
    Config: ClassVar[type]  # the model's config dataclass (models.<name> in config.yaml)
    actions: tuple[str, ...] = TRADE_ACTIONS
    scores: tuple[str, ...] = ACTION_SCORES  # what core/scoring judges it by
    uses: tuple[str, ...] = ()  # the models whose ``offer`` this one reads in obs.extras
    look: Look = Look("model", {"BUY": "circle", "SELL": "circle"})

    # Every learner is built the same way (nn/registry.py): its config section, the
    # timeframes it predicts, the device and a seed.
    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.train_steps = 0
        self.losses: deque[float] = deque(maxlen=200)  # recent training losses, newest last
        # Held only around a forward pass or an optimiser step's weight update, never for a
        # whole batch's preparation: prediction never waits long on training.
        self.lock = threading.RLock()
        # Predictions run on a published copy of the weights (and of whatever else they read:
        # epsilon, target statistics). ``learn`` publishes after each step while auto_publish
        # is on (the app); the evaluator turns it off and publishes at fixed market times, so a
        # run is the same whatever the thread timing (core/evaluator.py).
        self.auto_publish = True
        self.published_steps = 0  # train_steps of the weights predictions use

    # -- what each model implements ------------------------------------------------------

    @property
    @abstractmethod
    def network(self) -> torch.nn.Module: ...

    @abstractmethod
    def encode(self, obs: Observation) -> np.ndarray: ...

    @abstractmethod
    def predict(self, state: np.ndarray, timeframe: str) -> ModelOutput: ...

    def predict_many(self, states: list[np.ndarray], timeframes: list[str]) -> list[ModelOutput]:
        """``predict`` for several states; models override it with one batched forward."""
        return [self.predict(s, tf) for s, tf in zip(states, timeframes, strict=True)]

    def decide(self, observations: list[Observation], states: list[np.ndarray]
               ) -> list[ModelOutput]:
        """The live cycle's call: this model's prediction for each observation, from the state
        ``encode`` made of it. A model that already computed it in ``offer`` answers from there."""
        return self.predict_many(states, [obs.timeframe for obs in observations])

    def offer(self, observations: list[Observation]) -> list | None:
        """What this model tells the models that ``use`` it about each observation (the cycle
        puts it in ``obs.extras[self.name]`` before they encode), or None: nothing."""
        return None

    @abstractmethod
    def learn(self, experiences: list[Experience]) -> dict[str, float] | None: ...

    def experience(self, outcome: Outcome) -> Experience | None:
        """What a resolved prediction teaches this model, or None when nothing. The default is
        the reinforcement learner's (the DQN's): the reward the table gave the action taken,
        and the state the candle's close led to."""
        return Experience(
            state=outcome.state, action=self.actions.index(outcome.action),
            reward=outcome.reward, next_state=outcome.next_state,
            timeframe=outcome.timeframe, weight=outcome.weight,
            target_ohlcv=outcome.target_ohlcv)

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    # -- shared ------------------------------------------------------------------------

    def publish(self) -> None:
        """Make the weights trained so far the ones predictions use."""
        with self.lock:  # installing copies, so the live tensors can go in directly
            self.install({"steps": self.train_steps, **self._snapshot(clone=False)})

    def snapshot(self) -> dict:
        """A copy of what predictions read (weights, epsilon, target statistics) as trained
        so far; taken by the training thread between steps, installed later by ``install``."""
        with self.lock:
            return {"steps": self.train_steps, **self._snapshot(clone=True)}

    def install(self, snapshot: dict) -> None:
        with self.lock:
            self._install(snapshot)
            self.published_steps = snapshot["steps"]

    def _inference_copy(self, trained: torch.nn.Module) -> torch.nn.Module:
        """The copy of ``trained`` that predictions use: eval mode, no gradients. Remembers
        which of its tensors mirrors which of ``trained`` (parameters and buffers, in
        state_dict order): publishing then copies tensor by tensor, without load_state_dict's
        per-module bookkeeping (it cost ~13% of a small model's step)."""
        inference = copy.deepcopy(trained).eval().requires_grad_(False)
        self._weight_pairs = list(zip(trained.state_dict().values(),
                                      inference.state_dict().values(), strict=True))
        return inference

    def _weights(self, clone: bool) -> list[torch.Tensor]:
        return [src.clone() if clone else src for src, _ in self._weight_pairs]

    def _load_weights(self, weights: list[torch.Tensor]) -> None:
        if len(weights) != len(self._weight_pairs):
            raise ValueError(f"{len(weights)} tensors for {len(self._weight_pairs)} weights")
        with torch.no_grad():
            torch._foreach_copy_([dst for _, dst in self._weight_pairs], weights)

    def _snapshot(self, clone: bool) -> dict:
        """What predictions read; ``clone=False`` may return live objects that ``_install``
        copies from."""
        return {}

    def _install(self, snapshot: dict) -> None:  # noqa: B027 - optional hook, default no-op
        """Load a snapshot into the copy predictions use (called under ``self.lock``)."""

    def _stepped(self) -> None:
        """End of a training step: publish unless the caller publishes on its own schedule."""
        if self.auto_publish:
            self.publish()

    @property
    def epsilon(self) -> float | None:
        return None

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def record_loss(self, loss: float) -> None:
        self.losses.append(float(loss))
        self.train_steps += 1

    def loss_5ma(self) -> float | None:
        """Mean of the last 5 training losses; None before the first training step."""
        if not self.losses:
            return None
        recent = list(self.losses)[-5:]
        return sum(recent) / len(recent)

    def load_training_state(self, state: dict, learning_rate: float) -> None:
        """Restore what every learner's checkpoint holds besides its networks: the optimiser
        (with the configured learning rate, which wins over the saved one), the step
        counter, the loss history and the learner's own random generator."""
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.train_steps = int(state["train_steps"])
        self.published_steps = self.train_steps
        self.losses = deque(state["losses"], maxlen=self.losses.maxlen)
        self.rng.bit_generator.state = state["rng"]

    def memory_bytes(self) -> int:
        """Weights + gradients-to-be + optimiser state + buffers this learner holds."""
        total = 0
        for tensor in self.tensors():
            total += tensor.numel() * tensor.element_size()
        return total + self.buffer_bytes()

    def tensors(self):
        yield from self.network.parameters()
        yield from self.network.buffers()
        optimiser = getattr(self, "optimizer", None)
        if optimiser is not None:
            for state in optimiser.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        yield value

    def buffer_bytes(self) -> int:
        return 0

    def replay_bytes(self, state: np.ndarray) -> int:
        """What one experience of ``state`` takes in this model's full replay buffer (the
        registry's memory estimate); 64 bytes of labels and bookkeeping besides the state."""
        return state.nbytes + 64

    def status(self) -> dict:
        return {
            "name": self.name,
            "parameters": self.parameters_count(),
            "train_steps": self.train_steps,
            "loss_5ma": self.loss_5ma(),
            "loss_history": list(self.losses)[-50:],
            "epsilon": self.epsilon,
            "device": str(self.device),
            "memory_bytes": self.memory_bytes(),
        }
