"""What measuring each model's cost costs (core/live/costs.py): the hooks and the summaries.

    .venv/bin/python -m bench.cost_hooks [--calls 200000] [--cycles 3000]

- one hook: ``perf_counter()`` and ``thread_time()`` read before a piece of work and
  ``CycleMeter.add`` after it (the signal cycle runs one per model for the offer, one per model
  and close for encoding, one per model for the decision and one per resolved prediction for
  its experience), timed around an empty piece of work, ns per hook;
- one cycle's bookkeeping: ``ModelCosts.begin`` and ``end`` with three models' shares;
- one training step's: ``ModelCosts.train_step``;
- the read model's summaries with the windows full: ``--cycles`` cycles and training steps in
  the last minute (3,000: fifty cycles a wall second, more than the app's x600 replay makes),
  ``model`` for three models and ``cycle``, ms per status.

Printed per case: the fastest of 5 repeats (the others are this machine's noise).
"""

from __future__ import annotations

import argparse
import time
from time import perf_counter, thread_time

from core.live.costs import CycleMeter, ModelCosts

MODELS = ("cnn", "dqn", "cob")


def best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def hooks(calls: int) -> float:
    meter = CycleMeter()

    def run():
        for i in range(calls):
            wall, cpu = perf_counter(), thread_time()
            meter.add(MODELS[i % 3], wall, cpu)

    return best(run) / calls * 1e9


def cycle_end(cycles: int) -> float:
    costs = ModelCosts()

    def run():
        for _ in range(cycles):
            meter = costs.begin()
            for name in MODELS:
                wall, cpu = perf_counter(), thread_time()
                meter.add(name, wall, cpu, forward=True)
            costs.end(meter)

    return best(run) / cycles * 1e6


def train_steps(steps: int) -> float:
    costs = ModelCosts()

    def run():
        for i in range(steps):
            costs.train_step(MODELS[i % 3], perf_counter(), thread_time())

    return best(run) / steps * 1e6


def summaries(cycles: int) -> float:
    costs = ModelCosts()
    for i in range(cycles):
        meter = costs.begin()
        for name in MODELS:
            meter.add(name, perf_counter(), thread_time(), forward=True)
        costs.end(meter)
        costs.train_step(MODELS[i % 3], perf_counter(), thread_time())

    def run():
        for name in MODELS:
            costs.model(name)
        costs.cycle(0.05)

    return best(run) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--cycles", type=int, default=3_000)
    args = parser.parse_args()
    print(f"hook (read clocks + CycleMeter.add):   {hooks(args.calls):8.0f} ns per hook")
    print(f"cycle bookkeeping (begin + end, 3 models): {cycle_end(args.cycles):6.1f} µs per cycle")
    print(f"training step bookkeeping:             {train_steps(args.cycles):8.1f} µs per step")
    print(f"status summaries ({args.cycles:,} cycles in the window, 3 models): "
          f"{summaries(args.cycles):.2f} ms per status")


if __name__ == "__main__":
    main()
