"""The CNN's data on the way in and out: resolved experiences as training examples (checked,
batched with replayed ones, targets normalised per timeframe by ``TargetNorm``) and a forward
pass's outputs as predictions (``_predictions``: action, confidence, the next candle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nn.base import argmax_row, softmax_row
from nn.cnn_net import N_OHLCV, CNNOutput, predicted_range
from nn.contract import N_CHANNELS, TRADE_ACTIONS, Experience, ModelOutput


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


def _frozen(window) -> bool:
    """A read-only numpy array: the builder's windows, which never change once made."""
    return isinstance(window, np.ndarray) and not window.flags.writeable


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


def examples(experiences: list[Experience], timeframes: tuple[str, ...], window: int
             ) -> dict[str, np.ndarray]:
    """Experiences -> arrays for the ring; raises ValueError on anything unusable."""
    for i, e in enumerate(experiences):
        if e.label is None or e.target_confidence is None or e.target_ohlcv is None:
            raise ValueError(
                f"CNN experience {i} ({e.timeframe}) needs label, target_confidence "
                "and target_ohlcv"
            )
    batch = {
        "state": np.stack([np.asarray(e.state, np.float32) for e in experiences]),
        "tf": np.array([timeframes.index(e.timeframe) for e in experiences]),
        "label": np.array([e.label for e in experiences], np.int64),
        "confidence": np.array([e.target_confidence for e in experiences], np.float32),
        "ohlcv": np.stack([np.asarray(e.target_ohlcv, np.float32) for e in experiences]),
        "weight": np.array([e.weight for e in experiences], np.float32),
    }
    _check_examples(batch, (N_CHANNELS, window))
    return batch


def _training_batch(new: dict, replay: dict, norm: TargetNorm, device
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The new examples and the replayed ones as one batch of tensors, targets normalised,
    ordered so each timeframe's rows are contiguous; and which rows are new."""
    batch = {k: np.concatenate([new[k], replay[k]]) for k in new}
    batch["range"] = batch["ohlcv"][:, 1] - batch["ohlcv"][:, 2]  # (h - l) / ref, raw
    batch["ohlcv"] = norm.normalise(batch["tf"], batch["ohlcv"])
    is_new = np.arange(len(batch["tf"])) < len(new["tf"])
    order = np.argsort(batch["tf"], kind="stable")  # timeframe groups become contiguous
    batch = {k: torch.as_tensor(v[order], device=device) for k, v in batch.items()}
    return batch, torch.as_tensor(is_new[order], device=device)


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
