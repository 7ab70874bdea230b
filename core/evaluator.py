"""The evaluate command: a recording through the exact live loop, as fast as the work allows.

``run_evaluation`` builds the same services as the app (core/services.py) on the replay
source with a manual clock, at the recording's real resolution (``at_real_resolution``: the
store streams the recording's own bars, the models predict the real timeframes, as they do
in the app), then advances market time one real bar at a time and runs the scheduler's jobs in
the order the scheduler would (close processing and training every step, signals and
prediction-store writes every ``scheduler.signal_interval_s`` or every step, expiry every
minute or every step): no sleeping, no wall clock. Models start from fresh weights (a run
measures learning from nothing). Afterwards the resolved predictions are scored
(core/scoring) on the part of the run after the split (tuning looks only before it) and
written to ``report.json`` and ``report.html`` (plotly, offline: the script is embedded).
"""

from __future__ import annotations

import gc
import logging
import resource
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from core import scoring, verdicts
from core.config import Config
from core.kernels import warm_up
from core.live.jobs import Job
from core.market.service import at_real_resolution, interpolated_timeframes
from core.report import calibration, learning_curves, write_report
from core.services import build_services, start_backend

log = logging.getLogger(__name__)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


PUBLISH_LAG_S = 20  # market seconds between taking a batch and predicting with its weights
# ... and at least this many steps of the loop: stepping real bars, the training thread gets
# a few bars' time to finish a step (a CNN step of 32 windows is ~70 ms, a bar of the loop
# ~6 ms) before its weights are due; one bar would make the loop wait for every step, and
# the two cores would take turns instead of working together. 8 bars is at most one batch
# period (1h batches of 8 from two symbols = 4 hours = 8 bars of 30m; 1m batches of 16).
PUBLISH_LAG_MIN_STEPS = 16
FLUSH_MIN_STEPS = 10


class TrainingPipeline:
    """Training on one worker thread; weights installed for prediction ``lag`` steps after
    their batch was taken (see run_loop). Learners publish only through it while it runs."""

    def __init__(self, live, lag: int):
        self.live = live
        self.learning = live.learning
        self.learners = live.learners
        self.lag = lag
        self.queue: deque = deque()  # (step at which to install, future of snapshots)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="evaluate-train")
        self._deferred = self.learning.publishing_deferred()

    def __enter__(self) -> TrainingPipeline:
        self._deferred.__enter__()
        return self

    def _train(self, due) -> dict:
        self.learning.train_batches(due)
        return {name: self.learning.snapshot(name) for name in {name for name, _, _ in due}}

    def submit(self, step: int) -> None:
        due = self.live.take_due()
        if due:
            self.queue.append((step + self.lag, self.pool.submit(self._train, due)))

    def install_due(self, step: int | None = None) -> None:
        """Install every snapshot due by ``step`` (all of them when None), oldest first."""
        while self.queue and (step is None or self.queue[0][0] <= step):
            for name, snapshot in self.queue.popleft()[1].result().items():  # raises if failed
                self.learners[name].install(snapshot)

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.install_due()
        finally:
            self.pool.shutdown(wait=True)
            self._deferred.__exit__(exc_type, *exc)


