"""Replay buffers: a uniform ring buffer and prioritised replay on a sum tree.

Both store :class:`nn.base.Experience` objects in a ring that overwrites the oldest and hand
out :class:`Batch` named tuples of numpy arrays, ready for ``torch.as_tensor``. The prioritised
buffer (Schaul et al. 2016, "Prioritized Experience Replay") overrides only the hooks that
write a new item's priority and pick the indices of a batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from numba import njit

from nn.base import Experience


class SumTree:
    """Binary tree over ``capacity`` leaves whose internal nodes hold sums.

    Leaves are padded to the next power of two so that they sit left to right in data-index
    order: ``find`` walks prefix sums in the order 0, 1, 2, ... Padding leaves hold 0 and are
    never returned. Root at node 1, children of node i at 2i and 2i+1, leaf j at ``size + j``.
    Each parent is recomputed from its two children on update (not patched by a delta), so the
    sums carry no drift however many updates they see.

    The smallest and largest priority (for importance weights and new experiences) are taken
    over the leaves when asked, once per training step: one vectorised pass over 65,536
    leaves costs less than keeping min and max trees up to date on every write.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.size = 1 << max(0, math.ceil(math.log2(capacity)))  # leaves incl. padding
        self._sum = np.zeros(2 * self.size, dtype=np.float64)
        self._filled = np.zeros(capacity, dtype=bool)  # leaves ever written
        self.filled = 0  # number of leaves that have ever been written

    @property
    def _leaves(self) -> np.ndarray:
        return self._sum[self.size: self.size + self.capacity]

    def update(self, index: int, priority: float) -> None:
        self.update_many([index], [priority])

    def update_many(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """``update`` for many leaves at once (a leaf listed twice keeps its last priority):
        the leaves are written, then each level's touched parents are recomputed from their
        children in one numpy step, so the sums match sequential updates exactly."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        p = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if idx.shape != p.shape:
            raise ValueError(f"{idx.size} indices but {p.size} priorities")
        if not idx.size:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"SumTree indices {idx.tolist()} outside [0, {self.capacity})")
        if not (np.all(np.isfinite(p)) and np.all(p >= 0)):
            raise ValueError(f"priority must be finite and >= 0, got {p.tolist()}")
        _, last = np.unique(idx[::-1], return_index=True)  # the last write of each leaf
        keep = idx.size - 1 - last
        leaves = idx[keep]
        self.filled += int(np.count_nonzero(~self._filled[leaves]))
        self._filled[leaves] = True
        nodes = self.size + leaves
        tree = self._sum
        tree[nodes] = p[keep]
        while nodes[0] > 1:  # every leaf is at the same depth: levels end at the root together
            nodes = nodes // 2  # a parent listed twice is recomputed twice, to the same value
            tree[nodes] = tree[2 * nodes] + tree[2 * nodes + 1]

    def update_range(self, start: int, stop: int, priority: float) -> None:
        """Leaves start..stop-1 all get ``priority``; parents are recomputed over the
        contiguous range of each level with slices (no index arrays)."""
        if not 0 <= start < stop <= self.capacity:
            raise IndexError(f"SumTree range [{start}, {stop}) outside [0, {self.capacity})")
        if not (math.isfinite(priority) and priority >= 0):
            raise ValueError(f"priority must be finite and >= 0, got {priority}")
        self.filled += int(np.count_nonzero(~self._filled[start:stop]))
        self._filled[start:stop] = True
        tree = self._sum
        lo, hi = self.size + start, self.size + stop  # half-open range of nodes
        tree[lo:hi] = priority
        while lo > 1:
            lo, hi = lo // 2, (hi + 1) // 2
            np.add(tree[2 * lo:2 * hi:2], tree[2 * lo + 1:2 * hi:2], out=tree[lo:hi])

    def find_many(self, prefix_sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``find`` for many prefix sums at once, walking all of them down level by level;
        returns the leaves [B] int64 and their priorities [B]."""
        if self.total <= 0:
            raise ValueError("SumTree.find on a tree whose total priority is 0")
        prefix = np.clip(np.asarray(prefix_sums, dtype=np.float64).reshape(-1), 0.0, self.total)
        node = np.ones(prefix.shape, dtype=np.int64)
        sums = self._sum
        for _ in range(self.size.bit_length() - 1):  # the depth of the leaves
            left = 2 * node
            left_sum = sums[left]
            go_right = (prefix >= left_sum) & (sums[left + 1] > 0)
            prefix = prefix - left_sum * go_right
            node = left + go_right
        return node - self.size, sums[node]

    def __getitem__(self, index: int) -> float:
        return float(self._sum[self.size + index])

    @property
    def total(self) -> float:
        return float(self._sum[1])

    @property
    def max_priority(self) -> float:
        """Largest priority over filled leaves; 0.0 while none is filled."""
        if not self.filled:
            return 0.0
        if self.filled == self.capacity:
            return float(self._leaves.max())
        return float(np.max(self._leaves, where=self._filled, initial=-np.inf))

    @property
    def min_priority(self) -> float:
        """Smallest priority over filled leaves; 0.0 while none is filled."""
        if not self.filled:
            return 0.0
        if self.filled == self.capacity:
            return float(self._leaves.min())
        return float(np.min(self._leaves, where=self._filled, initial=np.inf))

    def find(self, prefix_sum: float) -> tuple[int, float]:
        """The leaf j with sum(p[:j]) <= prefix_sum < sum(p[:j+1]), and its priority.

        ``prefix_sum`` is clipped into [0, total]; a subtree holding 0 is never entered, so the
        leaf returned always has a positive priority (while the total is positive).
        """
        leaves, priorities = self.find_many([prefix_sum])
        return int(leaves[0]), float(priorities[0])


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

    Experiences live in preallocated numpy columns (states and next states as float16 rows,
    actions, rewards, weights, timeframe codes), as Stable-Baselines3 keeps its buffers: no
    object per experience, nothing to allocate or free once the ring has gone round, so memory
    grows while the ring fills and stays put after (``np.zeros`` pages are only touched when
    first written). The state columns are created at the first add, when the state size is
    known; a later experience of another size is refused.

    Subclasses change how priorities are kept by overriding two hooks: ``_on_write_many``
    (slots were just (over)written) and ``_sample_indices`` (pick a batch's slots and their
    importance-sampling weights).
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self._next = 0  # slot the next add writes
        self._size = 0
        self._state_dim: int | None = None  # fixed by the first experience
        self._states: np.ndarray | None = None  # [capacity, D] STORE_DTYPE
        self._next_states: np.ndarray | None = None  # [capacity, D], zeros where done
        self._has_next = np.zeros(capacity, dtype=bool)
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

        A transition's next state is usually the very array that is the state of the next
        transition of its stream (the live service encodes one state per closed candle), so
        the arrays are converted once each, by identity, and gathered into both columns."""
        if not exps:
            return np.empty(0, dtype=np.int64)
        if len(exps) > self.capacity:  # only the newest fit; earlier ones would be overwritten
            exps = exps[len(exps) - self.capacity:]
        index: dict[int, int] = {}
        arrays: list = []
        for e in exps:
            for a in (e.state, e.next_state):
                if a is not None and id(a) not in index:
                    index[id(a)] = len(arrays)
                    arrays.append(a)
        rows = _stored_rows(arrays, "state")  # [U, D] float16
        dim = rows.shape[1]
        if self._state_dim is not None and dim != self._state_dim:
            raise ValueError(f"experience state has {dim} values; this buffer holds "
                             f"{self._state_dim}")
        for e in exps:
            if not math.isfinite(e.reward) or not math.isfinite(e.weight) or e.weight < 0:
                raise ValueError(f"experience reward {e.reward} / weight {e.weight} not usable")
        if self._states is None:
            self._state_dim = dim
            self._states = np.zeros((self.capacity, dim), dtype=STORE_DTYPE)
            self._next_states = np.zeros((self.capacity, dim), dtype=STORE_DTYPE)
        n = len(exps)
        has_next = np.array([e.next_state is not None for e in exps])
        state_rows = np.array([index[id(e.state)] for e in exps])
        next_rows = np.array([index[id(e.next_state)] if e.next_state is not None else 0
                              for e in exps])
        for ring, mine in _ring_parts(self._next, n, self.capacity):
            self._states[ring] = rows[state_rows[mine]]
            nxt = rows[next_rows[mine]]
            nxt[~has_next[mine]] = 0  # done: no next state (row 0 was a placeholder)
            self._next_states[ring] = nxt
            self._has_next[ring] = has_next[mine]
            part = exps[mine]
            self._actions[ring] = [e.action for e in part]
            self._rewards[ring] = [e.reward for e in part]
            self._weights[ring] = [e.weight for e in part]
            self._tf[ring] = [self._tf_code(e.timeframe) for e in part]
        slots = (self._next + np.arange(n)) % self.capacity
        self._on_write_many(slots)
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)
        return slots

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
        """Bytes of the rows in use (states, next states and the per-experience columns)."""
        row = (self._has_next.itemsize + self._actions.itemsize + self._rewards.itemsize
               + self._weights.itemsize + self._tf.itemsize)
        if self._states is not None:
            row += self._states.itemsize * self._state_dim * 2
        return self._size * row

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
        return Batch(
            states=_from_store(self._states[indices]),  # [B, D]
            actions=self._actions[indices],  # [B]
            rewards=self._rewards[indices],  # [B]
            next_states=_from_store(self._next_states[indices]),  # [B, D], zeros where done
            dones=(~self._has_next[indices]).astype(np.float32),  # [B]
            weights=(is_weights * self._weights[indices]).astype(np.float32),  # [B]
            indices=indices,
            timeframes=[self._tf_names[c] for c in self._tf[indices].tolist()],
        )


# States are kept as float16: half the memory of float32 (a full default DQN buffer, 50,000 x
# state and next state of 2,689 values, is 0.54 GB instead of 1.08 GB) and ~3 significant
# digits, plenty for normalised features; batches come out as float32.
STORE_DTYPE = np.float16


def _stored_rows(values: list, name: str) -> np.ndarray:
    """States as rows [N, D] of STORE_DTYPE; NaN, inf or values float16 cannot hold refused."""
    rows = np.stack([np.asarray(v).reshape(-1) for v in values])
    if rows.dtype != STORE_DTYPE:  # (the DQN's states already are)
        rows = to_store(rows.astype(np.float32, copy=False))
    # One check after the conversion: NaN stays NaN, and inf or anything beyond float16's
    # range has become inf.
    if not all_finite(rows):
        raise ValueError(f"experience {name} holds NaN, inf or values beyond "
                         f"+-{np.finfo(STORE_DTYPE).max:g} (stored as {np.dtype(STORE_DTYPE)})")
    return rows


def _ring_parts(start: int, n: int, capacity: int) -> list[tuple[slice, slice]]:
    """The ring slots start, start + 1, ... (n of them, n <= capacity) as at most two slices,
    each with the slice of the n items that goes there."""
    first = min(n, capacity - start)
    parts = [(slice(start, start + first), slice(0, first))]
    if first < n:
        parts.append((slice(0, n - first), slice(first, n)))
    return parts


FLOAT16_MAX = float(np.finfo(STORE_DTYPE).max)  # 65504
FLOAT32_MAX = float(np.finfo(np.float32).max)


def storable(values: np.ndarray) -> bool:
    """Whether float values will be finite once stored as STORE_DTYPE: none NaN or inf and
    none beyond +-65504 (a compiled scan, stopping at the first)."""
    return _within(values.reshape(-1), FLOAT16_MAX)  # a copy only if not contiguous


def finite32(values: np.ndarray) -> bool:
    """Whether a float32 array holds no NaN or inf: every |x| is at most the largest float32
    (the same compiled scan as ``storable``; one call where ``np.isfinite(x).all()`` is two
    and a temporary)."""
    return _within(values.reshape(-1), FLOAT32_MAX)


@njit(cache=True, nogil=True)
def _within(values: np.ndarray, limit: float) -> bool:  # pragma: no cover (compiled)
    for i in range(values.shape[0]):
        if not abs(values[i]) <= limit:  # NaN fails too
            return False
    return True


def all_finite(rows: np.ndarray) -> bool:
    """Whether a float16 array holds no NaN or inf: their exponent bits are all ones. Reading
    the bits (compiled, stopping at the first) is ~10x faster than np.isfinite, which
    converts every float16 first, and ~3x faster than the same test in numpy calls."""
    return _no_inf_nan(rows.reshape(-1).view(np.uint16))  # a copy only if not contiguous


@njit(cache=True, nogil=True)
def _no_inf_nan(bits: np.ndarray) -> bool:  # pragma: no cover (compiled)
    for i in range(bits.shape[0]):
        if bits[i] & 0x7C00 == 0x7C00:
            return False
    return True


def to_store(rows: np.ndarray) -> np.ndarray:
    # torch converts float32 <-> float16 with vector instructions, ~20x numpy's astype
    return torch.from_numpy(np.ascontiguousarray(rows)).to(torch.float16).numpy()


def _from_store(rows: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(rows)).float().numpy()


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay: P(i) = p_i^alpha / sum_k p_k^alpha.

    The tree stores p^alpha. New experiences get the current maximum priority (1.0 when the
    buffer is empty) so that each is replayed at least once soon; ``update_priorities`` sets
    p = |td| + eps after a training step. Importance-sampling weights
    w_i = (N * P(i))^-beta / max_j w_j correct the bias of non-uniform sampling; beta anneals
    linearly from ``beta_start`` to 1 over ``beta_steps`` training steps.
    """

    def __init__(self, capacity: int, alpha: float, beta_start: float, beta_steps: int,
                 eps: float = 1e-6, seed: int = 0):
        super().__init__(capacity, seed)
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
