"""What a checkpoint costs per model: size, the time training waits while one is written, and
the time one takes to load at start.

    .venv/bin/python -m bench.checkpoints [--bars 200] [--repeat 7] [--interval-s 60]
                                          [--dir PATH]

The services (build_services, fresh weights, the default replay at its real resolution as
tests/test_live_training.py runs it) are driven by hand for ``--bars`` bars with training on,
so each model has trained (optimiser moments filled, as in a long run). Then per model,
``--repeat`` times each, timed with perf_counter:

- ``state``: ``learner.state_dict()`` under the learner's lock (predictions wait for this part);
- ``save``: ``Learning.save_checkpoint``: the state, ``torch.save`` to memory, CRC-32, a
  temporary file written, fsynced, renamed, the folder fsynced (the training job waits for
  all of it);
- ``load``: ``CheckpointManager.load_latest``: read, checksum, ``torch.load(weights_only=True)``.

``--dir`` puts the checkpoint folder on the disk to measure (default: a temporary folder,
often tmpfs, where fsync is nearly free). The last column is what writing one checkpoint
every ``--interval-s`` seconds of training costs the training job, in percent of its time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.clock import ManualClock
from core.config import load_config
from core.market.service import at_real_resolution
from core.services import build_services

ROOT = Path(__file__).resolve().parents[1]


def trained_services(runtime: Path, bars: int):
    cfg = load_config(ROOT / "config.yaml", {"market.source": "replay",
                                             "runtime_dir": str(runtime),
                                             "training.checkpoint_every": 1_000_000,
                                             "training.checkpoint_interval_s": 86_400},
                      environ={})
    services = build_services(at_real_resolution(cfg))
    src, training = services.market.source, services.training
    src.backfill()
    services.market.clock = ManualClock(src.start_ms)
    training.start()
    now = src.next_ts
    for _ in range(bars):
        now += src.base_ms
        src.emit_until(now)
        services.market.clock.set(now)
        training.process_closes()
        training.train_due()
    return services


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bars", type=int, default=200)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--interval-s", type=float, default=60.0)
    p.add_argument("--dir", type=Path, default=None, help="where the runtime folder goes")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        services = trained_services(Path(tmp), args.bars)
        training = services.training
        training.stop(save=False)
        learning, manager = training.learning, training.checkpoints
        print(f"checkpoints of models trained on {args.bars} bars, {args.repeat} runs each, "
              f"folder {'on ' + str(args.dir) if args.dir else 'in the temp dir'}")
        print(f"{'model':<6}{'steps':>7}{'size MB':>9}{'state ms':>10}{'save ms':>9}"
              f"{'max ms':>8}{'load ms':>9}{f'% of {args.interval_s:g} s':>11}")
        for name, learner in training.learners.items():

            def state(lrn=learner):
                with lrn.lock:
                    lrn.state_dict()

            state_ms = timed(state, args.repeat)
            save_ms = timed(lambda n=name: learning.save_checkpoint(n), args.repeat)
            load_ms = timed(lambda n=name: manager.load_latest(n), args.repeat)
            size = manager.latest_info(name)["bytes"] / 1e6
            save = statistics.median(save_ms)
            print(f"{name:<6}{learner.train_steps:>7}{size:>9.2f}"
                  f"{statistics.median(state_ms):>10.1f}{save:>9.1f}{max(save_ms):>8.1f}"
                  f"{statistics.median(load_ms):>9.1f}"
                  f"{100 * save / 1000 / args.interval_s:>10.3f}%")
        services.stop()


if __name__ == "__main__":
    main()
