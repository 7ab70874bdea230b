"""REST endpoints on Dash's Flask server: thin handlers over the services.

- GET  /api/market/status
- POST /api/live-training/start, POST /api/live-training/stop   (idempotent; return the status)
- GET  /api/live-training/status
- GET  /api/live-training/predictions?limit=&model=&symbol=&timeframe=&status=
- GET  /api/health (200, or 503 with the reasons: core/health.py)
- GET  /api/openapi.json (every route described: dashboard/openapi.py)
- GET  /api/live-training/events (Server-Sent Events; Last-Event-ID or ?last_event_id=)

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
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from core.health import health as judge_health
from core.live.events import EventBus, parse_last_id
from core.market.service import MarketService
from core.predictions import StoreUnavailable
from dashboard.challenger_api import challenger_routes
from dashboard.control_api import control_routes
from dashboard.openapi import spec

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


def operations_routes(api: Blueprint, market: MarketService, training,
                      public: Callable[[Any], Any]) -> None:
    """GET /api/openapi.json (dashboard/openapi.py) and, with training, GET /api/health: 200,
    or 503 when the feed or the scheduler is dead, with the reasons (core/health.py)."""

    @api.get("/openapi.json")
    def openapi():
        return jsonify(spec())

    if training is None:
        return

    @api.get("/health")
    def health():
        schedule = training.schedule
        code, body = judge_health(market.snapshot(),
                                  None if schedule is None else schedule.report(),
                                  training.store.health_status())
        return jsonify(public(body)), code


def events_route(api: Blueprint, events: EventBus) -> None:
    """GET /api/live-training/events: the live loop's events as Server-Sent Events
    (core/live/events.py), resumed after ``Last-Event-ID`` (or ``?last_event_id=``). Each
    stream holds a server thread: past ``server.event_streams`` open, 503."""

    @api.get("/live-training/events")
    def live_events():
        unknown = sorted(set(request.args) - {"last_event_id"})
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}; allowed: last_event_id")
        try:
            last = parse_last_id(request.headers.get("Last-Event-ID"),
                                 request.args.get("last_event_id"))
            events.check(last)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if not events.open_stream():
            return jsonify({"error": f"{events.max_streams} event streams are open, the most "
                                     "server.event_streams allows; try again later"}), 503, {
                "Retry-After": "5"}
        response = Response(events.stream(last), mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(events.close_stream)  # however the stream ends
        return response


def api_blueprint(market: MarketService, training=None,
                  public: Callable[[Any], Any] = lambda data: data) -> Blueprint:
    """The REST endpoints; ``public`` is applied to the status answers (``no_paths()``)."""
    api = Blueprint("api", __name__, url_prefix="/api")
    api.register_error_handler(BadRequest, lambda exc: (jsonify({"error": str(exc)}), 400))
    # The store's database is DOWN: /status says so and when it is retried.
    api.register_error_handler(StoreUnavailable, lambda exc: (
        jsonify({"error": str(exc)}), 503, {"Retry-After": "5"}))
    operations_routes(api, market, training, public)

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

    challenger_routes(api, training, public)  # dashboard/challenger_api.py
    control_routes(api, training, public)  # pause/resume/freeze/unfreeze/rollback
    events_route(api, training.events)

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
    # The API's rules alone (no catch-all), so /api/models/cnn/pause matches <name>.
    routes = Map([Rule(rule, methods=allowed, endpoint=rule)
                  for rule, allowed in methods.items()]).bind("")

    @server.before_request
    def api_routing():
        path = request.path
        if not path.startswith("/api/"):
            return None
        try:
            routes.match(path, method=request.method)
        except NotFound:
            return jsonify({"error": f"no endpoint {path}; endpoints: "
                                     f"{', '.join(sorted(methods))}"}), 404
        except MethodNotAllowed as exc:
            shown = ", ".join(sorted(set(exc.valid_methods or ()) - {"HEAD", "OPTIONS"}))
            return jsonify({"error": f"{request.method} is not allowed on {path}; use {shown}"}), 405
        except RequestRedirect:  # a trailing slash: Flask's own routing answers it
            return None
        return None
