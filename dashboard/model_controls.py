"""A model card's control: its state rows, the STALE badge, and the buttons that pause, resume,
freeze, unfreeze and roll it back (core/live/control.py). A rollback asks for confirmation
first (one button per kept checkpoint, each behind a confirm dialog). The buttons call the
same ``ModelControl`` as POST /api/models/<name>/<action>; the answer shows above the cards.
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, ctx, dcc, html, no_update

from core.live.control import ControlError

_AGE = (("training", "training_age_s", "no training step for"),
        ("resolution", "resolution_age_s", "no resolved prediction for"))


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def staleness_text(st: dict | None) -> str:
    """What the staleness criteria say: "ok", or each one that is STALE or FROZEN, why."""
    if not st or st.get("training") is None:
        return "not judged (training off, or paused)"
    parts = []
    for key, age, text in _AGE:
        if st[key] == "STALE":
            parts.append(f"STALE: {text} {_age(st[age])} (limit {_age(st['limit_s'])})")
        elif st[key] == "FROZEN":
            parts.append(f"FROZEN: not training for {_age(st[age])}, as frozen")
    return "; ".join(parts) or f"ok (limit {_age(st['limit_s'])})"


def control_rows(m: dict) -> list[tuple[str, str]]:
    """The card's rows: the step it runs, a rollback, its staleness."""
    c = m.get("control")
    if not c:
        return []
    runs = f"step {c['published_steps']:,}"
    rows = [("runs", runs)]
    if c.get("rolled_back"):
        rb = c["rolled_back"]
        rows.append(("rolled back", f"to step {rb['to_step']:,} from step {rb['from_step']:,}"))
    rows.append(("staleness", staleness_text(c.get("staleness"))))
    return rows


def stale_badge(name: str, m: dict) -> list:
    if not m.get("stale"):
        return []
    return [dbc.Badge("STALE", color="danger", className="me-1 mc-stale",
                      id={"type": "model-stale", "model": name})]


def _button(name: str, action: str, label: str, color: str) -> dbc.Button:
    return dbc.Button(label, id={"type": "model-control", "model": name, "action": action},
                      size="sm", color=color, outline=True, className="me-1", n_clicks=0)


def control_footer(name: str, m: dict) -> list:
    """Pause/Resume, Freeze/Unfreeze, and "↶ step N" per kept checkpoint (confirmed)."""
    c = m.get("control")
    if not c:
        return []
    state = c["state"]
    buttons = [
        _button(name, "resume", "Resume", "success") if state == "paused"
        else _button(name, "pause", "Pause", "secondary"),
        _button(name, "unfreeze", "Unfreeze", "success") if state == "frozen"
        else _button(name, "freeze", "Freeze", "info"),
    ]
    for step in reversed(c.get("kept_steps") or []):
        buttons.append(dcc.ConfirmDialogProvider(
            dbc.Button(f"↶ {step:,}", size="sm", color="warning", outline=True,
                       className="me-1", title=f"roll back to the checkpoint of step {step:,}"),
            id={"type": "model-rollback", "model": name, "step": step},
            message=(f"Roll {name} back to its checkpoint of step {step:,}? It now runs step "
                     f"{c['train_steps']:,}; the steps since are lost unless kept.")))
    return [dbc.CardFooter(html.Div(buttons, className="d-flex flex-wrap"), className="p-2")]


def register_control_callbacks(app, training) -> None:
    @app.callback(
        Output("control-message", "children"),
        Input({"type": "model-control", "model": ALL, "action": ALL}, "n_clicks"),
        Input({"type": "model-rollback", "model": ALL, "step": ALL}, "submit_n_clicks"),
        prevent_initial_call=True,
    )
    def control(_clicks, _confirmed):
        # Cards are rebuilt every refresh (n_clicks 0): only a real click acts.
        clicked = ctx.triggered_id
        if not clicked or not any(t["value"] for t in ctx.triggered):
            return no_update
        return control_answer(training.control, clicked)


def control_answer(control, clicked: dict):
    """Apply one card action (a button's id) and say what happened."""
    name = clicked["model"]
    try:
        if clicked["type"] == "model-rollback":
            state = control.rollback(name, {"step": clicked["step"]})
        else:
            state = control.apply(name, clicked["action"])
    except ControlError as exc:
        return dbc.Alert(str(exc), color="warning", className="py-1 mb-2")
    text = f"{name}: {state['state']}, runs step {state['published_steps']:,}"
    if clicked["type"] == "model-rollback":
        rb = state["rolled_back"]
        text = f"{name}: rolled back to step {rb['to_step']:,} from step {rb['from_step']:,}"
    return dbc.Alert(text, color="success", className="py-1 mb-2")
