"""Multi-timeframe 1D CNN: one shared convolutional trunk, one small head per timeframe.

The trunk reads a normalised window (core.features.normalised_window: 5 channels, open/high/
low/close as ln(price / last close) and z-scored log volume) and pools it to a 256-d summary.
Each timeframe's head turns that summary into a 64-d hidden vector and three outputs: logits
over BUY/SELL/HOLD, a confidence in (0, 1) and the next candle's OHLCV as relative changes.
The 64-d hidden vector and the action probabilities also feed the DQN (see ``offer``).

Each head also has a tiny range head (``RangeHead``): a HAR model (heterogeneous
autoregressive volatility, Corsi 2009) of the next candle's high-low range, read straight from
the window's log ranges ln(h / l) (``range_features``), not from the trunk. It learns the
median of the log range (L1 loss), whose exponential is the MAE-optimal range forecast, and its
forecast sets the predicted candle's high and low around the regression head's mid (see
``_predictions``).

Training is supervised on hindsight labels (``hindsight_label``): once a candle closes, the
move it made decides which action would have been right and how confident to have been.

Shapes: B batch, C = 5 channels, L window length (``CNNConfig.window``).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nn.base import (
    ACTION_SCORES,
    TRADE_ACTIONS,
    Experience,
    Learner,
    Look,
    ModelOutput,
    Observation,
    Outcome,
    argmax_row,
    seeded,
    softmax_row,
)
from nn.contract import N_CHANNELS, parse_timeframe, setting


@dataclass(frozen=True)
class CNNConfig:
    """models.cnn in config.yaml."""

    enabled: bool = setting(True, "predict and train this model")
    learning_rate: float = setting(1e-3, "Adam's learning rate", gt=0, lt=1)
    window: int = setting(300, "candles per timeframe the CNN sees", ge=8, le=5000)
    dropout: float = setting(0.1, "dropout before each head, while training", ge=0, lt=1)
    buffer_size: int = setting(5000, "resolved examples kept for training", ge=64, le=10_000_000)


BUY, SELL, HOLD = (TRADE_ACTIONS.index(a) for a in ("BUY", "SELL", "HOLD"))
TRUNK_WIDTHS = (64, 128, 256)  # conv channels after each trunk block
# Max-pooling after the first two blocks (300 -> 75 -> 18 positions for the last block). Without
# it a kernel-3 stack sees only 7 candles at a time before the global average, and costs 5x the
# compute; with it the last block's units see 58 consecutive candles. See docs/ARCHITECTURE.md.
TRUNK_POOL = 4
# Range head: HAR over the mean log range of the last 1, 4, 16, 64 and 256 real candles.
RANGE_SCALES = (1, 4, 16, 64, 256)
RANGE_EPS = 1e-5  # added to ranges (units of the reference price) before logs: a flat candle
RANGE_LR = 1e-2  # the range head's Adam learning rate (it has 5 parameters per timeframe)
RANGE_WEIGHT = 1.0  # of the range L1 in cnn_loss's total (touches only the range head: Adam)
ARCHITECTURE = (f"trunk{'-'.join(map(str, TRUNK_WIDTHS))}-k3-conv-pool{TRUNK_POOL}-bn-relu-dropout"
                f"-har{'-'.join(map(str, RANGE_SCALES))}-range")
HIDDEN = 64  # width of each head's last hidden layer (what the DQN sees)
N_OHLCV = 5
GRAD_CLIP = 5.0
HOLD_CONFIDENCE = 0.3  # target confidence when the move was too small to act on
MAX_CONFIDENCE = 0.95  # never teach certainty: markets stay noisy


# ---------------------------------------------------------------------------- network


class CNNOutput(NamedTuple):
    logits: torch.Tensor  # [B, 3] over TRADE_ACTIONS
    confidence: torch.Tensor  # [B] in (0, 1)
    ohlcv: torch.Tensor  # [B, 5] next candle, standardised per timeframe (see TargetNorm)
    hidden: torch.Tensor  # [B, 64] the head's last hidden layer
    log_range: torch.Tensor  # [B] ln(next candle's (high - low) / last close + RANGE_EPS)


def range_features(x: torch.Tensor) -> torch.Tensor:
    """[B, 5, L] normalised windows -> [B, 5]: ``ln(mean log range + RANGE_EPS)`` over the
    last k real candles, k in ``RANGE_SCALES`` (all real candles when fewer than k).

    A candle's log range is ln(h / l) = x[:, 1] - x[:, 2] (channels are ln(price / last
    close)). The left zero padding is not a candle: the real candles run from the first column
    with any non-zero channel to the end (the last column always counts). A real all-zero
    candle before the first non-zero one is taken for padding; its range is 0 either way.
    """
    log_range = (x[:, 1] - x[:, 2]).clamp(min=0)  # [B, L]
    real = (x != 0).any(dim=1).cumsum(dim=-1) > 0  # [B, L] from the first non-zero column on
    real[:, -1] = True
    tails = _tails(x.shape[-1], x.dtype, x.device)  # [L, 5]: 1 on each scale's last k columns
    sums = log_range @ tails  # [B, 5] the last k candles' log ranges, summed
    counts = real.to(x.dtype) @ tails  # [B, 5] real candles among them (>= 1)
    return torch.log(sums / counts + RANGE_EPS)  # [B, 5]


@lru_cache(maxsize=8)
def _tails(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[L, len(RANGE_SCALES)]: column j is 1 on the last min(k_j, L) positions, else 0, so
    one matmul sums every scale's tail (two matmuls cost less than a flip, cumsums and
    gathers on a [1, 300] window, where each call is mostly overhead)."""
    with torch.inference_mode(False):  # a plain tensor, usable by training too
        tails = torch.zeros(length, len(RANGE_SCALES), dtype=dtype, device=device)
        for j, k in enumerate(RANGE_SCALES):
            tails[max(0, length - k):, j] = 1.0
    return tails


