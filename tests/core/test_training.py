"""The live-training service's own rules: executed trades weigh more, signals trade on paper,
failing jobs are reported by type and do not stop the next run."""

from __future__ import annotations

from core.live.signals import Vote
from tests.test_live_training import BAR, SEC, make_services, run


def test_executed_predictions_become_heavier_experiences(tmp_path):
    services = make_services(tmp_path)
    training = services.training
    training.start()
    run(services, 2)  # one round of 1h predictions is pending
    pending = training.store.recent(limit=50, status="pending", model="dqn", timeframe="1h")
    assert pending
    executed = [p["id"] for p in pending[:1]]
    assert training.store.mark_executed(executed) == 1
    training.train_due = lambda: 0  # keep the experiences waiting so we can look at them
    run(services, 2)
    waiting = training.learning.waiting["dqn"]["1h"]
    weights = sorted(e.weight for e in waiting)
    # One of the resolved predictions executed a paper trade: training.trade_weight = 10.
    assert weights[-1] == 10.0 and weights[0] == 1.0
    assert sum(w == 10.0 for w in weights) == 1
    services.stop()


def test_a_confident_fused_signal_opens_a_paper_position_and_marks_its_votes(tmp_path):
    services = make_services(tmp_path)
    training = services.training
    training.start()
    run(services, 2)
    pending = training.store.recent(limit=10, status="pending", model="cnn", symbol="ETH/USDT")
    pid = pending[0]["id"]
    # Every timeframe votes BUY at 0.9 for ETH: fused score 0.9 >= threshold 0.6.
    training.desk.votes["ETH/USDT"] = {("cnn", tf): Vote("cnn", tf, "BUY", 0.9, pid)
                                   for tf in ("1h", "1d")}
    training.desk.votes["BTC/USDT"] = {}
    training.signal_job(services.market.clock.now_ms())
    signal = training.desk.signals["ETH/USDT"]
    assert signal.action == "BUY" and signal.confidence >= 0.6
    assert training.desk.paper.positions["ETH/USDT"].side == "long"
    assert training.store.get(pid)["executed"] is True
    status = training.read.status().to_json()
    assert status["signal_generation"]["state"] == "ACTIVE"
    assert "ETH/USDT" in status["paper"]["positions"]
    services.stop()


def test_a_failing_job_is_reported_by_type_and_the_next_run_goes_on(tmp_path):
    services = make_services(tmp_path)
    training = services.training
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("missing candle")

    for _ in range(4):
        training.guarded("process_closes", flaky)
    err = training.read.status().to_json()["errors"]["process_closes"]
    assert err["type"] == "KeyError" and err["count"] == 2
    assert len(calls) == 4
    services.stop()


def test_stopped_training_still_resolves_but_does_not_predict(tmp_path):
    services = make_services(tmp_path)
    training = services.training
    training.start()
    run(services, 2)
    training.stop()
    before = training.store.counts()
    run(services, 2)
    after = training.store.counts()
    for model in ("cnn", "dqn", "cob"):
        total_before = sum(before[model].values())
        assert sum(after[model].values()) == total_before  # no new predictions
        assert after[model]["pending"] == 0  # the last round resolved anyway
    assert SEC == 1000
    services.stop()


def test_checkpoints_are_written_every_n_training_steps(tmp_path):
    services = make_services(tmp_path, **{"training.checkpoint_every": 2})
    training = services.training
    training.start()
    run(services, 90)
    info = training.checkpoints.latest_info("dqn")
    steps = training.learners["dqn"].train_steps
    assert steps >= 2 and info is not None
    assert steps - info["step"] < 2  # never more than N steps behind the model
    assert (tmp_path / "checkpoints" / "dqn" / f"step-{info['step']}.pt").is_file()
    services.stop()


def test_start_loads_checkpoints_unless_told_not_to(tmp_path):
    first = make_services(tmp_path)
    first.training.start()
    run(first, 60)
    steps = first.training.learners["dqn"].train_steps
    first.stop()
    assert steps > 0

    fresh = make_services(tmp_path, **{"models.load_checkpoints": False})
    fresh.start()
    assert fresh.training.learners["dqn"].train_steps == 0 and not fresh.loaded_checkpoints
    fresh.stop()

    resumed = make_services(tmp_path)
    resumed.start()
    assert resumed.training.learners["dqn"].train_steps == steps
    assert set(resumed.loaded_checkpoints) == {"cnn", "dqn", "cob"}
    resumed.stop()


