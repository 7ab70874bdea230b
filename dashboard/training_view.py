"""Pure builders for the live-training part of the page: model cards and the training panel.

They take the training service's status dict (and recent predictions) and return Dash
components; every number shown comes from that status, nothing is computed here but layout.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dash_bootstrap_components as dbc
from dash import html

from core.predictions import outcome
from dashboard.challenger_view import challenger_rows, promote_footer
from dashboard.model_controls import control_footer, control_rows, stale_badge

SPARK = "▁▂▃▄▅▆▇█"
STATE_COLOURS = {"ACTIVE": "success", "IDLE": "secondary", "UNTRAINED": "warning",
                 "PAUSED": "dark", "FROZEN": "info"}

def sparkline(values: list[float], width: int = 24) -> str:
    """Unicode bars of the last ``width`` values, scaled between their min and max; a value
    not there yet (None, NaN: a window not full) is skipped."""
    values = [v for v in values[-width:] if v is not None and v == v]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK[3] * len(values)
    return "".join(SPARK[round((v - lo) / (hi - lo) * (len(SPARK) - 1))] for v in values)


def calibration_bars(bins: list[dict]) -> str:
    """Accuracy per confidence bin (0-20%, ..., 80-100%) as bars; '·' for an empty bin. A
    calibrated model's bars rise left to right like ▁▃▄▆█."""
    out = []
    for b in bins:
        if b["accuracy"] is None:
            out.append("·")
        else:
            out.append(SPARK[min(len(SPARK) - 1, int(b["accuracy"] * len(SPARK)))])
    return "".join(out)


def fmt(value, spec: str, none: str = "—") -> str:
    return none if value is None else format(value, spec)


def trend(values: list[float]) -> str:
    """Arrow comparing the mean of the last 5 losses with the 5 before."""
    if len(values) < 10:
        return ""
    new, old = sum(values[-5:]) / 5, sum(values[-10:-5]) / 5
    return "↘" if new < old else "↗" if new > old else "→"