class RangeHead(nn.Module):
    """HAR forecast of ln(next range + RANGE_EPS) from ``range_features`` f [B, 5]:
    ``f_256 + b + sum_k w_k (f_k - f_256)`` over the four shorter scales k.

    The levels' weights sum to 1 (the longest scale takes 1 - sum w_k), so the forecast is
    scale-free: every past range doubled doubles it, on any timeframe and price. It also keeps
    the 5 parameters well conditioned (the differences are O(1), the levels -3 to -9), which
    lets the head learn within tens of steps. Starts at w_k = 1/5, b = 0: the geometric mean
    of the five averages, a sensible forecast before any training.
    """

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(len(RANGE_SCALES) - 1, 1)
        with torch.no_grad():
            self.linear.weight.fill_(1 / len(RANGE_SCALES))
            self.linear.bias.zero_()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        anchor = f[:, -1:]  # [B, 1] the longest scale
        return (anchor + self.linear(f[:, :-1] - anchor)).squeeze(-1)  # [B]


class TimeframeHead(nn.Module):
    def __init__(self, width: int = TRUNK_WIDTHS[-1]):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, 128), nn.ReLU(), nn.Linear(128, HIDDEN), nn.ReLU()
        )
        self.action = nn.Linear(HIDDEN, len(TRADE_ACTIONS))
        self.confidence = nn.Linear(HIDDEN, 1)
        self.ohlcv = nn.Linear(HIDDEN, N_OHLCV)
        self.range = RangeHead()

    def forward(self, z: torch.Tensor, range_feats: torch.Tensor) -> CNNOutput:
        h = self.body(z)  # [B, 64]
        logits = self.action(h)  # [B, 3]
        confidence = torch.sigmoid(self.confidence(h)).squeeze(-1)  # [B]
        ohlcv = self.ohlcv(h)  # [B, 5]
        return CNNOutput(logits, confidence, ohlcv, h, self.range(range_feats))


class CNNNet(nn.Module):
    """Shared trunk Conv1d 5->64->128->256 (kernel 3, each followed by BatchNorm, ReLU and
    Dropout; the first two max-pooled by ``TRUNK_POOL`` right after the convolution), global
    average pooling, then the head of the timeframe asked for. The head's range part reads
    ``range_features`` of the input, not the trunk (no gradient reaches the trunk from it).
    292,152 parameters with 4 heads (125,184 trunk + 4 x 41,742), 208,668 with 2 (pooling
    has none)."""

    def __init__(
        self,
        n_channels: int = N_CHANNELS,
        timeframes: tuple[str, ...] = ("1s", "1m", "1h", "1d"),
        dropout: float = 0.1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        widths = (n_channels, *TRUNK_WIDTHS)
        for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Conv1d(c_in, c_out, kernel_size=3, padding=1))
            if i < len(TRUNK_WIDTHS) - 1:
                # Pooled straight after the convolution: batch norm, ReLU and dropout then run
                # on a quarter of the positions (a training step ~28% faster). ReLU commutes
                # with max-pooling; batch norm does too per channel unless its scale is < 0.
                layers.append(nn.MaxPool1d(TRUNK_POOL, ceil_mode=True))  # a short window keeps >= 1
            layers += [nn.BatchNorm1d(c_out), nn.ReLU(), nn.Dropout(dropout)]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({tf: TimeframeHead() for tf in timeframes})

    def forward(self, x: torch.Tensor, timeframe: str) -> CNNOutput:
        z = self.trunk(x)  # [B, 256, ceil(L / 16)]
        z = z.mean(dim=-1)  # [B, 256] global average pool (padding included)
        return self.heads[timeframe](z, range_features(x))


