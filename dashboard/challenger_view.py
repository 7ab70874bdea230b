"""Champion and challenger on the model cards: the challenger's skill beside the champion's
(each with its 95 % interval, on the same candles), the Promote button, the promotions.

Pure builders over the status' ``role``, ``challenger`` and ``promotions`` (core/live/
challengers.py), and the Promote button's callback (a state change from the page: a Dash
callback, behind the Origin check of dashboard/security.py).
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, ctx, no_update

from core.live.challengers import ChallengeError

MEASURE_NAMES = {"close_error": "close error", "accuracy": "accuracy"}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f} %"


def skill_text(skill: dict, who: str, measure: str) -> str:
    """One model's mean measure and interval, in words: a close error is shown as the error
    (the stored score is minus it, higher is better)."""
    value, ci = skill.get(who), skill.get(f"{who}_ci") or [None, None]
    if value is None:
        return "—"
    if measure == "close_error":
        return (f"{MEASURE_NAMES[measure]} {_pct(-value)} "
                f"[{_pct(None if ci[1] is None else -ci[1])}, "
                f"{_pct(None if ci[0] is None else -ci[0])}]")
    return f"{MEASURE_NAMES.get(measure, measure)} {_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]"


def diff_text(skill: dict) -> str:
    if skill.get("diff") is None:
        return skill.get("reason") or skill.get("error") or "—"
    lo, hi = skill["diff_ci"]
    return (f"{skill['diff'] * 100:+.3f} pp [{lo * 100:+.3f}, {hi * 100:+.3f}] on "
            f"{skill['n']:,} candles · " + ("PROMOTABLE" if skill["promotable"] else "not yet"))


def overrides_text(overrides: dict | None) -> str:
    """{"learning_rate": 0.0005, "window": 64} -> "learning_rate=0.0005, window=64"."""
    return ", ".join(f"{k}={v}" for k, v in (overrides or {}).items()) or "same settings"


def promotion_text(p: dict) -> str:
    skill = p["skill"]
    how = "auto" if p["automatic"] else "by hand"
    return (f"step {p['champion_step']:,} -> {p['step']:,} ({how}, {overrides_text(p['overrides'])}, "
            f"{skill['diff'] * 100:+.3f} pp [{skill['diff_ci'][0] * 100:+.3f}, "
            f"{skill['diff_ci'][1] * 100:+.3f}] on {skill['n']:,})")


def challenger_rows(name: str, m: dict) -> list[tuple[str, str]]:
    """The card's rows about its challenger and promotions (none when there are none)."""
    rows = []
    if m.get("role") == "challenger":
        rows.append(("role", f"challenger of {name.split('~')[0]}: scored, never trades"))
    ch = m.get("challenger")
    if ch and m.get("role") != "challenger":
        skill = ch["skill"]
        measure = ch.get("measure", "accuracy")
        rows += [
            ("challenger", f"{overrides_text(ch['overrides'])} from {ch['from']} · "
                           f"{ch['trained_steps']:,} steps"),
            ("champion skill", skill_text(skill, "champion", measure)),
            ("challenger skill", skill_text(skill, "challenger", measure)),
            ("difference", diff_text(skill)),
        ]
        if skill.get("reason"):
            rows.append(("promotion rule", skill["reason"]))
        if ch.get("last_error"):
            rows.append(("challenger error", ch["last_error"]))
    for p in (m.get("promotions") or [])[-3:]:
        rows.append(("promoted", promotion_text(p)))
    return rows


def promote_footer(name: str, m: dict) -> list:
    """The Promote button, on a champion's card with a challenger: enabled when promotable."""
    ch = m.get("challenger")
    if not ch or m.get("role") == "challenger":
        return []
    promotable = bool(ch["skill"].get("promotable"))
    return [dbc.CardFooter(dbc.Button(
        "Promote challenger", id={"type": "promote", "model": name}, size="sm",
        color="warning" if promotable else "secondary", disabled=not promotable,
        n_clicks=0), className="p-2")]


def register_challenger_callbacks(app, training) -> None:
    @app.callback(
        Output("challenger-message", "children"),
        Input({"type": "promote", "model": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def promote(clicks):
        # Cards are rebuilt every refresh (n_clicks 0): only a real click promotes.
        clicked = ctx.triggered_id
        if not clicked or not any(t["value"] for t in ctx.triggered):
            return no_update
        model = clicked["model"]
        try:
            record = training.challengers.promote(model)
        except ChallengeError as exc:
            return dbc.Alert(str(exc), color="warning", className="py-1 mb-2")
        return dbc.Alert(f"{model}: challenger promoted at step {record['step']:,} (the old "
                         f"champion is checkpoint step {record['champion_step']:,})",
                         color="success", className="py-1 mb-2")
