"""Tests for nn.cnn. Expected numbers are worked out by hand in comments."""

import math

import numpy as np
import pytest
import torch

from core.features import normalised_window
from core.rewards import hold_band
from core.timeframes import parse_timeframe
from nn.base import Experience, Observation
from nn.cnn import (
    BUY,
    HOLD,
    SELL,
    CNNConfig,
    CNNLearner,
    hindsight_label,
)
from nn.cnn_data import CNNPrediction, _predictions
from nn.cnn_net import (
    ARCHITECTURE,
    RANGE_EPS,
    RANGE_LR,
    CNNNet,
    CNNOutput,
    cnn_loss,
    predicted_range,
    range_features,
)
from nn.example_ring import ExampleRing

TFS = ("1s", "1m", "1h", "1d")
W = 32  # small window keeps the tests fast


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_learner(seed=0, **kw):
    cfg = CNNConfig(window=W, buffer_size=kw.pop("buffer_size", 256), **kw)
    return CNNLearner(cfg, TFS, seed=seed)


def trend_window(rng, drift, length=W):
    """A real normalised window from candles whose log close drifts by ``drift`` per bar."""
    log_close = np.cumsum(drift + 0.001 * rng.standard_normal(length + 1)) + math.log(2000.0)
    close = np.exp(log_close)
    open_, close = close[:-1], close[1:]
    high = np.maximum(open_, close) * 1.0005
    low = np.minimum(open_, close) * 0.9995
    volume = rng.uniform(1.0, 10.0, length)
    candles = np.column_stack([np.arange(length) * 60_000, open_, high, low, close, volume])
    return normalised_window(candles, length)


def experience(state, tf, label, confidence=0.9, weight=1.0):
    return Experience(
        state=state, action=label, reward=0.0, timeframe=tf, weight=weight, label=label,
        target_confidence=confidence, target_ohlcv=np.zeros(5, np.float32),
    )


# ----------------------------------------------------------------------- network


def test_output_shapes_for_every_timeframe():
    net = CNNNet(timeframes=TFS).eval()
    x = torch.randn(3, 5, W)
    for tf in TFS:
        out = net(x, tf)
        assert out.logits.shape == (3, 3)
        assert out.confidence.shape == (3,)
        assert out.ohlcv.shape == (3, 5)
        assert out.hidden.shape == (3, 64)
        assert out.log_range.shape == (3,)
        assert torch.all((out.confidence > 0) & (out.confidence < 1))
        assert torch.all(out.hidden >= 0)  # after a ReLU


def test_heads_differ_between_timeframes():
    net = CNNNet(timeframes=TFS).eval()
    x = torch.randn(2, 5, W)
    assert not torch.equal(net(x, "1m").logits, net(x, "1h").logits)


def test_parameter_count_by_hand():
    # Conv1d(c_in, c_out, 3): 3 * c_in * c_out + c_out; BatchNorm1d(c): 2c (weight, bias)
    trunk = (3 * 5 * 64 + 64 + 2 * 64  # 960 + 64 + 128 = 1152
             + 3 * 64 * 128 + 128 + 2 * 128  # 24576 + 128 + 256 = 24960
             + 3 * 128 * 256 + 256 + 2 * 256)  # 98304 + 256 + 512 = 99072
    assert trunk == 125_184
    # Linear(i, o): i * o + o
    head = (256 * 128 + 128  # 32896
            + 128 * 64 + 64  # 8256
            + 64 * 3 + 3  # 195 action logits
            + 64 * 1 + 1  # 65 confidence
            + 64 * 5 + 5  # 325 next OHLCV
            + 4 * 1 + 1)  # 5 range head: 4 HAR weights + bias
    assert head == 41_742
    net = CNNNet(timeframes=TFS)
    assert sum(p.numel() for p in net.parameters()) == trunk + 4 * head == 292_152
    assert make_learner().parameters_count() == 292_152
    two = CNNNet(timeframes=("1h", "1d"))
    assert sum(p.numel() for p in two.parameters()) == trunk + 2 * head == 208_668


