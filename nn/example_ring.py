"""A fixed-capacity ring of supervised examples (the CNN's and the order-book model's replay)."""

from __future__ import annotations

import numpy as np


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
