"""A prediction-store writer for tests/reliability/test_store_crash.py to kill with SIGKILL.

``python -m tests.reliability.store_child PATH FIRST FLUSH_S [LAST]`` opens the store at PATH
and records batches of predictions from batch FIRST on, as the live cycle does: each batch is
CANDLES one-minute candles predicted by every model for every symbol, less those already
predicted (``store.unpredicted``, the cycle's skip), with the previous batch resolved in the
same ``record``. The store is flushed every FLUSH_S wall seconds, as the flush job does. It
prints one line per event, with the monotonic time: ``R k t`` (batch k recorded), ``B k t``
(a flush of everything up to batch k begins), ``F k t`` (that flush committed). With LAST it
flushes after batch LAST and exits; without, it runs until killed.
"""

from __future__ import annotations

import sys
import time

from core.predictions import NewPrediction, PredictionStore
from core.rewards import Resolution

T0 = 1_704_067_200_000  # 2024-01-01 UTC, ms
MIN = 60_000
CANDLES = 100
MODELS = ("cnn", "dqn", "cob")
SYMBOLS = ("ETH/USDT", "BTC/USDT")
OUTCOME = Resolution(100.0, 101.0, 99.0, 100.5, 10.0, 0.01, 0.1, 0.005, True, 0.05)


def batch(k: int) -> list[NewPrediction]:
    return [NewPrediction(model=m, model_step=k, symbol=s, timeframe="1m",
                          created_ts=T0 + c * MIN, target_ts=T0 + (c + 1) * MIN,
                          reference_price=100.0, action="UP" if m == "cob" else "BUY",
                          confidence=0.5)
            for c in range(k * CANDLES, (k + 1) * CANDLES) for m in MODELS for s in SYMBOLS]


def say(event: str, k: int) -> None:
    print(f"{event} {k} {time.monotonic():.6f}", flush=True)


def main() -> None:
    path, first, flush_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    last = int(sys.argv[4]) if len(sys.argv) > 4 else None
    store = PredictionStore(path)
    previous: list[int] = []
    flushed_at = time.monotonic()
    k = first
    while last is None or k <= last:
        resolved_ts = T0 + (k * CANDLES + 1) * MIN
        _, previous = store.record([(i, OUTCOME, resolved_ts) for i in previous],
                                   store.unpredicted(batch(k)))
        say("R", k)
        if time.monotonic() - flushed_at >= flush_s or k == last:
            say("B", k)
            store.flush()
            say("F", k)
            flushed_at = time.monotonic()
        k += 1
    store.close()


if __name__ == "__main__":
    main()