def _ts(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M:%S")


VERDICT_COLOURS = {"learning": "success", "no skill yet": "secondary",
                   "worse than baseline": "danger", "too few rows": "warning"}


def skill_lines(q: dict | None) -> tuple[str, str, str, str]:
    """(headline, verdict, rolling-skill sparkline, accuracy beside its baseline) of a
    model's scores (the status' ``quality``). A model with nothing resolved says so."""
    if q is None:
        return "no resolved predictions yet", "too few rows", "", "—"
    head = q["headline"]
    rolling = q.get("rolling")
    spark = ""
    if rolling:
        spark = (f"{sparkline(rolling['values'])} rolling {rolling['timeframe']} "
                 f"(last {rolling['window']} per point)")
    accuracy = "—"
    group = next((g for g in q["groups"] if (g["symbol"], g["timeframe"])
                  == (head.get("symbol"), head.get("timeframe"))), None) \
        or (q["groups"][0] if q["groups"] else None)
    acc = group["scores"].get("accuracy") if group else None
    if acc and acc.get("value") is not None:
        accuracy = (f"{acc['value']:.1%} vs {acc['baseline']} {fmt(acc['baseline_value'], '.1%')}"
                    f" ({group['timeframe']}, n={acc['n']:,})")
    return head["text"], head["verdict"], spark, accuracy


def scored_on(roles: dict | None) -> str:
    """'1h, 1d · not scored: 1s, 1m (interpolated)' from the status' timeframe roles."""
    if not roles:
        return "—"
    scored = [tf for tf, r in roles.items() if r["scored"]]
    text = ", ".join(scored) or "none"
    skipped = [tf for tf, r in roles.items() if not r["scored"]]
    if skipped:
        reasons = sorted({roles[tf]["reason"] for tf in skipped})
        text += f" · not scored: {', '.join(skipped)} ({'; '.join(reasons)})"
    return text


def loss_text(loss: float | None, history: list[float]) -> str:
    """The 5-step moving average to 4 significant digits, so that a DQN's ~4e-4 still shows
    it moving (4 decimals printed "0.0004" for a whole run), with its trend."""
    return "not trained yet" if loss is None else f"{loss:.4g} {trend(history)}".rstrip()


def checkpoint_text(ckpt: dict | None, resumed_from: int | None) -> str:
    """The newest checkpoint's step, and the step this run resumed from."""
    text = "none" if not ckpt else f"step {ckpt['step']:,}"
    return text + ("" if resumed_from is None else f" · resumed from step {resumed_from:,}")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10_000:  # an interval of a slow replay or live bars: seconds read better
        return f"{value / 1000:,.0f} s"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def cost_rows(costs: dict | None) -> list[tuple[str, str]]:
    """The card's rows of what the model costs (the status' ``costs``, last minute)."""
    if not costs:
        return []
    rows = []
    for key, label in (("forward_ms", "forward pass"), ("cycle_share_ms", "cycle share"),
                       ("train_step_ms", "train step")):
        t = costs[key]
        rows.append((label, "none in the last minute" if not t["n"] else
                     f"p50 {_ms(t['p50_ms'])} · p99 {_ms(t['p99_ms'])} (n={t['n']:,})"))
    rows.append(("CPU", f"{costs['cpu_fraction']:.1%} of a core (last {costs['window_s']:.0f} s)"))
    return rows


def cycle_text(cycle: dict | None) -> tuple[str, bool]:
    """(the cycle's p99 against its interval, whether it is near falling behind)."""
    if not cycle or not cycle["total_ms"]["n"]:
        return "no cycle in the last minute", False
    total = cycle["total_ms"]
    text = f"p99 {_ms(total['p99_ms'])}"
    if cycle["load"] is not None:
        load = "<1%" if cycle["load"] < 0.01 else f"{cycle['load']:.0%}"
        text += f" of {_ms(cycle['interval_ms'])} ({load})"
    text += f" · p50 {_ms(total['p50_ms'])} · shared p50 {_ms(cycle['shared_ms']['p50_ms'])}"
    return text, cycle["load"] is not None and cycle["load"] > cycle["behind_load"]


def model_card(name: str, m: dict, roles: dict | None = None) -> dbc.Card:
    state = m["state"]
    last = m.get("last_prediction")
    last_text = "none yet" if not last else (
        f"{last['action']} {last['confidence']:.0%} · {last['symbol']} {last['timeframe']} "
        f"@ {_ts(last['created_ts'])}")
    loss = loss_text(m["loss_5ma"], m["loss_history"])
    ckpt = m.get("checkpoint")
    q = m.get("quality")
    headline, verdict, spark, accuracy = skill_lines(q)
    calibration_text = "—" if q is None else (
        f"ECE {q['ece']:.3f}  " + calibration_bars(q["reliability"]))
    rows = [
        ("skill", headline),
        ("rolling skill", spark),
        ("accuracy", accuracy),
        ("calibration", calibration_text),
        ("scored on", scored_on(roles)),
        ("parameters", f"{m['parameters']:,}"),
        ("loss (5-step MA)", loss),
        ("", sparkline(m["loss_history"])),
        ("epsilon", fmt(m["epsilon"], ".3f", "n/a")),
        ("train steps", f"{m['train_steps']:,}"),
        ("predictions", f"{m['prediction_count']:,}"),
        ("last prediction", last_text),
        ("device", m["device"]),
        ("checkpoint", checkpoint_text(ckpt, m.get("resumed_from_step"))),
        *cost_rows(m.get("costs")),
        *challenger_rows(name, m),  # dashboard/challenger_view.py
        *control_rows(m),  # dashboard/model_controls.py
    ]
    if m.get("checkpoint_warning"):  # a checkpoint skipped at start: say which and why
        rows.append(("checkpoint warning", m["checkpoint_warning"]))
    body = html.Table(
        [html.Tr([html.Td(k, className="mc-key"), html.Td(v, className="mc-val",
                                                          **({"data-field": k} if k else {}))])
         for k, v in rows],
        className="mc-table",
    )
    header = html.Div([
        html.Span(m.get("title") or name, className="mc-title"),
        dbc.Badge(verdict, color=VERDICT_COLOURS.get(verdict, "secondary"),
                  className="ms-auto me-1 mc-verdict", id={"type": "model-verdict", "model": name}),
        *stale_badge(name, m),
        dbc.Badge(state, color=STATE_COLOURS.get(state, "secondary"), className="mc-state",
                  id={"type": "model-state", "model": name}),
    ], className="d-flex align-items-center")
    return dbc.Card([dbc.CardHeader(header), dbc.CardBody(body, className="p-2"),
                     *promote_footer(name, m), *control_footer(name, m)],
                    className="model-card h-100", id=f"model-card-{name}")


def accuracy_table(models: dict, timeframes: tuple[str, ...],
                   roles: dict | None = None) -> html.Table:
    """Accuracy (the timeframe's HOLD band) per model and timeframe; a timeframe the models
    do not learn from says why (interpolated)."""
    roles = roles or {}
    head = html.Tr([html.Th("accuracy")] + [
        html.Th([tf, html.Br(), html.Small(roles[tf]["label"] if tf in roles else "")],
                className="" if roles.get(tf, {}).get("scored", True) else "tf-unscored")
        for tf in timeframes])
    rows = [head]
    for name, m in models.items():
        cells = []
        for tf in timeframes:
            a = m["accuracy"].get(tf)
            if not roles.get(tf, {}).get("scored", True):
                cells.append(html.Td("not scored", className="tf-unscored"))
                continue
            cells.append(html.Td("—" if not a else f"{a['accuracy']:.0%} ({a['resolved']:,})"))
        rows.append(html.Tr([html.Td(name.upper())] + cells))
    return html.Table(rows, className="table table-sm table-dark lt-table mb-0")


def predictions_table(predictions: list[dict]) -> html.Table:
    head = html.Tr([html.Th(h) for h in ("time", "model", "symbol", "tf", "action", "conf",
                                         "pred close", "actual close", "result", "reward")])
    rows = [head]
    for p in predictions:
        result = outcome(p["status"], p.get("action_correct"))
        rows.append(html.Tr([
            html.Td(_ts(p["created_ts"])),
            # A prediction made while its model was STALE (core/live/control.py) says so.
            html.Td([p["model"].upper(), *([html.Span(" STALE", className="text-warning small")]
                                           if p.get("stale") else [])]),
            html.Td(p["symbol"]),
            html.Td(p["timeframe"]), html.Td(p["action"]), html.Td(f"{p['confidence']:.0%}"),
            html.Td(fmt(p.get("pred_close"), ",.2f")), html.Td(fmt(p.get("actual_close"), ",.2f")),
            html.Td(result, className=f"res-{result}"), html.Td(fmt(p.get("reward"), "+.4f")),
        ]))
    return html.Table(rows, className="table table-sm table-dark lt-table mb-0")


def _cycle_value(cycle: dict | None) -> html.Span:
    text, behind = cycle_text(cycle)
    return html.Span(text, className="text-warning" if behind else "")


def backend_text(backend: dict) -> str:
    """The Ray backend's health in a line: each actor's state, restarts and steps lost."""
    parts = []
    for name, state in backend["actors"].items():
        text = f"{name} {state}"
        if backend["restarts"].get(name):
            text += (f" (restarted {backend['restarts'][name]}x, "
                     f"{backend['lost_steps'].get(name, 0)} steps lost)")
        parts.append(text)
    return f"{backend['address']}: " + ("; ".join(parts) or "no actors yet")


def store_text(store: dict) -> str:
    """The prediction store's database in a line: where, whose symbols, OK or DOWN (since
    when, why, the next try, the rows waiting in memory)."""
    where = f"{store['where']} ({', '.join(store['symbols'])})"
    if store["state"] == "OK":
        return f"{where}: OK"
    return (f"{where}: DOWN since {time.strftime('%H:%M:%S', time.gmtime(store['down_since']))}"
            f" UTC ({store['error']}); retry in {store['retry_in_s']:.0f} s, "
            f"{store['queued_rows']} rows waiting in memory")


def store_value(store: dict) -> html.Span:
    return html.Span(store_text(store), id="store-health",
                     className="text-danger" if store["state"] != "OK" else "")


def errors_text(errors: dict, now: float) -> str:
    """Each job's errors by type, and how long ago the last was: a past outage (a store back
    up, say) reads as past, not as happening now."""
    def ago(ts: float | None) -> str:
        if ts is None:
            return ""
        s = max(0.0, now - ts)
        return f", last {s:.0f} s ago" if s < 120 else f", last {s / 60:.0f} min ago"
    return "; ".join(f"{k}: {v['type']} x{v['count']}{ago(v.get('last_wall_ts'))}"
                     for k, v in errors.items())


def panel_stats(status: dict) -> list:
    sig = status["signal_generation"]
    paper = status["paper"]
    items = [
        ("predictions / s", f"{status['predictions_per_second']:.1f}"),
        ("training batches / min", f"{status['training_batches_per_minute']:.1f}"),
        ("cycle vs interval", _cycle_value(status.get("cycle"))),
        ("signal generation", sig["state"]),
        ("last signal", _ts(sig["last_signal_ms"])),
        ("paper P&L (realised)", f"{paper['realised_pnl']:+,.2f}"),
        ("open positions", ", ".join(f"{s} {p['side']}" for s, p in paper["positions"].items())
         or "none"),
    ]
    direction = status.get("direction")
    if direction:
        items.append(("direction skill", direction["text"]))
    backend = status.get("training_backend") or {}
    if backend.get("kind") == "ray":
        items.append(("training on ray", backend_text(backend)))
    dropped = {k: n for k, n in (status.get("dropped_experiences") or {}).items() if n}
    if dropped:  # training cannot keep up: the newest batches are kept, older ones dropped
        items.append(("experiences dropped (training behind)", html.Span(
            " · ".join(f"{k} {n:,}" for k, n in sorted(dropped.items())),
            className="text-warning")))
    store = status.get("store")
    if store and (store["backend"] != "sqlite" or store["state"] != "OK"):
        items.append(("prediction store", store_value(store)))
    errors = status.get("errors") or {}
    if errors:
        items.append(("job errors", errors_text(errors, time.time())))
    return [html.Div([html.Div(k, className="stat-key"), html.Div(v, className="stat-val",
                                                                  id=f"stat-{i}")],
                     className="stat") for i, (k, v) in enumerate(items)]
