"""Multi-timeframe 1D CNN: one shared convolutional trunk, one small head per timeframe.

The network and its loss are in nn/cnn_net.py; this module is the learner: prediction on a
published copy of the weights (one traced forward per timeframe head), the replay-mixed
training step, checkpoints. The 64-d hidden vector and the action probabilities of every head
also feed the DQN (see ``offer``). The range head's forecast sets the predicted candle's high
and low around the regression head's mid (see ``_predictions``).

Training is supervised on hindsight labels (``hindsight_label``): once a candle closes, the
move it made decides which action would have been right and how confident to have been.

Shapes: B batch, C = 5 channels, L window length (``CNNConfig.window``).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from nn.base import (
    ACTION_SCORES,
    TRADE_ACTIONS,
    Experience,
    Learner,
    Look,
    Observation,
    Outcome,
    seeded,
)
from nn.cnn_data import (
    CNNPrediction,
    TargetNorm,
    _frozen,
    _predictions,
    _training_batch,
    examples,
    left_pad,
)
from nn.cnn_net import (
    ARCHITECTURE,
    N_OHLCV,
    RANGE_LR,
    CNNNet,
    CNNOutput,
    _Head,
    cnn_loss,
)
from nn.contract import N_CHANNELS, parse_timeframe, setting
from nn.example_ring import ExampleRing


@dataclass(frozen=True)
class CNNConfig:
    """models.cnn in config.yaml."""

    enabled: bool = setting(True, "predict and train this model")
    learning_rate: float = setting(1e-3, "Adam's learning rate", gt=0, lt=1)
    window: int = setting(300, "candles per timeframe the CNN sees", ge=8, le=5000)
    dropout: float = setting(0.1, "dropout before each head, while training", ge=0, lt=1)
    buffer_size: int = setting(5000, "resolved examples kept for training", ge=64, le=10_000_000)


BUY, SELL, HOLD = (TRADE_ACTIONS.index(a) for a in ("BUY", "SELL", "HOLD"))
GRAD_CLIP = 5.0
HOLD_CONFIDENCE = 0.3  # target confidence when the move was too small to act on
MAX_CONFIDENCE = 0.95  # never teach certainty: markets stay noisy


def hindsight_label(move: float, hold_band: float) -> tuple[int, float]:
    """The action that was right for a candle that moved by ``move`` (relative close change,
    e.g. 0.01 = +1%) and the confidence to have had: beyond the timeframe's HOLD band
    (``core.rewards.hold_band``: never below the round-trip fee, 1 % for a day), the move's
    direction with confidence ``min(0.95, 10 * |move|)``; otherwise HOLD with confidence 0.3.
    A move exactly at the band is HOLD. The same band decides whether a call was right in
    every score, so the CNN learns the rule it is judged by."""
    if not math.isfinite(move):
        raise ValueError(f"move must be a finite number, got {move!r}")
    if not (math.isfinite(hold_band) and hold_band >= 0):
        raise ValueError(f"hold_band must be a finite number >= 0, got {hold_band!r}")
    if abs(move) > hold_band:
        return (BUY if move > 0 else SELL), min(MAX_CONFIDENCE, 10.0 * abs(move))
    return HOLD, HOLD_CONFIDENCE


# ---------------------------------------------------------------------------- learner


class CNNLearner(Learner):
    """Owns the CNN, its Adam optimiser, a replay ring and an inference copy of the weights.

    Prediction runs on the inference copy, always in eval mode; training runs on the network
    in train mode (dropout, batch statistics), and ``publish`` copies its weights and target
    statistics over under ``self.lock``. So a prediction never sees train mode or half-updated
    weights, and waits at most for that copy (1.2 MB).
    """

    name = "cnn"
    Config = CNNConfig
    actions = TRADE_ACTIONS
    look = Look("CNN · multi-timeframe", {"BUY": "triangle-up", "SELL": "triangle-down"})
    # Judged as an action model and as a forecaster of the next candle's close and range.
    scores = ("range_skill_ewma", "range_skill_persistence", "close_skill_ewma",
              "close_skill_persistence", "ic_close", *ACTION_SCORES)

    def __init__(
        self,
        cfg: CNNConfig,
        timeframes: tuple[str, ...],
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        super().__init__(device)
        self.cfg = cfg
        self.timeframes = tuple(timeframes)
        for tf in self.timeframes:
            parse_timeframe(tf)  # raises ValueError on a bad name
        self.net = seeded(lambda: CNNNet(N_CHANNELS, self.timeframes, cfg.dropout), seed,
                          self.device)
        self.inference_net = self._inference_copy(self.net)
        self._traced: dict[str, torch.jit.ScriptModule] = {}  # timeframe -> traced head
        self.target_norm = TargetNorm(len(self.timeframes))
        self._inference_norm = copy.deepcopy(self.target_norm)  # what predictions denormalise by
        self._weights_version = 0
        # (symbol, tf) -> (weights version, window, prediction): a coarse timeframe's window
        # changes only when one of its candles closes, so most predict_all calls reuse it.
        self._cache: dict[tuple[str, str], tuple[int, np.ndarray, CNNPrediction]] = {}
        # The range heads (5 parameters each, see RangeHead) learn at RANGE_LR in their own
        # group: at the network's rate a daily head would take most of a year of candles to
        # move its bias by 0.3. Their L1 gradients are bounded, so only the rest is clipped.
        self._range_params = [p for n, p in self.net.named_parameters() if ".range." in n]
        self._clipped = [p for n, p in self.net.named_parameters() if ".range." not in n]
        self.optimizer = torch.optim.Adam(
            [{"params": self._clipped}, {"params": self._range_params, "lr": RANGE_LR}],
            lr=cfg.learning_rate, foreach=True)  # one kernel per op for all tensors
        self.rng = np.random.default_rng(seed)  # replay sampling
        self.buffer = ExampleRing(
            cfg.buffer_size,
            {
                "state": ((N_CHANNELS, cfg.window), np.float32),
                "tf": ((), np.int64),
                "label": ((), np.int64),
                "confidence": ((), np.float32),
                "ohlcv": ((N_OHLCV,), np.float32),
                "weight": ((), np.float32),
            },
        )

    @property
    def network(self) -> nn.Module:
        return self.net

    # -- prediction ----------------------------------------------------------------------

    def experience(self, outcome: Outcome) -> Experience:
        """Supervised: the hindsight label of the move (``hindsight_label``) and the candle
        that really came, as the regression target."""
        label, confidence = hindsight_label(outcome.change, outcome.hold_band)
        return Experience(
            state=outcome.state, action=self.actions.index(outcome.action),
            reward=outcome.reward, next_state=outcome.next_state,
            timeframe=outcome.timeframe, weight=outcome.weight, label=label,
            target_confidence=confidence, target_ohlcv=outcome.target_ohlcv)

    def encode(self, obs: Observation) -> np.ndarray:
        """float32 [5, window]: the observed timeframe's window, last ``window`` candles,
        left-padded with zeros when shorter (the window itself when it fits: the builder's
        windows are read-only)."""
        return left_pad(obs.windows[obs.timeframe], self.cfg.window)

    def predict(self, state: np.ndarray, timeframe: str) -> CNNPrediction:
        self._check_timeframe(timeframe)
        x = torch.as_tensor(state, dtype=torch.float32, device=self.device)[None]  # [1, 5, L]
        with self.lock, torch.no_grad():
            out = self._forward(x, timeframe)
            return _predictions(out, self._inference_norm, self.timeframes.index(timeframe))[0]

    def _forward(self, x: torch.Tensor, timeframe: str) -> CNNOutput:
        """The inference copy on windows x [B, 5, window] through ``timeframe``'s head, by a
        TorchScript trace of it (made on first use, one per head): a window's forward is
        ~40 small ops, and the trace runs them without Python's module calls (1.24 -> 0.75
        ms for one window). The trace holds the inference copy's own tensors, so every
        ``publish`` (weights copied in place) reaches it. Windows always have the configured
        length (``left_pad``), the only shape the trace fixes."""
        traced = self._traced.get(timeframe)
        if traced is None:
            traced = self._traced[timeframe] = trace_head(self.inference_net, timeframe,
                                                          self.cfg.window, self.device)
        return CNNOutput(*traced(x))

    def predict_all(self, obs: Observation) -> dict[str, CNNPrediction]:
        """Every timeframe that has both a head and a window in ``obs``, each through its own
        head (the DQN's input: hidden layers and action probabilities per timeframe)."""
        return self.predict_windows([obs])[0]

    def decide(self, observations: list[Observation], states: list[np.ndarray]
               ) -> list[CNNPrediction]:
        """The prediction for each observation's own timeframe, from ``predict_windows`` (the
        forwards ``offer`` ran for the DQN are reused, not run again)."""
        return [per_tf[obs.timeframe] for obs, per_tf
                in zip(observations, self.predict_windows(observations), strict=True)]

    def offer(self, observations: list[Observation]) -> list[dict[str, list[np.ndarray]]]:
        """For the models that use the CNN (the DQN), per observation: the hidden layer and the
        action probabilities of every timeframe head, in ``self.timeframes`` order (a head
        without a window in the observation is left out)."""
        offers = []
        for per_tf in self.predict_windows(observations):
            outs = list(per_tf.values())
            offers.append({"hidden": [o.hidden for o in outs], "probs": [o.probs for o in outs]})
        return offers

    def predict_windows(self, observations: list[Observation]
                        ) -> list[dict[str, CNNPrediction]]:
        """``predict_all`` for several observations (both symbols' closes of one market
        second), with one forward per timeframe head for all of them.

        An output is reused while the window and the weights are unchanged (the eval-mode
        inference copy is deterministic), which saves most forwards: only the timeframe that
        just closed has a new window. The observation builder hands out the same read-only
        array while a timeframe has no new candle, and the cache holds it, so identity is a
        safe first test.
        """
        with self.lock, torch.inference_mode():  # cheaper than no_grad
            found, todo = _plan(observations, self.timeframes, self._cache, self._weights_version)
            for tf, runs in todo.items():
                x = np.stack([left_pad(window, self.cfg.window) for _, window, _ in runs])
                out = self._forward(torch.from_numpy(x).to(self.device), tf)  # [B, ...]
                preds = _predictions(out, self._inference_norm, self.timeframes.index(tf))
                for pred, (symbol, window, users) in zip(preds, runs):
                    kept = window if _frozen(window) else np.array(window)
                    self._cache[(symbol, tf)] = (self._weights_version, kept, pred)
                    for i in users:
                        found[i][tf] = pred
        return [{tf: f[tf] for tf in self.timeframes if tf in f} for f in found]

    # -- training ------------------------------------------------------------------------

    def learn(self, experiences: list[Experience]) -> dict[str, float] | None:
        """One Adam step on the new experiences plus as many older ones replayed from the ring.

        Online learning on only the newest candles forgets quickly and follows whatever the
        market did last; mixing in an equal number of uniformly drawn older examples keeps
        the gradient closer to the whole recent history. The new experiences join the ring
        after sampling, so replay never repeats them within the step. Each timeframe group
        goes through its own head in one forward pass. ``accuracy`` is over the new
        experiences only, which the network has not trained on yet. The range heads learn
        from the same rows (their target: the raw target's high - low), at ``RANGE_LR``.
        """
        if not experiences:
            return None
        for e in experiences:
            self._check_timeframe(e.timeframe)
        new = self._examples(experiences)
        n_new = len(experiences)
        replay = self.buffer.sample(n_new, self.rng)
        self.buffer.add(new)
        self.target_norm.update(new["tf"], new["ohlcv"])
        batch, is_new = _training_batch(new, replay, self.target_norm, self.device)

        self.net.train()
        tf_ids, counts = torch.unique_consecutive(batch["tf"], return_counts=True)
        groups = zip(tf_ids.tolist(), torch.split(batch["state"], counts.tolist()))
        outs = [self.net(x, self.timeframes[i]) for i, x in groups]
        out = CNNOutput(*(torch.cat(parts) for parts in zip(*outs)))
        loss, parts = cnn_loss(
            out, batch["label"], batch["confidence"], batch["ohlcv"], batch["weight"],
            batch["range"],
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"CNN loss is {loss.item()} (parts {parts})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self._clipped, GRAD_CLIP)
        with self.lock:
            self.optimizer.step()
        self.record_loss(loss.item())
        self._stepped()
        hits = out.logits.argmax(dim=-1) == batch["label"]  # [B]
        return {"loss": loss.item(), **parts, "accuracy": hits[is_new].sum().item() / n_new}

    def _examples(self, experiences: list[Experience]) -> dict[str, np.ndarray]:
        return examples(experiences, self.timeframes, self.cfg.window)

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe not in self.timeframes:
            raise ValueError(f"no CNN head for timeframe {timeframe!r}; heads: {self.timeframes}")

    def _snapshot(self, clone: bool) -> dict:
        return {"weights": self._weights(clone),
                "target_norm": copy.deepcopy(self.target_norm)}

    def _install(self, snapshot: dict) -> None:
        self._load_weights(snapshot["weights"])
        self._inference_norm = snapshot["target_norm"]
        self._weights_version += 1  # outputs cached under older weights are stale now

    # -- checkpoints and memory ----------------------------------------------------------

    def state_dict(self) -> dict:
        """Weights, optimiser, counters, loss history and the replay RNG; the replay ring
        itself is not saved (up to 30 MB; it refills within a few hundred candles). Plain
        types and tensors only, so ``torch.load(weights_only=True)`` reads it."""
        return {
            "model": self.name,
            "architecture": ARCHITECTURE,
            "config": asdict(self.cfg),
            "timeframes": list(self.timeframes),
            "network": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "train_steps": self.train_steps,
            "losses": list(self.losses),
            "rng": self.rng.bit_generator.state,
            "target_norm": self.target_norm.state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`. The configured learning rate wins over the saved one."""
        if state.get("architecture") != ARCHITECTURE:
            raise ValueError(
                f"checkpoint is of CNN architecture {state.get('architecture', 'unpooled')!r}, "
                f"this CNN is {ARCHITECTURE!r}"
            )
        if list(state["timeframes"]) != list(self.timeframes):
            raise ValueError(
                f"checkpoint has heads for {state['timeframes']}, this CNN for {self.timeframes}"
            )
        self.net.load_state_dict(state["network"])
        self.load_training_state(state, self.cfg.learning_rate)
        self.optimizer.param_groups[1]["lr"] = RANGE_LR  # the configured rate is the trunk's
        if "target_norm" in state:
            self.target_norm.load(state["target_norm"])
        self.publish()

    def buffer_bytes(self) -> int:
        """The replay rows in use plus the inference copy of the weights."""
        weights = self.inference_net.state_dict().values()
        return self.buffer.nbytes() + sum(t.numel() * t.element_size() for t in weights)


def trace_head(net: nn.Module, timeframe: str, window: int, device) -> torch.jit.ScriptModule:
    """A TorchScript trace of ``net`` through ``timeframe``'s head, for windows of ``window``
    candles (range_features' window length is the one fixed shape: fine). torch 2.13 (pinned)
    calls jit.trace deprecated, with no replacement as fast here (torch.export's module ran
    2.6 ms): it stays until torch drops it."""
    example = torch.zeros(1, N_CHANNELS, window, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(_Head(net, timeframe), example, check_trace=False)


def _plan(observations: list[Observation], timeframes: tuple[str, ...], cache: dict,
          version: int) -> tuple[list[dict], dict[str, list]]:
    """Which (symbol, timeframe) windows of ``observations`` have a cached prediction under
    the weights ``version`` (found, per observation) and which must run (per timeframe:
    (symbol, window, the observations that share it))."""
    found: list[dict[str, CNNPrediction]] = [{} for _ in observations]
    todo: dict[str, list[tuple[str, np.ndarray, list[int]]]] = {}
    for i, obs in enumerate(observations):
        for tf in timeframes:
            window = obs.windows.get(tf)
            if window is None:
                continue
            cached = cache.get((obs.symbol, tf))
            # A new read-only window is a new candle's (the builder's): no compare.
            if cached and cached[0] == version and (
                    cached[1] is window or (not _frozen(window)
                                            and np.array_equal(cached[1], window))):
                found[i][tf] = cached[2]
                continue
            runs = todo.setdefault(tf, [])
            same = [r for r in runs if r[0] == obs.symbol and r[1] is window]
            if same:  # two closes of one symbol in this batch share the window
                same[0][2].append(i)
            else:
                runs.append((obs.symbol, window, [i]))
    return found, todo


