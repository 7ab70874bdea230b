"""GET /api/openapi.json against the server: every route under /api it registers is described
and every described route is registered (both ways), the schemas are valid JSON Schema with
every reference resolved, and real answers (the status of a replay that predicted and trained,
pages of predictions, errors, health dead and alive) validate against them."""

from __future__ import annotations

import re
import time

import pytest
from jsonschema import Draft202012Validator

from core.config import load_config
from core.services import build_services
from dashboard.app import create_app
from dashboard.security import Credentials
from tests.test_live_training import ROOT, make_services, run

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
JSON = "application/json"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    services = make_services(tmp_path_factory.mktemp("runtime"))
    services.training.start()
    run(services, 12)  # predictions made, resolved and trained on
    yield services
    services.stop()


@pytest.fixture(scope="module")
def client(services):
    return create_app(services.config, services.market, services.training).server.test_client()


@pytest.fixture(scope="module")
def spec(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == JSON
    return response.get_json()


def templates(rule: str) -> list[str]:
    """A Flask rule as OpenAPI paths: ``<name>`` and ``<int:step>`` as ``{name}``, ``{step}``;
    an ``<any(a, b):x>`` converter as one path per choice."""
    choice = re.search(r"<any\(([^)]*)\):\w+>", rule)
    if choice:
        return [p for option in choice.group(1).split(",")
                for p in templates(rule.replace(choice.group(0), option.strip().strip("'\"")))]
    return [re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule)]


def registered(client) -> set[tuple[str, str]]:
    out = set()
    for rule in client.application.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                out.update((method.lower(), path) for path in templates(rule.rule))
    return out


def described(spec: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in spec["paths"].items() for method in ops
            if method in HTTP_METHODS}


def test_every_registered_route_is_described(client, spec):
    missing = sorted(registered(client) - described(spec))
    assert not missing, f"routes the server registers that openapi.json lacks: {missing}"


def test_every_described_route_is_registered(client, spec):
    missing = sorted(described(spec) - registered(client))
    assert not missing, f"routes openapi.json describes that the server lacks: {missing}"


