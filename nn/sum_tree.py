"""The sum tree behind prioritised replay (nn/buffers.py): prefix sums over priorities, so
that drawing an experience in proportion to its priority takes one walk down the tree."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _walk(sums: np.ndarray, prefix: np.ndarray, depth: int) -> np.ndarray:  # pragma: no cover
    """The node [B] each prefix sum ends at: from the root, right when the prefix is at least
    the left subtree's sum (less it) and the right one holds a priority, else left."""
    nodes = np.empty(prefix.shape[0], dtype=np.int64)
    for i in range(prefix.shape[0]):
        p, node = prefix[i], 1
        for _ in range(depth):
            left = 2 * node
            if p >= sums[left] and sums[left + 1] > 0:
                p -= sums[left]
                node = left + 1
            else:
                node = left
        nodes[i] = node
    return nodes


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
        """``find`` for many prefix sums at once (a compiled walk: ~60 numpy calls of a few
        values each cost ~100 us a batch); returns the leaves [B] int64 and their priorities
        [B]."""
        if self.total <= 0:
            raise ValueError("SumTree.find on a tree whose total priority is 0")
        prefix = np.clip(np.asarray(prefix_sums, dtype=np.float64).reshape(-1), 0.0, self.total)
        nodes = _walk(self._sum, prefix, self.size.bit_length() - 1)  # depth of the leaves
        return nodes - self.size, self._sum[nodes]

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
