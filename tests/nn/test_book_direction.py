"""Tests for nn.book_direction. Expected numbers are worked out by hand in comments."""

import math

import numpy as np
import pytest
import torch

from nn.base import Experience, ModelOutput, Observation
from nn.book_direction import COBConfig, COBLearner, COBNet

TFS = ("1m", "1h")
UP, DOWN = 0, 1


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_learner(seed=0, n_book=3, n_returns=4, hidden=16, **kw):
    cfg = COBConfig(hidden=hidden, buffer_size=kw.pop("buffer_size", 256), **kw)
    return COBLearner(cfg, TFS, n_book_features=n_book, n_returns=n_returns, seed=seed)


def window_with_close(close):
    """A [5, L] window whose close channel (3) is ``close``; other channels are noise."""
    window = np.random.default_rng(0).standard_normal((5, len(close))).astype(np.float32)
    window[3] = close
    return window


def obs(tf, close, book=None):
    return Observation("ETH/USDT", tf, 0, {tf: window_with_close(close)}, {}, np.zeros(0), book)


def experience(state, label, weight=1.0):
    return Experience(state=state, action=label, reward=0.0, timeframe="1m", weight=weight,
                      label=label)


# ----------------------------------------------------------------------- network


def test_parameter_count_by_hand():
    # 3 book + 1 flag + 4 returns + 2 timeframes = 10 inputs, hidden 16
    # Linear(10, 16): 160 + 16 = 176; LayerNorm(16): 32; Linear(16, 16): 256 + 16 = 272;
    # LayerNorm: 32; Linear(16, 2): 32 + 2 = 34 -> 176 + 32 + 272 + 32 + 34 = 546
    learner = make_learner()
    assert learner.n_features == 10
    assert learner.parameters_count() == 546
    # Default width: 11 book features (book_features with 3 bands) + 1 + 10 returns + 4 tfs = 26
    # Linear(26, 128): 3328 + 128 = 3456; LN: 256; Linear(128, 128): 16384 + 128 = 16512;
    # LN: 256; Linear(128, 2): 258 -> 20738
    assert sum(p.numel() for p in COBNet(26, 128).parameters()) == 20_738


def test_net_outputs_two_logits():
    assert COBNet(10, 16)(torch.zeros(4, 10)).shape == (4, 2)


# ------------------------------------------------------------------------ encode


def test_encode_layout_by_hand():
    learner = make_learner()
    close = [-0.010, -0.008, -0.009, -0.005, -0.002, -0.003, 0.0]
    # first differences: 0.002, -0.001, 0.004, 0.003, -0.001, 0.003; last 4 in percent:
    # 0.4, 0.3, -0.1, 0.3
    state = learner.encode(obs("1h", close, book=np.array([0.5, -0.2, 1.0])))
    expected = [0.5, -0.2, 1.0,  # book, positions 0..2
                1.0,  # book present, position 3
                0.4, 0.3, -0.1, 0.3,  # returns, positions 4..7, oldest first
                0.0, 1.0]  # one-hot of "1h" among ("1m", "1h"), positions 8..9
    assert state.dtype == np.float32 and state.shape == (10,)
    np.testing.assert_allclose(state, expected, atol=1e-5)


def test_encode_without_book_and_with_a_short_window():
    learner = make_learner()
    # closes -0.02, -0.01, 0 -> returns 0.01, 0.01 -> 1.0, 1.0 percent, left-padded to 4
    state = learner.encode(obs("1m", [-0.02, -0.01, 0.0]))
    np.testing.assert_allclose(state, [0, 0, 0, 0.0, 0, 0, 1.0, 1.0, 1.0, 0.0], atol=1e-5)


def test_encode_rejects_bad_input():
    learner = make_learner()
    with pytest.raises(ValueError, match="3 finite features"):
        learner.encode(obs("1m", [0.0, 0.0], book=np.zeros(4)))
    with pytest.raises(ValueError, match="3 finite features"):
        learner.encode(obs("1m", [0.0, 0.0], book=np.array([0.0, np.nan, 0.0])))
    with pytest.raises(ValueError, match="timeframe"):
        learner.encode(obs("1d", [0.0, 0.0]))


# ----------------------------------------------------------------------- predict


def test_predict_is_argmax_with_its_probability():
    learner = make_learner()
    state = learner.encode(obs("1m", [-0.01, 0.0], book=np.array([0.3, 0.0, 0.0])))
    out = learner.predict(state, "1m")
    assert isinstance(out, ModelOutput)
    with torch.no_grad():
        probs = torch.softmax(learner.net(torch.from_numpy(state)[None])[0], -1).numpy()
    assert out.action == int(np.argmax(probs))
    assert out.confidence == pytest.approx(float(probs.max()), abs=1e-7)
    assert 0.5 <= out.confidence <= 1.0  # the larger of two probabilities
    assert learner.predict(state, "1m") == out  # deterministic


# ------------------------------------------------------------------------- learn


