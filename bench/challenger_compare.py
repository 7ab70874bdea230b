"""What the champion/challenger rule costs (core/scoring/paired.py): one paired comparison.

    .venv/bin/python -m bench.challenger_compare [--resamples 2000]

Per number of pairs n: the pairing of two models' resolved rows (``pair_rows``, a pandas
merge on symbol, timeframe and target candle) and the rule itself (``compare``: the paired
moving-block bootstrap of both means and their difference), ms, the fastest of 5 repeats.
The live loop compares at most once per 5 % more resolved predictions of the challenger, over
the newest max(1000, 2 x training.promote_min_resolved) pairs (core/live/challengers.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from core.scoring.paired import compare, pair_rows


def best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def rows(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"symbol": rng.choice(["ETH/USDT", "BTC/USDT"], n),
                         "timeframe": "1m", "target_ts": np.arange(n) * 60_000,
                         "action_correct": rng.random(n) < 0.5,
                         "price_error": rng.random(n) * 0.01})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'pairs':>8} {'pair_rows ms':>13} {'compare ms':>11}")
    for n in (200, 1000, 2000, 10_000, 100_000):
        champ, chal = rows(n, rng), rows(n, rng)
        a, b = pair_rows(champ, chal, "close_error")
        pairing = best(lambda c=champ, d=chal: pair_rows(c, d, "close_error"))
        rule = best(lambda a=a, b=b: compare(a, b, min_rows=200, resamples=args.resamples))
        print(f"{n:>8,} {pairing:>13.2f} {rule:>11.2f}")


if __name__ == "__main__":
    main()
