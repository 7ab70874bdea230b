"""The compiled (numba) kernels of the per-candle path, made ready before the first cycle.

numba compiles a kernel the first time it is called with a given kind of arguments, then keeps
the machine code in ``__pycache__`` (``cache=True``). The first run on a machine therefore
spends ~10 s compiling, later runs ~0.5 s loading. ``warm_up`` calls every kernel of the
signal cycle once, with tiny inputs of the very types the cycle passes, so that this happens
when the services start (logged), not inside the first market second's job.

Which code is compiled, and why: the observation's scalars, window, consolidated-book vector,
the COB model's state and the NaN/inf/float16 checks of rows to replay run for every closed
candle on arrays of 10-300 values, where each numpy call costs more than the arithmetic it
does (see docs/PERFORMANCE.md, "What the signal cycle costs"); the DQN replay's state store
and sum tree run row by row over hash tables and trees, which numpy cannot vectorise.

A kernel calls only kernels of its own module: numba's cache checks the source file of the
kernel it loads, not of the kernels compiled into it, so a kernel calling another module's
kernel could keep running that one's old code after an edit.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)


def dispatchers() -> dict:
    """name -> numba dispatcher of every compiled kernel (``.signatures`` lists what each has
    been compiled for)."""
    from core import observations
    from core.features import windows
    from core.market import cob
    from nn import book_direction, float16, state_store, sum_tree

    return {
        "windows._normalised_window": windows._normalised_window,
        "observations._scalars": observations._scalars,
        "observations._vector": observations._vector,
        "cob.consolidate_sides": cob.consolidate_sides,
        "cob._bucket": cob._bucket,
        "book_direction._state": book_direction._state,
        "float16._within": float16._within,
        "float16._no_inf_nan": float16._no_inf_nan,
        "state_store._hash": state_store._hash,
        "state_store._same": state_store._same,
        "state_store._intern": state_store._intern,
        "state_store._unlink": state_store._unlink,
        "state_store._release": state_store._release,
        "state_store._relink": state_store._relink,
        "sum_tree._walk": sum_tree._walk,
    }


def warm_up() -> float:
    """Compile or load every kernel of the signal cycle; returns the seconds it took."""
    from core.features import normalised_window
    from core.market.books import OrderBook
    from core.market.cob import consolidate
    from core.observations import (
        book_vector,
        consolidated_vector,
        scalar_features,
    )
    from nn.book_direction import CLOSE, _state
    from nn.buffers import compile_kernels
    from nn.float16 import all_finite, finite32, storable, to_store

    t0 = time.perf_counter()
    n = 130
    close = 100.0 + np.sin(np.arange(n) / 5.0)
    candles = np.column_stack([np.arange(n) * 1000.0, close, close + 0.5, close - 0.5, close,
                               np.full(n, 2.0)])  # [n, 6] as the candle store hands them out
    scalar_features(candles)
    window = normalised_window(candles, 60)
    window.flags.writeable = False  # as the observation builder shares it (numba types a
    # read-only array apart from a writeable one)
    bids = np.array([[99.9, 1.0], [99.8, 2.0]])
    asks = np.array([[100.1, 1.0], [100.2, 2.0]])
    book = OrderBook("WARM/UP", 0, bids, asks)
    vector = book_vector(book)
    consolidated_vector("WARM/UP", {"a": book}, 1.0, 20)
    consolidated_vector("WARM/UP", {"a": book, "b": book}, 1.0, 20)
    consolidate("WARM/UP", {"a": (bids, asks)}, 0, validate=False)
    consolidate("WARM/UP", {"a": (bids, asks)}, 0)
    for close_row in (window[CLOSE], window[CLOSE].copy()):  # read-only and writeable
        _state(vector, True, close_row, 10, 0, 4)
    state = np.zeros(64, dtype=np.float32)
    finite32(state)  # the COB learner's check on its batch of states (same kernel)
    storable(state)
    all_finite(to_store(np.stack([state, state])))
    compile_kernels()  # the DQN replay's (state store, sum tree)
    seconds = time.perf_counter() - t0
    log.info("compiled kernels ready in %.1f s", seconds)
    return seconds
