"""REST endpoints of per-model control (core/live/control.py):

- POST /api/models/<name>/pause | resume | freeze | unfreeze   no body
- POST /api/models/<name>/rollback   body {"step": N}, N one of the model's kept checkpoints

Each is idempotent and answers the model's state: {model, state (active/paused/frozen),
train_steps, published_steps, rolled_back ({from_step, to_step, market_ms} or null),
kept_steps, staleness}. An unknown model: 404 naming the known ones; a bad body: 400 with
{"error": reason} (a rollback's names the kept steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify

from core.live.control import ControlError
from dashboard.request_body import json_body

CONTROL_ACTIONS = ("pause", "resume", "freeze", "unfreeze", "rollback")


def _body() -> Any:
    return json_body(ControlError, empty=None)


def control_routes(api: Blueprint, training,
                   public: Callable[[Any], Any] = lambda data: data) -> None:
    """Add the control endpoints to ``api`` (the /api blueprint of dashboard/rest.py)."""

    @api.errorhandler(ControlError)
    def refused(exc: ControlError):
        return jsonify({"error": str(exc)}), exc.status

    def route(action: str):
        def handler(name: str):
            return jsonify(public(training.control.apply(name, action, _body())))
        handler.__name__ = f"model_{action}"
        api.add_url_rule(f"/models/<name>/{action}", view_func=handler, methods=["POST"])

    for action in CONTROL_ACTIONS:
        route(action)