def test_a_checkpoint_of_another_architecture_is_skipped_with_a_warning(tmp_path, caplog):
    first = make_services(tmp_path)
    first.training.start()
    run(first, 60)
    cnn_steps = first.training.learners["cnn"].train_steps
    dqn_steps = first.training.learners["dqn"].train_steps
    first.stop()
    assert cnn_steps > 0
    # Rewrite the CNN's newest checkpoint as an older, unpooled network would have saved it.
    from pathlib import Path

    from nn.checkpoints import decode, encode

    path = Path(first.training.checkpoints.latest_info("cnn")["path"])
    state = decode(path.read_bytes())
    del state["architecture"]
    path.write_bytes(b"".join(encode(state)))

    resumed = make_services(tmp_path)
    with caplog.at_level("WARNING"):
        resumed.start()
    assert resumed.training.learners["cnn"].train_steps == 0  # fresh weights, not a crash
    assert resumed.training.learners["dqn"].train_steps == dqn_steps  # the others still load
    assert set(resumed.loaded_checkpoints) == {"dqn", "cob"}
    assert any("does not fit the cnn model" in r.getMessage() and "unpooled" in r.getMessage()
               for r in caplog.records)
    cards = resumed.training.read.status().to_json()["models"]
    assert "does not fit this model" in cards["cnn"]["checkpoint_warning"]
    assert cards["cnn"]["resumed_from_step"] is None  # fresh weights
    assert cards["dqn"]["resumed_from_step"] == dqn_steps
    assert cards["dqn"]["checkpoint_warning"] is None
    # The fresh CNN's checkpoints start a new run: a restart loads them, not the unfit file.
    resumed.training.start()
    run(resumed, 60 + 30)  # the first run's 60 bars are predicted once only: 30 new ones
    cnn_steps = resumed.training.learners["cnn"].train_steps
    resumed.stop()
    assert Path(resumed.training.checkpoints.latest_info("cnn")["path"]).name == (
        f"run-1-step-{cnn_steps}.pt")
    again = make_services(tmp_path)
    again.start()
    assert again.training.learners["cnn"].train_steps == cnn_steps
    again.stop()


def test_checkpoints_are_also_written_after_the_interval_of_active_training(tmp_path):
    services = make_services(tmp_path, **{"training.checkpoint_every": 100_000,
                                          "training.checkpoint_interval_s": 60})
    training = services.training
    now = [1000.0]
    training.learning.clock = lambda: now[0]
    checkpoints = training.checkpoints
    training.start()
    run(services, 30)
    steps = {name: lrn.train_steps for name, lrn in training.learners.items()}
    assert all(steps.values()), steps
    now[0] += 59.9
    run(services, 1)
    assert all(checkpoints.latest_info(name) is None for name in steps)  # not yet
    now[0] += 0.1  # 60 s of active training since the start
    start = services.market.source.next_ts
    training.train_due()  # a run of the train job with no batch due still writes them
    assert services.market.source.next_ts == start
    for name, lrn in training.learners.items():
        assert checkpoints.latest_info(name)["step"] == lrn.train_steps
    # Time while stopped does not count: after an hour off, 59 s on writes nothing new.
    training.stop()
    saved = {name: checkpoints.latest_info(name)["step"] for name in steps}
    now[0] += 3600
    training.start()
    now[0] += 59
    run(services, 30)
    assert {name: checkpoints.latest_info(name)["step"] for name in steps} == saved
    now[0] += 1
    training.train_due()
    for name, lrn in training.learners.items():
        assert checkpoints.latest_info(name)["step"] == lrn.train_steps > saved[name]
    services.stop()


def test_a_close_that_fails_keeps_the_others_and_is_reported(tmp_path):
    services = make_services(tmp_path)
    training = services.training
    training.start()
    run(services, 2)
    build = training.builder.build

    def broken_for_btc(symbol, *args):
        if symbol == "BTC/USDT":
            raise ValueError("bad BTC candle")
        return build(symbol, *args)

    training.builder.build = broken_for_btc
    before = training.store.counts()
    src = services.market.source
    now = src.next_ts + 2 * BAR  # the next hour
    src.emit_until(now)
    services.market.clock.set(now)
    training.guarded("process_closes", training.process_closes)
    err = training.read.status().to_json()["errors"]["process_closes"]
    assert err["type"] == "ValueError" and "bad BTC candle" in err["message"]
    recent = training.store.recent(limit=20, status="pending")
    # ETH's close went through: its 1h predictions are stored, one per model; BTC's are not.
    newest = max(p["created_ts"] for p in recent)
    assert newest == now
    assert sorted(p["model"] for p in recent
                  if p["created_ts"] == now and p["symbol"] == "ETH/USDT") == ["cnn", "cob", "dqn"]
    assert not [p for p in recent if p["created_ts"] == now and p["symbol"] == "BTC/USDT"]
    after = training.store.counts()
    assert all(after[m]["resolved"] > before[m]["resolved"] for m in ("cnn", "dqn", "cob"))
    services.stop()