def test_trunk_pools_by_four_twice_and_sees_58_candles():
    net = CNNNet(timeframes=TFS).eval()
    assert net.trunk(torch.zeros(1, 5, 300)).shape == (1, 256, 19)  # 300 -> 75 -> 19 (ceil)
    assert net.trunk(torch.zeros(1, 5, 3)).shape == (1, 256, 1)  # a short window still works
    # Receptive field of one last-block position: conv 3 -> 3; pool 4 -> 3 + 3 = 6 (step 4);
    # conv 3 -> 6 + 2 * 4 = 14; pool 4 -> 14 + 3 * 4 = 26 (step 16); conv 3 -> 26 + 2 * 16 = 58.
    # Check it: perturb each input candle in turn; only candles inside one 58-wide span move
    # position 9 of the last block.
    torch.manual_seed(0)
    base = torch.randn(1, 5, 300)
    batch = base.repeat(300, 1, 1)
    batch[torch.arange(300), :, torch.arange(300)] += 10.0  # row i: candle i perturbed
    with torch.no_grad():
        moved = (net.trunk(batch)[:, :, 9] - net.trunk(base)[:, :, 9]).abs().amax(dim=1) > 1e-3
    touched = moved.nonzero().flatten()
    assert touched.max() - touched.min() + 1 == len(touched) == 58


# -------------------------------------------------------------------------- loss


def test_cnn_loss_by_hand():
    out = CNNOutput(
        logits=torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]),
        confidence=torch.tensor([0.5, 0.8]),
        ohlcv=torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5]]),
        hidden=torch.zeros(2, 64),
        log_range=torch.tensor([math.log(0.02), math.log(0.01)]),
    )
    action = torch.tensor([2, 0])
    conf_target = torch.tensor([1.0, 0.8])
    ohlcv_target = torch.tensor([[0.1, 0.0, 0.0, 0.0, -0.2], [0.1, 0.2, 0.3, 0.4, 0.5]])
    weights = torch.tensor([1.0, 3.0])  # normalised: 1/4, 3/4
    range_target = torch.tensor([0.04 - RANGE_EPS, 0.005 - RANGE_EPS])
    total, parts = cnn_loss(out, action, conf_target, ohlcv_target, weights, range_target)
    # CE: zeros -> p = 1/3 -> ln 3; [ln 2, 0, 0] -> p(0) = 2 / (2 + 1 + 1) = 1/2 -> ln 2
    ce = (math.log(3) + 3 * math.log(2)) / 4  # (1.098612 + 2.079442) / 4 = 0.794513
    # BCE: 0.5 vs 1 -> ln 2; 0.8 vs 0.8 -> -(0.8 ln 0.8 + 0.2 ln 0.2) = 0.178515 + 0.321888
    bce = (math.log(2) + 3 * 0.500402) / 4  # (0.693147 + 1.501206) / 4 = 0.548588
    # MSE: (0.1^2 + 0.2^2) / 5 = 0.01; second example exact -> 0
    mse = 0.01 / 4  # 0.0025
    # L1 on log range: |ln 0.02 - ln 0.04| = ln 2 (forecast half the range); |ln 0.01 - ln
    # 0.005| = ln 2 (twice) -> (ln 2 + 3 ln 2) / 4 = ln 2 = 0.693147
    l1 = math.log(2)
    assert parts["ce"] == pytest.approx(ce, abs=1e-6)
    assert parts["confidence_bce"] == pytest.approx(bce, abs=1e-5)
    assert parts["ohlcv_mse"] == pytest.approx(mse, abs=1e-7)
    assert parts["range_l1"] == pytest.approx(l1, abs=1e-5)
    # 0.794513 + 0.5 * 0.548588 + 0.0025 + 0.693147 = 1.764454
    assert total.item() == pytest.approx(1.764454, abs=1e-5)


def test_cnn_loss_uniform_weights_equal_plain_mean():
    out = CNNOutput(torch.zeros(2, 3), torch.full((2,), 0.5), torch.zeros(2, 5), torch.zeros(2, 64),
                    torch.zeros(2))
    args = (torch.tensor([0, 1]), torch.tensor([1.0, 0.0]), torch.zeros(2, 5))
    range_target = torch.full((2,), 1.0 - RANGE_EPS)  # ln(1) = 0: the forecast is exact
    one, _ = cnn_loss(out, *args, torch.ones(2), range_target)
    ten, _ = cnn_loss(out, *args, torch.full((2,), 10.0), range_target)
    # every example: ln 3 + 0.5 ln 2 + 0 + 0 = 1.098612 + 0.346574 = 1.445186
    assert one.item() == pytest.approx(1.445186, abs=1e-5)
    assert ten.item() == pytest.approx(one.item(), abs=1e-7)


