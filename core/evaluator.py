"""The evaluate command: a recording through the exact live loop, as fast as the work allows.

``run_evaluation`` builds the same services as the app (core/services.py) on the replay
source with a manual clock, then advances market time one finest candle at a time and runs the
scheduler's jobs in the order the scheduler would (close processing every second, training,
signals and prediction-store writes every ``scheduler.signal_interval_s``, expiry every
minute): no sleeping, no wall clock. Models start from fresh weights (a run measures learning from nothing). Afterwards
the resolved predictions are scored against the baselines (core/evaluation.py) and written to
``report.json`` and ``report.html`` (plotly, offline: the script is embedded).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import resource
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from core import evaluation
from core.clock import ManualClock
from core.config import Config
from core.kernels import warm_up
from core.services import build_services

log = logging.getLogger(__name__)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


PUBLISH_LAG_S = 20  # market seconds between taking a batch and predicting with its weights


class TrainingPipeline:
    """Training on one worker thread; weights installed for prediction ``lag`` steps after
    their batch was taken (see run_loop). Learners publish only through it while it runs."""

    def __init__(self, training, lag: int):
        self.training = training
        self.learners = training.learners
        self.lag = lag
        self.queue: deque = deque()  # (step at which to install, future of snapshots)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="evaluate-train")
        self.saved = {name: lrn.auto_publish for name, lrn in self.learners.items()}

    def __enter__(self) -> TrainingPipeline:
        for lrn in self.learners.values():
            lrn.auto_publish = False
        return self

    def _train(self, due) -> dict:
        self.training.train_batches(due)
        return {name: self.learners[name].snapshot() for name in {name for name, _, _ in due}}

    def submit(self, step: int) -> None:
        due = self.training.take_due()
        if due:
            self.queue.append((step + self.lag, self.pool.submit(self._train, due)))

    def install_due(self, step: int | None = None) -> None:
        """Install every snapshot due by ``step`` (all of them when None), oldest first."""
        while self.queue and (step is None or self.queue[0][0] <= step):
            for name, snapshot in self.queue.popleft()[1].result().items():  # raises if failed
                self.learners[name].install(snapshot)

    def __exit__(self, exc_type, *_) -> None:
        try:
            if exc_type is None:
                self.install_due()
        finally:
            self.pool.shutdown(wait=True)
            for name, lrn in self.learners.items():
                lrn.auto_publish = self.saved[name]


def run_loop(services, start_ms: int, end_ms: int, progress: bool = True) -> dict:
    """Drive the live loop from start_ms to end_ms (market time); returns run statistics.

    Each market second: the replay emits, the clock moves, closes are processed (resolve,
    predict, store), and every batch that is due is taken. Training runs on a second thread,
    as in the app, overlapped with the market seconds that follow: a batch taken at second i
    is trained there (batches in order), a snapshot of the weights is taken right after its
    step, and that snapshot is installed for prediction at second i + PUBLISH_LAG_S (waiting
    for it if training is behind). Which weights predict which candle therefore depends on
    market time only, never on thread timing: a run is reproducible (the no-look-ahead test
    relies on it). The app installs each step's weights as soon as it is done, about one
    market second after the batch at x15; here the lag is PUBLISH_LAG_S.
    """
    cfg = services.config
    src, training = services.market.source, services.training
    clock = ManualClock(start_ms)
    services.market.clock = clock
    base_ms = services.market.store.tf_ms[services.market.store.base_tf]
    signal_every = max(1, round(cfg.scheduler.signal_interval_s * 1000 / base_ms))
    expire_every = max(1, round(60_000 / base_ms))
    lag = max(1, round(PUBLISH_LAG_S * 1000 / base_ms))
    steps = max(0, (end_ms - start_ms) // base_ms)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, unit="s", desc="evaluate", mininterval=1.0)
    peak_rss = rss_mb()
    started = time.perf_counter()
    now = start_ms
    with TrainingPipeline(training, lag) as pipeline:
        for i in range(steps):
            now += base_ms
            src.emit_until(now)
            clock.set(now)
            pipeline.install_due(i)
            training.process_closes()
            pipeline.submit(i)
            if i % signal_every == signal_every - 1:
                training.signal_job()
                training.flush_job()  # every signal: by market time, as the rest of the loop
            if i % expire_every == expire_every - 1:
                training.expire_job()
                peak_rss = max(peak_rss, rss_mb())
            if bar is not None:
                bar.update(1)
            if getattr(src, "ended", False):
                break
    if bar is not None:
        bar.close()
    return {"wall_s": time.perf_counter() - started, "market_s": (now - start_ms) / 1000,
            "peak_rss_mb": max(peak_rss, rss_mb()), "final_rss_mb": rss_mb(),
            "end_ms": now}


def learning_curves(rows: pd.DataFrame, window: int = 200) -> dict:
    """Rolling accuracy and reward per model (all symbols and timeframes) over market time."""
    curves = {}
    for model, group in rows.groupby("model", sort=True):
        group = group.sort_values("created_ts")
        correct = group["action_correct"].astype(float).to_numpy()
        w = min(window, len(group))
        if w < 1:
            continue
        curves[model] = {
            "ts": group["created_ts"].astype(int).tolist()[w - 1:],
            "accuracy": evaluation.rolling_accuracy(correct, w)[w - 1:].tolist(),
            "reward": pd.Series(group["reward"].to_numpy(float)).rolling(w).mean()
            .to_numpy()[w - 1:].tolist(),
        }
    return curves


def calibration(rows: pd.DataFrame, bins: int = 10) -> dict:
    """Reliability diagram data and ECE per model (all symbols and timeframes together)."""
    out = {}
    for model, group in rows.groupby("model", sort=True):
        conf = group["confidence"].to_numpy(float)
        correct = group["action_correct"].astype(bool).to_numpy()
        out[model] = {
            "ece": evaluation.expected_calibration_error(conf, correct, bins),
            "bins": [list(map(float, b)) for b in evaluation.reliability(conf, correct, bins)],
        }
    return out


def _clean(value):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    return value


def write_report(out: Path, report: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(_clean(report), indent=2) + "\n")
    html_path = out / "report.html"
    html_path.write_text(report_html(report))
    return json_path, html_path


def report_html(report: dict) -> str:
    """One offline HTML page: verdicts table, learning curves, reliability diagrams."""
    import plotly.graph_objects as go
    import plotly.io as pio

    figures = []
    curves = go.Figure()
    for model, c in report["learning_curves"].items():
        x = pd.to_datetime(c["ts"], unit="ms")
        curves.add_trace(go.Scatter(x=x, y=c["accuracy"], name=f"{model} accuracy"))
        curves.add_trace(go.Scatter(x=x, y=c["reward"], name=f"{model} reward", yaxis="y2",
                                    line={"dash": "dot"}))
    curves.update_layout(title="Learning curves (rolling over the last predictions)",
                         yaxis={"title": "accuracy"},
                         yaxis2={"title": "mean reward", "overlaying": "y", "side": "right"},
                         template="plotly_white", height=420)
    figures.append(curves)
    for model, cal in report["calibration"].items():
        mids = [(b[0] + b[1]) / 2 for b in cal["bins"]]
        fig = go.Figure([
            go.Bar(x=mids, y=[b[4] for b in cal["bins"]], width=0.08, name="accuracy",
                   text=[int(b[2]) for b in cal["bins"]], hovertemplate="n=%{text}"),
            go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                       line={"dash": "dash", "color": "gray"}),
        ])
        fig.update_layout(title=f"{model}: reliability (ECE {cal['ece']:.3f})",
                          xaxis={"title": "confidence", "range": [0, 1]},
                          yaxis={"title": "accuracy", "range": [0, 1]},
                          template="plotly_white", height=320, width=420)
        figures.append(fig)
    table = pd.DataFrame(report["results"])
    keep = [c for c in ("model", "symbol", "timeframe", "n", "accuracy", "mean_reward", "ece",
                        "pnl", "best_baseline", "accuracy_diff", "ci_low", "ci_high", "verdict")
            if c in table.columns]
    parts = [pio.to_html(f, include_plotlyjs=(i == 0), full_html=False)
             for i, f in enumerate(figures)]
    run = report["run"]
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Tickwise evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head><body>
<h1>Tickwise evaluation: {report['recording']['name']}</h1>
<p>Market time {report['from']} to {report['to']} ({run['market_s']:,.0f} market s in
{run['wall_s']:,.1f} wall s; peak RSS {run['peak_rss_mb']:,.0f} MB, final
{run['final_rss_mb']:,.0f} MB). Fee {report['fee_rate']:.4%} per side. Models trained from fresh
weights on the live loop as they went.</p>
<h2>Verdicts</h2>{table[keep].to_html(index=False, float_format=lambda v: f"{v:.4g}")}
{''.join(parts)}
</body></html>"""


