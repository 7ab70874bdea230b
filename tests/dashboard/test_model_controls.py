"""A model card's control (dashboard/model_controls.py), rendered from a status entry."""

from __future__ import annotations

from dash import dcc

from dashboard.model_controls import control_footer, control_rows, stale_badge, staleness_text


def control(state: str = "active", kept=(10, 20, 30), rolled_back=None, staleness=None) -> dict:
    return {"model": "cnn", "state": state, "train_steps": 34, "published_steps": 34,
            "rolled_back": rolled_back, "kept_steps": list(kept),
            "staleness": staleness or {"stale": False, "training": None, "resolution": None,
                                       "limit_s": 86_400.0}}


def ids(footer) -> list[dict]:
    out = []

    def walk(node):
        if isinstance(node, list | tuple):
            for child in node:
                walk(child)
            return
        if getattr(node, "id", None) is not None:
            out.append(node.id)
        walk(getattr(node, "children", None) or [])
    walk(footer)
    return out


def test_the_buttons_follow_the_state_and_every_kept_step_has_a_confirmed_rollback():
    active = ids(control_footer("cnn", {"control": control()}))
    assert {"type": "model-control", "model": "cnn", "action": "pause"} in active
    assert {"type": "model-control", "model": "cnn", "action": "freeze"} in active
    rollbacks = [i["step"] for i in active if i["type"] == "model-rollback"]
    assert rollbacks == [30, 20, 10]  # newest first
    paused = ids(control_footer("cnn", {"control": control("paused")}))
    assert {"type": "model-control", "model": "cnn", "action": "resume"} in paused
    frozen = ids(control_footer("cnn", {"control": control("frozen", kept=())}))
    assert {"type": "model-control", "model": "cnn", "action": "unfreeze"} in frozen
    assert not [i for i in frozen if i["type"] == "model-rollback"]
    dialog = control_footer("cnn", {"control": control()})[0].children.children[2]
    assert isinstance(dialog, dcc.ConfirmDialogProvider)
    assert "Roll cnn back to its checkpoint of step 30?" in dialog.message


def test_the_rows_say_the_step_it_runs_the_rollback_and_the_staleness():
    rows = dict(control_rows({"control": control(
        rolled_back={"from_step": 34, "to_step": 20, "market_ms": 0},
        staleness={"stale": True, "training": "FROZEN", "resolution": "STALE",
                   "limit_s": 7200.0, "training_age_s": 9000.0,
                   "resolution_age_s": 10_800.0})}))
    assert rows["runs"] == "step 34"
    assert rows["rolled back"] == "to step 20 from step 34"
    assert rows["staleness"] == ("FROZEN: not training for 2.5h, as frozen; STALE: no resolved "
                                 "prediction for 3.0h (limit 2.0h)")
    assert staleness_text(control()["staleness"]) == "not judged (training off, or paused)"
    assert stale_badge("cnn", {"stale": True})[0].children == "STALE"
    assert stale_badge("cnn", {"stale": False}) == []
    assert control_rows({}) == [] and control_footer("cnn", {}) == []
