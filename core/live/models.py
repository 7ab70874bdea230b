"""The enabled models, built from config: each registered model (nn/registry.py) whose section
``models.<name>`` says ``enabled``, for the timeframes the market delivers, refused if what it
would hold exceeds ``models.max_model_mb`` or all together ``models.max_total_mb``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.config import Config
from nn.base import Learner
from nn.contract import N_BOOK, N_CHANNELS, N_SCALARS, Observation
from nn.registry import MODELS, pick_device, run_order

MB = 2**20
MIN_WINDOW = 32  # candles per window the observation holds at least (the scalars read 60)


class ModelTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # parameters and buffers of the network (and its target copy, if any)
    optimiser: int  # Adam: two moments per parameter
    replay: int  # a full replay buffer of what the model trains on

    @property
    def total(self) -> int:
        return self.weights + self.optimiser + self.replay


def observation_window(cfg: Config) -> int:
    """Candles per timeframe window in an observation: the longest any model reads."""
    sections = (getattr(cfg.models, name) for name in MODELS)
    return max([MIN_WINDOW, *(getattr(s, "window", 0) for s in sections)])


def zero_observation(cfg: Config, timeframes: tuple[str, ...] | None = None) -> Observation:
    """An all-zeros observation of the configured shapes: encoding it gives a model's state
    size, which the memory estimate needs."""
    timeframes = tuple(timeframes or cfg.market.timeframes)
    zeros = {tf: np.zeros((N_CHANNELS, observation_window(cfg)), np.float32)
             for tf in timeframes}
    return Observation(cfg.market.symbols[0], timeframes[0], 0, zeros, zeros,
                       np.zeros(N_SCALARS, np.float32), np.zeros(N_BOOK, np.float32))


def estimate_memory(learner: Learner, cfg: Config, buffer_size: int,
                    timeframes: tuple[str, ...] | None = None) -> MemoryEstimate:
    """What a learner will hold once its optimiser has state and its buffer is full."""
    weights = sum(t.numel() * t.element_size() for t in learner.network.parameters())
    weights += sum(t.numel() * t.element_size() for t in learner.network.buffers())
    if getattr(learner, "target_network", None) is not None:
        weights *= 2
    params = sum(p.numel() * p.element_size() for p in learner.network.parameters())
    state = learner.encode(zero_observation(cfg, timeframes))
    return MemoryEstimate(weights, 2 * params, learner.replay_bytes(state) * buffer_size)


def build_learners(cfg: Config, timeframes: tuple[str, ...] | None = None
                   ) -> dict[str, Learner]:
    """The enabled models for ``timeframes`` (the market's model timeframes; default every
    configured one), in run order, each on its device, refused if over its own or the total
    memory limit."""
    timeframes = tuple(timeframes or cfg.market.model_timeframes or cfg.market.timeframes)
    enabled = [name for name in MODELS if getattr(cfg.models, name).enabled]
    learners: dict[str, Learner] = {}
    total = 0
    for name in run_order(enabled):
        section = getattr(cfg.models, name)
        learner = MODELS[name](section, timeframes, device=pick_device(cfg.models.device))
        need = estimate_memory(learner, cfg, getattr(section, "buffer_size", 0), timeframes).total
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
