"""REST endpoints on Dash's Flask server: thin handlers over the services.

- GET  /api/market/status
- POST /api/live-training/start, POST /api/live-training/stop   (idempotent; return the status)
- GET  /api/live-training/status
- GET  /api/live-training/predictions?limit=&model=&symbol=&timeframe=&status=

A bad request gets 400 with {"error": "..."} saying what is allowed; a wrong method 405.
No answer holds an absolute path (``no_paths``): files are named relative to the repo, or by
their bare name.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from core.market.service import MarketService

ROOT = Path(__file__).resolve().parents[1]
# An absolute path (two or more parts) not inside a URL or a relative path: its last part kept.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"]+/)+([^\s/'\",;)]+)")


class BadRequest(ValueError):
    pass


def _choice(name: str, allowed) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadRequest(f"{name}={value!r} is not allowed; use one of: {', '.join(allowed)}")
    return value


def _limit() -> int:
    raw = request.args.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit={raw!r} is not an integer; use 1 to 1000") from None
    if not 1 <= limit <= 1000:
        raise BadRequest(f"limit={limit} is out of range; use 1 to 1000")
    return limit


def prediction_query(choices: dict[str, tuple[str, ...]]) -> dict:
    """Validated query parameters of GET predictions (raises BadRequest); ``choices``: what
    each filter may name (the read model's)."""
    known = {"limit", *choices}
    unknown = sorted(set(request.args) - known)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    return {"limit": _limit(), **{name: _choice(name, allowed)
                                  for name, allowed in choices.items()}}


def no_paths(root: Path = ROOT) -> Callable[[Any], Any]:
    """A function that copies JSON-like data with every absolute path in its strings made
    relative to ``root`` (the repo) or, outside it, cut to the file's bare name."""
    prefix = f"{Path(root).resolve()}/"

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return _ABSOLUTE.sub(r"\1", value.replace(prefix, "")) if "/" in value else value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    return scrub


class Bodies:
    """Encoded JSON answers reused while what they encode is unchanged: twenty clients polling
    the same listing between two store changes share one encoding (a 1,000-row page is ~0.5 MB
    of JSON, ~7 ms to encode). ``key`` is compared by value, ``source`` by identity (the read
    model's cached status object); at most ``MAX`` answers, then all are forgotten."""

    MAX = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[Any, tuple[object, bytes]] = {}

    def get(self, key: Any, source: object, encode: Callable[[], bytes]) -> bytes:
        with self._lock:
            hit = self._bodies.get(key)
        if hit is not None and hit[0] is source:
            return hit[1]
        body = encode()
        with self._lock:
            if len(self._bodies) >= self.MAX:
                self._bodies.clear()
            self._bodies[key] = (source, body)
        return body


def _json(body: bytes) -> Response:
    return Response(body, mimetype="application/json")


def api_blueprint(market: MarketService, training=None,
                  public: Callable[[Any], Any] = lambda data: data) -> Blueprint:
    """The REST endpoints; ``public`` is applied to the status answers (``no_paths()``)."""
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.errorhandler(BadRequest)
    def bad_request(exc):
        return jsonify({"error": str(exc)}), 400

    @api.get("/market/status")
    def market_status():
        return jsonify(public(market.snapshot()))

    if training is None:
        return api

    @api.post("/live-training/start")
    def start():
        return jsonify(public(training.start()))

    @api.post("/live-training/stop")
    def stop():
        return jsonify(public(training.stop()))

    bodies = Bodies()

    @api.get("/live-training/status")
    def status():
        current = training.read.status_json()
        return _json(bodies.get("status", current,
                                lambda: current_app.json.dumps(public(current)).encode()))

    @api.get("/live-training/predictions")
    def predictions():
        query = prediction_query(training.read.choices())
        version = training.read.predictions_version()
        key = ("predictions", version, tuple(query.items()))
        return _json(bodies.get(key, None, lambda: current_app.json.dumps(
            {"predictions": training.read.predictions(**query), "query": query}).encode()))

    return api


def endpoints(server: Flask) -> list[str]:
    """The REST endpoints served, as "METHOD /path" (what start-up says is exposed)."""
    out = []
    for rule in sorted(server.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.rule.startswith("/api/"):
            methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
            out.append(f"{'/'.join(methods)} {rule.rule}")
    return out


def install_json_errors(server: Flask) -> None:
    """404 and 405 under /api/ answer JSON saying what exists.

    Dash serves its page for every GET path it does not know (a catch-all route), so a GET on
    a POST-only endpoint would get the HTML page with 200. This hook answers first, from the
    API's own routes.
    """
    methods: dict[str, set[str]] = {}
    for rule in server.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods.setdefault(rule.rule, set()).update(rule.methods or ())

    @server.before_request
    def api_routing():
        path = request.path
        if not path.startswith("/api/"):
            return None
        allowed = methods.get(path)
        if allowed is None:
            return jsonify({"error": f"no endpoint {path}; endpoints: "
                                     f"{', '.join(sorted(methods))}"}), 404
        if request.method not in allowed:
            shown = ", ".join(sorted(allowed - {"HEAD", "OPTIONS"}))
            return jsonify({"error": f"{request.method} is not allowed on {path}; use {shown}"}), 405
        return None
