"""Order-book direction model ("COB", registered as "cob"; the seed called it "COB RL", but it
is supervised): a small MLP that reads the book and the last few returns and says whether the
next candle closes UP or DOWN.

It is trained supervised, on the direction the candle really took (``Experience.label``),
with the same replay-mixing as the CNN. Input layout (``COBLearner.encode``), F book features,
R returns, T timeframes::

    [0, F)              order-book features (zeros without a book)
    F                   1.0 if a book was present, else 0.0
    [F+1, F+1+R)        last R one-step log returns of the close, in percent, oldest first
    [F+1+R, F+1+R+T)    one-hot of the predicted timeframe
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from torch import nn

from nn.base import (
    DIRECTION_ACTIONS,
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
from nn.buffers import finite32
from nn.contract import N_BOOK, parse_timeframe, setting
from nn.example_ring import ExampleRing


@dataclass(frozen=True)
class COBConfig:
    """models.cob in config.yaml."""

    enabled: bool = setting(True, "predict and train this model")
    learning_rate: float = setting(1e-3, "Adam's learning rate", gt=0, lt=1)
    hidden: int = setting(128, "width of the network's hidden layers", ge=8, le=8192)
    buffer_size: int = setting(5000, "resolved examples kept for training", ge=64, le=10_000_000)


_LABELS = frozenset(range(len(DIRECTION_ACTIONS)))  # what Experience.label may be
CLOSE = 3  # close channel of a normalised window: ln(close / last close)
# Returns enter in percent: a 1-step log return is ~1e-3 on 1m candles, far below the O(1)
# book features (imbalance, spread in bps) it sits beside in the first layer.
RETURN_SCALE = 100.0
GRAD_CLIP = 5.0


@njit(cache=True, nogil=True)
def _state(book: np.ndarray, has_book: bool, close: np.ndarray, n_returns: int, tf_index: int,
           n_tf: int):  # pragma: no cover (compiled; tested through COBLearner.encode)
    """(state, True) laid out as in the module docstring, or (zeros, False) if the book holds
    a NaN or inf. ``close`` is the window's close channel (ln(close / last close)). One
    compiled call: it runs for every closed candle."""
    nb = book.shape[0]
    out = np.zeros(nb + 1 + n_returns + n_tf, dtype=np.float32)
    if has_book:
        for i in range(nb):
            if not math.isfinite(book[i]):
                return out, False
            out[i] = book[i]
        out[nb] = 1.0  # the flag: a book was there
    k = min(n_returns, close.shape[0] - 1)  # the last k one-step returns, right-aligned
    for j in range(k):
        i = close.shape[0] - k + j
        out[nb + 1 + n_returns - k + j] = (close[i] - close[i - 1]) * RETURN_SCALE
    out[nb + 1 + n_returns + tf_index] = 1.0  # one-hot timeframe
    return out, True


class COBNet(nn.Module):
    """(Linear, LayerNorm, ReLU) x 2 -> 2 logits over DIRECTION_ACTIONS (UP, DOWN)."""

    def __init__(self, n_features: int, hidden: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, hidden), nn.LayerNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
        )
        self.out = nn.Linear(hidden, len(DIRECTION_ACTIONS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))  # [B, F] -> [B, 2]


class COBLearner(Learner):
    """Owns the COBNet, Adam, a replay ring and the published copy predictions use. The
    network has no dropout or batch norm, so train and eval mode agree."""

    name = "cob"
    Config = COBConfig
    actions = DIRECTION_ACTIONS
    look = Look("COB · order book", {"UP": "diamond", "DOWN": "diamond"})

    def __init__(
        self,
        cfg: COBConfig,
        timeframes: tuple[str, ...],
        n_book_features: int = N_BOOK,
        n_returns: int = 10,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        super().__init__(device)
        if n_book_features < 0 or n_returns < 1:
            raise ValueError(
                f"need n_book_features >= 0 and n_returns >= 1, got {n_book_features}, {n_returns}"
            )
        self.cfg = cfg
        self.timeframes = tuple(timeframes)
        for tf in self.timeframes:
            parse_timeframe(tf)
        self.n_book_features = n_book_features
        self.n_returns = n_returns
        self.n_features = n_book_features + 1 + n_returns + len(self.timeframes)
        self._no_book = np.zeros(n_book_features, np.float32)
        self.net = seeded(lambda: COBNet(self.n_features, cfg.hidden), seed, self.device)
        # Predictions use this published copy (see Learner.publish).
        self.inference_net = self._inference_copy(self.net)
        self._params = list(self.net.parameters())
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.learning_rate,
                                          foreach=True)  # one kernel per op for all tensors
        self.rng = np.random.default_rng(seed)
        self.buffer = ExampleRing(
            cfg.buffer_size,
            {
                "state": ((self.n_features,), np.float32),
                "label": ((), np.int64),
                "weight": ((), np.float32),
            },
        )

    @property
    def network(self) -> nn.Module:
        return self.net

    def experience(self, outcome: Outcome) -> Experience | None:
        """The direction the candle really took (UP 0, DOWN 1); a flat candle has none and
        teaches nothing."""
        if outcome.change == 0:
            return None
        return Experience(
            state=outcome.state, action=self.actions.index(outcome.action),
            reward=outcome.reward, next_state=outcome.next_state,
            timeframe=outcome.timeframe, weight=outcome.weight,
            label=0 if outcome.change > 0 else 1, target_ohlcv=outcome.target_ohlcv)

    def encode(self, obs: Observation) -> np.ndarray:
        """float32 [n_features] laid out as in the module docstring."""
        if obs.timeframe not in self.timeframes:
            raise ValueError(f"timeframe {obs.timeframe!r} is not one of {self.timeframes}")
        nb = self.n_book_features
        book = self._no_book
        if obs.book is not None:
            book = np.asarray(obs.book, np.float32)
            if book.shape != (nb,):
                raise ValueError(f"book must be {nb} finite features, got {obs.book!r}")
        close = np.asarray(obs.windows[obs.timeframe], np.float32)[CLOSE]  # [L]
        state, ok = _state(book, obs.book is not None, close, self.n_returns,
                           self.timeframes.index(obs.timeframe), len(self.timeframes))
        if not ok:
            raise ValueError(f"book must be {nb} finite features, got {obs.book!r}")
        return state

    def predict(self, state: np.ndarray, timeframe: str) -> ModelOutput:
        """argmax direction and its softmax probability (the timeframe is in the state)."""
        return self.predict_many([state], [timeframe])[0]

    def predict_many(self, states: list[np.ndarray], timeframes: list[str]) -> list[ModelOutput]:
        """``predict`` for several states in one forward pass."""
        if not states:
            return []
        x = torch.as_tensor(np.stack(states).astype(np.float32, copy=False),
                            device=self.device)  # [N, F]
        with self.lock, torch.inference_mode():
            logits = self.inference_net(x).tolist()  # [N][2]
        outs = []
        for row in logits:
            action = argmax_row(row)
            outs.append(ModelOutput(action=action, confidence=softmax_row(row)[action]))
        return outs

    def learn(self, experiences: list[Experience]) -> dict[str, float] | None:
        """One Adam step of weighted cross-entropy on the new experiences plus as many replayed
        from the ring (see CNNLearner.learn for why). ``accuracy`` is over the new ones."""
        if not experiences:
            return None
        new = self._examples(experiences)
        replay = self.buffer.sample(len(experiences), self.rng)
        self.buffer.add(new)
        batch = {
            k: torch.as_tensor(np.concatenate([new[k], replay[k]]), device=self.device)
            for k in new
        }
        logits = self.net(batch["state"])  # [B, 2]
        w = batch["weight"] / batch["weight"].sum()  # [B]
        loss = (w * F.cross_entropy(logits, batch["label"], reduction="none")).sum()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"COB loss is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self._params, GRAD_CLIP)
        with self.lock:
            self.optimizer.step()
        self.record_loss(value)
        self._stepped()
        # The new ones come first in the batch; zip stops at them. One read of the [B, 2]
        # logits, the argmax in Python (fewer calls than argmax + tolist on a tensor slice).
        hits = sum(argmax_row(row) == e.label for row, e in zip(logits.tolist(), experiences))
        return {"loss": value, "accuracy": hits / len(experiences)}

    def _examples(self, experiences: list[Experience]) -> dict[str, np.ndarray]:
        """The experiences as the ring's columns, all checked before any is used: a label that
        is no direction, a state of the wrong shape, NaN or inf in a state, or a weight that is
        not finite and > 0 raises ValueError."""
        n = len(experiences)
        labels, states, weights = [], [], []
        for e in experiences:  # one pass; the arrays are built once below
            labels.append(e.label)
            states.append(e.state)
            weights.append(e.weight)
        if not _LABELS.issuperset(labels):
            raise ValueError(f"COB labels must index {DIRECTION_ACTIONS}, got {labels}")
        shapes = {s.shape if isinstance(s, np.ndarray) else np.shape(s) for s in states}
        if shapes != {(self.n_features,)}:
            raise ValueError(f"COB states must have {self.n_features} features, got shapes "
                             f"{sorted(shapes)}")
        if not all(w > 0 and math.isfinite(w) for w in weights):
            raise ValueError(f"weights must be finite and > 0, got {weights}")
        # one copy for all (np.stack would check and reshape each state first)
        state = np.concatenate(states).astype(np.float32, copy=False)
        if not finite32(state):
            raise ValueError("COB experience state holds NaN or inf")
        return {
            "state": state.reshape(n, self.n_features),
            "label": np.array(labels, np.int64),
            "weight": np.array(weights, np.float32),
        }

    def state_dict(self) -> dict:
        """Weights, optimiser, counters, loss history and the replay RNG (not the ring)."""
        return {
            "model": self.name,
            "config": asdict(self.cfg),
            "timeframes": list(self.timeframes),
            "n_book_features": self.n_book_features,
            "n_returns": self.n_returns,
            "network": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "train_steps": self.train_steps,
            "losses": list(self.losses),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`. The configured learning rate wins over the saved one."""
        layout = (list(state["timeframes"]), state["n_book_features"], state["n_returns"])
        if layout != (list(self.timeframes), self.n_book_features, self.n_returns):
            raise ValueError(f"checkpoint input layout {layout} differs from this model's")
        with self.lock:
            self.net.load_state_dict(state["network"])
        self.load_training_state(state, self.cfg.learning_rate)
        self.publish()

    def _snapshot(self, clone: bool) -> dict:
        return {"weights": self._weights(clone)}

    def _install(self, snapshot: dict) -> None:
        self._load_weights(snapshot["weights"])

    def buffer_bytes(self) -> int:
        """The replay ring plus the published copy of the weights."""
        weights = self.inference_net.state_dict().values()
        return self.buffer.nbytes() + sum(t.numel() * t.element_size() for t in weights)
