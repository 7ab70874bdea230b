"""Prediction store (SQLite) throughput: inserts and resolution of pending predictions.

    .venv/bin/python -m bench.store_throughput [--n 10000] [--state-dim 256]

Each case uses a fresh core.predictions.PredictionStore file in a temp dir. The store writes
behind (records go to memory and a queue; ``flush`` writes the queue in one transaction), so
every timing below includes the flushes that put the rows in the file:

* insert, add_many of 6: what the live loop records per closed timeframe (3 models x 2
  symbols, e.g. a 1h close of the default replay), with a flush every 8 batches (about as
  ``app.py evaluate`` batches them: a flush every 10 bars; the app flushes every 0.5 wall s,
  which at real timeframes is after nearly every batch); and single add() with a flush after
  each (one transaction per prediction, the worst case).
* resolve per candle: for every candle (symbol, timeframe, target_ts) holding pending
  predictions, store.pending() (from the in-memory index, states included) then one
  resolve_many() of them, a flush every 8 candles: what the live cycle (core/live/cycle.py) does when candles close. The Resolution
  objects are built with core.rewards.resolve beforehand, outside the timing.
* resolve_many of all n pending predictions in one call, then one flush.
* status reads (recent(limit=50), counts(), accuracy()) on the file of n resolved
  predictions, each right after an add_many of 6 that no flush has written yet: what the
  status snapshot reads while the cycle records. Only the reads are timed.

The synthetic rows are labelled 1s, one candle a market second apart: the store's costs do not
depend on the timeframe's name or length, so the figures hold for the real timeframes the
models now predict (1m, 1h, 1d) as well.

The last line is machine readable: ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.predictions import NewPrediction, PredictionStore
from core.rewards import resolve

MODELS = ("cnn", "dqn", "cob")
SYMBOLS = ("ETH/USDT", "BTC/USDT")
T0 = 1_700_000_000_000
ACTUAL = (100.0, 101.0, 99.5, 100.5, 12.0)


def predictions(n: int, state_dim: int) -> list[NewPrediction]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        candle, k = divmod(i, len(MODELS) * len(SYMBOLS))
        model = MODELS[k % len(MODELS)]
        symbol = SYMBOLS[k // len(MODELS)]
        out.append(NewPrediction(
            model=model, model_step=i, symbol=symbol, timeframe="1s",
            created_ts=T0 + candle * 1000, target_ts=T0 + (candle + 1) * 1000,
            reference_price=100.0, action="UP" if model == "cob" else "BUY",
            confidence=0.6, predicted_ohlcv=(100.0, 100.8, 99.7, 100.4, 11.0),
            state=rng.standard_normal(state_dim).astype(np.float32),
        ))
    return out


FLUSH_EVERY = 8  # batches (candles) between flushes in the live-like cases


def insert(store: PredictionStore, preds: list[NewPrediction], batch: int) -> float:
    """Seconds to record ``preds`` in batches and write them: a flush after every batch when
    ``batch`` is 1, else every FLUSH_EVERY batches, and one at the end."""
    t0 = time.perf_counter()
    if batch == 1:
        for p in preds:
            store.add(p)
            store.flush()
    else:
        for k, i in enumerate(range(0, len(preds), batch)):
            store.add_many(preds[i:i + batch])
            if k % FLUSH_EVERY == FLUSH_EVERY - 1:
                store.flush()
        store.flush()
    return time.perf_counter() - t0


READ_ROUNDS = 200
SHIFT_MS = 10**12


def reads(store: PredictionStore, preds: list[NewPrediction]) -> float:
    """Seconds per status read (recent(limit=50), counts(), accuracy()), each right after
    recording a batch of 6 that is not flushed yet; a flush every FLUSH_EVERY rounds."""
    # Later candles than the ones stored already (a model predicts a candle once).
    later = [replace(p, created_ts=p.created_ts + SHIFT_MS, target_ts=p.target_ts + SHIFT_MS)
             for p in preds[:6 * READ_ROUNDS]]
    wall = 0.0
    for k in range(READ_ROUNDS):
        store.add_many(later[6 * k:6 * k + 6])
        t0 = time.perf_counter()
        store.recent(limit=50)
        store.counts()
        store.accuracy()
        wall += time.perf_counter() - t0
        if k % FLUSH_EVERY == FLUSH_EVERY - 1:
            store.flush()
    return wall / READ_ROUNDS


def row(label: str, wall: float, count: int) -> None:
    print(f"{label:<40}{wall:>9.3f}{count / wall:>11,.0f}{wall / count * 1e6:>10.1f}")


def resolve_per_candle(store: PredictionStore,
                       preds: list[NewPrediction]) -> tuple[float, float, int]:
    """Seconds in store.pending() and in resolve_many() + flushes, resolving every candle's
    pending predictions in time order (a flush every FLUSH_EVERY candles and at the end), and
    how many candles there were."""
    keys = sorted({(p.symbol, p.target_ts) for p in preds}, key=lambda k: (k[1], k[0]))
    t_pending = t_resolve = 0.0
    resolved = 0
    for k, (symbol, ts) in enumerate(keys):
        t0 = time.perf_counter()
        pending = store.pending(symbol, "1s", ts)
        t1 = time.perf_counter()
        items = [(q.id, resolve(q.action, q.confidence, q.reference_price,
                                q.predicted_ohlcv, ACTUAL)) for q in pending]
        t2 = time.perf_counter()
        resolved += store.resolve_many(items, ts + 1000)
        if k % FLUSH_EVERY == FLUSH_EVERY - 1 or k == len(keys) - 1:
            store.flush()
        t3 = time.perf_counter()
        t_pending += t1 - t0
        t_resolve += t3 - t2
    assert resolved == len(preds), resolved
    return t_pending, t_resolve, len(keys)


def live_like(path: Path, preds: list[NewPrediction], res: dict[str, float]) -> None:
    """Batches of 6 in, per-candle resolution, then status reads between records."""
    n = len(preds)
    with PredictionStore(path) as store:
        wall = insert(store, preds, 6)
        row(f"insert, add_many of 6, flush every {FLUSH_EVERY}", wall, n)
        res["insert_batch6_per_s"] = n / wall
        t_pending, t_resolve, candles = resolve_per_candle(store, preds)
        row(f"resolve per candle ({candles:,} candles)", t_pending + t_resolve, n)
        row("  store.pending()", t_pending, n)
        row("  store.resolve_many() + flushes", t_resolve, n)
        res["resolve_per_candle_s"] = t_pending + t_resolve
        res["pending_s"] = t_pending
        read = reads(store, preds)
        row("status read after a record", read * READ_ROUNDS, READ_ROUNDS)
        res["status_read_us"] = read * 1e6


def worst_case(path: Path, preds: list[NewPrediction], res: dict[str, float]) -> None:
    """One transaction per prediction in, then every one resolved in one call."""
    n = len(preds)
    with PredictionStore(path) as store:
        wall = insert(store, preds, 1)
        row("insert, single add() + flush each", wall, n)
        res["insert_single_per_s"] = n / wall
        ids = [q.id for q in store.pending_before(T0 + 10**9)]
        r = resolve("BUY", 0.6, 100.0, None, ACTUAL)
        items = [(i, r) for i in ids]
        t0 = time.perf_counter()
        done = store.resolve_many(items, T0 + 10**9)
        store.flush()
        wall = time.perf_counter() - t0
        assert done == n, done
        row(f"resolve_many of {n:,} in one call + flush", wall, n)
        res["resolve_many_all_s"] = wall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000, help="predictions per case")
    p.add_argument("--state-dim", type=int, default=256,
                   help="float32 values in each stored state")
    args = p.parse_args()
    n = args.n
    preds = predictions(n, args.state_dim)
    res: dict[str, float] = {}
    print(f"prediction store (SQLite, fresh file per case), {n:,} predictions, "
          f"state {args.state_dim} x float32")
    print(f"{'case':<40}{'wall s':>9}{'per s':>11}{'us each':>10}")
    with tempfile.TemporaryDirectory(prefix="tickwise-store-") as tmp:
        live_like(Path(tmp) / "a.sqlite", preds, res)
        worst_case(Path(tmp) / "b.sqlite", preds, res)
        size = (Path(tmp) / "a.sqlite").stat().st_size
    print(f"store file after {n:,} resolved (states never written: kept in memory while "
          f"pending): {size / 2**20:.1f} MB")
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in res.items()))


if __name__ == "__main__":
    main()
