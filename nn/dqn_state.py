"""The DQN's state: what it is made of (``StateEncoder.encode``) and where its shared parts
lie (``StateEncoder.layout``), so that the replay stores each candle window and each CNN
hidden row once however many states hold it (nn/state_store.py)."""

from __future__ import annotations

import numpy as np

from nn.contract import N_CHANNELS, Observation
from nn.float16 import storable
from nn.state_store import StateLayout

CNN_CLASSES = 3  # the CNN's action probabilities, one per TRADE_ACTIONS entry


class StateEncoder:
    """Observations -> the DQN's states [dim] float32 (layout in :meth:`encode`)."""

    def __init__(self, timeframes: tuple[str, ...], n_scalars: int, window: int,
                 cnn_hidden_dim: int):
        self.timeframes = tuple(timeframes)
        self.n_scalars = n_scalars
        self.window = window
        self.cnn_hidden_dim = cnn_hidden_dim
        n_tf = len(self.timeframes)
        part = N_CHANNELS * window  # one flattened window
        windows_end = n_scalars + 2 * n_tf * part
        self.dim = windows_end + n_tf * cnn_hidden_dim + n_tf * CNN_CLASSES + n_tf
        # Shared parts: the 2 x n_tf windows (own, then the reference's), each the same
        # until its timeframe closes a candle (and the reference's own windows in the other
        # symbols' states); the CNN's hidden row of each timeframe, the same while its window
        # and the CNN's weights are. Own: scalars, the CNN's probabilities, the one-hot.
        groups = [(n_scalars, part, 2 * n_tf), (windows_end, cnn_hidden_dim, n_tf)]
        self.layout = StateLayout(self.dim, tuple(g for g in groups if g[1] > 0))
        # what a close makes new in a stream's state, per group: the windows of the symbol and
        # of the reference at the timeframe that closed, its CNN hidden row
        self.new_parts = (2, 1)[:len(self.layout.groups)]
        # reusable parts: (which, symbol, tf) -> (window array, its flattened part)
        self._window_parts: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._zero_window = np.zeros(part, dtype=np.float32)
        self._onehot = np.eye(n_tf, dtype=np.float32)

    def encode(self, obs: Observation) -> np.ndarray:
        """The state [dim] float32, in this order:

        1. ``obs.scalars`` [n_scalars];
        2. per timeframe, ``obs.windows[tf][:, -window:]`` [5, window] flattened row by row,
           left-padded with zeros when shorter, all zeros when missing;
        3. the same for ``obs.ref_windows`` (the reference symbol, BTC);
        4. what the CNN offers (``obs.extras["cnn"]``, see ``CNNLearner.offer``): its
           ``hidden`` layers [n_tf, cnn_hidden_dim] flattened (zeros without the CNN; a list
           of the n_tf rows is read the same);
        5. its action ``probs`` [n_tf, 3] flattened (zeros without the CNN; or a list);
        6. one-hot [n_tf] of ``obs.timeframe``.

        Every value must fit float16, the replay buffer's storage type (nn/float16.py): that
        is checked here, so a bad observation fails where it is made, with its name. The
        prediction reads the state as it is; the buffer keeps it rounded to float16 (2^-11
        relative), one conversion off the signal cycle.
        """
        scalars = np.asarray(obs.scalars, dtype=np.float32).reshape(-1)
        if scalars.size != self.n_scalars:
            raise ValueError(f"dqn: obs.scalars has {scalars.size} values, expected "
                             f"{self.n_scalars} (n_scalars the learner was built with)")
        if obs.timeframe not in self.timeframes:
            raise ValueError(f"dqn: timeframe {obs.timeframe!r} not in {self.timeframes}")
        n_tf = len(self.timeframes)
        parts = [
            scalars,
            *self._windows(obs, "windows"),
            *self._windows(obs, "ref_windows"),
            *self._extra(obs, "hidden", n_tf * self.cnn_hidden_dim),
            *self._extra(obs, "probs", n_tf * CNN_CLASSES),
            self._onehot[self.timeframes.index(obs.timeframe)],
        ]
        state = np.concatenate(parts)  # [dim] float32
        if not storable(state):
            raise ValueError(f"dqn: non-finite values in the observation of {obs.symbol} "
                             f"{obs.timeframe} at {obs.ts} (or beyond float16's +-65504)")
        return state

    def _windows(self, obs: Observation, what: str) -> list[np.ndarray]:
        """``obs.<what>`` per timeframe: the last ``window`` columns of each [5, L], zero-padded
        on the left, flattened; zeros for a missing timeframe.

        The builder hands out the same read-only array until its timeframe closes a candle,
        so the flattened part of such an array is kept and reused, per symbol (6 of the 8
        windows of a state, most market seconds)."""
        windows, cache = getattr(obs, what), self._window_parts
        parts = []
        for tf in self.timeframes:
            w = windows.get(tf)
            if w is None:
                parts.append(self._zero_window)
                continue
            key = (what, obs.symbol, tf)
            cached = cache.get(key)
            if cached is not None and cached[0] is w:
                parts.append(cached[1])
                continue
            out = np.zeros((N_CHANNELS, self.window), dtype=np.float32)
            arr = np.asarray(w, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != N_CHANNELS:
                raise ValueError(f"dqn: obs.{what}[{tf!r}] has shape {arr.shape}, "
                                 f"expected ({N_CHANNELS}, L)")
            tail = arr[:, -self.window:]
            if tail.shape[1]:
                out[:, -tail.shape[1]:] = tail
            flat = out.reshape(-1)
            if isinstance(w, np.ndarray) and not w.flags.writeable:  # only what cannot change
                cache[key] = (w, flat)
            parts.append(flat)
        return parts

    def _extra(self, obs: Observation, key: str, size: int) -> list[np.ndarray]:
        """The CNN's offer ``obs.extras["cnn"][key]`` as 1-D float32 parts of ``size`` values
        in all: an array [n_tf, dim], or a list of the per-timeframe rows [dim] (what the CNN
        hands over, so they go into the state's one concatenate without being stacked)."""
        value = (obs.extras.get("cnn") or {}).get(key)
        if value is None:
            return [np.zeros(size, dtype=np.float32)]
        rows = value if isinstance(value, list) else [value]
        parts = [row if isinstance(row, np.ndarray) and row.dtype == np.float32 and row.ndim == 1
                 else np.asarray(row, dtype=np.float32).reshape(-1) for row in rows]
        if sum(part.size for part in parts) != size:
            got = sum(part.size for part in parts)
            raise ValueError(f"dqn: obs.extras['cnn'][{key!r}] has {got} values, "
                             f"expected {size}")
        return parts