def run_evaluation(cfg: Config, out: Path, end_ms: int | None = None,
                   progress: bool = True) -> dict:
    """Evaluate on cfg.replay (recording, start) up to end_ms (default: the recording's end);
    write report.json and report.html into ``out``."""
    shutil.rmtree(Path(cfg.runtime_dir), ignore_errors=True)  # this run's own fresh store
    services = build_services(cfg)
    warm_up()  # the kernels compiled or loaded before the clock runs
    src = services.market.source
    src.backfill()
    services.training.start()
    gc.freeze()  # as app.py does: what lives for the whole run stays out of full collections
    start = src.start_ms
    end = src.data_end if end_ms is None else min(end_ms, src.data_end)
    log.info("evaluating %s from %d to %d", src.recording.name, start, end)
    try:
        run = run_loop(services, start, end, progress)
        rows = services.training.store.resolved_frame()
    finally:
        services.training.active = False
        services.training.store.close()
    results = evaluation.compare(rows, fee_rate=cfg.signal.fee_rate, seed=cfg.replay.seed) \
        if len(rows) else pd.DataFrame()
    report = {
        "recording": {"name": src.recording.name, "description": src.recording.description,
                      "licence": src.recording.licence},
        "from": pd.Timestamp(start, unit="ms", tz="UTC").isoformat(),
        "to": pd.Timestamp(run["end_ms"], unit="ms", tz="UTC").isoformat(),
        "fee_rate": cfg.signal.fee_rate,
        "run": run,
        "predictions_resolved": int(len(rows)),
        "train_steps": {n: lrn.train_steps for n, lrn in services.training.learners.items()},
        "results": results.to_dict(orient="records"),
        "learning_curves": learning_curves(rows) if len(rows) else {},
        "calibration": calibration(rows) if len(rows) else {},
    }
    write_report(out, report)
    return report


def evaluation_config(base: Config, recording: str, start: str | None, out: Path) -> Config:
    """The app's config with the replay pointed at the recording and a runtime dir in ``out``."""
    from dataclasses import replace

    replay = replace(base.replay, recording=recording, on_end="stop",
                     start=start if start else base.replay.start)
    market = replace(base.market, source="replay")
    models = replace(base.models, load_checkpoints=False)
    return replace(base, replay=replay, market=market, models=models,
                   runtime_dir=str(out / "runtime"))
