"""Champion and challenger (core/live/challengers.py, core/scoring/paired.py): the paired
rule by hand, the REST answers, a challenger that shadows its champion without trading, and
promotion on the bundled 30m recording at its real resolution (1h and 1d candles)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.live.challengers import Challengers, challenger_name
from core.scoring.bootstrap import block_length, draw_block_starts
from core.scoring.paired import compare, pair_rows
from dashboard.app import create_app
from dashboard.openapi import spec
from dashboard.training_view import model_card
from nn.checkpoints import decode
from tests.test_live_training import make_services, run
from tests.test_openapi import check

DAY = 48  # 30m bars
FAST = {"models.cnn.window": 32, "models.dqn.enabled": False, "models.cob.enabled": False,
        "training.checkpoint_every": 100_000, "training.promote_min_resolved": 100}
DIVERGING_LR = 0.1  # Adam at 0.1 makes the CNN's candle forecast swing wildly
GOOD_LR = 1e-3  # the CNN's default


# -- the paired rule, by hand -------------------------------------------------------------


def test_a_constant_gain_has_a_zero_width_interval_and_is_promotable():
    result = compare(np.zeros(40), np.full(40, 0.25), min_rows=30)
    assert result.diff == 0.25 and result.diff_ci == [0.25, 0.25]
    assert result.champion == 0.0 and result.challenger == 0.25
    assert result.promotable and "better on 40" in result.reason


def test_blocks_keep_neighbours_together():
    # 64 pairs, blocks of round(64 ** (1/3)) = 4: every block of an alternating 0, 1 series
    # holds two 1s, so every resample's mean is exactly 0.5 (an i.i.d. bootstrap would not).
    diffs = np.tile([0.0, 1.0], 32)
    assert block_length(64) == 4
    result = compare(np.zeros(64), diffs, min_rows=30)
    assert result.diff_ci == [0.5, 0.5] and result.promotable


def test_no_gain_or_a_mixed_one_is_not_promotable():
    same = compare(np.ones(50), np.ones(50), min_rows=30)
    assert same.diff_ci == [0.0, 0.0] and not same.promotable and "includes 0" in same.reason
    mixed = compare(np.zeros(64), np.r_[np.ones(32), -np.ones(32)], min_rows=30)
    assert mixed.diff == 0.0 and mixed.diff_ci[0] < 0 < mixed.diff_ci[1]
    assert not mixed.promotable
    worse = compare(np.ones(40), np.zeros(40), min_rows=30)
    assert worse.diff_ci == [-1.0, -1.0] and "worse" in worse.reason


def test_too_few_pairs_are_never_promotable():
    few = compare(np.zeros(40), np.ones(40), min_rows=100)
    assert not few.promotable and few.reason == "40 of 100 paired resolved predictions"
    # Below the bootstrap's own floor (30 rows), whatever the configured minimum.
    assert not compare(np.zeros(20), np.ones(20), min_rows=5).promotable
    assert compare([], [], min_rows=30).reason.startswith("no paired")


def test_the_interval_is_the_percentiles_of_block_resample_means():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 90), rng.normal(0.3, 1, 90)
    result = compare(a, b, min_rows=30, seed=11, resamples=500)
    # The same draws, resampled the slow way: each resample the rows of its blocks.
    starts = draw_block_starts(np.random.default_rng(11), 90, 500)
    length = block_length(90)
    means = np.array([np.mean(np.concatenate([(b - a)[s:s + length] for s in row]))
                      for row in starts])
    assert result.diff_ci == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    assert result.diff == pytest.approx(np.mean(b - a))


def test_pairs_are_the_same_candles_only():
    champ = pd.DataFrame({"symbol": ["B", "B", "E"], "timeframe": ["1h"] * 3,
                          "target_ts": [1, 2, 1], "action_correct": [True, False, True],
                          "price_error": [0.1, 0.2, 0.3]})
    chal = pd.DataFrame({"symbol": ["B", "E", "E"], "timeframe": ["1h"] * 3,
                         "target_ts": [2, 1, 5], "action_correct": [True, False, True],
                         "price_error": [0.05, 0.5, 0.0]})
    a, b = pair_rows(champ, chal, "accuracy")  # (B, 1h, 2) and (E, 1h, 1), by target
    assert a.tolist() == [1.0, 0.0] and b.tolist() == [0.0, 1.0]
    a, b = pair_rows(champ, chal, "close_error")
    assert a.tolist() == [-0.3, -0.2] and b.tolist() == [-0.5, -0.05]


# -- REST -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    services = make_services(tmp_path_factory.mktemp("idle"), **FAST)
    yield services
    services.stop()


def client_of(services):
    return create_app(services.config, services.market, services.training).server.test_client()


@pytest.mark.parametrize(("body", "fragments"), [
    ({"learning_rate": 5, "colour": "red"},
     ["models.cnn.learning_rate", "out of range", "models.cnn.colour: unknown key"]),
    ({"dropout": "lots"}, ["models.cnn.dropout", "not a number"]),
    ({"enabled": False}, ["models.cnn.enabled: unknown key"]),
    ({"from": "yesterday"}, ["from: 'yesterday' is not allowed; use one of: fresh, champion"]),
    ([1, 2], ["JSON object"]),
    ({"buffer_size": 10_000_000}, ["models.cnn: the challenger needs", "models.max_model_mb"]),
])
def test_bad_overrides_get_400_naming_them(idle, body, fragments):
    response = client_of(idle).post("/api/models/cnn/challenger", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert all(f in error for f in fragments), error
    assert "cnn" not in idle.training.challengers.slots  # nothing started


def test_unknown_models_get_404_and_promote_without_a_challenger_400(idle):
    client = client_of(idle)
    for path in ("/api/models/lstm/challenger", "/api/models/lstm/promote",
                 f"/api/models/{challenger_name('cnn')}/challenger"):
        response = client.post(path, json={})
        assert response.status_code == 404, path
        assert "no model named" in response.get_json()["error"]
    response = client.post("/api/models/cnn/promote")
    assert response.status_code == 400 and "no challenger" in response.get_json()["error"]
    response = client.post("/api/models/cnn/challenger", data="{not json",
                           content_type="application/json")
    assert response.status_code == 400 and "not JSON" in response.get_json()["error"]


def click_promote(client, model: str, clicks: int):
    """The card's Promote button as the page sends it (a Dash callback request)."""
    button = {"model": model, "type": "promote"}
    return client.post("/_dash-update-component", json={
        "output": "challenger-message.children",
        "outputs": {"id": "challenger-message", "property": "children"},
        "inputs": [[{"id": button, "property": "n_clicks", "value": clicks}]],
        "changedPropIds": [json.dumps(button, separators=(",", ":")) + ".n_clicks"],
        "state": []})