class _Head(nn.Module):
    """One timeframe's path through a CNNNet, as a module a trace can take (no string
    argument): [B, 5, L] -> the CNNOutput's tensors."""

    def __init__(self, net: CNNNet, timeframe: str):
        super().__init__()
        self.net = net
        self.timeframe = timeframe

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net(x, self.timeframe))


def cnn_loss(
    out: CNNOutput,
    action_target: torch.Tensor,
    confidence_target: torch.Tensor,
    ohlcv_target: torch.Tensor,
    weights: torch.Tensor,
    range_target: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean over the batch of ``CE + 0.5 * BCE + MSE + RANGE_WEIGHT * L1``.

    Per example: CE = cross-entropy of ``out.logits`` [B, 3] against ``action_target`` [B]
    (long); BCE = binary cross-entropy of ``out.confidence`` [B] against
    ``confidence_target`` [B] (soft targets in [0, 1]), halved because confidence is a
    secondary signal; MSE = mean over the 5 OHLCV changes of ``(out.ohlcv - ohlcv_target)^2``;
    L1 = ``|out.log_range - ln(range_target + RANGE_EPS)|`` with ``range_target`` [B] the
    candle's (high - low) / reference price (raw, not standardised). The L1's minimiser is the
    conditional median of the log range, i.e. the log of the median range: the MAE-optimal
    range forecast (a flat candle's log(EPS) only shifts it if most candles are flat). The L1
    reaches only the range heads, whose Adam step does not depend on ``RANGE_WEIGHT``.
    The batch total is ``sum(w * l) / sum(w)`` with ``weights`` [B] > 0, so an executed trade
    (weight 10) counts ten times as much. Returns the total (a tensor to backpropagate) and
    the four parts, each weighted the same way, as floats.
    """
    w = weights / weights.sum()  # [B], sums to 1
    ce = F.cross_entropy(out.logits, action_target, reduction="none")  # [B]
    bce = F.binary_cross_entropy(out.confidence, confidence_target, reduction="none")  # [B]
    mse = ((out.ohlcv - ohlcv_target) ** 2).mean(dim=-1)  # [B]
    l1 = (out.log_range - torch.log(range_target.clamp(min=0) + RANGE_EPS)).abs()  # [B]
    ce, bce, mse, l1 = (w * ce).sum(), (w * bce).sum(), (w * mse).sum(), (w * l1).sum()
    total = ce + 0.5 * bce + mse + RANGE_WEIGHT * l1
    return total, {"ce": ce.item(), "confidence_bce": bce.item(), "ohlcv_mse": mse.item(),
                   "range_l1": l1.item()}


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


# ------------------------------------------------------------------------ replay ring


class ExampleRing:
    """Fixed-capacity FIFO of supervised examples: one preallocated numpy array per field,
    overwritten oldest first. ``np.zeros`` pages are only touched once written, so memory grows
    with use up to ``capacity`` rows."""

    def __init__(self, capacity: int, fields: dict[str, tuple[tuple[int, ...], type]]):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.data = {k: np.zeros((capacity, *shape), dtype) for k, (shape, dtype) in fields.items()}
        self.pos = 0  # next row to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, np.ndarray]) -> None:
        n = len(next(iter(batch.values())))
        keep = min(n, self.capacity)  # a batch bigger than the ring keeps only its newest rows
        rows = (self.pos + np.arange(keep)) % self.capacity
        for key, store in self.data.items():
            store[rows] = batch[key][n - keep :]
        self.pos = (self.pos + keep) % self.capacity
        self.size = min(self.size + keep, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Up to ``n`` distinct rows, uniformly (fewer while the ring holds fewer)."""
        rows = rng.choice(self.size, size=min(n, self.size), replace=False)
        return {key: store[rows] for key, store in self.data.items()}

    def nbytes(self) -> int:
        """Bytes of the rows in use."""
        return sum(store[: self.size].nbytes for store in self.data.values())


# ---------------------------------------------------------------------------- learner


@dataclass
class CNNPrediction(ModelOutput):
    """A ModelOutput that also carries the action probabilities (for the DQN's state)."""

    probs: np.ndarray | None = None  # [3] softmax over TRADE_ACTIONS


def left_pad(window: np.ndarray, length: int) -> np.ndarray:
    """[C, L'] -> float32 [C, length]: the last ``length`` columns, zeros on the left if short.
    A float32 window already ``length`` long comes back as it is, not copied (the builder's
    windows are read-only)."""
    if (type(window) is np.ndarray and window.dtype == np.float32 and window.ndim == 2
            and window.shape[1] == length):
        return window  # the builder's windows: nothing to check or convert
    window = np.asarray(window, dtype=np.float32)
    if window.ndim != 2:
        raise ValueError(f"window must be [channels, length], got shape {window.shape}")
    if window.shape[1] == length:
        return window  # already the right length (the usual case): no copy
    out = np.zeros((window.shape[0], length), dtype=np.float32)
    tail = window[:, -length:]
    out[:, length - tail.shape[1] :] = tail
    return out


class TargetNorm:
    """Running mean and std of the OHLCV targets per timeframe (Welford, merged per batch).

    The five regression targets live on very different scales (a 1s price change is about
    1e-4, a 1d one 3e-2, log1p(volume) 5-15), so an MSE on raw targets would be all volume
    and all daily candles. The head learns targets standardised per timeframe and channel;
    predictions are mapped back. The statistics are part of the checkpoint.
    """

    def __init__(self, n_groups: int, dim: int = N_OHLCV):
        self.count = np.zeros(n_groups)
        self.mean = np.zeros((n_groups, dim))
        self.m2 = np.zeros((n_groups, dim))
        self.version = 0  # bumped whenever the statistics change
        self._scale: tuple | None = None  # ((group, version), std, mean) of the last denormalise

    def update(self, groups: np.ndarray, x: np.ndarray) -> None:
        for g in np.unique(groups):
            rows = x[groups == g].astype(np.float64)
            n, mean = len(rows), rows.mean(axis=0)
            m2 = ((rows - mean) ** 2).sum(axis=0)
            total = self.count[g] + n
            delta = mean - self.mean[g]
            self.mean[g] += delta * n / total
            self.m2[g] += m2 + delta**2 * self.count[g] * n / total
            self.count[g] = total
        self.version += 1

    def std(self, g) -> np.ndarray:
        """Per-channel std; 1 until two samples, never below 1e-6."""
        g = np.asarray(g)
        var = np.where(self.count[g, None] >= 2, self.m2[g] / np.maximum(self.count[g, None], 1), 1.0)
        return np.maximum(np.sqrt(var), 1e-6)

    def normalise(self, groups: np.ndarray, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean[groups]) / self.std(groups)).astype(np.float32)

    def denormalise(self, g: int, x: np.ndarray) -> np.ndarray:
        """Standardised ``x`` [..., 5] of group ``g`` back in target units (float32)."""
        key = (g, self.version)  # the statistics change only in update() and load()
        if self._scale is None or self._scale[0] != key:
            self._scale = (key, self.std(g).astype(np.float32), self.mean[g].astype(np.float32))
        _, std, mean = self._scale
        return x * std + mean  # float32 [..., 5]

    def state(self) -> dict:
        return {"count": self.count.tolist(), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load(self, state: dict) -> None:
        self.count = np.asarray(state["count"], dtype=np.float64)
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.m2 = np.asarray(state["m2"], dtype=np.float64)
        self.version += 1


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
            example = torch.zeros(1, N_CHANNELS, self.cfg.window, device=self.device)
            with warnings.catch_warnings():
                # range_features' window length is the one fixed shape: fine. torch 2.13
                # (pinned) calls jit.trace deprecated, with no replacement as fast here
                # (torch.export's module ran 2.6 ms): it stays until torch drops it.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = self._traced[timeframe] = torch.jit.trace(
                    _Head(self.inference_net, timeframe), example, check_trace=False)
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
        found: list[dict[str, CNNPrediction]] = [{} for _ in observations]
        todo: dict[str, list[tuple[str, np.ndarray, list[int]]]] = {}  # tf -> windows to run
        with self.lock, torch.inference_mode():  # cheaper than no_grad
            for i, obs in enumerate(observations):
                for tf in self.timeframes:
                    window = obs.windows.get(tf)
                    if window is None:
                        continue
                    cached = self._cache.get((obs.symbol, tf))
                    # A new read-only window is a new candle's (the builder's): no compare.
                    if cached and cached[0] == self._weights_version and (
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
        new = self._examples(experiences)
        n_new = len(experiences)
        replay = self.buffer.sample(n_new, self.rng)
        self.buffer.add(new)
        batch = {k: np.concatenate([new[k], replay[k]]) for k in new}
        batch["range"] = batch["ohlcv"][:, 1] - batch["ohlcv"][:, 2]  # (h - l) / ref, raw
        self.target_norm.update(new["tf"], new["ohlcv"])
        batch["ohlcv"] = self.target_norm.normalise(batch["tf"], batch["ohlcv"])
        is_new = np.arange(len(batch["tf"])) < n_new
        order = np.argsort(batch["tf"], kind="stable")  # timeframe groups become contiguous
        batch = {k: torch.as_tensor(v[order], device=self.device) for k, v in batch.items()}
        is_new = torch.as_tensor(is_new[order], device=self.device)

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
        """Experiences -> arrays for the ring; raises ValueError on anything unusable."""
        for i, e in enumerate(experiences):
            if e.label is None or e.target_confidence is None or e.target_ohlcv is None:
                raise ValueError(
                    f"CNN experience {i} ({e.timeframe}) needs label, target_confidence "
                    "and target_ohlcv"
                )
            self._check_timeframe(e.timeframe)
        batch = {
            "state": np.stack([np.asarray(e.state, np.float32) for e in experiences]),
            "tf": np.array([self.timeframes.index(e.timeframe) for e in experiences]),
            "label": np.array([e.label for e in experiences], np.int64),
            "confidence": np.array([e.target_confidence for e in experiences], np.float32),
            "ohlcv": np.stack([np.asarray(e.target_ohlcv, np.float32) for e in experiences]),
            "weight": np.array([e.weight for e in experiences], np.float32),
        }
        _check_examples(batch, (N_CHANNELS, self.cfg.window))
        return batch

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


def _frozen(window) -> bool:
    """A read-only numpy array: the builder's windows, which never change once made."""
    return isinstance(window, np.ndarray) and not window.flags.writeable


def predicted_range(log_range: torch.Tensor) -> np.ndarray:
    """The range head's output [B] as float32 (high - low) / reference price, >= 0."""
    return np.maximum(np.exp(log_range.numpy(force=True)) - RANGE_EPS, 0).astype(np.float32)


def _predictions(out: CNNOutput, norm: TargetNorm, tf_index: int) -> list[CNNPrediction]:
    """A batch's output [B, ...] as B predictions (each row a view of one array per field).

    The predicted candle's high and low are the range head's: ``mid +- range / 2`` around the
    regression head's mid ``(high + low) / 2``, so the stored predicted high - low IS the range
    forecast (``predicted_range``). Open, close and volume are the regression head's as they
    are (an open or close may fall outside the reconciled high-low).
    """
    logits = out.logits.tolist()  # [B][3]: a few numbers, handled in Python (see softmax_row)
    probs = np.array([softmax_row(row) for row in logits], dtype=np.float32)  # [B, 3]
    actions = [argmax_row(row) for row in logits]  # [B]
    confidence = out.confidence.tolist()  # [B]
    ohlcv = norm.denormalise(tf_index, out.ohlcv.numpy(force=True))  # [B, 5], target units
    half = predicted_range(out.log_range) / 2  # [B]
    mid = (ohlcv[:, 1] + ohlcv[:, 2]) / 2  # [B]
    ohlcv[:, 1], ohlcv[:, 2] = mid + half, mid - half  # denormalise returned a new array
    hidden = out.hidden.numpy(force=True)  # [B, 64]
    return [CNNPrediction(action=actions[i], confidence=confidence[i], ohlcv=ohlcv[i],
                          hidden=hidden[i], probs=probs[i]) for i in range(len(actions))]


def _check_examples(batch: dict[str, np.ndarray], state_shape: tuple[int, int]) -> None:
    if batch["state"].shape[1:] != state_shape:
        got = list(batch["state"].shape[1:])
        raise ValueError(f"CNN states must be {list(state_shape)}, got {got}")
    if batch["ohlcv"].shape[1:] != (N_OHLCV,):
        raise ValueError(f"target_ohlcv must have {N_OHLCV} values, got {batch['ohlcv'].shape[1:]}")
    if np.any((batch["label"] < 0) | (batch["label"] >= len(TRADE_ACTIONS))):
        raise ValueError(f"labels must index {TRADE_ACTIONS}, got {batch['label'].tolist()}")
    conf = batch["confidence"]
    if not np.all((conf >= 0) & (conf <= 1)):
        raise ValueError(f"target_confidence must be in [0, 1], got {conf.tolist()}")
    if not np.all(batch["weight"] > 0) or not np.all(np.isfinite(batch["weight"])):
        raise ValueError(f"weights must be finite and > 0, got {batch['weight'].tolist()}")
    for key in ("state", "ohlcv"):
        if not np.all(np.isfinite(batch[key])):
            raise ValueError(f"CNN experience {key} holds NaN or inf")
