"""Per-model control (core/live/control.py) through the REST API, on the bundled 30m
recording at its real resolution: pause, freeze, resume, unfreeze and rollback change exactly
what they say, for one model while the other goes on; bad names and bodies are refused with a
reason; staleness by market time on a manual clock."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from core.live.control import ModelStates
from core.live.models import build_learners
from core.predictions import PredictionStore, schema
from dashboard.app import create_app
from dashboard.openapi import spec
from dashboard.training_view import model_card
from nn.checkpoints import decode
from tests.test_live_training import make_services, run
from tests.test_openapi import check

FAST = {"models.cnn.window": 32, "models.dqn.enabled": False, "models.cob.enabled": True,
        "training.checkpoint_every": 1, "training.keep_checkpoints": 3}
HOURS = 2  # 30m bars


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    services = make_services(tmp_path_factory.mktemp("control"), **FAST)
    services.training.start()
    client = create_app(services.config, services.market, services.training).server.test_client()
    run(services, 24 * HOURS)
    yield services, client
    services.stop()


def counts(services) -> dict[str, tuple[int, int, int]]:
    """Per model: (train steps, predictions made, predictions resolved)."""
    live = services.training
    stored = live.store.counts()
    return {name: (lrn.train_steps, sum(stored.get(name, {}).values()),
                   stored.get(name, {}).get("resolved", 0))
            for name, lrn in live.learners.items()}


def post(client, name: str, action: str, body=None):
    answer = client.post(f"/api/models/{name}/{action}", json=body)
    check(spec(), answer, "post", f"/api/models/{{name}}/{action}")
    return answer


def test_a_paused_model_neither_predicts_nor_trains_while_the_other_goes_on(live):
    services, client = live
    events = services.training.events
    assert {"cnn", "cob"} <= set(services.training.learners)
    newest = events.newest_id
    first = post(client, "cnn", "pause")
    assert first.status_code == 200 and first.get_json()["state"] == "paused"
    again = post(client, "cnn", "pause")  # idempotent: the same state, 200
    assert again.status_code == 200 and again.get_json() == first.get_json()
    # One state event on the stream (core/live/events.py): the second pause changed nothing.
    changes = [e.data for e in events.since(newest)[0] if e.type == "state"]
    assert [(c["model"], c["action"], c["state"]) for c in changes] == [
        ("cnn", "pause", "paused")]
    before = counts(services)
    run(services, 24 * HOURS)
    after = counts(services)
    assert after["cnn"][:2] == before["cnn"][:2]  # no training step, no prediction
    assert after["cob"][0] > before["cob"][0] and after["cob"][1] > before["cob"][1]
    status = client.get("/api/live-training/status").get_json()
    assert status["models"]["cnn"]["state"] == "PAUSED"
    assert status["models"]["cnn"]["stale"] is False  # paused: not stale by design
    answer = post(client, "cnn", "resume")
    assert answer.status_code == 200 and answer.get_json()["state"] == "active"
    run(services, 24 * HOURS)
    resumed = counts(services)
    assert resumed["cnn"][0] > after["cnn"][0] and resumed["cnn"][1] > after["cnn"][1]


def test_a_frozen_model_predicts_and_is_scored_but_does_not_train(live):
    services, client = live
    answer = post(client, "cnn", "freeze")
    assert answer.status_code == 200 and answer.get_json()["state"] == "frozen"
    assert post(client, "cnn", "freeze").get_json()["state"] == "frozen"
    before = counts(services)
    run(services, 24 * HOURS)
    after = counts(services)
    assert after["cnn"][0] == before["cnn"][0]  # no training step
    assert after["cnn"][1] > before["cnn"][1] and after["cnn"][2] > before["cnn"][2]
    assert after["cob"][0] > before["cob"][0]
    # Frozen and paused are independent: resume does not unfreeze.
    assert post(client, "cnn", "resume").get_json()["state"] == "frozen"
    assert post(client, "cnn", "unfreeze").get_json()["state"] == "active"
    run(services, 24 * HOURS)
    assert counts(services)["cnn"][0] > after["cnn"][0]


def test_a_rollback_predicts_as_the_checkpoint_does(live):
    services, client = live
    training = services.training
    kept = training.checkpoints.kept_steps("cnn")
    assert len(kept) == 3, kept  # keep_checkpoints
    now = training.learners["cnn"].train_steps
    step = kept[0]
    assert step < now
    answer = post(client, "cnn", "rollback", {"step": step})
    assert answer.status_code == 200, answer.get_json()
    state = answer.get_json()
    assert state["rolled_back"]["from_step"] == now and state["rolled_back"]["to_step"] == step
    assert state["train_steps"] == state["published_steps"] == step
    rolled_at = training.market.clock.now_ms()
    run(services, 2)  # one 1h close of each symbol: predicted at once, before any training
    after = [p for p in training.store.recent(limit=20, model="cnn")
             if p["created_ts"] > rolled_at]
    first = min(p["created_ts"] for p in after)
    nexts = [p for p in after if p["created_ts"] == first]
    assert nexts and all(p["model_step"] == step for p in nexts)
    # The checkpoint, loaded into a fresh learner, predicts the same from the same state.
    fresh = build_learners(services.config, training.timeframes)["cnn"]
    path, saved = training.checkpoints.load_step("cnn", step)
    fresh.load_state_dict(saved)
    for p in nexts:
        out = fresh.predict(training.store.load_state(p["id"]), p["timeframe"])
        assert fresh.actions[out.action] == p["action"]
        assert out.confidence == pytest.approx(p["confidence"], rel=1e-5)
    # The card says which step it runs and that it was rolled back, and from where.
    training.read.invalidate()
    m = client.get("/api/live-training/status").get_json()["models"]["cnn"]
    card = str(model_card("cnn", m))
    assert f"to step {step:,} from step {now:,}" in card
    # Its next checkpoint starts a new run, ranked above the files it rolled back past.
    run(services, 24 * HOURS)
    assert training.learners["cnn"].train_steps > step
    newest = training.checkpoints.latest_info("cnn")
    assert "run-" in newest["path"]
    assert decode(open(newest["path"], "rb").read())["train_steps"] == newest["step"]
    assert path.name.startswith("step-")


@pytest.mark.parametrize(("body", "fragment"), [
    (None, 'needs a JSON body {"step": N}'),
    ({}, 'needs a JSON body {"step": N}'),
    ({"step": "3"}, "step must be an integer"),
    ({"step": True}, "step must be an integer"),
    ({"step": 10**9}, "is not a kept checkpoint"),
    ({"step": 1, "force": True}, "only 'step', not force"),
    ([1], 'needs a JSON body {"step": N}'),
])
def test_bad_rollback_bodies_get_400_naming_the_kept_steps(live, body, fragment):
    services, client = live
    answer = post(client, "cnn", "rollback", body)
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert fragment in error
    if "only 'step'" not in error:
        kept = services.training.checkpoints.kept_steps("cnn")
        assert f"kept steps: {', '.join(map(str, kept))}" in error


def test_unknown_models_get_404_naming_the_known_ones_and_bodies_on_pause_400(live):
    _, client = live
    for action in ("pause", "resume", "freeze", "unfreeze", "rollback"):
        answer = post(client, "nope", action, {"step": 1})
        assert answer.status_code == 404
        assert answer.get_json()["error"] == "no model named 'nope'; known models: cnn, cob"
    answer = post(client, "cnn", "pause", {"now": True})
    assert answer.status_code == 400 and "pause takes no body" in answer.get_json()["error"]
    assert client.post("/api/models/cnn/pause", data="{nope").status_code == 400


def click(client, button: dict, prop: str = "n_clicks"):
    """A card's button as the page sends it (a Dash callback request): one control button
    or one confirmed rollback, the only one of its pattern on the page."""
    pressed = {"id": button, "property": prop, "value": 1}
    control = [pressed] if prop == "n_clicks" else []
    rollback = [pressed] if prop == "submit_n_clicks" else []
    return client.post("/_dash-update-component", json={
        "output": "control-message.children",
        "outputs": {"id": "control-message", "property": "children"},
        "inputs": [control, rollback],
        "changedPropIds": [json.dumps(button, separators=(",", ":")) + "." + prop],
        "state": []})


def test_the_cards_buttons_pause_resume_and_roll_back_after_confirmation(live):
    services, client = live
    training = services.training
    answer = click(client, {"action": "pause", "model": "cob", "type": "model-control"})
    assert answer.status_code == 200 and "cob: paused" in answer.get_data(as_text=True)
    assert training.control.states.state("cob") == "paused"
    click(client, {"action": "resume", "model": "cob", "type": "model-control"})
    assert training.control.states.state("cob") == "active"
    step = training.checkpoints.kept_steps("cob")[0]
    answer = click(client, {"model": "cob", "step": step, "type": "model-rollback"},
                   "submit_n_clicks")
    assert f"cob: rolled back to step {step:,}" in answer.get_data(as_text=True)
    assert training.learners["cob"].train_steps == step


# -- staleness, by market time -------------------------------------------------------------


def states(limit_ms: int = 1000) -> tuple[ModelStates, list[int]]:
    now = [0]
    s = ModelStates(lambda: now[0])
    s.stale_after_ms = limit_ms
    s.started_ms = lambda: 0
    return s, now


def test_a_model_is_stale_when_it_neither_trains_nor_resolves_for_the_limit():
    s, now = states()
    now[0] = 1000
    assert not s.is_stale("m")  # exactly the limit: not older than it
    now[0] = 1500
    s.note_trained("m")
    s.note_resolved("m", 1500)
    now[0] = 2400
    assert not s.is_stale("m")
    s.note_resolved("m", 2400)
    now[0] = 2600  # trained 1100 ms ago, resolved 200 ms ago
    st = s.staleness("m")
    assert st["stale"] and st["training"] == "STALE" and st["resolution"] == "ok"
    assert st["training_age_s"] == pytest.approx(1.1)


def test_frozen_is_frozen_by_training_and_stale_only_by_resolution_paused_never():
    s, now = states()
    s.frozen.add("m")
    now[0] = 5000
    st = s.staleness("m")
    assert st["training"] == "FROZEN" and st["resolution"] == "STALE" and st["stale"]
    s.note_resolved("m", 5000)
    assert s.staleness("m")["training"] == "FROZEN" and not s.is_stale("m")
    s.paused.add("p")
    assert not s.is_stale("p") and s.staleness("p")["training"] is None
    s.started_ms = lambda: None  # training off: not judged
    assert not s.is_stale("m")


def test_status_marks_a_model_stale_when_market_time_runs_past_the_limit(tmp_path):
    services = make_services(tmp_path, **{**FAST, "models.cob.enabled": False,
                                          "training.stale_after_s": 3600})
    try:
        training = services.training
        training.start()
        training.read.invalidate()
        status = training.read.status_json()
        assert status["models"]["cnn"]["stale"] is False
        clock = services.market.clock
        clock.set(clock.now_ms() + 3601 * 1000)  # no candle, no step, no resolution
        training.read.invalidate()
        m = training.read.status_json()["models"]["cnn"]
        assert m["stale"] is True
        assert m["control"]["staleness"]["training"] == "STALE"
        assert "STALE" in str(model_card("cnn", m))
    finally:
        services.stop()


def test_predictions_made_while_stale_say_so(tmp_path):
    services = make_services(tmp_path, **{**FAST, "models.cob.enabled": False,
                                          "training.stale_after_s": 5400})
    try:
        client = create_app(services.config, services.market,
                            services.training).server.test_client()
        services.training.start()
        run(services, 3 * HOURS)
        answer = client.get("/api/live-training/predictions?model=cnn&limit=100")
        check(spec(), answer, "get", "/api/live-training/predictions")
        rows = sorted(answer.get_json()["predictions"], key=lambda p: p["created_ts"])
        assert services.training.learners["cnn"].train_steps == 0  # no batch full yet
        started = services.training.started_at_ms
        for p in rows:  # no step since the start: STALE once 1.5 h of market time passed
            assert p["stale"] is (p["created_ts"] - started > 5400 * 1000), p
        assert {p["stale"] for p in rows} == {True, False}
    finally:
        services.stop()


def test_a_version_2_store_gets_the_stale_column(tmp_path):
    path = tmp_path / "v2.db"
    raw = sqlite3.connect(path, isolation_level=None)
    version_2 = re.sub(r"\n\s*stale [^\n]*", "", schema._SCHEMA)  # the table without it
    raw.executescript(version_2.replace("resolved_ts     INTEGER,", "resolved_ts     INTEGER "))
    raw.executescript(schema._SCHEMA_2)
    raw.executescript("""  -- version 2's totals, per model (version 4 splits them by symbol)
        CREATE TABLE totals (model TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
                             PRIMARY KEY (model, status)) WITHOUT ROWID;
        CREATE TABLE hits (model TEXT NOT NULL, timeframe TEXT NOT NULL,
                           resolved INTEGER NOT NULL, correct INTEGER NOT NULL,
                           PRIMARY KEY (model, timeframe)) WITHOUT ROWID;
        INSERT INTO totals VALUES ('cnn', 'pending', 1);""")
    raw.execute("INSERT INTO schema_version VALUES (2)")
    raw.execute("INSERT INTO predictions (model, model_step, symbol, timeframe, created_ts, "
                "target_ts, reference_price, action, confidence) "
                "VALUES ('cnn', 0, 'ETH/USDT', '1m', 0, 60000, 1.0, 'BUY', 0.5)")
    assert "stale" not in {r[1] for r in raw.execute("PRAGMA table_info(predictions)")}
    raw.close()
    with PredictionStore(path) as store:
        assert [r["stale"] for r in store.recent()] == [False]
        assert store.counts() == {"cnn": {"pending": 1, "resolved": 0, "expired": 0}}
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
    raw.close()


def test_pause_and_freeze_hold_across_a_restart_and_a_bad_file_is_set_aside(tmp_path, caplog):
    runtime = tmp_path / "rt"
    first = make_services(runtime, **FAST)
    client = create_app(first.config, first.market, first.training).server.test_client()
    assert post(client, "cnn", "pause").status_code == 200
    assert post(client, "cob", "freeze").status_code == 200
    first.stop()
    again = make_services(runtime, **FAST)  # the next run on the same runtime_dir
    try:
        assert again.training.control.describe("cnn")["state"] == "paused"
        assert again.training.control.describe("cob")["state"] == "frozen"
        assert not again.training.cycle.control.predicts("cnn")
        assert not again.training.learning.control.trains("cob")
    finally:
        again.stop()
    (runtime / "control.json").write_text("{not json")
    third = make_services(runtime, **FAST)
    try:
        assert third.training.control.describe("cnn")["state"] == "active"
        assert (runtime / "control.json.bad").exists() and "set aside" in caplog.text
    finally:
        third.stop()