# -------------------------------------------------------------- hindsight labels


# The band is core.rewards.hold_band(tf_ms, fee_rate) with the 0.1 % fee: 1h 0.0020412,
# 1d 0.01, 1m and 1s the round-trip fee 0.002.
BAND = {"1s": 0.002, "1m": 0.002, "1h": 0.01 * math.sqrt(1 / 24), "1d": 0.01}


def test_label_band_is_the_scoring_band():
    for tf, band in BAND.items():
        assert hold_band(parse_timeframe(tf), 0.001) == pytest.approx(band, rel=1e-12)


@pytest.mark.parametrize(
    "move, tf, expected",
    [
        (0.03, "1h", (BUY, 0.3)),  # 0.03 > 0.00204; 10 * 0.03
        (-0.05, "1h", (SELL, 0.5)),
        (0.2, "1d", (BUY, 0.95)),  # 10 * 0.2 = 2 -> capped at 0.95
        (-0.0951, "1d", (SELL, 0.95)),  # 0.951 -> capped
        (0.01, "1d", (HOLD, 0.3)),  # exactly the band is not beyond it
        (0.009, "1d", (HOLD, 0.3)),  # a 0.9 % day: no move worth a trade
        (0.0021, "1h", (BUY, 0.021)),  # beyond 0.0020412
        (0.002, "1h", (HOLD, 0.3)),  # within it
        (0.0, "1h", (HOLD, 0.3)),
        (0.0026, "1m", (BUY, 0.026)),  # beyond the 0.2 % round-trip fee
        (-0.0026, "1m", (SELL, 0.026)),
        (0.0019, "1m", (HOLD, 0.3)),  # a move the fees would eat
        (-0.0019, "1s", (HOLD, 0.3)),
    ],
)
def test_hindsight_label_table(move, tf, expected):
    action, confidence = hindsight_label(move, BAND[tf])
    assert action == expected[0]
    assert confidence == pytest.approx(expected[1], abs=1e-12)


@pytest.mark.parametrize("tf", TFS)
def test_hindsight_label_boundary_is_exclusive(tf):
    band = BAND[tf]
    assert hindsight_label(band, band)[0] == HOLD
    assert hindsight_label(-band, band)[0] == HOLD
    assert hindsight_label(math.nextafter(band, 1.0), band)[0] == BUY
    assert hindsight_label(-math.nextafter(band, 1.0), band)[0] == SELL


def test_hindsight_label_rejects_nan_move_and_band():
    with pytest.raises(ValueError, match="move must be a finite"):
        hindsight_label(float("nan"), 0.002)
    with pytest.raises(ValueError, match="hold_band"):
        hindsight_label(0.01, float("nan"))


# ------------------------------------------------------------------ replay ring


def test_example_ring_overwrites_oldest_and_samples_distinct_rows():
    ring = ExampleRing(3, {"x": ((), np.int64)})
    ring.add({"x": np.array([1, 2])})
    ring.add({"x": np.array([3, 4])})  # 4 overwrites 1 at row 0
    assert len(ring) == 3
    assert ring.data["x"].tolist() == [4, 2, 3]
    assert ring.nbytes() == 3 * 8
    ring.add({"x": np.array([5, 6, 7, 8])})  # bigger than the ring: only 6, 7, 8 are kept
    assert sorted(ring.data["x"].tolist()) == [6, 7, 8]
    sample = ring.sample(5, np.random.default_rng(0))["x"]
    assert sorted(sample.tolist()) == [6, 7, 8]  # at most size rows, no repeats


# ---------------------------------------------------------------- learner: predict


def test_encode_left_pads_short_windows_and_keeps_the_last_columns():
    learner = make_learner()
    short = np.arange(5 * 20, dtype=np.float64).reshape(5, 20) + 1.0
    obs = Observation("ETH/USDT", "1m", 0, {"1m": short}, {}, np.zeros(0))
    state = learner.encode(obs)
    assert state.dtype == np.float32 and state.shape == (5, W)
    assert np.all(state[:, :12] == 0)  # 32 - 20 = 12 padded columns
    np.testing.assert_array_equal(state[:, 12:], short)
    long = np.arange(5 * 40, dtype=np.float32).reshape(5, 40)
    obs = Observation("ETH/USDT", "1h", 0, {"1h": long}, {}, np.zeros(0))
    np.testing.assert_array_equal(learner.encode(obs), long[:, 8:])  # columns 8..39