# -- on the recording -----------------------------------------------------------------------


def shadowed(tmp_path, champion_lr: float, challenger_lr: float, days: int = 5, **overrides):
    """The CNN at ``champion_lr`` with a challenger at ``challenger_lr`` (fresh, so both
    start from the same weights), ``days`` market days of the live loop."""
    torch.manual_seed(0)  # dropout while training
    services = make_services(tmp_path, **{**FAST, "models.cnn.learning_rate": champion_lr,
                                          **overrides})
    services.training.start()
    client = client_of(services)
    answer = client.post("/api/models/cnn/challenger", json={"learning_rate": challenger_lr})
    assert answer.status_code == 200, answer.get_json()
    check(spec(), answer, "post", "/api/models/{name}/challenger")
    assert answer.get_json()["challenger"]["overrides"] == {"learning_rate": challenger_lr}
    run(services, days * DAY)
    return services, client


@pytest.fixture(scope="module")
def better(tmp_path_factory):
    services, client = shadowed(tmp_path_factory.mktemp("better"), DIVERGING_LR, GOOD_LR)
    yield services, client
    services.stop()


def test_a_challenger_predicts_and_trains_on_the_champions_candles_but_never_trades(better):
    services, client = better
    live, name = services.training, challenger_name("cnn")
    rows = live.store.resolved_frame()
    keys = ["symbol", "timeframe", "target_ts"]
    champ = rows[rows["model"] == "cnn"].set_index(keys).index
    chal = rows[rows["model"] == name].set_index(keys).index
    assert len(chal) > 200 and set(chal) == set(champ)  # the same candles, stored by name
    assert live.learners[name].train_steps == live.learners["cnn"].train_steps > 20
    assert not rows[rows["model"] == name]["executed"].any()
    assert all(model != name for votes in live.desk.votes.values() for model, _ in votes)
    assert name not in live.cycle.offering  # what the DQN reads stays the champion's
    live.read.invalidate()
    answer = client.get("/api/live-training/status")
    check(spec(), answer, "get", "/api/live-training/status")
    models = answer.get_json()["models"]
    assert models[name]["role"] == "challenger" and models["cnn"]["role"] == "champion"
    assert models[name]["title"] == models["cnn"]["title"] + " · challenger"
    skill = models["cnn"]["challenger"]["skill"]
    assert skill["n"] > 200 and models["cnn"]["challenger"]["measure"] == "close_error"
    # The card: both skills with their intervals, and an enabled Promote button.
    card = str(model_card("cnn", models["cnn"]))
    assert "challenger skill" in card and "champion skill" in card and "PROMOTABLE" in card
    assert "Promote challenger" in card and "disabled=False" in card


