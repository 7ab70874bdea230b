"""A model state (the array a prediction was made from) as bytes, for the store's ``state``
column: dtype and shape kept, no pickle."""

from __future__ import annotations

import io

import numpy as np

_STATE_MAGIC = b"TWS1"  # then: dtype str (numpy's, e.g. "<f4") + NUL, ndim, shape (int64 LE), data
_NPY_MAGIC = b"\x93NUMPY"  # blobs written before TWS1


def encode_state(state: np.ndarray | None) -> bytes | None:
    """A state array as bytes: dtype and shape kept, no pickle. A fixed little header and the
    raw data, so decoding is one ``np.frombuffer`` (``np.load``'s header parsing cost ~80 us a
    state, three times per closed candle)."""
    if state is None:
        return None
    arr = np.asarray(state)
    if arr.dtype.hasobject:
        raise ValueError("a state must be a numeric array")
    return b"".join((_STATE_MAGIC, arr.dtype.str.encode() + b"\0", bytes([arr.ndim]),
                     np.asarray(arr.shape, dtype="<i8").tobytes(), arr.tobytes()))


def decode_state(blob: bytes | None) -> np.ndarray | None:
    if blob is None:
        return None
    if blob.startswith(_NPY_MAGIC):  # a store written by an older Tickwise
        return np.load(io.BytesIO(blob), allow_pickle=False)
    if not blob.startswith(_STATE_MAGIC):
        raise ValueError(f"not a stored state (starts {bytes(blob[:8])!r})")
    end = blob.index(b"\0", len(_STATE_MAGIC))
    dtype = np.dtype(blob[len(_STATE_MAGIC):end].decode())
    ndim = blob[end + 1]
    shape = tuple(np.frombuffer(blob, dtype="<i8", count=ndim, offset=end + 2).tolist())
    return np.frombuffer(blob, dtype=dtype, offset=end + 2 + 8 * ndim).reshape(shape)