def test_a_stale_status_is_refreshed_once_in_the_background(tmp_path):
    import threading
    import time

    services = make_services(tmp_path)
    training = services.training
    read = training.read
    first = read.status_json()
    computed, release = [], threading.Event()
    real_status = read.status

    class Marked:  # a status whose JSON says which computation made it
        def __init__(self, n):
            self.n = n

        def to_json(self):
            return {**real_status().to_json(), "marker": self.n}

    def slow_status():  # a refresh that takes as long as the test says
        computed.append(1)
        release.wait(5)
        return Marked(len(computed))

    read.status = slow_status
    read._cache = (time.monotonic() - 1.0, first)  # 1 s old: stale, not abandoned
    got, threads = [], [threading.Thread(target=lambda: got.append(read.status_json()))
                        for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2)
    assert len(got) == 20 and all(g is first for g in got)  # nobody waited for the refresh
    assert computed == [1]  # twenty stale reads, one refresh
    release.set()
    for _ in range(100):
        if read.status_json().get("marker") == 1:
            break
        time.sleep(0.01)
    assert read.status_json()["marker"] == 1
    # a copy older than STATUS_MAX_STALE_S is recomputed on the request itself
    read._cache = (time.monotonic() - read.STATUS_MAX_STALE_S - 1, first)
    assert read.status_json()["marker"] == 2
    services.stop()


def test_interpolated_candles_are_streamed_but_never_predicted_trained_or_scored(tmp_path):
    # The app's own 1s stream of 30m bars: 1s and 1m candles are interpolated inside each
    # bar toward its close, so only the 1h (and 1d) candles may be predicted and learned from.
    services = make_services(tmp_path, stream_seconds=True)
    training, market = services.training, services.market
    assert training.timeframes == ("1h", "1d")
    # the job table follows the stream: closes every streamed second, signals every 10 s
    assert training.job_interval_s("process_closes") == 1.0
    assert training.job_interval_s("signal") == 10.0
    assert training.job_interval_s("flush") is None  # wall time
    assert set(training.learning.waiting["dqn"]) == {"1h", "1d"}
    roles = training.read.status().to_json()["timeframes"]
    assert roles["1s"] == {"scored": False, "reason": "interpolated",
                           "label": "not scored: interpolated"}
    assert roles["1m"]["label"] == "not scored: interpolated"
    assert roles["1h"] == {"scored": True, "label": "trained and scored"}
    for model in training.read.status().to_json()["models"].values():  # per model and timeframe too
        assert model["timeframes"] == {"1s": "not scored: interpolated",
                                       "1m": "not scored: interpolated",
                                       "1h": "trained and scored", "1d": "trained and scored"}
    # The models' inputs hold no interpolated window either.
    obs = training.builder.build("ETH/USDT", "1h", market.source.start_ms)
    assert set(obs.windows) == {"1h", "1d"}
    training.start()
    run(services, 2 * 3600 + 1)  # two hours of 1s candles: 7,200 1s and 120 1m closes
    assert len(market.store.closed("ETH/USDT", "1s", 10)) == 10  # streamed and drawn
    made = training.store.recent(limit=1000)
    # Two 1h closes x 2 symbols x 3 models; nothing on 1s or 1m.
    assert {p["timeframe"] for p in made} == {"1h"}
    assert len(made) == 2 * 2 * 3
    resolved = [p for p in made if p["status"] == "resolved"]
    assert len(resolved) == 2 * 3  # the first hour's predictions, resolved at the second
    waiting = sum(len(v) for m in training.learning.waiting.values() for v in m.values())
    assert waiting == 6  # one experience per resolved prediction, all of them 1h
    services.stop()


def test_a_model_timeframe_the_source_interpolates_is_refused(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="1m.*interpolates"):
        make_services(tmp_path, stream_seconds=True, **{"market.model_timeframes": "1m,1h"})
