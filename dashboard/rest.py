"""REST endpoints on Dash's Flask server: thin handlers over the services.

- GET  /api/market/status
- POST /api/live-training/start, POST /api/live-training/stop   (idempotent; return the status)
- GET  /api/live-training/status
- GET  /api/live-training/predictions?limit=&model=&symbol=&timeframe=&status=

A bad request gets 400 with {"error": "..."} saying what is allowed; a wrong method 405.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify, request

from core.market.service import MarketService


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


def api_blueprint(market: MarketService, training=None) -> Blueprint:
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.errorhandler(BadRequest)
    def bad_request(exc):
        return jsonify({"error": str(exc)}), 400

    @api.get("/market/status")
    def market_status():
        return jsonify(market.snapshot())

    if training is None:
        return api

    @api.post("/live-training/start")
    def start():
        return jsonify(training.start())

    @api.post("/live-training/stop")
    def stop():
        return jsonify(training.stop())

    @api.get("/live-training/status")
    def status():
        return jsonify(training.read.status_json())

    @api.get("/live-training/predictions")
    def predictions():
        query = prediction_query(training.read.choices())
        return jsonify({"predictions": training.read.predictions(**query), "query": query})

    return api


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
