"""REST endpoints of champion and challenger (core/live/challengers.py):

- POST /api/models/<name>/challenger  body: overrides of ``models.<name>`` keys, and
  ``"from": "fresh" | "champion"``; answers the model's challenger entry (its card's)
- DELETE /api/models/<name>/challenger  drops it (its stored predictions stay); idempotent
- POST /api/models/<name>/promote     no body; answers the promotion's record

A bad body, or a challenger not (yet) promotable: 400 with {"error": reason}; an unknown
model: 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify

from core.live.challengers import ChallengeError
from dashboard.request_body import json_body


def _body() -> Any:
    return json_body(ChallengeError, empty={})


def challenger_routes(api: Blueprint, training,
                      public: Callable[[Any], Any] = lambda data: data) -> None:
    """Add the challenger endpoints to ``api`` (the /api blueprint of dashboard/rest.py)."""

    @api.errorhandler(ChallengeError)
    def refused(exc: ChallengeError):
        return jsonify({"error": str(exc)}), exc.status

    @api.post("/models/<name>/challenger")
    def challenger(name: str):
        return jsonify(public(training.challengers.start(name, _body())))

    @api.delete("/models/<name>/challenger")
    def drop_challenger(name: str):
        training.challengers.stop(name)
        return jsonify(public(training.challengers.card(name)))

    @api.post("/models/<name>/promote")
    def promote(name: str):
        body = _body()
        if body != {}:
            raise ChallengeError("promote takes no body: a challenger is promoted only when "
                                 "the paired rule holds")
        return jsonify(public(training.challengers.promote(name)))