def refs(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_document_is_openapi_3_1_with_valid_schemas_and_parameters(spec):
    assert spec["openapi"].startswith("3.1") and spec["info"]["title"] == "Tickwise"
    schemas = spec["components"]["schemas"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)  # raises, naming what is wrong
    for target in refs(spec):
        assert target.startswith("#/components/schemas/") and \
            target.rsplit("/", 1)[1] in schemas, f"unresolved $ref {target}"
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
            assert "200" in op["responses"], (method, path)


def check(spec: dict, response, method: str, path: str) -> None:
    """The answer is described for its status code and media type, and its JSON validates
    against the described schema."""
    op = spec["paths"][path][method]
    code = str(response.status_code)
    assert code in op["responses"], f"{method.upper()} {path} answered {code}: not described"
    content = op["responses"][code]["content"]
    assert response.mimetype in content, (path, code, response.mimetype)
    if response.mimetype != JSON:
        return
    schema = {**content[JSON]["schema"], "components": spec["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(response.get_json()), key=str)
    assert not errors, f"{method.upper()} {path} {code}: " + "; ".join(
        f"at {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:5])


@pytest.mark.parametrize("method,url,path,code", [
    ("get", "/api/market/status", "/api/market/status", 200),
    ("get", "/api/live-training/status", "/api/live-training/status", 200),
    ("get", "/api/live-training/predictions?limit=5", "/api/live-training/predictions", 200),
    ("get", "/api/live-training/predictions?limit=5&model=cnn&status=resolved",
     "/api/live-training/predictions", 200),
    ("get", "/api/live-training/predictions?limit=0", "/api/live-training/predictions", 400),
    ("get", "/api/live-training/predictions?model=nope", "/api/live-training/predictions", 400),
    ("get", "/api/openapi.json", "/api/openapi.json", 200),
    ("get", "/api/live-training/events?nope=1", "/api/live-training/events", 400),
    ("post", "/api/live-training/start", "/api/live-training/start", 200),
    ("post", "/api/live-training/stop", "/api/live-training/stop", 200),
    ("post", "/api/live-training/start", "/api/live-training/start", 200),
])
def test_real_answers_validate_against_the_schemas(client, spec, method, url, path, code):
    response = getattr(client, method)(url)
    assert response.status_code == code, response.get_data(as_text=True)[:300]
    check(spec, response, method, path)


def test_the_status_answer_has_data_in_what_the_schemas_describe(client):
    status = client.get("/api/live-training/status").get_json()
    models = status["models"]
    assert set(models) == {"cnn", "dqn", "cob"}
    assert all(m["costs"]["forward_ms"]["n"] > 0 for m in models.values())
    assert client.get("/api/live-training/predictions?limit=5").get_json()["predictions"]


def test_unknown_paths_and_wrong_methods_answer_the_error_schema(client, spec):
    error = {"$ref": "#/components/schemas/Error", "components": spec["components"]}
    for response, code in ((client.get("/api/nope"), 404),
                           (client.get("/api/live-training/start"), 405)):
        assert response.status_code == code
        Draft202012Validator(error).validate(response.get_json())


def test_health_is_503_with_the_reasons_while_nothing_runs(client, spec):
    response = client.get("/api/health")  # built, never started: no pump, no scheduler
    assert response.status_code == 503
    check(spec, response, "get", "/api/health")
    reasons = response.get_json()["reasons"]
    assert any("market source is idle" in r for r in reasons), reasons
    assert any("no scheduler runs the jobs" in r for r in reasons), reasons


def test_health_is_200_while_the_app_runs_and_503_once_stopped(tmp_path):
    cfg = load_config(ROOT / "config.yaml", {"market.source": "replay",
                                             "runtime_dir": str(tmp_path),
                                             "models.dqn.buffer_size": 2000}, environ={})
    services = build_services(cfg)
    client = create_app(cfg, services.market, services.training).server.test_client()
    spec = client.get("/api/openapi.json").get_json()
    services.start()  # the market pump and the scheduler, as app.py starts them
    try:
        deadline = time.monotonic() + 30
        while True:  # healthy, and the cycle's job has run at least once
            response = client.get("/api/health")
            body = response.get_json()
            if response.status_code == 200 and \
                    body["scheduler"]["jobs"]["process_closes"]["last_start_s_ago"] is not None:
                break
            assert time.monotonic() < deadline, body["reasons"]
            time.sleep(0.2)
        check(spec, response, "get", "/api/health")
        assert body["scheduler"]["state"] == "running" and body["feed"]["running"]
    finally:
        services.stop()
    response = client.get("/api/health")
    assert response.status_code == 503
    check(spec, response, "get", "/api/health")
    assert "the scheduler is stopped" in response.get_json()["reasons"]


# The routes of the other items: each must be registered and answer as described.
OTHER_ROUTES = [
    ("post", "/api/models/cnn/pause", "/api/models/{name}/pause", None, 200),
    ("post", "/api/models/cnn/pause", "/api/models/{name}/pause", None, 200),  # idempotent
    ("post", "/api/models/cnn/resume", "/api/models/{name}/resume", None, 200),
    ("post", "/api/models/dqn/freeze", "/api/models/{name}/freeze", None, 200),
    ("post", "/api/models/dqn/unfreeze", "/api/models/{name}/unfreeze", None, 200),
    ("post", "/api/models/nope/pause", "/api/models/{name}/pause", None, 404),
    ("post", "/api/models/cnn/rollback", "/api/models/{name}/rollback", {"step": "x"}, 400),
    ("post", "/api/models/cnn/challenger", "/api/models/{name}/challenger",
     {"no_such_key": 1}, 400),
    ("post", "/api/models/nope/challenger", "/api/models/{name}/challenger", {}, 404),
    ("post", "/api/models/cnn/promote", "/api/models/{name}/promote", None, 400),
]


@pytest.mark.parametrize("method,url,path,body,code", OTHER_ROUTES)
def test_the_model_routes_answer_as_described(client, spec, method, url, path, body, code):
    assert (method, path) in registered(client), f"{method.upper()} {path} is not registered"
    response = getattr(client, method)(url, json=body) if body is not None \
        else getattr(client, method)(url)
    assert response.status_code == code, response.get_data(as_text=True)[:300]
    check(spec, response, method, path)


def test_the_event_stream_is_served_as_described(client, spec):
    path = "/api/live-training/events"
    assert ("get", path) in registered(client), f"GET {path} is not registered"
    response = client.get(path, buffered=False)
    try:
        assert response.status_code == 200
        check(spec, response, "get", path)
    finally:
        response.close()


def test_health_needs_the_credentials_once_they_are_set(services):
    app = create_app(services.config, services.market, services.training,
                     Credentials(token="load-balancer-token"))
    client = app.server.test_client()
    refused = client.get("/api/health")
    assert refused.status_code == 401 and "load-balancer-token" not in refused.get_data(True)
    answered = client.get("/api/health",
                          headers={"Authorization": "Bearer load-balancer-token"})
    assert answered.status_code == 503 and answered.get_json()["reasons"]  # nothing runs here
