"""Tests for nn.dqn: the dueling and Double-DQN maths by hand, then a learner smoke test.

Expected numbers are worked out by hand in the comments.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from nn.base import Experience, Observation
from nn.dqn import DQNConfig, DQNLearner, DuelingQNetwork, double_dqn_targets, dueling_combine

torch.set_num_threads(1)

TFS = ("1m", "1h")
SMALL = DQNConfig(window=8, hidden=32, buffer_size=256, learning_rate=1e-3)


def make(cfg: DQNConfig = SMALL, timeframes=TFS, n_scalars=4, cnn_hidden_dim=4,
         seed=0) -> DQNLearner:
    return DQNLearner(cfg, timeframes, n_scalars, cnn_hidden_dim=cnn_hidden_dim, seed=seed)


def random_obs(rng: np.random.Generator, learner: DQNLearner, timeframe="1m") -> Observation:
    n_tf = len(learner.timeframes)
    windows = {tf: rng.normal(size=(5, 10)).astype(np.float32) for tf in learner.timeframes}
    refs = {tf: rng.normal(size=(5, 6)).astype(np.float32) for tf in learner.timeframes}
    return Observation(
        symbol="ETH/USDT", timeframe=timeframe, ts=0, windows=windows, ref_windows=refs,
        scalars=rng.normal(size=learner.n_scalars).astype(np.float32),
        extras={"cnn": {"hidden": rng.normal(size=(n_tf, learner.cnn_hidden_dim)),
                        "probs": rng.dirichlet(np.ones(3), size=n_tf)}},
    )


def random_batch(rng: np.random.Generator, learner: DQNLearner, n=8) -> list[Experience]:
    out = []
    for _ in range(n):
        tf = str(rng.choice(learner.timeframes))
        state = learner.encode(random_obs(rng, learner, tf))
        done = rng.random() < 0.3
        out.append(Experience(
            state=state, action=int(rng.integers(3)), reward=float(rng.normal()),
            next_state=None if done else learner.encode(random_obs(rng, learner, tf)),
            timeframe=tf,
        ))
    return out


def train(learner: DQNLearner, steps: int, seed=1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [learner.learn(random_batch(rng, learner)) for _ in range(steps)]


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---------------------------------------------------------------------------------- maths


def test_dueling_combine_by_hand():
    value = torch.tensor([[1.0], [-1.0]])  # [B=2, 1]
    advantage = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])  # [2, 3]
    # row 0: mean(A) = 2 -> 1 + [1, 2, 3] - 2 = [0, 1, 2]
    # row 1: mean(A) = 1 -> -1 + [0, 0, 3] - 1 = [-2, -2, 1]
    expected = torch.tensor([[0.0, 1.0, 2.0], [-2.0, -2.0, 1.0]])
    assert torch.equal(dueling_combine(value, advantage), expected)


def test_network_forward_uses_dueling_combine():
    torch.manual_seed(0)
    net = DuelingQNetwork(state_dim=6, n_actions=3, hidden=16)
    x = torch.randn(5, 6)  # [B, D]
    q = net(x)  # [5, 3]
    h = net.trunk(x)
    assert q.shape == (5, 3)
    assert torch.allclose(q, dueling_combine(net.value(h), net.advantage(h)))
    # mean over actions of V + A - mean(A) is V
    assert torch.allclose(q.mean(dim=1, keepdim=True), net.value(h), atol=1e-6)


def test_double_dqn_targets_by_hand():
    rewards = torch.tensor([1.0, -1.0])
    dones = torch.tensor([0.0, 1.0])
    next_q_online = torch.tensor([[1.0, 5.0, 2.0], [0.0, 0.0, 9.0]])
    next_q_target = torch.tensor([[4.0, 2.0, 3.0], [7.0, 1.0, 1.0]])
    # row 0: online argmax = 1, target Q there = 2 -> 1 + 0.9 * 2 = 2.8
    #        (a max over the target net would take 4 -> 4.6: that is not Double DQN)
    # row 1: terminal -> -1 + 0 = -1
    y = double_dqn_targets(rewards, dones, next_q_online, next_q_target, gamma=0.9)
    assert torch.allclose(y, torch.tensor([2.8, -1.0]))


# --------------------------------------------------------------------------------- encode


def test_state_dim_and_encode_layout():
    learner = make(timeframes=TFS, n_scalars=3, cnn_hidden_dim=4)
    # 3 scalars + 2 (own, ref) x 2 tf x 5 x 8 window + 2 x 4 hidden + 2 x 3 probs + 2 one-hot
    # = 3 + 160 + 8 + 6 + 2 = 179
    assert learner.state_dim == 179
    obs = Observation(
        symbol="ETH/USDT", timeframe="1h", ts=0,
        windows={"1m": np.arange(1, 26, dtype=np.float32).reshape(5, 5),  # short: L = 5
                 "1h": np.arange(60, dtype=np.float32).reshape(5, 12)},  # long: L = 12
        ref_windows={"1h": np.full((5, 8), 7.0)},  # "1m" missing
        scalars=np.array([0.1, 0.2, 0.3]),
    )
    s = learner.encode(obs)
    # float32 (the replay buffer rounds it to float16 when it stores it)
    assert s.shape == (179,) and s.dtype == np.float32
    np.testing.assert_allclose(s[0:3], [0.1, 0.2, 0.3], rtol=1e-7)
    # own 1m at [3, 43): each row left-padded with 3 zeros, rows 1..5, 6..10, ...
    np.testing.assert_array_equal(s[3:11], [0, 0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(s[11:19], [0, 0, 0, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(s[35:43], [0, 0, 0, 21, 22, 23, 24, 25])
    # own 1h at [43, 83): last 8 of 12 columns; row 0 -> 4..11, row 4 -> 52..59
    np.testing.assert_array_equal(s[43:51], np.arange(4, 12))
    np.testing.assert_array_equal(s[75:83], np.arange(52, 60))
    # ref 1m at [83, 123) missing -> zeros; ref 1h at [123, 163) all 7
    np.testing.assert_array_equal(s[83:123], 0.0)
    np.testing.assert_array_equal(s[123:163], 7.0)
    # extras absent: cnn_hidden [163, 171) and cnn_probs [171, 177) are zeros
    np.testing.assert_array_equal(s[163:177], 0.0)
    # one-hot of "1h" over ("1m", "1h") at [177, 179)
    np.testing.assert_array_equal(s[177:179], [0.0, 1.0])

    obs.extras = {"cnn": {"hidden": np.arange(8.0).reshape(2, 4),
                          "probs": np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])}}
    obs.timeframe = "1m"
    s = learner.encode(obs)
    np.testing.assert_array_equal(s[163:171], np.arange(8.0))
    np.testing.assert_allclose(s[171:177], [0.2, 0.3, 0.5, 0.6, 0.3, 0.1], rtol=1e-7)
    np.testing.assert_array_equal(s[177:179], [1.0, 0.0])


def test_encode_rejects_bad_observations():
    learner = make(n_scalars=3)
    rng = np.random.default_rng(0)
    obs = random_obs(rng, learner)
    obs.scalars = np.zeros(4)
    with pytest.raises(ValueError, match="scalars has 4 values, expected 3"):
        learner.encode(obs)
    obs = random_obs(rng, learner)
    obs.extras["cnn"] = {"hidden": np.zeros((2, 5))}
    with pytest.raises(ValueError, match="'cnn'.*'hidden'"):
        learner.encode(obs)
    obs = random_obs(rng, learner, timeframe="1d")
    with pytest.raises(ValueError, match="1d"):
        learner.encode(obs)
    obs = random_obs(rng, learner)
    obs.windows["1m"] = np.zeros((4, 8))
    with pytest.raises(ValueError, match="windows"):
        learner.encode(obs)
    obs = random_obs(rng, learner)
    obs.scalars[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        learner.encode(obs)
    obs = random_obs(rng, learner)
    obs.scalars[0] = 1e6  # float16 holds at most 65504
    with pytest.raises(ValueError, match="beyond float16"):
        learner.encode(obs)


# -------------------------------------------------------------------------------- predict


def set_q(net: DuelingQNetwork, value: float, advantage: list[float]) -> None:
    """Make Q(s) = value + advantage - mean(advantage) for every state."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.value.bias.fill_(value)
        net.advantage.bias.copy_(torch.tensor(advantage))