def test_predict_is_deterministic_and_well_formed():
    learner = make_learner()
    state = trend_window(np.random.default_rng(1), 0.002)
    first = learner.predict(state, "1m")
    for _ in range(3):
        again = learner.predict(state, "1m")
        assert again.action == first.action and again.confidence == first.confidence
        np.testing.assert_array_equal(again.hidden, first.hidden)
        np.testing.assert_array_equal(again.ohlcv, first.ohlcv)
    assert isinstance(first, CNNPrediction)
    assert first.action == int(np.argmax(first.probs))
    assert first.probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert 0 < first.confidence < 1
    assert first.hidden.shape == (64,) and first.ohlcv.shape == (5,)
    with pytest.raises(ValueError, match="head"):
        learner.predict(state, "5m")


def test_predict_all_matches_predict_per_timeframe():
    learner = make_learner()
    rng = np.random.default_rng(2)
    windows = {"1s": trend_window(rng, 0.0), "1m": trend_window(rng, 0.002),
               "1h": trend_window(rng, -0.002)}  # no 1d window: no 1d prediction
    obs = Observation("ETH/USDT", "1m", 0, windows, {}, np.zeros(0))
    every = learner.predict_all(obs)
    assert set(every) == {"1s", "1m", "1h"}
    for tf, out in every.items():
        single = learner.predict(windows[tf], tf)
        np.testing.assert_allclose(out.probs, single.probs, rtol=1e-6)
        np.testing.assert_allclose(out.hidden, single.hidden, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(every["1m"].hidden, every["1h"].hidden)


def test_predict_all_reuses_outputs_until_the_window_or_weights_change():
    learner = make_learner()
    rng = np.random.default_rng(3)
    windows = {tf: trend_window(rng, 0.001) for tf in TFS}
    obs = Observation("ETH/USDT", "1s", 0, windows, {}, np.zeros(0))
    calls = []
    forward = learner._forward  # the inference copy's (traced) forward per head
    learner._forward = lambda x, tf: calls.append(tf) or forward(x, tf)
    first = learner.predict_all(obs)
    assert sorted(calls) == sorted(TFS)  # 4 forwards the first time
    # Only the 1s window changed (a 1s candle closed): one forward, the rest reused.
    calls.clear()
    windows2 = {**windows, "1s": trend_window(rng, -0.001)}
    second = learner.predict_all(Observation("ETH/USDT", "1s", 0, windows2, {}, np.zeros(0)))
    assert calls == ["1s"]
    assert second["1h"] is first["1h"]
    # Another symbol has its own entries; new weights make every cached output stale.
    calls.clear()
    learner.predict_all(Observation("BTC/USDT", "1s", 0, windows2, {}, np.zeros(0)))
    assert len(calls) == 4
    calls.clear()
    learner.learn([experience(windows["1m"], "1m", 0)])
    learner.predict_all(Observation("ETH/USDT", "1s", 0, windows2, {}, np.zeros(0)))
    assert len(calls) == 4


# ------------------------------------------------------------------ learner: learn


def test_learn_returns_none_on_empty_list():
    learner = make_learner()
    assert learner.learn([]) is None
    assert learner.train_steps == 0


def test_learn_step_reports_finite_loss_and_refreshes_predictions():
    torch.manual_seed(0)
    learner = make_learner()
    rng = np.random.default_rng(3)
    batch = [experience(trend_window(rng, 0.002), tf, BUY) for tf in ("1m", "1h", "1m")]
    state = batch[0].state
    before = learner.predict(state, "1m")
    stats = learner.learn(batch)
    assert set(stats) == {"loss", "ce", "confidence_bce", "ohlcv_mse", "range_l1", "accuracy"}
    assert all(math.isfinite(v) for v in stats.values())
    # the total is the documented combination of its parts
    assert stats["loss"] == pytest.approx(
        stats["ce"] + 0.5 * stats["confidence_bce"] + stats["ohlcv_mse"] + stats["range_l1"],
        rel=1e-5,
    )
    assert stats["accuracy"] in (0.0, 1 / 3, 2 / 3, 1.0)  # over the 3 new experiences
    assert learner.train_steps == 1 and list(learner.losses) == [stats["loss"]]
    assert len(learner.buffer) == 3
    after = learner.predict(state, "1m")
    assert not np.array_equal(after.hidden, before.hidden)  # the inference copy was refreshed
    with torch.no_grad():
        expected = learner.net.eval()(torch.from_numpy(state)[None], "1m")
    probs = torch.softmax(expected.logits[0], -1).numpy()
    np.testing.assert_allclose(after.probs, probs, rtol=1e-6)
    # 4 new ones replay 3 older ones: the ring holds 3 + 4
    learner.learn([experience(trend_window(rng, -0.002), "1s", SELL) for _ in range(4)])
    assert len(learner.buffer) == 7
    assert learner.buffer_bytes() > 7 * 5 * W * 4  # rows (states alone: 4480 B) + weight copy


def test_learn_rejects_unusable_experiences():
    learner = make_learner()
    state = np.zeros((5, W), np.float32)
    with pytest.raises(ValueError, match="label"):
        learner.learn([Experience(state=state, action=0, reward=0.0, timeframe="1m")])
    with pytest.raises(ValueError, match="head"):
        learner.learn([experience(state, "5m", BUY)])
    with pytest.raises(ValueError, match=r"\[5, 32\]"):
        learner.learn([experience(np.zeros((5, 31), np.float32), "1m", BUY)])
    with pytest.raises(ValueError, match="NaN"):
        learner.learn([experience(np.full((5, W), np.nan, np.float32), "1m", BUY)])
    with pytest.raises(ValueError, match="weights"):
        learner.learn([experience(state, "1m", BUY, weight=0.0)])
    assert learner.train_steps == 0 and len(learner.buffer) == 0


def test_learns_trend_direction_on_held_out_windows():
    """Rising closes -> BUY, falling closes -> SELL, on two timeframes' heads."""
    torch.manual_seed(0)
    learner = make_learner(learning_rate=1e-3)
    rng = np.random.default_rng(4)
    tfs = ("1m", "1h")
    for _ in range(100):
        batch = []
        for _ in range(8):
            up = rng.random() < 0.5
            state = trend_window(rng, 0.002 if up else -0.002)
            batch.append(experience(state, tfs[rng.integers(2)], BUY if up else SELL))
        stats = learner.learn(batch)
        assert math.isfinite(stats["loss"])
    hits = 0
    for i in range(100):
        up = i % 2 == 0
        state = trend_window(rng, 0.002 if up else -0.002)
        hits += learner.predict(state, tfs[i % 4 // 2]).action == (BUY if up else SELL)
    assert hits / 100 > 0.9
    assert learner.loss_5ma() < learner.losses[0]


# -------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    trained = make_learner(seed=0)
    rng = np.random.default_rng(5)
    for _ in range(3):
        trained.learn([experience(trend_window(rng, 0.002), "1m", BUY) for _ in range(4)])
    path = tmp_path / "cnn.pt"
    torch.save(trained.state_dict(), path)

    fresh = make_learner(seed=1)
    state = trend_window(rng, -0.002)
    assert not np.array_equal(fresh.predict(state, "1m").probs, trained.predict(state, "1m").probs)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    for tf in TFS:
        a, b = trained.predict(state, tf), fresh.predict(state, tf)
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.hidden, b.hidden)
        assert a.confidence == b.confidence
    assert fresh.train_steps == 3
    assert list(fresh.losses) == list(trained.losses)
    assert fresh.rng.bit_generator.state == trained.rng.bit_generator.state
    for key, value in trained.net.state_dict().items():  # BatchNorm running stats included
        assert torch.equal(value, fresh.net.state_dict()[key]), key
    saved, loaded = trained.optimizer.state_dict(), fresh.optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for i, slot in saved["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(slot[name], loaded["state"][i][name])


def test_load_state_dict_rejects_another_architecture():
    state = make_learner().state_dict()
    del state["architecture"]  # as an unpooled CNN saved it
    with pytest.raises(ValueError, match="architecture 'unpooled'"):
        make_learner().load_state_dict(state)


def test_load_state_dict_rejects_other_heads():
    other = CNNLearner(CNNConfig(window=W, buffer_size=64), ("1m", "1h"))
    with pytest.raises(ValueError, match="heads"):
        make_learner().load_state_dict(other.state_dict())


def test_status_reports_real_numbers():
    learner = make_learner()
    status = learner.status()
    assert status["name"] == "cnn" and status["parameters"] == 292_152
    assert status["loss_5ma"] is None and status["epsilon"] is None
    # weights (292152 float32) + BatchNorm buffers + the inference copy, at least
    assert status["memory_bytes"] > 2 * 292_152 * 4


def test_target_norm_by_hand_and_merged_batches_equal_one():
    from nn.cnn_data import TargetNorm

    norm = TargetNorm(2, dim=2)
    # Group 0 gets rows (1, 10) and (3, 30): mean (2, 20), population var (1, 100) -> std (1, 10).
    norm.update(np.array([0, 0, 1]), np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 5.0]]))
    np.testing.assert_allclose(norm.mean[0], [2.0, 20.0])
    np.testing.assert_allclose(norm.std(0), [1.0, 10.0])
    np.testing.assert_allclose(norm.std(1), [1.0, 1.0])  # one sample: std 1 until two
    # A second batch for group 0, (5, 50): the three rows have mean (3, 30); deviations
    # (-2, 0, 2) -> var (4 + 0 + 4) / 3 = 8/3, and (-20, 0, 20) -> 800/3.
    norm.update(np.array([0]), np.array([[5.0, 50.0]]))
    np.testing.assert_allclose(norm.mean[0], [3.0, 30.0])
    np.testing.assert_allclose(norm.std(0) ** 2, [8 / 3, 800 / 3])
    z = norm.normalise(np.array([0]), np.array([[3.0 + math.sqrt(8 / 3), 30.0]]))
    np.testing.assert_allclose(z, [[1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(norm.denormalise(0, z[0]), [3.0 + math.sqrt(8 / 3), 30.0],
                               rtol=1e-6)
    again = TargetNorm(2, dim=2)
    again.load(norm.state())
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std(0), norm.std(0))


def test_predictions_wait_for_publish_when_auto_publish_is_off():
    learner = make_learner()
    learner.auto_publish = False
    state = np.random.default_rng(3).standard_normal((5, W)).astype(np.float32)
    before = learner.predict(state, "1m")
    learner.learn([experience(state, "1m", BUY) for _ in range(4)])
    unpublished = learner.predict(state, "1m")
    assert unpublished.confidence == before.confidence  # same weights, same target statistics
    np.testing.assert_array_equal(unpublished.ohlcv, before.ohlcv)
    learner.publish()
    after = learner.predict(state, "1m")
    assert after.confidence != before.confidence and learner.published_steps == 1


def test_predict_many_runs_one_forward_per_head_for_all_symbols():
    learner = make_learner()
    rng = np.random.default_rng(4)
    eth = {tf: trend_window(rng, 0.001) for tf in TFS}
    btc = {tf: trend_window(rng, -0.001) for tf in TFS}
    batch = [Observation("ETH/USDT", "1s", 0, eth, {}, np.zeros(0)),
             Observation("BTC/USDT", "1s", 0, btc, {}, np.zeros(0)),
             Observation("ETH/USDT", "1m", 0, eth, {}, np.zeros(0))]  # ETH's windows again
    calls = []
    forward = learner._forward  # the inference copy's (traced) forward per head
    learner._forward = lambda x, tf: calls.append((tf, len(x))) or forward(x, tf)
    outs = learner.predict_windows(batch)
    assert sorted(calls) == sorted((tf, 2) for tf in TFS)  # ETH and BTC rows, once each
    assert outs[2]["1h"] is outs[0]["1h"]  # the repeated ETH windows share their outputs
    for obs, out in zip(batch[:2], outs):
        alone = make_learner().predict_all(obs)  # same seed, fresh cache, batch of one
        for tf in TFS:
            np.testing.assert_allclose(out[tf].probs, alone[tf].probs, rtol=1e-5)
            np.testing.assert_allclose(out[tf].hidden, alone[tf].hidden, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------- range head


def test_range_features_by_hand_ignore_the_padding():
    # Row 0: 3 padded columns, then 5 real candles with log ranges ln(h/l) = x[1] - x[2] of
    # 0.04, 0 (a flat candle at the last close, volume at the window mean: an all-zero column
    # that is real because a real candle came before it), 0.03, 0.02, 0.01.
    x = torch.zeros(2, 5, 8)
    x[0, :, 3] = torch.tensor([0.01, 0.03, -0.01, 0.02, 1.0])  # 0.03 - (-0.01) = 0.04
    x[0, :, 5] = torch.tensor([0.0, 0.02, -0.01, 0.01, -1.0])  # 0.03
    x[0, :, 6] = torch.tensor([0.0, 0.01, -0.01, 0.0, 0.5])  # 0.02
    x[0, :, 7] = torch.tensor([0.0, 0.005, -0.005, 0.0, -0.5])  # 0.01
    # Row 1: no padding, the same 5 candles after three of log range 0.05
    x[1] = x[0]
    x[1, 1, :3], x[1, 2, :3] = 0.02, -0.03
    f = range_features(x)
    assert f.shape == (2, 5)
    # k = 1: the last candle; k = 4: (0 + 0.03 + 0.02 + 0.01) / 4; k = 16, 64, 256 (window 8):
    # row 0 over its 5 real candles (0.10 / 5), row 1 over all 8 ((0.15 + 0.10) / 8)
    means = [[0.01, 0.015, 0.02, 0.02, 0.02], [0.01, 0.015, 0.03125, 0.03125, 0.03125]]
    expected = np.log(np.array(means) + RANGE_EPS)
    np.testing.assert_allclose(f.numpy(), expected, rtol=0, atol=1e-5)
    # a window of one real candle: every scale is that candle's log range
    lone = torch.zeros(1, 5, 8)
    lone[0, 1, -1], lone[0, 2, -1] = 0.01, -0.01
    np.testing.assert_allclose(range_features(lone).numpy(), np.log(0.02 + RANGE_EPS), atol=1e-6)


def test_range_head_starts_at_the_geometric_mean_and_gets_no_trunk_gradient():
    net = CNNNet(timeframes=("1h",))
    x = trend_window(np.random.default_rng(5), 0.001)[None]
    x = torch.from_numpy(x)
    out = net.eval()(x, "1h")
    f = range_features(x)
    # w_k = 1/5, b = 0: f_256 + sum_k (f_k - f_256) / 5 = mean of the five features
    assert out.log_range.item() == pytest.approx(f.mean().item(), abs=1e-6)
    net.zero_grad()
    out.log_range.sum().backward()
    assert all(p.grad is None for name, p in net.named_parameters() if ".range." not in name)
    assert net.heads["1h"].range.linear.weight.grad is not None


def test_predicted_high_low_are_the_range_head_around_the_regression_mid():
    learner = make_learner()
    learner.target_norm.update(np.array([2, 2, 2]), np.array(
        [[0.0, 0.01, -0.01, 0.0, 5.0], [0.001, 0.02, -0.005, 0.002, 6.0],
         [-0.002, 0.005, -0.02, -0.01, 4.0]]))
    learner.publish()
    state = trend_window(np.random.default_rng(6), 0.002)
    pred = learner.predict(state, "1h")
    with torch.no_grad():
        out = learner.inference_net(torch.from_numpy(state)[None], "1h")
    raw = learner._inference_norm.denormalise(2, out.ohlcv.numpy())[0]  # the regression head
    span = math.exp(out.log_range.item()) - RANGE_EPS
    assert predicted_range(out.log_range)[0] == pytest.approx(span, rel=1e-6)
    assert pred.ohlcv[1] - pred.ohlcv[2] == pytest.approx(span, rel=1e-5)  # the head's range
    assert (pred.ohlcv[1] + pred.ohlcv[2]) / 2 == pytest.approx((raw[1] + raw[2]) / 2, abs=1e-7)
    np.testing.assert_array_equal(pred.ohlcv[[0, 3, 4]], raw[[0, 3, 4]])  # o, c, v kept
    assert predicted_range(torch.tensor([-20.0]))[0] == 0.0  # never negative


def regime_candles(n, seed=0):
    """Candles [n, 6] of 12-step random walks whose step size alternates every 40 candles
    between calm (0.0005) and volatile (0.003): a range a model can forecast."""
    rng = np.random.default_rng(seed)
    sigma = np.where((np.arange(n) // 40) % 2 == 0, 0.0005, 0.003)
    steps = rng.standard_normal((n, 12)) * sigma[:, None]
    path = 2000.0 * np.exp(np.cumsum(steps.reshape(-1)).reshape(n, 12))
    opens = np.r_[2000.0, path[:-1, -1]]
    high = np.maximum(path.max(axis=1), opens)
    low = np.minimum(path.min(axis=1), opens)
    return np.column_stack([np.arange(n) * 60_000.0, opens, high, low, path[:, -1],
                            rng.uniform(1, 10, n)])


def test_range_head_learns_online_to_beat_an_ewma_of_20():
    # Online as the app runs: predict candle t + 1 from the window ending at t, train on the
    # resolved ones 4 at a time (plus 4 replayed): 200 steps over 830 candles. Scored over the
    # second half against the EWMA (alpha 2/21) of the 20 previous ranges on the same rows.
    # The weights change only at a step, so the next 4 windows are predicted in one forward.
    learner = CNNLearner(CNNConfig(window=W, buffer_size=1000), ("1m",), seed=0)
    candles = regime_candles(W + 4 * 200 + 2)
    ref = candles[:, 4]
    span = candles[:, 2] - candles[:, 3]  # high - low
    states = np.stack([normalised_window(candles[t + 1 - W : t + 1], W)
                       for t in range(W - 1, len(candles) - 1)])  # states[i]: window ending W-1+i
    weights = (1 - 2 / 21) ** np.arange(20)  # newest first
    rows = []
    for start in range(W - 1, len(candles) - 2, 4):  # predict at t = start .. start + 3
        ts = list(range(start, min(start + 4, len(candles) - 1)))
        x = torch.from_numpy(states[[t - W + 1 for t in ts]])
        with torch.no_grad():
            out = learner.inference_net(x, "1m")
        preds = _predictions(out, learner._inference_norm, 0)
        batch = []
        for t, pred in zip(ts, preds):
            actual = np.r_[candles[t + 1, 1:5] / ref[t] - 1.0, np.log1p(candles[t + 1, 5])]
            ewma = weights @ span[t - 19 : t + 1][::-1] / weights.sum() / ref[t]
            rows.append((span[t + 1] / ref[t], pred.ohlcv[1] - pred.ohlcv[2], ewma))
            batch.append(Experience(state=states[t - W + 1], action=HOLD, reward=0.0,
                                    timeframe="1m", label=HOLD, target_confidence=0.3,
                                    target_ohlcv=actual.astype(np.float32)))
        learner.learn(batch)  # resolved once candle start + 4 closed
    actual, model, ewma = np.array(rows[len(rows) // 2:]).T
    mae_model, mae_ewma = np.abs(model - actual).mean(), np.abs(ewma - actual).mean()
    assert learner.train_steps == 201  # one per 4 candles
    assert mae_model < 0.9 * mae_ewma, (mae_model, mae_ewma)


def test_checkpoint_without_the_range_head_is_refused():
    state = make_learner().state_dict()
    assert ARCHITECTURE.endswith("-har1-4-16-64-256-range")
    state["architecture"] = ARCHITECTURE.removesuffix("-har1-4-16-64-256-range")  # the old tag
    with pytest.raises(ValueError, match="architecture"):
        make_learner().load_state_dict(state)


def test_range_head_learns_at_its_own_rate_and_keeps_it_across_a_checkpoint():
    learner = make_learner(learning_rate=3e-4)
    assert [g["lr"] for g in learner.optimizer.param_groups] == [3e-4, RANGE_LR]
    assert sum(p.numel() for p in learner.optimizer.param_groups[1]["params"]) == 4 * 5
    fresh = make_learner(learning_rate=3e-4)
    fresh.load_state_dict(learner.state_dict())
    assert [g["lr"] for g in fresh.optimizer.param_groups] == [3e-4, RANGE_LR]


def test_traced_prediction_equals_the_eager_network_and_follows_published_weights():
    # predict_many runs a TorchScript trace of each head; it must give what the inference
    # copy gives, for one or two windows, and keep doing so after training publishes.
    learner = CNNLearner(CNNConfig(window=W), TFS)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(0, 0.01, (2, 5, W)).astype(np.float32))

    def same():
        with torch.inference_mode():
            for tf in TFS:
                for batch in (x[:1], x):
                    traced = learner._forward(batch, tf)
                    eager = learner.inference_net(batch, tf)
                    for a, b in zip(traced, eager):
                        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    same()
    before = learner._forward(x[:1], "1h").logits.clone()
    experiences = [Experience(state=rng.normal(0, 0.01, (5, W)).astype(np.float32), action=0,
                              reward=0.0, timeframe="1h", label=0, target_confidence=0.5,
                              target_ohlcv=np.array([0.0, 0.01, -0.01, 0.005, 1.0]))
                   for _ in range(8)]
    for _ in range(3):
        learner.learn(experiences)  # publishes after each step
    same()
    assert not torch.equal(before, learner._forward(x[:1], "1h").logits)  # it moved
