"""The multi-timeframe CNN's network: one shared convolutional trunk, one small head per
timeframe, each with a HAR range head; and its loss. The learner (nn/cnn.py) trains it.

The trunk reads a normalised window (core.features.normalised_window: 5 channels, open/high/
low/close as ln(price / last close) and z-scored log volume) and pools it to a 256-d summary.
Each timeframe's head turns that summary into a 64-d hidden vector and three outputs: logits
over BUY/SELL/HOLD, a confidence in (0, 1) and the next candle's OHLCV as relative changes.

Each head also has a tiny range head (``RangeHead``): a HAR model (heterogeneous
autoregressive volatility, Corsi 2009) of the next candle's high-low range, read straight from
the window's log ranges ln(h / l) (``range_features``), not from the trunk. It learns the
median of the log range (L1 loss), whose exponential is the MAE-optimal range forecast.

Shapes: B batch, C = 5 channels, L window length (``CNNConfig.window``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nn.contract import N_CHANNELS, TRADE_ACTIONS

TRUNK_WIDTHS = (64, 128, 256)  # conv channels after each trunk block
# Max-pooling after the first two blocks (300 -> 75 -> 18 positions for the last block). Without
# it a kernel-3 stack sees only 7 candles at a time before the global average, and costs 5x the
# compute; with it the last block's units see 58 consecutive candles.
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


def predicted_range(log_range: torch.Tensor) -> np.ndarray:
    """The range head's output [B] as float32 (high - low) / reference price, >= 0."""
    return np.maximum(np.exp(log_range.numpy(force=True)) - RANGE_EPS, 0).astype(np.float32)
