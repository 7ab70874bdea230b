"""The evaluation report: report.json and one offline report.html (plotly's script embedded),
built from what core/evaluator.py measured: every score beside its baseline and interval,
learning curves, calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from core import scoring


def learning_curves(rows: pd.DataFrame, fee_rate: float, metrics: dict[str, str],
                    window: int = 200) -> dict:
    """Per model: its headline measure (``metrics``: model -> score name) rolling over its
    last ``window`` resolved predictions of each symbol and timeframe, beside the baseline's
    value on the same rows; plus the rolling accuracy (kept, never alone)."""
    curves = {}
    for (model, symbol, tf), group in rows.groupby(["model", "symbol", "timeframe"], sort=True):
        metric = metrics.get(model)
        if metric is None or len(group) < window:
            continue
        skill = scoring.rolling(group, timeframe=tf, fee_rate=fee_rate, metric=metric,
                                window=window)
        correct = group.sort_values("created_ts")["action_correct"].astype(float).to_numpy()
        curves[f"{model} {symbol} {tf}"] = {
            "model": model, "metric": metric,
            "ts": skill["created_ts"].astype(int).tolist(),
            "value": skill["value"].tolist(),
            "baseline_value": skill["baseline_value"].tolist(),
            "accuracy": scoring.rolling_accuracy(correct, window)[window - 1:].tolist(),
        }
    return curves


def calibration(rows: pd.DataFrame, bins: int = 10) -> dict:
    """Reliability diagram data and ECE per model (all symbols and timeframes together)."""
    out = {}
    for model, group in rows.groupby("model", sort=True):
        conf = group["confidence"].to_numpy(float)
        correct = group["action_correct"].astype(bool).to_numpy()
        out[model] = {
            "ece": scoring.expected_calibration_error(conf, correct, bins),
            "bins": [list(map(float, b)) for b in scoring.reliability(conf, correct, bins)],
        }
    return out


def write_report(out: Path, report: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(scoring.json_safe(report), indent=2) + "\n")
    html_path = out / "report.html"
    html_path.write_text(report_html(report))
    return json_path, html_path


def _fmt_score(score: dict | None) -> str:
    if not score or score.get("value") is None or not math.isfinite(score["value"]):
        return "—"
    ci = score.get("ci") or [math.nan, math.nan]
    text = f"{score['value']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
    if score.get("baseline"):
        base = score.get("baseline_value")
        text += f" vs {score['baseline']}" + (f" {base:+.3f}" if base is not None
                                             and math.isfinite(base) else "")
    return text + (f": {score['verdict']}" if score.get("verdict") else "")


def results_table_html(results: list[dict]) -> str:
    """One row per model, symbol and timeframe: scored ones with every measure (value,
    interval, baseline, verdict), the others with the reason they are not scored."""
    metrics = sorted({m for r in results for m in r.get("scores", {})},
                     key=lambda m: scoring.SCORE_NAMES.index(m)
                     if m in scoring.SCORE_NAMES else 99)
    head = "".join(f"<th>{h}</th>" for h in ("model", "symbol", "tf", "n", *metrics))
    body = []
    for r in results:
        cells = [r["model"], r["symbol"], r["timeframe"], str(r.get("n", ""))]
        if not r["scored"]:
            cells.append(f"not scored: {r['reason']}")
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells[:-1])
                        + f"<td colspan='{len(metrics)}'>{cells[-1]}</td></tr>")
            continue
        cells += [_fmt_score(r["scores"].get(m)) for m in metrics]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def report_figures(report: dict) -> list:
    """Rolling skill beside its baseline, and each model's reliability diagram (plotly)."""
    import plotly.graph_objects as go

    figures = []
    curves = go.Figure()
    for name, c in report["learning_curves"].items():
        x = pd.to_datetime(c["ts"], unit="ms")
        curves.add_trace(go.Scatter(x=x, y=c["value"], name=f"{name} {c['metric']}"))
        curves.add_trace(go.Scatter(x=x, y=c["baseline_value"], name=f"{name} baseline",
                                    line={"dash": "dot"}))
    curves.update_layout(title="Rolling skill (last 200 predictions) beside its baseline",
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
    return figures


def report_html(report: dict) -> str:
    """One offline HTML page: the verdicts first (each model's headline, then every measure
    with its interval and baseline), rolling skill, reliability diagrams (plotly's script
    embedded once)."""
    import plotly.io as pio

    parts = [pio.to_html(f, include_plotlyjs=(i == 0), full_html=False)
             for i, f in enumerate(report_figures(report))]
    run = report["run"]
    split = report["split"]
    headlines = "".join(f"<li><b>{m.upper()}</b>: {h['text']}</li>"
                        for m, h in report["headlines"].items())
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Tickwise evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head><body>
<h1>Tickwise evaluation: {report['recording']['name']}</h1>
<h2>Verdicts (reported part: predictions made from {split['ts']} on)</h2><ul>{headlines}</ul>
<p><b>{report['direction']['text']}</b></p>
<p>Each measure: value [95 % block-bootstrap interval] vs its naive baseline on the same rows:
verdict ("skill" only when the whole interval of model minus baseline is above 0).
Tuning looked only at the part before {split['ts']} ({split['tuning_rows']:,} predictions);
the {split['reported_rows']:,} after it are reported here.</p>
{results_table_html(report['results'])}
<p>Market time {report['from']} to {report['to']}, one step per real {report['bar_timeframe']}
bar ({run['market_s']:,.0f} market s in {run['wall_s']:,.1f} wall s; peak RSS
{run['peak_rss_mb']:,.0f} MB). Fee {report['fee_rate']:.4%} per side. Models trained from fresh
weights on the live loop as they went.</p>
{''.join(parts)}
<h2>Tuning part (before {split['ts']})</h2>{results_table_html(report['tuning'])}
</body></html>"""