def test_predict_greedy_and_confidence_by_hand():
    learner = make()
    set_q(learner.q_network, 0.5, [1.0, 0.0, -1.0])
    learner.publish()  # predictions use the published copy of the online network
    # Q = 0.5 + [1, 0, -1] - 0 = [1.5, 0.5, -0.5]; greedy BUY (0)
    # softmax[0] = e^1.5 / (e^1.5 + e^0.5 + e^-0.5) = 1 / (1 + e^-1 + e^-2)
    #            = 1 / (1 + 0.367879 + 0.135335) = 0.665241
    learner.epsilon = 0.0
    out = learner.predict(np.zeros(learner.state_dim), "1m")
    assert (out.action, out.explored) == (0, False)
    assert out.confidence == pytest.approx(0.665241, abs=1e-6)
    # epsilon 1: always random; SELL (1) has e^-1 / 1.503215 = 0.244728, HOLD (2) 0.090031
    learner.epsilon = 1.0
    outs = [learner.predict(np.zeros(learner.state_dim), "1h") for _ in range(300)]
    assert all(o.explored for o in outs)
    assert {o.action for o in outs} == {0, 1, 2}
    conf = {o.action: o.confidence for o in outs}
    assert conf[1] == pytest.approx(0.244728, abs=1e-6)
    assert conf[2] == pytest.approx(0.090031, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        learner.predict(np.zeros(learner.state_dim + 1), "1m")
    with pytest.raises(ValueError, match="epsilon"):
        learner.epsilon = 1.5


# ---------------------------------------------------------------------------------- learn


def test_learn_smoke_finite_losses_and_exact_epsilon_decay():
    learner = make()
    assert learner.epsilon == 0.3
    rng = np.random.default_rng(1)
    assert learner.learn(random_batch(rng, learner, n=3)) is None  # 3 < minimum batch 8
    assert learner.train_steps == 0 and learner.epsilon == 0.3
    stats = [learner.learn(random_batch(rng, learner)) for _ in range(3)]
    # 0.3 -> 0.3 * 0.995 = 0.2985 -> 0.2985 * 0.995 = 0.2970075 -> 0.2955224625
    assert [s["epsilon"] for s in stats] == pytest.approx([0.2985, 0.2970075, 0.2955224625],
                                                           abs=1e-15)
    stats += [learner.learn(random_batch(rng, learner)) for _ in range(27)]
    assert learner.train_steps == 30
    assert all(math.isfinite(s["loss"]) and math.isfinite(s["td_abs_mean"]) for s in stats)
    assert set(stats[0]) == {"loss", "td_abs_mean", "epsilon", "beta"}
    # 0.3 * 0.995^30 = 0.3 * exp(30 ln 0.995) = 0.3 * exp(-0.1503763) = 0.2581153
    assert learner.epsilon == pytest.approx(0.2581153, abs=1e-7)
    # beta at step k = 0.4 + 0.6 k / 10000: step 29 -> 0.40174
    assert stats[-1]["beta"] == pytest.approx(0.40174)
    assert list(learner.losses) == [s["loss"] for s in stats]
    assert learner.loss_5ma() == pytest.approx(np.mean([s["loss"] for s in stats[-5:]]))
    assert len(learner.buffer) == 3 + 30 * 8
    status = learner.status()
    assert status["epsilon"] == learner.epsilon and status["train_steps"] == 30


def test_learn_loss_by_hand():
    learner = make(dataclasses.replace(SMALL, gamma=0.5))
    set_q(learner.q_network, 0.5, [1.0, 0.0, -1.0])  # online Q = [1.5, 0.5, -0.5] everywhere
    set_q(learner.target_network, 1.0, [-1.0, 2.0, -1.0])  # target Q = [0, 3, 0] everywhere
    s = np.zeros(learner.state_dim, dtype=np.float32)
    batch = [
        # slots 0, 1: BUY, r 1.5, terminal: y = 1.5, td = 0, smooth_l1 0
        *[Experience(state=s, action=0, reward=1.5) for _ in range(2)],
        # slots 2, 3: BUY, r 0, next s: a* = argmax online = BUY, y = 0 + 0.5 * Q_target(BUY) = 0,
        # td = 0 - 1.5 = -1.5, smooth_l1 = 1.5 - 0.5 = 1.0 (a max over the target net would
        # take 3 -> y = 1.5 -> td 0)
        *[Experience(state=s, action=0, reward=0.0, next_state=s) for _ in range(2)],
        # slots 4, 5: SELL, r 1, terminal, weight 10: td = 1 - 0.5 = 0.5,
        # smooth_l1 = 0.5 * 0.5^2 = 0.125, weighted 1.25
        *[Experience(state=s, action=1, reward=1.0, weight=10.0) for _ in range(2)],
        # slots 6, 7: HOLD, r 2.5, terminal: td = 2.5 + 0.5 = 3, smooth_l1 = 3 - 0.5 = 2.5
        *[Experience(state=s, action=2, reward=2.5) for _ in range(2)],
    ]
    # All 8 enter with priority 1, so the stratified batch of 8 is exactly slots 0..7 and every
    # IS weight is (p_i / p_min)^-beta = 1.
    stats = learner.learn(batch)
    # loss = (2 * 0 + 2 * 1.0 + 2 * 1.25 + 2 * 2.5) / 8 = 9.5 / 8 = 1.1875
    assert stats["loss"] == pytest.approx(1.1875, abs=1e-6)
    # |td| mean = (2 * 0 + 2 * 1.5 + 2 * 0.5 + 2 * 3) / 8 = 10 / 8 = 1.25
    assert stats["td_abs_mean"] == pytest.approx(1.25, abs=1e-6)
    assert stats["beta"] == pytest.approx(0.4)  # beta_start at step 0
    # new priorities (|td| + 1e-6)^0.6 per slot
    tree = learner.buffer.tree
    for slot, td in ((0, 0.0), (2, 1.5), (4, 0.5), (6, 3.0)):
        assert tree[slot] == pytest.approx((td + 1e-6) ** 0.6, rel=1e-5)


def test_epsilon_floors_at_min():
    learner = make(dataclasses.replace(SMALL, epsilon_decay=0.5))
    train(learner, 5)
    # 0.3 -> 0.15 -> 0.075 -> max(0.05, 0.0375) = 0.05 -> 0.05 -> 0.05
    assert learner.epsilon == 0.05


def test_learn_rejects_bad_actions_before_storing_any():
    learner = make()
    rng = np.random.default_rng(0)
    batch = random_batch(rng, learner)
    batch[-1].action = 3
    with pytest.raises(ValueError, match="actions"):
        learner.learn(batch)
    assert len(learner.buffer) == 0


def test_target_network_syncs_every_n_steps():
    learner = make(dataclasses.replace(SMALL, target_sync_steps=5))
    initial = {k: v.clone() for k, v in learner.q_network.state_dict().items()}
    assert same_params(learner.q_network, learner.target_network)  # a copy at construction
    train(learner, 4, seed=1)
    assert not same_params(learner.q_network, learner.target_network)  # online moved
    assert all(torch.equal(v, initial[k]) for k, v in learner.target_network.state_dict().items())
    train(learner, 1, seed=2)  # step 5: sync
    assert same_params(learner.q_network, learner.target_network)
    train(learner, 1, seed=3)  # step 6: online moves on, target stays at step 5
    assert not same_params(learner.q_network, learner.target_network)
    train(learner, 4, seed=4)  # step 10: sync again
    assert same_params(learner.q_network, learner.target_network)


def test_state_dict_round_trip_reproduces_predictions(tmp_path):
    learner = make(seed=0)
    train(learner, 12)
    path = tmp_path / "dqn.pt"
    torch.save(learner.state_dict(), path)

    restored = make(seed=123)  # different init and exploration RNG until loaded
    restored.load_state_dict(torch.load(path))  # weights_only=True by default
    assert restored.epsilon == learner.epsilon
    assert restored.train_steps == 12
    assert list(restored.losses) == list(learner.losses)
    assert same_params(restored.q_network, learner.q_network)
    assert same_params(restored.target_network, learner.target_network)
    opt_a, opt_b = learner.optimizer.state_dict(), restored.optimizer.state_dict()
    for key, state in opt_a["state"].items():
        assert all(torch.equal(v, opt_b["state"][key][name]) for name, v in state.items())
    # the same predictions, explored ones included (the exploration RNG resumes too)
    rng = np.random.default_rng(5)
    states = [learner.encode(random_obs(rng, learner)) for _ in range(40)]
    assert [learner.predict(s, "1m") for s in states] == [restored.predict(s, "1m") for s in states]


def test_load_rejects_a_checkpoint_of_another_layout():
    state = make(n_scalars=4).state_dict()
    with pytest.raises(ValueError, match="checkpoint"):
        make(n_scalars=5).load_state_dict(state)


def test_memory_counts_both_networks_and_the_buffer():
    learner = make(n_scalars=4, cnn_hidden_dim=4)
    assert learner.state_dim == 180  # 4 + 160 + 8 + 6 + 2
    # trunk (D*H + H) + (H*H + H), value H + 1, advantage 3H + 3 with D = 180, H = 32:
    # 5792 + 1056 + 33 + 99 = 6980
    params = (180 * 32 + 32) + (32 * 32 + 32) + (32 + 1) + (3 * 32 + 3)
    assert learner.parameters_count() == params == 6980
    # before training: online + target + published float32 weights, no optimiser state, no
    # experiences, and the PER sum tree: 256 leaves -> 512 float64 nodes = 4096 bytes, plus
    # 256 "filled" flags; buffer_bytes counts the tree and the published copy
    assert learner.buffer_bytes() == 512 * 8 + 256 + 4 * params == 4352 + 27920
    assert learner.memory_bytes() == 3 * 4 * params + 4352
    train(learner, 2)
    assert learner.buffer_bytes() == learner.buffer.nbytes() + 4 * params
    assert learner.memory_bytes() > 4 * 4 * params + learner.buffer_bytes()  # + Adam moments


def test_replay_keeps_each_state_window_and_hidden_row_once():
    learner = make(n_scalars=4, cnn_hidden_dim=4)  # timeframes 1m, 1h; window 8: 180 values
    # shared parts: 4 windows of 5 x 8 from column 4, then 2 CNN hidden rows of 4
    assert learner.encoder.layout.groups == ((4, 40, 4), (164, 4, 2))
    rng = np.random.default_rng(2)
    w1h = rng.normal(size=(5, 8)).astype(np.float32)
    w1h.flags.writeable = False
    h1h = rng.normal(size=4).astype(np.float32)
    states = []
    for k in range(6):  # BTC/USDT, its own reference, at six 1m closes inside one hour
        w1m = rng.normal(size=(5, 8)).astype(np.float32)
        w1m.flags.writeable = False
        windows = {"1m": w1m, "1h": w1h}  # the 1h window and hidden row stay the same
        obs = Observation(symbol="BTC/USDT", timeframe="1m", ts=k, windows=windows,
                          ref_windows=windows, scalars=rng.normal(size=4).astype(np.float32),
                          extras={"cnn": {"hidden": [rng.normal(size=4).astype(np.float32), h1h],
                                          "probs": rng.dirichlet(np.ones(3), size=2)}})
        states.append(learner.encode(obs))
    exps = [Experience(state=states[k], action=k % 3, reward=0.1 * k, next_state=states[k + 1])
            for k in range(5)]  # a chain: each next state is the next one's state
    learner.buffer.add_many(exps[:3])
    learner.buffer.add_many(exps[3:])
    store = learner.buffer.store
    # 6 states; windows: six 1m (the reference's are the same) and one 1h; hidden rows: six
    # 1m and one 1h
    assert (len(store), len(store.parts[0]), len(store.parts[1])) == (6, 7, 7)
    # a state row: own values 4 scalars + 6 probs + 2 one-hot = 12 float16, 6 part ids as
    # uint16 pairs = 12 -> 24 uint16 = 48 B, + 24 B bookkeeping (nn/state_store.py) = 72 B;
    # a window 40 float16 = 80 + 24 = 104 B; a hidden row 4 float16 = 8 + 24 = 32 B; the
    # ring's columns 26 B an experience; and the sum tree: 512 float64 nodes + 256 flags
    tree = 512 * 8 + 256
    assert learner.buffer.nbytes() - tree == 6 * 72 + 7 * 104 + 7 * 32 + 5 * 26 == 1514
    # (both states of each, as before: 5 x (2 x 180 x 2 + 11) = 3655 B)
    batch = learner.buffer._gather(np.arange(5), np.ones(5))
    as_stored = np.stack(states).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(batch.states, as_stored[:5])  # exactly what was given
    np.testing.assert_array_equal(batch.next_states, as_stored[1:])
    # the estimate per experience in the live loop: one state, two new windows (the
    # symbol's and the reference's), one new hidden row, the columns: 72 + 208 + 32 + 26
    assert learner.replay_bytes(states[0]) == 338


def test_loading_a_checkpoint_leaves_the_replay_as_it_was():
    # the replay is not part of a checkpoint (a full one is tens of MB, written every
    # checkpoint_every steps); resuming in place keeps it, a fresh learner starts empty
    learner = make()
    train(learner, 6)
    slots = np.arange(len(learner.buffer))
    before = learner.buffer._gather(slots, np.ones(len(slots)))
    learner.load_state_dict(learner.state_dict())
    after = learner.buffer._gather(slots, np.ones(len(slots)))
    for a, b in zip(before[:6], after[:6], strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = make(seed=4)
    fresh.load_state_dict(learner.state_dict())
    assert len(fresh.buffer) == 0 and len(fresh.buffer.store) == 0
    assert all(math.isfinite(s["loss"]) for s in train(fresh, 2))


def test_learns_a_contextual_bandit():
    # state feature x in {-1, +1} (the one scalar); BUY pays +1 when x = +1, SELL pays +1 when
    # x = -1, everything else pays -1; every episode ends at once (next_state None).
    cfg = dataclasses.replace(SMALL, learning_rate=1e-3)
    learner = make(cfg, timeframes=("1m",), n_scalars=1, cnn_hidden_dim=2)
    rng = np.random.default_rng(0)

    def state(x: float) -> np.ndarray:
        obs = Observation(symbol="ETH/USDT", timeframe="1m", ts=0, windows={}, ref_windows={},
                          scalars=np.array([x]))
        return learner.encode(obs)

    states = {1.0: state(1.0), -1.0: state(-1.0)}
    best = {1.0: 0, -1.0: 1}  # BUY, SELL
    for _ in range(300):
        batch = []
        for _ in range(8):
            x = float(rng.choice([-1.0, 1.0]))
            action = int(rng.integers(3))
            reward = 1.0 if action == best[x] else -1.0
            batch.append(Experience(state=states[x], action=action, reward=reward))
        learner.learn(batch)
    learner.epsilon = 0.0
    assert learner.predict(states[1.0], "1m").action == 0
    assert learner.predict(states[-1.0], "1m").action == 1
    with torch.no_grad():
        q = learner.q_network(torch.as_tensor(np.stack([states[1.0], states[-1.0]])).float())
    # Q close to the rewards: [+1, -1, -1] for x = +1 and [-1, +1, -1] for x = -1
    assert torch.allclose(q, torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]]), atol=0.3)


