"""Replay states without copies: each distinct state, and each distinct part of one (a candle
window, a hidden layer), is stored once, and experiences hold indices.

Stable-Baselines3's ``optimize_memory_usage`` keeps one observation per transition and reads
the next one from the slot after it (one environment, transitions in order). The live loop's
transitions are interleaved (symbols, timeframes, batches) but share in the same way, and
more: the next state of a transition is the very state of the next one of its stream, and a
timeframe's candle window is the same array in every state until that timeframe closes a
candle (core/observations.py), in the reference symbol's states as well. So states are stored
by content:

- :class:`RowPool`: distinct rows of uint16 words, each stored once, counted by reference and
  found by content (an open-addressing hash table over numpy arrays, compiled kernels: no
  Python object per row, so nothing is allocated once the pool has stopped growing);
- :class:`StateLayout`: where a state's shared parts lie (groups of equal-width parts);
- :class:`StateStore`: one pool per group of parts, and one of states (a state is its own
  values plus the ids of its parts); a state is freed with its last reference, a part with
  the last state holding it.

Rows are compared bit for bit (float16 bits), so a state read back is exactly the one stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

WORD = 4  # uint16 values per uint64 word: rows are compared and hashed a word at a time
_PRIME = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_BASIS = np.uint64(0xCBF29CE484222325)


@njit(cache=True, nogil=True)
def _hash(row: np.ndarray) -> np.uint64:  # pragma: no cover (compiled)
    """64-bit hash of a row of words: four independent lanes, so that their multiplies
    overlap, then mixed (splitmix64's finaliser)."""
    a = b = c = d = _BASIS
    n = row.shape[0]
    for w in range(0, n - 3, 4):
        a = _step(a, row[w])
        b = _step(b, row[w + 1])
        c = _step(c, row[w + 2])
        d = _step(d, row[w + 3])
    for w in range(n - n % 4, n):
        a = _step(a, row[w])
    h = _step(_step(_step(a, b), c), d)
    h = (h ^ (h >> np.uint64(29))) * _MIX
    return h ^ (h >> np.uint64(32))


@njit(cache=True, nogil=True, inline="always")
def _step(h: np.uint64, word: np.uint64) -> np.uint64:  # pragma: no cover (compiled)
    h = (h ^ word) * _PRIME
    return h ^ (h >> np.uint64(32))


@njit(cache=True, nogil=True)
def _same(a: np.ndarray, b: np.ndarray) -> bool:  # pragma: no cover (compiled)
    for w in range(a.shape[0]):
        if a[w] != b[w]:
            return False
    return True


@njit(cache=True, nogil=True)
def _intern(words, start, ids, new, rows, refs, hashes, free, counts,
            table) -> int:  # pragma: no cover (compiled)
    """ids[i] of the row equal to words[i] (one more reference), stored if new (``new[i]``),
    from i = start on; returns the first i it had no room for (words.shape[0]: all done).
    counts: [ids on the free stack, ids ever used]."""
    mask = table.shape[0] - 1
    for i in range(start, words.shape[0]):
        h = _hash(words[i])
        slot = np.int64(h & np.uint64(mask))
        r = np.int64(table[slot])
        while r >= 0:
            if hashes[r] == h and _same(rows[r], words[i]):
                break
            slot = (slot + 1) & mask
            r = np.int64(table[slot])
        if r >= 0:
            refs[r] += 1
            ids[i], new[i] = r, False
            continue
        if counts[0] > 0:
            counts[0] -= 1
            r = np.int64(free[counts[0]])
        elif counts[1] < rows.shape[0]:
            r = counts[1]
            counts[1] += 1
        else:
            return i
        rows[r, :] = words[i, :]
        hashes[r], refs[r], table[slot] = h, 1, r
        ids[i], new[i] = r, True
    return words.shape[0]


@njit(cache=True, nogil=True)
def _unlink(table, hashes, r) -> None:  # pragma: no cover (compiled)
    """Take row r out of the table, shifting back the entries probed past it (no tombstones:
    the table never fills up with deleted slots)."""
    mask = table.shape[0] - 1
    i = np.int64(hashes[r] & np.uint64(mask))
    while table[i] != r:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        e = table[j]
        if e < 0:
            break
        home = np.int64(hashes[e] & np.uint64(mask))
        # e may fill the hole at i unless its home slot lies cyclically in (i, j]
        if (home <= i or home > j) if j > i else (home <= i and home > j):
            table[i] = e
            i = j
    table[i] = -1


@njit(cache=True, nogil=True)
def _release(ids, refs, hashes, free, counts, table, freed) -> int:  # pragma: no cover
    """One reference fewer for each of ids; rows left with none are freed (their ids in
    freed[:n], n returned); -1 - i if ids[i] held no reference (nothing after it done)."""
    n = 0
    for i in range(ids.shape[0]):
        r = ids[i]
        if r < 0 or r >= counts[1] or refs[r] <= 0:
            return -1 - i
        refs[r] -= 1
        if refs[r] == 0:
            _unlink(table, hashes, r)
            free[counts[0]] = r
            counts[0] += 1
            freed[n] = r
            n += 1
    return n


@njit(cache=True, nogil=True)
def _relink(table, hashes, refs, used) -> None:  # pragma: no cover (compiled)
    mask = table.shape[0] - 1
    for r in range(used):
        if refs[r] > 0:
            slot = np.int64(hashes[r] & np.uint64(mask))
            while table[slot] >= 0:
                slot = (slot + 1) & mask
            table[slot] = r


class RowPool:
    """Distinct rows of ``width`` uint16 values, each stored once, counted by reference.

    ``intern`` returns for each row the id of the equal one (bit for bit), storing those not
    held yet, and takes a reference on each; ``release`` drops references and frees the rows
    left with none, whose ids are reused. The hash table has twice as many slots as the pool
    has rows (linear probing stays short); the pool doubles when full, its rows copied once.
    """

    def __init__(self, width: int, capacity: int = 256):
        if width < 1 or capacity < 1:
            raise ValueError(f"RowPool needs width and capacity >= 1, got {width}, {capacity}")
        self.width = width
        self.words = -(-width // WORD)
        self._counts = np.zeros(2, dtype=np.int64)  # [ids on the free stack, ids ever used]
        self._allocate(1 << (capacity - 1).bit_length())

    def _allocate(self, capacity: int) -> None:
        self.rows = np.zeros((capacity, self.words), dtype=np.uint64)
        self.refs = np.zeros(capacity, dtype=np.int32)
        self.hashes = np.zeros(capacity, dtype=np.uint64)
        self._free = np.zeros(capacity, dtype=np.int32)
        self._table = np.full(2 * capacity, -1, dtype=np.int32)

    def _grow(self) -> None:
        """Twice the rows; called when every id is in use (the free stack is empty)."""
        used = int(self._counts[1])
        rows, refs, hashes = self.rows, self.refs, self.hashes
        self._allocate(2 * len(rows))
        self.rows[:used], self.refs[:used], self.hashes[:used] = rows, refs, hashes
        _relink(self._table, self.hashes, self.refs, used)

    def __len__(self) -> int:
        return int(self._counts[1] - self._counts[0])

    def intern(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [N, width] uint16 -> (ids [N] int32, whether each was stored now [N] bool)."""
        words = self._words(rows)
        ids, new = np.empty(len(words), dtype=np.int32), np.empty(len(words), dtype=bool)
        done = 0
        while done < len(words):
            done = _intern(words, done, ids, new, self.rows, self.refs, self.hashes,
                           self._free, self._counts, self._table)
            if done < len(words):
                self._grow()
        return ids, new

    def acquire(self, ids: np.ndarray, counts: np.ndarray) -> None:
        """``counts`` more references on rows ``ids`` (already held)."""
        np.add.at(self.refs, ids, np.asarray(counts, dtype=np.int32))

    def release(self, ids: np.ndarray) -> np.ndarray:
        """One reference fewer on each of ``ids``; the ids of the rows freed."""
        ids = np.ascontiguousarray(ids, dtype=np.int32).reshape(-1)
        freed = np.empty(len(ids), dtype=np.int32)
        n = _release(ids, self.refs, self.hashes, self._free, self._counts, self._table, freed)
        if n < 0:
            raise ValueError(f"row {ids[-1 - n]} released but not held")
        return freed[:n]

    def get(self, ids: np.ndarray) -> np.ndarray:
        """The rows ``ids`` as uint16 [N, width] (a copy)."""
        return np.take(self.rows, ids, axis=0).view(np.uint16)[:, :self.width]

    def _words(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.uint16)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows of shape {rows.shape}; this pool holds rows of {self.width}")
        if self.width == self.words * WORD:
            return np.ascontiguousarray(rows).view(np.uint64)
        padded = np.zeros((len(rows), self.words * WORD), dtype=np.uint16)
        padded[:, :self.width] = rows
        return padded.view(np.uint64)

    def row_bytes(self) -> int:
        """A row and its bookkeeping: the words, reference count 4, hash 8, free-stack slot
        4 and two hash-table slots 8."""
        return self.words * 8 + 24

    def nbytes(self) -> int:
        """Bytes of the rows in use, bookkeeping included."""
        return len(self) * self.row_bytes()


@dataclass(frozen=True)
class StateLayout:
    """Where the shared parts of a state [dim] lie: ``groups`` of (start, width, count),
    ``count`` parts of ``width`` values back to back from column ``start``, in column order.
    The columns outside every group are the state's own."""

    dim: int
    groups: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self):
        end = 0
        for start, width, count in self.groups:
            if start < end or width < 1 or count < 1:
                raise ValueError(f"state layout groups {self.groups} overlap or are empty")
            end = start + width * count
        if self.dim < 1 or end > self.dim:
            raise ValueError(f"state layout groups {self.groups} do not fit {self.dim} values")

    @property
    def own(self) -> tuple[tuple[int, int], ...]:
        """The own columns as (start, stop) slices."""
        spans, at = [], 0
        for start, width, count in self.groups:
            if start > at:
                spans.append((at, start))
            at = start + width * count
        return tuple(spans + ([(at, self.dim)] if at < self.dim else []))


class StateStore:
    """States [dim] (float16) by content, as their own values and the ids of their parts
    (see the module doc); ``intern`` takes a reference on each, ``release`` drops one."""

    def __init__(self, layout: StateLayout):
        self.layout = layout
        self._own = layout.own
        self.n_own = sum(stop - start for start, stop in self._own)
        self.n_ids = sum(count for _, _, count in layout.groups)
        self.parts = [RowPool(width) for _, width, _ in layout.groups]
        self.states = RowPool(self.n_own + 2 * self.n_ids)  # own bits, then uint32 part ids

    def __len__(self) -> int:
        return len(self.states)

    def intern(self, rows: np.ndarray) -> np.ndarray:
        """rows [N, dim] float16 -> state ids [N] int32, one reference taken on each."""
        bits = rows.view(np.uint16)
        n = len(bits)
        ids = []
        for pool, (start, width, count) in zip(self.parts, self.layout.groups, strict=True):
            got, _ = pool.intern(bits[:, start:start + width * count].reshape(n * count, width))
            ids.append(got.reshape(n, count))
        part_ids = np.concatenate(ids, axis=1) if ids else np.empty((n, 0), dtype=np.int32)
        halves = np.stack([part_ids & 0xFFFF, part_ids >> 16], axis=2).reshape(n, -1)
        state_rows = np.concatenate([bits[:, a:b] for a, b in self._own]
                                    + [halves.astype(np.uint16)], axis=1)
        sids, new = self.states.intern(state_rows)
        if not new.all():  # a state already held keeps its own references on its parts
            self._release_parts(part_ids[~new])
        return sids

    def acquire(self, sids: np.ndarray, counts: np.ndarray) -> None:
        self.states.acquire(sids, counts)

    def release(self, sids: np.ndarray) -> None:
        """One reference fewer on each state; a state freed frees its hold on its parts."""
        freed = self.states.release(sids)
        if len(freed):
            self._release_parts(self._part_ids(self.states.get(freed)))

    def gather(self, sids: np.ndarray) -> np.ndarray:
        """The states ``sids`` [N] as float16 rows [N, dim], exactly as stored."""
        rows = self.states.get(sids)
        n = len(rows)
        out = np.empty((n, self.layout.dim), dtype=np.uint16)
        at = 0
        for start, stop in self._own:
            out[:, start:stop] = rows[:, at:at + stop - start]
            at += stop - start
        part_ids = self._part_ids(rows)
        k = 0
        for pool, (start, width, count) in zip(self.parts, self.layout.groups, strict=True):
            got = pool.get(part_ids[:, k:k + count].reshape(-1))  # [N * count, width]
            out[:, start:start + width * count] = got.reshape(n, width * count)
            k += count
        return out.view(np.float16)

    def nbytes(self) -> int:
        return self.states.nbytes() + sum(pool.nbytes() for pool in self.parts)

    def state_bytes(self, new_parts: tuple[int, ...] = ()) -> int:
        """One more state row, with ``new_parts[g]`` new parts of each group g, in bytes."""
        return self.states.row_bytes() + sum(
            n * pool.row_bytes() for n, pool in zip(new_parts, self.parts, strict=True))

    def _part_ids(self, state_rows: np.ndarray) -> np.ndarray:
        """The part ids [N, n_ids] int32 of state rows (uint16 pairs: low, high)."""
        halves = state_rows[:, self.n_own:self.n_own + 2 * self.n_ids].astype(np.int32)
        return halves[:, 0::2] | (halves[:, 1::2] << 16)

    def _release_parts(self, part_ids: np.ndarray) -> None:
        k = 0
        for pool, (_, _, count) in zip(self.parts, self.layout.groups, strict=True):
            pool.release(part_ids[:, k:k + count].reshape(-1))
            k += count
