"""Replay buffers: a uniform ring of experiences and prioritised replay on a sum tree.

Both keep :class:`nn.base.Experience` objects as numpy columns in a ring that overwrites the
oldest, and hand out :class:`Batch` named tuples of numpy arrays, ready for
``torch.as_tensor``. States are not copied into the ring: each distinct state is stored once,
by content, in a :class:`nn.state_store.StateStore` (and, given a layout, each distinct part
of one: the DQN's candle windows), and an experience holds the ids of its state and next
state. The prioritised buffer (Schaul et al. 2016, "Prioritized Experience Replay")
overrides only the hooks that write a new item's priority and pick the indices of a batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from nn.base import Experience
from nn.float16 import (  # noqa: F401 - the storage helpers, re-exported (with the kernels
    STORE_DTYPE,  # core/kernels.py compiles)
    _no_inf_nan,
    _within,
    all_finite,
    finite32,
    from_store,
    storable,
    stored_rows,
    to_store,
)
from nn.state_store import RowPool, StateLayout, StateStore
from nn.sum_tree import SumTree

COLUMN_BYTES = 4 + 4 + 8 + 4 + 4 + 2  # per slot: state id, next-state id, action, reward,
# weight, timeframe code


class Batch(NamedTuple):
    states: np.ndarray  # [B, D] float32
    actions: np.ndarray  # [B] int64
    rewards: np.ndarray  # [B] float32
    next_states: np.ndarray  # [B, D] float32, zeros where done
    dones: np.ndarray  # [B] float32, 1.0 where the experience had no next_state
    weights: np.ndarray  # [B] float32, importance-sampling weight x Experience.weight
    indices: np.ndarray  # [B] int64, buffer slots (for update_priorities)
    timeframes: list[str]


class ReplayBuffer:
    """Uniform replay over a ring of ``capacity`` experiences; sampling with replacement.

    Experiences live in preallocated numpy columns (the ids of the state and next state,
    actions, rewards, weights, timeframe codes), as Stable-Baselines3 keeps its buffers: no
    object per experience. The states themselves are in a :class:`StateStore`, stored once
    each by content as float16 (see nn/float16.py) however many experiences refer to them: a
    transition's next state is the state of the next transition of its stream, so a chain
    of N transitions holds N + 1 states, not 2N (Stable-Baselines3's
    ``optimize_memory_usage``, for interleaved streams). A state is freed with the last
    experience that refers to it. ``layout`` (default: a state is all its own) says where
    the parts lie that states share, each also stored once (nn/state_store.py). The state
    size is fixed by the layout or the first add; a later experience of another size is
    refused.

    Subclasses change how priorities are kept by overriding two hooks: ``_on_write_many``
    (slots were just (over)written) and ``_sample_indices`` (pick a batch's slots and their
    importance-sampling weights).
    """

    def __init__(self, capacity: int, seed: int = 0, layout: StateLayout | None = None):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self._next = 0  # slot the next add writes
        self._size = 0
        self.store = StateStore(layout) if layout is not None else None  # at the first add
        self._state_id = np.full(capacity, -1, dtype=np.int32)  # into self.store
        self._next_id = np.full(capacity, -1, dtype=np.int32)  # -1: done, no next state
        self._actions = np.zeros(capacity, dtype=np.int64)
        self._rewards = np.zeros(capacity, dtype=np.float32)
        self._weights = np.zeros(capacity, dtype=np.float32)
        self._tf = np.zeros(capacity, dtype=np.int16)  # index into self._tf_names
        self._tf_names: list[str] = []

    def __len__(self) -> int:
        return self._size

    def add(self, exp: Experience, priority: float | None = None) -> int:
        """Store ``exp`` (states as float16, see STORE_DTYPE), overwriting the oldest when full.

        ``priority`` is the raw priority p > 0 for prioritised buffers (None: the current
        maximum); the uniform buffer ignores it. Returns the slot.
        """
        slot = int(self.add_many([exp])[0])
        if priority is not None:
            self._set_priority(slot, priority)
        return slot

    def add_many(self, exps: list[Experience]) -> np.ndarray:
        """Store a list, checked and converted in one pass; their slots [N]. All are checked
        before any is stored: a bad one leaves the buffer as it was.

        The state arrays are converted once each, by identity (the next state of one
        transition is usually the very array that is the state of the next), then stored by
        content: one already held (from an earlier list) is referred to, not stored again."""
        if not exps:
            return np.empty(0, dtype=np.int64)
        if len(exps) > self.capacity:  # only the newest fit; earlier ones would be overwritten
            exps = exps[len(exps) - self.capacity:]
        index, arrays, uses = _distinct_arrays(exps)
        rows = stored_rows(arrays, "state")  # [U, D] float16
        self._check(rows.shape[1], exps)
        if self.store is None:
            self.store = StateStore(StateLayout(rows.shape[1]))
        ids = self.store.intern(rows)  # one reference each, then one per further use
        self.store.acquire(ids, uses - 1)
        state_ids = ids[[index[id(e.state)] for e in exps]]
        next_ids = np.array([-1 if e.next_state is None else ids[index[id(e.next_state)]]
                             for e in exps], dtype=np.int32)
        n = len(exps)
        slots = (self._next + np.arange(n)) % self.capacity
        old = np.concatenate([self._state_id[slots], self._next_id[slots]])
        self.store.release(old[old >= 0])  # what the overwritten experiences referred to
        for ring, mine in _ring_parts(self._next, n, self.capacity):
            self._state_id[ring] = state_ids[mine]
            self._next_id[ring] = next_ids[mine]
            part = exps[mine]
            self._actions[ring] = [e.action for e in part]
            self._rewards[ring] = [e.reward for e in part]
            self._weights[ring] = [e.weight for e in part]
            self._tf[ring] = [self._tf_code(e.timeframe) for e in part]
        self._on_write_many(slots)
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)
        return slots

    def _check(self, dim: int, exps: list[Experience]) -> None:
        if self.store is not None and dim != self.store.layout.dim:
            raise ValueError(f"experience state has {dim} values; this buffer holds "
                             f"{self.store.layout.dim}")
        for e in exps:
            if not math.isfinite(e.reward) or not math.isfinite(e.weight) or e.weight < 0:
                raise ValueError(f"experience reward {e.reward} / weight {e.weight} not usable")

    def _tf_code(self, name: str) -> int:
        if name not in self._tf_names:
            self._tf_names.append(name)
        return self._tf_names.index(name)

    def sample(self, batch_size: int, step: int = 0) -> Batch:
        """``batch_size`` experiences; ``step`` (training steps so far) anneals PER's beta."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices, is_weights = self._sample_indices(batch_size, step)
        return self._gather(indices, is_weights)

    def nbytes(self) -> int:
        """Bytes in use: the ring's columns of the experiences held, and the distinct states
        and parts they refer to (rows and bookkeeping, see StateStore.nbytes)."""
        return self._size * COLUMN_BYTES + (self.store.nbytes() if self.store else 0)

    # -- hooks -------------------------------------------------------------------------

    def _on_write_many(self, indices: np.ndarray) -> None:
        """Slots ``indices`` now hold new experiences (added with the default priority)."""

    def _set_priority(self, index: int, priority: float) -> None:
        """An explicit priority for one slot; the uniform buffer has none."""

    def _sample_indices(self, batch_size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots [B] int64 and importance-sampling weights [B] float64 (all 1 here)."""
        indices = self.rng.integers(0, self._size, size=batch_size, dtype=np.int64)
        return indices, np.ones(batch_size)

    # -- helpers -----------------------------------------------------------------------

    def _gather(self, indices: np.ndarray, is_weights: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64)
        b = len(indices)
        ids = np.concatenate([self._state_id[indices], self._next_id[indices]])  # [2B]
        done = ids[b:] < 0
        rows = self.store.gather(np.where(ids >= 0, ids, ids[0]))  # [2B, D] float16
        rows[b:][done] = 0  # no next state
        both = from_store(rows)  # [2B, D] float32
        return Batch(
            states=both[:b],  # [B, D]
            actions=self._actions[indices],  # [B]
            rewards=self._rewards[indices],  # [B]
            next_states=both[b:],  # [B, D], zeros where done
            dones=done.astype(np.float32),  # [B]
            weights=(is_weights * self._weights[indices]).astype(np.float32),  # [B]
            indices=indices,
            timeframes=[self._tf_names[c] for c in self._tf[indices].tolist()],
        )


def _distinct_arrays(exps: list[Experience]) -> tuple[dict[int, int], list, np.ndarray]:
    """The state arrays of ``exps`` once each, by identity: (id -> position, the arrays, how
    many times each is referred to [U])."""
    index: dict[int, int] = {}
    arrays: list = []
    uses: list[int] = []
    for e in exps:
        for a in (e.state, e.next_state):
            if a is None:
                continue
            k = index.get(id(a))
            if k is None:
                k = index[id(a)] = len(arrays)
                arrays.append(a)
                uses.append(0)
            uses[k] += 1
    return index, arrays, np.array(uses, dtype=np.int32)


def _ring_parts(start: int, n: int, capacity: int) -> list[tuple[slice, slice]]:
    """The ring slots start, start + 1, ... (n of them, n <= capacity) as at most two slices,
    each with the slice of the n items that goes there."""
    first = min(n, capacity - start)
    parts = [(slice(start, start + first), slice(0, first))]
    if first < n:
        parts.append((slice(0, n - first), slice(first, n)))
    return parts


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay: P(i) = p_i^alpha / sum_k p_k^alpha.

    The tree stores p^alpha. New experiences get the current maximum priority (1.0 when the
    buffer is empty) so that each is replayed at least once soon; ``update_priorities`` sets
    p = |td| + eps after a training step. Importance-sampling weights
    w_i = (N * P(i))^-beta / max_j w_j correct the bias of non-uniform sampling; beta anneals
    linearly from ``beta_start`` to 1 over ``beta_steps`` training steps.
    """

    def __init__(self, capacity: int, alpha: float, beta_start: float, beta_steps: int,
                 eps: float = 1e-6, seed: int = 0, layout: StateLayout | None = None):
        super().__init__(capacity, seed, layout)
        if not 0 <= alpha <= 1 or not 0 <= beta_start <= 1:
            raise ValueError(f"alpha {alpha} and beta_start {beta_start} must lie in [0, 1]")
        if beta_steps < 1 or eps <= 0:
            raise ValueError(f"beta_steps {beta_steps} must be >= 1 and eps {eps} > 0")
        self.alpha = alpha
        self.beta_start = beta_start
        self.beta_steps = beta_steps
        self.eps = eps
        self.tree = SumTree(capacity)

    def beta(self, step: int) -> float:
        fraction = min(max(step, 0) / self.beta_steps, 1.0)
        return self.beta_start + fraction * (1.0 - self.beta_start)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """p = |td| + eps for each sampled slot (a slot listed twice keeps the last)."""
        td = np.abs(np.asarray(td_errors, dtype=np.float64).reshape(-1))
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if td.shape != indices.shape:
            raise ValueError(f"{indices.size} indices but {td.size} TD errors")
        if not np.isfinite(td).all():
            raise ValueError(f"non-finite TD errors: {td}")
        self.tree.update_many(indices, (td + self.eps) ** self.alpha)

    def nbytes(self) -> int:
        tree = self.tree
        return super().nbytes() + tree._sum.nbytes + tree._filled.nbytes

    def add(self, exp: Experience, priority: float | None = None) -> int:
        if priority is not None and not (math.isfinite(priority) and priority > 0):
            raise ValueError(f"priority must be finite and > 0, got {priority}")
        return super().add(exp, priority)

    def _set_priority(self, index: int, priority: float) -> None:
        self.tree.update(index, priority**self.alpha)

    def _on_write_many(self, indices: np.ndarray) -> None:
        # Each new one gets the maximum: writing the maximum never lowers it, so it is the
        # same for the whole list (max over stored p^alpha is (max p)^alpha: x^alpha is
        # monotone).
        value = self.tree.max_priority if len(self) else 1.0
        start = int(indices[0])
        for ring, _ in _ring_parts(start, len(indices), self.capacity):  # consecutive slots
            self.tree.update_range(ring.start, ring.stop, value)

    def _sample_indices(self, batch_size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        # Stratified: split [0, total) into B equal segments and draw once in each.
        total = self.tree.total
        bounds = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        indices, priorities = self.tree.find_many(bounds)  # [B] each
        probs = priorities / total  # [B] P(i)
        n, beta = len(self), self.beta(step)
        max_weight = (n * self.tree.min_priority / total) ** -beta  # the rarest item's weight
        weights = (n * probs) ** -beta / max_weight  # [B] in (0, 1]
        return indices, weights


def compile_kernels() -> None:
    """Compile (or load) the replay's kernels (nn/state_store.py, nn/sum_tree.py) with the
    argument types training passes, on a tiny buffer: adds that fill a pool past its first
    size (its table is rebuilt), a sample, overwrites that free states."""
    dim = 2 * 4 + 3  # own values at both ends, a group of two parts of 4 in between
    buf = PrioritizedReplayBuffer(4, 0.6, 0.4, 10, layout=StateLayout(dim, ((1, 4, 2),)))
    buf.store.parts[0] = RowPool(4, capacity=1)  # full at its second row: grows, relinks
    states = [np.full(dim, k, dtype=np.float32) for k in range(7)]
    buf.add_many([Experience(state=states[k], action=0, reward=0.0, next_state=states[k + 1])
                  for k in range(6)])
    buf.update_priorities(buf.sample(2).indices, np.ones(2))