def test_predictions_use_the_published_weights_and_epsilon():
    learner = make()
    learner.auto_publish = False  # as the evaluator runs it: publish at fixed market times
    train(learner, 3)
    assert learner.train_steps == 3 and learner.published_steps == 0
    assert not same_params(learner.q_network, learner.inference_net)  # trained, not published
    assert learner.epsilon == pytest.approx(0.3 * 0.995**3)
    assert learner._published_epsilon == 0.3  # predictions still explore as before
    learner.publish()
    assert same_params(learner.q_network, learner.inference_net)
    assert learner.published_steps == 3 and learner._published_epsilon == learner.epsilon
    learner.auto_publish = True  # the app: every step publishes
    train(learner, 1)
    assert learner.published_steps == 4 and same_params(learner.q_network, learner.inference_net)


def test_predict_many_equals_predict_one_by_one_exploration_included():
    rng = np.random.default_rng(9)
    states = [rng.normal(size=make().state_dim).astype(np.float32) for _ in range(20)]
    tfs = [TFS[i % len(TFS)] for i in range(20)]
    one, many = make(seed=3), make(seed=3)
    one.epsilon = many.epsilon = 0.5  # half the actions explored: the draws must line up
    singles = [one.predict(s, tf) for s, tf in zip(states, tfs)]
    batched = many.predict_many(states, tfs)
    assert [(o.action, o.explored) for o in batched] == [(o.action, o.explored) for o in singles]
    assert any(o.explored for o in batched) and not all(o.explored for o in batched)
    np.testing.assert_allclose([o.confidence for o in batched],
                               [o.confidence for o in singles], rtol=1e-5)
    with pytest.raises(ValueError, match="timeframe"):
        many.predict_many(states[:1], ["5m"])
