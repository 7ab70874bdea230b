"""The JSON body of a REST request, for the per-model routes (control and challenger)."""

from __future__ import annotations

from typing import Any

from flask import request


def json_body(error: type[Exception], empty: Any = None) -> Any:
    """The request's JSON body; ``empty`` when there is none. Not JSON: ``error`` (a 400 of the
    caller's kind) saying so."""
    if not request.get_data(cache=True).strip():
        return empty
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise error("the body is not JSON; send a JSON object")
    return body