def test_a_better_learning_rate_is_promoted_and_a_rollback_undoes_it(better):
    services, client = better
    live, name = services.training, challenger_name("cnn")
    old = live.learners["cnn"]
    newcomer = live.learners[name]
    trained = newcomer.train_steps
    state = live.store.load_state(live.store.recent(limit=1, model="cnn")[0]["id"])
    before = old.predict(state, "1h")
    before_id = live.events.newest_id
    answer = client.post("/api/models/cnn/promote")
    assert answer.status_code == 200, answer.get_json()
    check(spec(), answer, "post", "/api/models/{name}/promote")
    record = answer.get_json()
    assert record["skill"]["promotable"] and record["skill"]["diff_ci"][0] > 0
    assert record["champion_step"] == old.train_steps and record["step"] == old.train_steps + trained
    # The event stream (core/live/events.py) tells its clients.
    assert [e.data for e in live.events.since(before_id)[0] if e.type == "promotion"] == [record]
    # The challenger's learner is the model now, under its name; the slot is empty.
    assert live.learners["cnn"] is newcomer and name not in live.learners
    assert newcomer.cfg.learning_rate == GOOD_LR and newcomer.train_steps == record["step"]
    assert newcomer.look == old.look
    status = client.get("/api/live-training/status").get_json()
    assert status["models"]["cnn"]["challenger"] is None
    assert status["models"]["cnn"]["promotions"][0]["step"] == record["step"]
    assert Challengers(live).history["cnn"] == [record]  # kept across a restart
    promoted = newcomer.predict(state, "1h")
    assert not np.allclose(promoted.ohlcv, before.ohlcv)  # another model predicts now
    # The old champion was checkpointed at its step: loading it restores its predictions.
    path = live.checkpoints.directory / "cnn" / f"step-{record['champion_step']}.pt"
    newcomer.load_state_dict(decode(path.read_bytes()))
    newcomer.publish()
    after = newcomer.predict(state, "1h")
    assert after.action == before.action and after.confidence == pytest.approx(before.confidence)
    np.testing.assert_allclose(after.ohlcv, before.ohlcv, rtol=1e-6)


def test_a_worse_learning_rate_is_never_promoted(tmp_path):
    services, client = shadowed(tmp_path, GOOD_LR, DIVERGING_LR, **{"training.auto_promote": True})
    try:
        live = services.training
        assert live.challengers.history == {} and "cnn" in live.challengers.slots
        result = live.challengers.compare("cnn")
        assert result.n > 200 and result.diff_ci[1] < 0  # it is worse, with confidence
        answer = client.post("/api/models/cnn/promote")
        assert answer.status_code == 400 and "not promotable" in answer.get_json()["error"]
        check(spec(), answer, "post", "/api/models/{name}/promote")
        # The card's button says the same; a card rebuilt (no click) does nothing.
        assert "not promotable" in click_promote(client, "cnn", 1).get_data(as_text=True)
        assert "Alert" not in click_promote(client, "cnn", 0).get_data(as_text=True)
        assert "cnn" in live.challengers.slots
        for _ in range(2):  # dropping it is idempotent
            answer = client.delete("/api/models/cnn/challenger")
            check(spec(), answer, "delete", "/api/models/{name}/challenger")
            assert answer.status_code == 200 and answer.get_json()["challenger"] is None
        assert challenger_name("cnn") not in live.learners
        assert live.store.counts()[challenger_name("cnn")]["resolved"] > 200  # kept
    finally:
        services.stop()


def test_with_auto_promote_the_better_challenger_is_promoted_by_itself(tmp_path):
    services, _ = shadowed(tmp_path, DIVERGING_LR, GOOD_LR, **{"training.auto_promote": True})
    try:
        live = services.training
        [record] = live.challengers.history["cnn"]
        assert record["automatic"] and record["skill"]["n"] >= 100
        assert "cnn" not in live.challengers.slots
        assert live.learners["cnn"].cfg.learning_rate == GOOD_LR
    finally:
        services.stop()


def test_the_models_that_use_a_model_read_its_champion_never_its_challenger(tmp_path):
    services = make_services(tmp_path, **{**FAST, "models.dqn.enabled": True,
                                          "models.dqn.window": 16, "models.dqn.hidden": 64})
    try:
        live = services.training
        live.start()
        live.challengers.start("cnn", {"from": "champion", "dropout": 0.2})
        shadow = live.learners[challenger_name("cnn")]

        def refuse(observations):
            raise AssertionError("the challenger's offer reached another model")
        shadow.offer = refuse
        run(services, DAY)
        counts = live.store.counts()
        assert counts["dqn"]["pending"] + counts["dqn"]["resolved"] > 40
        assert counts[challenger_name("cnn")] == counts["cnn"]
        assert challenger_name("dqn") not in live.learners  # one challenger: the CNN's
    finally:
        services.stop()
