"""Models by name: the registry builds the enabled learners from config and checks their memory.

Adding a model: a module with a Learner subclass, and one line in ``BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.config import Config
from nn.base import Learner, Observation
from nn.buffers import STORE_DTYPE
from nn.cnn import CNNLearner
from nn.cob_rl import COBLearner
from nn.contract import N_BOOK, N_SCALARS
from nn.dqn import DQNLearner

MB = 2**20


def pick_device(wanted: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without CUDA is an error."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ValueError("models.device is 'cuda' but torch sees no CUDA device; use auto or cpu")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


# name -> build(config, timeframes the models predict, device)
BUILDERS: dict[str, Callable[[Config, tuple[str, ...], torch.device], Learner]] = {
    "cnn": lambda c, tfs, d: CNNLearner(c.models.cnn, tfs, device=d),
    "dqn": lambda c, tfs, d: DQNLearner(c.models.dqn, tfs, n_scalars=N_SCALARS, device=d),
    "cob": lambda c, tfs, d: COBLearner(c.models.cob, tfs, n_book_features=N_BOOK, device=d),
}


class ModelTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # parameters and buffers of the network (and its target copy, if any)
    optimiser: int  # Adam: two moments per parameter
    replay: int  # a full replay buffer of encoded states

    @property
    def total(self) -> int:
        return self.weights + self.optimiser + self.replay


def zero_observation(cfg: Config, timeframes: tuple[str, ...] | None = None) -> Observation:
    """An all-zeros observation of the configured shapes: encoding it gives a model's state
    size, which the memory estimate needs."""
    timeframes = tuple(timeframes or cfg.market.timeframes)
    window = max(cfg.models.cnn.window, cfg.models.dqn.window)
    zeros = {tf: np.zeros((5, window), np.float32) for tf in timeframes}
    return Observation(cfg.market.symbols[0], timeframes[0], 0, zeros, zeros,
                       np.zeros(N_SCALARS, np.float32), np.zeros(N_BOOK, np.float32))


def estimate_memory(learner: Learner, cfg: Config, buffer_size: int,
                    timeframes: tuple[str, ...] | None = None) -> MemoryEstimate:
    """What a learner will hold once its optimiser has state and its buffer is full."""
    weights = sum(t.numel() * t.element_size() for t in learner.network.parameters())
    weights += sum(t.numel() * t.element_size() for t in learner.network.buffers())
    target = getattr(learner, "target_network", None)
    if target is not None:
        weights *= 2
    params = sum(p.numel() * p.element_size() for p in learner.network.parameters())
    state = learner.encode(zero_observation(cfg, timeframes))
    if isinstance(learner, DQNLearner):  # state and next state, stored as float16
        per_item = 2 * state.size * np.dtype(STORE_DTYPE).itemsize + 64
    else:
        per_item = state.nbytes + 64
    return MemoryEstimate(weights, 2 * params, per_item * buffer_size)


def build_learners(cfg: Config, timeframes: tuple[str, ...] | None = None
                   ) -> dict[str, Learner]:
    """The enabled models for ``timeframes`` (the market's model timeframes; default every
    configured one), each on its device, refused if over its own or the total limit."""
    timeframes = tuple(timeframes or cfg.market.model_timeframes or cfg.market.timeframes)
    learners: dict[str, Learner] = {}
    total = 0
    for name, build in BUILDERS.items():
        model_cfg = getattr(cfg.models, name)
        if not model_cfg.enabled:
            continue
        learner = build(cfg, timeframes, pick_device(cfg.models.device))
        need = estimate_memory(learner, cfg, model_cfg.buffer_size, timeframes).total
        if need > cfg.models.max_model_mb * MB:
            raise ModelTooLarge(
                f"model '{name}' needs {need / MB:.0f} MB (weights, optimiser, full buffer), over "
                f"models.max_model_mb = {cfg.models.max_model_mb}")
        total += need
        if total > cfg.models.max_total_mb * MB:
            raise ModelTooLarge(
                f"models up to '{name}' need {total / MB:.0f} MB together, over "
                f"models.max_total_mb = {cfg.models.max_total_mb}")
        learners[name] = learner
    return learners