def cadence(jobs: tuple[Job, ...], base_ms: int, steps: int) -> dict[str, int]:
    """Every how many steps of ``base_ms`` each job of the job table runs, by market time
    (at least every step); the store's writes, a wall-time job in the app, run with the
    signals, at most every FLUSH_MIN_STEPS steps (a bar a step: one transaction per bar cost
    ~0.8 ms of a ~6 ms step); expiry at most every FLUSH_MIN_STEPS bars of a minute or more
    (it only matters across gaps). Besides the jobs: RSS every 10 market minutes (~200
    samples at most) and the publish lag."""
    every = {job.name: max(1, round(job.market_s * 1000 / base_ms))
             for job in jobs if job.market_s is not None}
    every["flush"] = max(every["signal"], FLUSH_MIN_STEPS)
    if base_ms >= 60_000:
        every["expire"] = max(every["expire"], FLUSH_MIN_STEPS)
    every["rss"] = max(1, round(600_000 / base_ms), steps // 200)
    every["lag"] = max(PUBLISH_LAG_MIN_STEPS, round(PUBLISH_LAG_S * 1000 / base_ms))
    return every


def run_loop(services, start_ms: int, end_ms: int, progress: bool = True) -> dict:
    """Drive the live loop from start_ms to end_ms (market time); returns run statistics.

    Each step of one bar: the replay emits up to the step's market time, then the jobs of the
    job table (core/live/jobs.py) that are due run in its order, with that market time passed
    in: closes are processed (resolve, predict, store), and every batch that is due is taken.
    Training runs on a second thread, as in the app, overlapped with the steps that follow: a
    batch taken at step i is trained there (batches in order), a snapshot of the weights is
    taken right after its step, and that snapshot is installed for prediction at step i +
    ``lag`` (waiting for it if training is behind). Which weights predict which candle
    therefore depends on market time only, never on thread timing: a run is reproducible
    (the no-look-ahead test relies on it). The app installs each step's weights as soon as
    it is done. How often each job runs: ``cadence``.
    """
    live, src = services.training, services.market.source
    base_ms = services.market.store.tf_ms[services.market.store.base_tf]
    steps = max(0, (end_ms - start_ms) // base_ms)
    jobs = live.jobs
    every = cadence(jobs, base_ms, steps)
    bar = _progress_bar(progress, steps, services.market.store.base_tf)
    rss = [(start_ms, rss_mb())]
    started = time.perf_counter()
    now = start_ms
    with TrainingPipeline(live, every["lag"]) as pipeline:
        runners = {job.name: _runner(live, job, pipeline) for job in jobs}
        for i in range(steps):
            now += base_ms
            src.emit_until(now)
            pipeline.install_due(i)
            for name, run in runners.items():
                if i % every[name] == every[name] - 1:
                    run(i, now)
            if i % every["rss"] == every["rss"] - 1:
                rss.append((now, rss_mb()))
            if bar is not None:
                bar.update(1)
            if getattr(src, "ended", False):
                break
    if bar is not None:
        bar.close()
    return {"wall_s": time.perf_counter() - started, "market_s": (now - start_ms) / 1000,
            "peak_rss_mb": max(max(mb for _, mb in rss), rss_mb()), "final_rss_mb": rss_mb(),
            "rss_samples": rss,  # (market ms, MB)
            "end_ms": now}


def _runner(live, job: Job, pipeline: TrainingPipeline):
    """A job of the table as the loop runs it at (step, market time): training goes through
    the pipeline; the others call the live service's method, with the time if it takes one."""
    if job.name == "train":
        return lambda i, _now: pipeline.submit(i)
    method = getattr(live, job.method)
    if job.timed:
        return lambda _i, now: method(now)
    return lambda _i, _now: method()


def _progress_bar(progress: bool, steps: int, unit: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, unit=unit, desc="evaluate", mininterval=1.0)


def _results(rows: pd.DataFrame, learners: dict, cfg: Config, roles: dict[str, dict],
             symbols: tuple[str, ...]) -> list[dict]:
    """Every (model, symbol, configured timeframe): the scored ones with the model's own
    measures (``Learner.scores``), the others with why they are not scored."""
    table = scoring.score_table(rows, fee_rate=cfg.signal.fee_rate, seed=cfg.replay.seed) \
        if len(rows) else []
    found = {(r["model"], r["symbol"], r["timeframe"]): r for r in table}
    results = []
    for model, learner in learners.items():
        for symbol in symbols:
            for tf, role in roles.items():
                if not role["scored"]:
                    results.append({"model": model, "symbol": symbol, "timeframe": tf,
                                    "scored": False, "reason": role["reason"]})
                    continue
                row = found.get((model, symbol, tf))
                if row is None:
                    results.append({"model": model, "symbol": symbol, "timeframe": tf,
                                    "scored": False, "reason": "no resolved predictions"})
                    continue
                scores = {k: v for k, v in row["scores"].items() if k in learner.scores}
                results.append({**row, "scored": True, "scores": scores})
    return results


def _roles(cfg: Config, base_cfg_timeframes: tuple[str, ...], services) -> dict[str, dict]:
    """Per timeframe the user configured: scored, or not and why (interpolated: finer than
    the recording's bars; or not a model timeframe)."""
    bar_tf = services.market.store.base_tf
    bar_ms = services.market.store.tf_ms[bar_tf]
    from core.timeframes import parse_timeframe

    roles = {}
    for tf in base_cfg_timeframes:
        if tf in services.training.timeframes:
            roles[tf] = {"scored": True}
        elif parse_timeframe(tf) < bar_ms or parse_timeframe(tf) % bar_ms:
            roles[tf] = {"scored": False,
                         "reason": f"interpolated (finer than the recording's {bar_tf} bars)"}
        else:
            roles[tf] = {"scored": False, "reason": "not in market.model_timeframes"}
    return roles


def run_evaluation(cfg: Config, out: Path, end_ms: int | None = None,
                   progress: bool = True, split_ms: int | None = None,
                   timeframes: tuple[str, ...] | None = None) -> dict:
    """Evaluate on cfg.replay (recording, start) up to end_ms (default: the recording's end);
    score the predictions made from ``split_ms`` on (default: halfway) and write report.json
    and report.html into ``out``. ``timeframes``: those the user configured (the report says
    why each one not scored is not)."""
    shutil.rmtree(Path(cfg.runtime_dir), ignore_errors=True)  # this run's own fresh store
    services = build_services(cfg)
    assert not interpolated_timeframes(services.market.source), "evaluate at real resolution"
    warm_up()  # the kernels compiled or loaded before the clock runs
    src = services.market.source
    try:
        start_backend(services.training)  # training.backend ray: its actors train the models
    except Exception:
        services.training.store.close()
        raise
    src.backfill()
    services.training.start(now_ms=src.start_ms)
    gc.freeze()  # as app.py does: what lives for the whole run stays out of full collections
    start = src.start_ms
    end = src.data_end if end_ms is None else min(end_ms, src.data_end)
    split = split_ms if split_ms is not None else start + (end - start) // 2
    if not start < split < end:
        raise ValueError(f"the split {split} must fall inside the evaluated span {start}..{end}")
    log.info("evaluating %s from %d to %d (reported from %d)", src.recording.name, start, end,
             split)
    try:
        run = run_loop(services, start, end, progress)
        rows = services.training.store.resolved_frame()
    finally:
        services.training.stop(save=False)
        services.training.learning.backend.stop()
        services.training.store.close()
    report = _report(cfg, services, run, rows, split, timeframes)
    write_report(out, report)
    return report


def _report(cfg: Config, services, run: dict, rows: pd.DataFrame, split: int,
            timeframes: tuple[str, ...] | None) -> dict:
    """Everything report.json holds: the scores of the part after ``split`` (and, apart, of
    the tuning part before it), headlines, learning curves, calibration, the run's figures."""
    src = services.market.source
    learners = services.training.learners
    roles = _roles(cfg, timeframes or cfg.market.timeframes, services)
    symbols = services.market.store.symbols
    reported = rows[rows["created_ts"] >= split] if len(rows) else rows
    tuning = rows[rows["created_ts"] < split] if len(rows) else rows
    results = _results(reported, learners, cfg, roles, symbols)
    scored = [r for r in results if r["scored"]]
    headlines = {m: verdicts.headline(scored, m, lrn.scores) for m, lrn in learners.items()}
    metrics = {m: h.get("metric") for m, h in headlines.items()}
    return {
        "recording": {"name": src.recording.name, "description": src.recording.description,
                      "licence": src.recording.licence},
        "from": _iso(src.start_ms),
        "to": _iso(run["end_ms"]),
        "bar_timeframe": services.market.store.base_tf,
        "split": {"ts": _iso(split), "ms": split,
                  "rule": "tuned only on predictions made before the split; every score "
                          "here is from the predictions made at or after it",
                  "tuning_rows": int(len(tuning)), "reported_rows": int(len(reported))},
        "timeframes": roles,
        "fee_rate": cfg.signal.fee_rate,
        "run": run,
        "predictions_resolved": int(len(rows)),
        "train_steps": {n: lrn.train_steps for n, lrn in learners.items()},
        "headlines": headlines,
        "direction": verdicts.direction_summary(scored),
        "results": results,
        "tuning": _results(tuning, learners, cfg, roles, symbols),
        "learning_curves": learning_curves(rows, cfg.signal.fee_rate, metrics)
        if len(rows) else {},
        "calibration": calibration(reported) if len(reported) else {},
    }


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def evaluation_config(base: Config, recording: str, start: str | None, out: Path) -> Config:
    """The app's config with the replay pointed at the recording, a runtime dir in ``out``,
    and the loop at the recording's real resolution (``at_real_resolution``). Without a
    start: as soon as the CNN's window (``models.cnn.window`` candles of the finest model
    timeframe) of history is there, so a short recording is evaluated almost whole."""
    from dataclasses import replace

    from core.market.recording import find_recording, load_recording
    from core.timeframes import parse_timeframe

    market = replace(base.market, source="replay")
    models = replace(base.models, load_checkpoints=False)
    # The report scores every prediction of the run: retention deletes none of them. And
    # always the run's own SQLite file: never the app's store.url (a shared PostgreSQL).
    store = replace(base.store, url="", keep_days=36_500.0, max_rows=1_000_000_000)
    cfg = replace(base, replay=replace(base.replay, recording=recording, on_end="stop"),
                  market=market, models=models, store=store, runtime_dir=str(out / "runtime"))
    cfg = at_real_resolution(cfg)
    if not start:
        first = load_recording(find_recording(recording, cfg.recordings_dir)).start_ms
        tf_ms = parse_timeframe(cfg.market.model_timeframes[0])
        begin = -(-(first + cfg.models.cnn.window * tf_ms) // tf_ms) * tf_ms  # rounded up
        start = pd.Timestamp(begin, unit="ms").isoformat()
    return replace(cfg, replay=replace(cfg.replay, start=start))