def random_example(learner, rng):
    """Random book and returns; the right answer is UP iff imbalance (book[0]) > 0."""
    book = rng.uniform(-1, 1, learner.n_book_features)
    close = np.cumsum(rng.normal(0, 0.002, 8))
    close -= close[-1]  # channel 3 is ln(close / last close): the last one is 0
    tf = TFS[rng.integers(len(TFS))]
    state = learner.encode(obs(tf, close, book))
    return state, UP if book[0] > 0 else DOWN


def test_learns_imbalance_rule_on_held_out_examples():
    torch.manual_seed(0)
    learner = make_learner(hidden=32)
    rng = np.random.default_rng(1)
    for _ in range(100):
        stats = learner.learn([experience(*random_example(learner, rng)) for _ in range(16)])
        assert math.isfinite(stats["loss"])
    held_out = [random_example(learner, rng) for _ in range(200)]
    hits = sum(learner.predict(state, "1m").action == label for state, label in held_out)
    assert hits / 200 > 0.9
    assert learner.train_steps == 100
    assert learner.loss_5ma() < learner.losses[0]


def test_learn_on_empty_list_and_bad_experiences():
    learner = make_learner()
    assert learner.learn([]) is None
    state = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="labels"):
        learner.learn([Experience(state=state, action=0, reward=0.0)])
    with pytest.raises(ValueError, match="labels"):
        learner.learn([experience(state, 2)])
    with pytest.raises(ValueError, match="10 features"):
        learner.learn([experience(np.zeros(9, np.float32), UP)])
    with pytest.raises(ValueError, match="weights"):
        learner.learn([experience(state, UP, weight=-1.0)])
    for bad in (np.nan, np.inf, -np.inf):  # one bad value in the second state rejects all
        second = state.copy()
        second[7] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            learner.learn([experience(state, UP), experience(second, DOWN)])
    assert learner.train_steps == 0 and len(learner.buffer) == 0
    # float64 states are taken (converted once)
    assert learner.learn([experience(state.astype(np.float64), UP)])["accuracy"] in (0.0, 1.0)
    assert learner.buffer.data["state"].dtype == np.float32 and len(learner.buffer) == 1


def test_learn_reports_loss_and_accuracy_by_hand():
    learner = make_learner()
    # Zero the output layer: logits 0, 0 -> p = 1/2 each -> CE = ln 2 for every example,
    # and argmax of a tie is index 0 (UP): labels UP, DOWN, UP -> accuracy 2/3.
    with torch.no_grad():
        learner.net.out.weight.zero_()
        learner.net.out.bias.zero_()
    states = np.random.default_rng(2).standard_normal((3, 10)).astype(np.float32)
    stats = learner.learn([experience(s, label) for s, label in zip(states, (UP, DOWN, UP))])
    assert stats["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert stats["accuracy"] == pytest.approx(2 / 3)
    # ring rows: state float32, label int64, weight; plus the published copy of the weights
    weights = sum(p.numel() for p in learner.inference_net.parameters()) * 4
    assert learner.buffer_bytes() == 3 * (10 * 4 + 8 + 4) + weights
    # The next step also trains on the 3 replayed rows; its accuracy is over the new one only:
    # zeroed again, every logit ties and argmax says UP; the new label is DOWN -> 0 (counting
    # the replayed UP, DOWN, UP as well would give 2/4).
    with torch.no_grad():
        learner.net.out.weight.zero_()
        learner.net.out.bias.zero_()
    assert learner.learn([experience(states[0], DOWN)])["accuracy"] == 0.0


# ------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_is_exact(tmp_path):
    trained = make_learner(seed=0)
    rng = np.random.default_rng(3)
    for _ in range(3):
        trained.learn([experience(*random_example(trained, rng)) for _ in range(8)])
    path = tmp_path / "cob.pt"
    torch.save(trained.state_dict(), path)
    fresh = make_learner(seed=1)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(5):
        state, _ = random_example(trained, rng)
        assert fresh.predict(state, "1m") == trained.predict(state, "1m")
    assert fresh.train_steps == 3 and list(fresh.losses) == list(trained.losses)
    assert fresh.rng.bit_generator.state == trained.rng.bit_generator.state
    saved, loaded = trained.optimizer.state_dict(), fresh.optimizer.state_dict()
    for i, slot in saved["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(slot[name], loaded["state"][i][name])


def test_load_state_dict_rejects_another_layout():
    with pytest.raises(ValueError, match="layout"):
        make_learner().load_state_dict(make_learner(n_returns=5).state_dict())


def test_predict_many_equals_predict_one_by_one():
    learner = make_learner()
    states = np.random.default_rng(4).standard_normal((6, learner.n_features)).astype(np.float32)
    batched = learner.predict_many(list(states), ["1m"] * 6)
    for state, out in zip(states, batched):
        single = learner.predict(state, "1m")
        assert out.action == single.action
        assert out.confidence == pytest.approx(single.confidence, rel=1e-5)
    assert learner.predict_many([], []) == []
