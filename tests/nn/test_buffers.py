"""Tests for nn.buffers: sum tree, uniform ring buffer, prioritised replay, and the store that
keeps each distinct state and part once (nn/state_store.py).

Expected numbers are worked out by hand in the comments.
"""

import numpy as np
import pytest

from nn.base import Experience
from nn.buffers import Batch, PrioritizedReplayBuffer, ReplayBuffer, SumTree
from nn.state_store import RowPool, StateLayout, StateStore

EPS = 1e-6


def exp(reward: float = 0.0, dim: int = 4, done: bool = False, weight: float = 1.0,
        action: int = 0, timeframe: str = "1m") -> Experience:
    state = np.full(dim, reward, dtype=np.float64)
    return Experience(state=state, action=action, reward=reward,
                      next_state=None if done else state + 1, timeframe=timeframe,
                      weight=weight)


def tree_of(priorities, capacity=None) -> SumTree:
    tree = SumTree(capacity or len(priorities))
    for i, p in enumerate(priorities):
        tree.update(i, p)
    return tree


def per(alpha=1.0, beta_start=1.0, beta_steps=100, capacity=8, seed=0) -> PrioritizedReplayBuffer:
    return PrioritizedReplayBuffer(capacity, alpha, beta_start, beta_steps, eps=EPS, seed=seed)


# ------------------------------------------------------------------------------- SumTree


def test_sum_tree_total_and_find():
    tree = tree_of([1.0, 2.0, 3.0, 4.0])
    # total 1+2+3+4 = 10; cumulative bounds: [0,1) -> 0, [1,3) -> 1, [3,6) -> 2, [6,10) -> 3
    assert tree.total == 10.0
    assert tree.find(0.5) == (0, 1.0)
    assert tree.find(1.5) == (1, 2.0)
    assert tree.find(5.9) == (2, 3.0)
    assert tree.find(6.1) == (3, 4.0)
    # half-open intervals: a bound belongs to the leaf on its right
    assert tree.find(1.0) == (1, 2.0)
    assert tree.find(6.0) == (3, 4.0)
    # out of range is clipped into [0, total]
    assert tree.find(-1.0) == (0, 1.0)
    assert tree.find(10.0) == (3, 4.0)
    assert tree.find(99.0) == (3, 4.0)
    assert (tree.max_priority, tree.min_priority) == (4.0, 1.0)


def test_sum_tree_update_moves_the_bounds():
    tree = tree_of([1.0, 2.0, 3.0, 4.0])
    tree.update(1, 0.5)
    # total 10 - 2 + 0.5 = 8.5; bounds now [0,1) -> 0, [1,1.5) -> 1, [1.5,4.5) -> 2, [4.5,8.5) -> 3
    assert tree.total == 8.5
    assert tree.find(1.4) == (1, 0.5)
    assert tree.find(1.5) == (2, 3.0)
    assert tree.find(4.4) == (2, 3.0)
    assert tree.find(4.5) == (3, 4.0)
    assert tree.min_priority == 0.5
    tree.update(3, 10.0)  # 8.5 - 4 + 10 = 14.5
    assert tree.total == 14.5
    assert tree.max_priority == 10.0
    assert tree[3] == 10.0


def test_sum_tree_non_power_of_two_capacity():
    tree = tree_of([1.0, 1.0, 1.0, 1.0, 6.0])  # 5 leaves, padded to 8
    # total 10; bounds [0,1) [1,2) [2,3) [3,4) -> 0..3, [4,10) -> 4; padding never returned
    assert tree.total == 10.0
    assert tree.find(3.5) == (3, 1.0)
    assert tree.find(4.0) == (4, 6.0)
    assert tree.find(9.99) == (4, 6.0)
    assert tree.find(10.0) == (4, 6.0)
    tree3 = tree_of([2.0, 5.0, 1.0])  # capacity 3
    # bounds [0,2) -> 0, [2,7) -> 1, [7,8) -> 2
    assert [tree3.find(u)[0] for u in (1.9, 2.0, 6.9, 7.0, 7.99)] == [0, 1, 1, 2, 2]


def test_sum_tree_min_max_only_over_filled_leaves():
    tree = SumTree(5)
    assert (tree.total, tree.max_priority, tree.min_priority) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="total"):
        tree.find(0.0)
    tree.update(1, 2.0)  # leaves 0, 2, 3, 4 unfilled: min is 2, not 0
    assert (tree.total, tree.max_priority, tree.min_priority, tree.filled) == (2.0, 2.0, 2.0, 1)
    assert tree.find(0.0) == (1, 2.0)  # empty leaf 0 (priority 0) is skipped
    assert tree.find(5.0) == (1, 2.0)


def test_sum_tree_skips_zero_priority_leaves():
    tree = tree_of([1.0, 0.0, 1.0])
    # prefix 1.0 lands exactly on the (empty) interval of leaf 1: [1,1) holds nothing -> leaf 2
    assert tree.find(1.0) == (2, 1.0)
    assert tree.find(0.999) == (0, 1.0)


def test_sum_tree_capacity_one_and_bad_input():
    tree = tree_of([3.0])
    assert (tree.total, tree.find(2.0)) == (3.0, (0, 3.0))
    with pytest.raises(IndexError):
        tree.update(1, 1.0)
    with pytest.raises(ValueError, match="priority"):
        tree.update(0, float("nan"))
    with pytest.raises(ValueError, match="priority"):
        tree.update(0, -1.0)
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)


def test_sum_tree_sums_do_not_drift():
    rng = np.random.default_rng(0)
    tree = SumTree(37)
    values = np.zeros(37)
    for _ in range(5000):
        i, p = int(rng.integers(37)), float(rng.random() * 10)
        tree.update(i, p)
        values[i] = p
    assert tree.total == pytest.approx(values.sum(), rel=1e-12)
    assert tree.max_priority == values.max()


# ------------------------------------------------------------------------- uniform buffer


def test_ring_buffer_overwrites_oldest():
    buf = ReplayBuffer(3, seed=0)
    slots = [buf.add(exp(reward=r)) for r in (0.0, 1.0, 2.0, 3.0)]
    assert slots == [0, 1, 2, 0]  # the 4th write goes to slot 0, replacing reward 0
    assert len(buf) == 3
    batch = buf.sample(200)
    assert set(batch.rewards.tolist()) == {1.0, 2.0, 3.0}
    # slot 0 now holds reward 3
    np.testing.assert_array_equal(batch.rewards[batch.indices == 0], 3.0)


def test_batch_layout_dtypes_and_terminal_rows():
    buf = ReplayBuffer(4, seed=1)
    buf.add(exp(reward=1.0, done=False, action=2, timeframe="1h", weight=10.0))
    buf.add(exp(reward=-1.0, done=True, action=1))
    batch = buf.sample(64)
    assert isinstance(batch, Batch)
    assert batch.states.shape == batch.next_states.shape == (64, 4)
    assert batch.states.dtype == batch.next_states.dtype == np.float32
    assert batch.actions.dtype == batch.indices.dtype == np.int64
    assert batch.rewards.dtype == batch.dones.dtype == batch.weights.dtype == np.float32
    first, second = batch.indices == 0, batch.indices == 1
    assert first.any() and second.any()
    # slot 0: state [1,1,1,1], next [2,2,2,2], not done, weight 1 (uniform IS) x 10
    np.testing.assert_array_equal(batch.next_states[first], 2.0)
    np.testing.assert_array_equal(batch.dones[first], 0.0)
    np.testing.assert_array_equal(batch.weights[first], 10.0)
    np.testing.assert_array_equal(batch.actions[first], 2)
    # slot 1: done -> next_state row of zeros, done 1
    np.testing.assert_array_equal(batch.next_states[second], 0.0)
    np.testing.assert_array_equal(batch.dones[second], 1.0)
    np.testing.assert_array_equal(batch.weights[second], 1.0)
    assert {batch.timeframes[i] for i in np.flatnonzero(first)} == {"1h"}


def test_buffer_rejects_bad_experiences_and_empty_sampling():
    buf = ReplayBuffer(4)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)
    buf.add(exp(dim=4))
    with pytest.raises(ValueError, match="4"):
        buf.add(exp(dim=5))
    with pytest.raises(ValueError, match="reward"):
        buf.add(Experience(state=np.zeros(4), action=0, reward=float("nan")))


def test_buffer_copies_states_and_leaves_caller_experience_alone():
    buf = ReplayBuffer(2)
    e = exp(reward=1.0)
    buf.add(e)
    assert e.state.dtype == np.float64  # the caller's object is not modified
    e.state[:] = 99.0  # nor aliased
    assert buf.sample(1).states[0, 0] == 1.0


def test_nbytes_counts_the_rows_in_use():
    # per experience the ring's columns: state id 4, next-state id 4, action 8, reward 4,
    # weight 4, timeframe code 2 -> 26 B; per distinct state a row of 4 float16 (one 8-byte
    # word) and its bookkeeping (reference count 4, hash 8, free-stack slot 4, two hash-table
    # slots 8 -> 24 B): 32 B
    buf = ReplayBuffer(2)
    assert buf.nbytes() == 0
    buf.add(exp(dim=4))  # states [0, 0, 0, 0] -> [1, 1, 1, 1]: 26 + 2 x 32
    assert buf.nbytes() == 26 + 64
    buf.add(exp(dim=4, done=True))  # state [0, 0, 0, 0] again: held once, no next state
    assert buf.nbytes() == 2 * 26 + 64 == 116
    buf.add(exp(dim=4, done=True))  # overwrites the first: [1, 1, 1, 1] is freed
    assert buf.nbytes() == 2 * 26 + 32 == 84
    tree_bytes = 2 * 2 * 8 + 2  # capacity 2 -> 2 leaves -> 4 float64 nodes, 2 "filled" flags
    pbuf = per(capacity=2)
    pbuf.add(exp(dim=4, done=True))
    assert pbuf.nbytes() == 26 + 32 + tree_bytes


def test_a_list_longer_than_the_ring_keeps_its_newest():
    buf = ReplayBuffer(3)
    exps = [exp(reward=float(r), dim=2, done=r % 2 == 0) for r in range(5)]  # 0, 2, 4 done
    assert buf.add_many(exps).tolist() == [0, 1, 2]  # rewards 2, 3, 4; 0 and 1 never stored
    batch = buf._gather(np.arange(3), np.ones(3))
    assert batch.rewards.tolist() == [2.0, 3.0, 4.0]
    assert batch.dones.tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_array_equal(batch.next_states[1], [4.0, 4.0])  # reward 3: state 3 + 1
    np.testing.assert_array_equal(batch.next_states[0], [0.0, 0.0])  # done: zeros
    assert buf.add_many([exp(reward=5.0, dim=2)]).tolist() == [0]  # the oldest goes first


def test_a_shared_array_is_stored_as_both_states():
    buf = ReplayBuffer(4)
    a, b, c = (np.full(3, v, np.float32) for v in (1.0, 2.0, 3.0))
    # a chain: (a -> b), (b -> c), as the service makes them (the next state of one is the
    # very array that is the state of the next)
    buf.add_many([Experience(state=a, action=0, reward=0.0, next_state=b),
                  Experience(state=b, action=1, reward=0.0, next_state=c)])
    batch = buf._gather(np.arange(2), np.ones(2))
    np.testing.assert_array_equal(batch.states, [a, b])
    np.testing.assert_array_equal(batch.next_states, [b, c])
    assert batch.actions.tolist() == [0, 1]


def test_states_are_stored_as_float16_and_sampled_as_float32():
    buf = ReplayBuffer(1)
    state = np.array([1.0, -0.5, 1e-4, 3.14159265, 1000.0], np.float32)
    buf.add(Experience(state=state, action=0, reward=0.0, next_state=state * 2))
    batch = buf.sample(1)
    assert batch.states.dtype == np.float32
    # float16 keeps 11 significant bits: relative error at most 2^-11 = 0.000488
    np.testing.assert_allclose(batch.states[0], state, rtol=2**-11)
    np.testing.assert_allclose(batch.next_states[0], state * 2, rtol=2**-11)
    assert batch.states[0, 3] != np.float32(3.14159265)  # rounded: 3.140625
    with pytest.raises(ValueError, match="beyond"):
        buf.add(Experience(state=np.array([1e6] * 5, np.float32), action=0, reward=0.0))
    with pytest.raises(ValueError, match="NaN"):
        buf.add(Experience(state=np.array([np.nan] * 5, np.float32), action=0, reward=0.0))


# ------------------------------------------------------------------------ prioritised replay


def test_per_probabilities_and_is_weights_beta_one():
    buf = per(alpha=1.0, beta_start=1.0)
    buf.add(exp(0.0), priority=1.0)
    buf.add(exp(1.0), priority=3.0)
    # alpha 1: P = [1/4, 3/4]; beta 1: w = (N P)^-1 = (2/4)^-1, (6/4)^-1 = [2, 2/3]
    # max weight from the min priority: 2 -> normalised [1, 1/3]
    assert buf.tree.total == 4.0
    batch = buf.sample(100)
    assert set(batch.indices.tolist()) == {0, 1}
    np.testing.assert_allclose(batch.weights[batch.indices == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(batch.weights[batch.indices == 1], 1 / 3, rtol=1e-6)


def test_per_is_weights_half_beta_and_alpha():
    buf = per(alpha=0.5, beta_start=0.5)
    buf.add(exp(0.0), priority=1.0)
    buf.add(exp(1.0), priority=4.0)
    # tree holds p^0.5 = [1, 2], P = [1/3, 2/3]
    assert (buf.tree[0], buf.tree[1]) == (1.0, 2.0)
    # w = (2 P)^-0.5 = (2/3)^-0.5, (4/3)^-0.5; / max (2/3)^-0.5 -> [1, (1/2)^0.5]
    batch = buf.sample(100)
    np.testing.assert_allclose(batch.weights[batch.indices == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(batch.weights[batch.indices == 1], 0.5**0.5, rtol=1e-6)


def test_experience_weight_multiplies_is_weight():
    buf = per(alpha=1.0, beta_start=1.0)
    buf.add(exp(0.0), priority=1.0)
    buf.add(exp(1.0, weight=10.0), priority=3.0)
    batch = buf.sample(100)
    # IS weights [1, 1/3] (above) x experience weights [1, 10] -> [1, 10/3]
    np.testing.assert_allclose(batch.weights[batch.indices == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(batch.weights[batch.indices == 1], 10 / 3, rtol=1e-6)


def test_beta_anneals_linearly_then_stays_at_one():
    buf = per(beta_start=0.4, beta_steps=100)
    # 0.4 + (step / 100) * (1 - 0.4)
    assert buf.beta(0) == pytest.approx(0.4)
    assert buf.beta(50) == pytest.approx(0.7)  # 0.4 + 0.5 * 0.6
    assert buf.beta(100) == pytest.approx(1.0)
    assert buf.beta(250) == 1.0
    assert buf.beta(-5) == pytest.approx(0.4)


def test_sample_uses_beta_of_the_step():
    buf = per(alpha=1.0, beta_start=0.0, beta_steps=10)
    buf.add(exp(0.0), priority=1.0)
    buf.add(exp(1.0), priority=3.0)
    # beta 0 at step 0: every weight (N P)^0 = 1
    np.testing.assert_allclose(buf.sample(20, step=0).weights, 1.0)
    # beta 1 at step 10: [1, 1/3] as above
    batch = buf.sample(50, step=10)
    np.testing.assert_allclose(batch.weights[batch.indices == 1], 1 / 3, rtol=1e-6)


def test_update_priorities_sets_abs_td_plus_eps():
    buf = per(alpha=1.0)
    buf.add(exp(0.0))
    buf.add(exp(1.0))
    buf.update_priorities(np.array([0, 1]), np.array([-0.5, 2.0]))
    # p = |td| + eps = [0.5 + 1e-6, 2 + 1e-6]; alpha 1 stores them as they are
    assert buf.tree[0] == pytest.approx(0.5 + EPS, abs=1e-12)
    assert buf.tree[1] == pytest.approx(2.0 + EPS, abs=1e-12)
    assert buf.tree.total == pytest.approx(2.5 + 2 * EPS, abs=1e-12)
    buf2 = per(alpha=0.5)
    buf2.add(exp(0.0))
    buf2.update_priorities([0], [-4.0])
    assert buf2.tree[0] == pytest.approx((4.0 + EPS) ** 0.5, abs=1e-12)  # stored as p^alpha
    with pytest.raises(ValueError, match="non-finite"):
        buf.update_priorities([0], [float("nan")])
    with pytest.raises(ValueError, match="indices"):
        buf.update_priorities([0, 1], [1.0])


def test_new_experiences_get_the_current_max_priority():
    buf = per(alpha=0.5)
    buf.add(exp(0.0))
    assert buf.tree[0] == 1.0  # empty buffer: p = 1, 1^0.5 = 1
    buf.add(exp(1.0))
    buf.update_priorities([0, 1], [0.25, 9.0])  # stored sqrt(0.25+eps) ~ 0.5, sqrt(9+eps) ~ 3
    buf.add(exp(2.0))
    assert buf.tree[2] == buf.tree[1] == pytest.approx(3.0, abs=1e-6)
    with pytest.raises(ValueError, match="priority"):
        buf.add(exp(3.0), priority=0.0)


def test_per_ring_overwrite_replaces_priority():
    buf = per(alpha=1.0, capacity=3)
    for r, p in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0)):
        buf.add(exp(r), priority=p)
    assert buf.tree.total == 6.0
    assert buf.add(exp(3.0), priority=5.0) == 0  # slot 0 overwritten: 6 - 1 + 5 = 10
    assert buf.tree.total == 10.0
    assert len(buf) == 3
    assert buf.tree.min_priority == 2.0


def test_stratified_sampling_one_draw_per_segment():
    buf = per(alpha=1.0)
    for r in range(4):
        buf.add(exp(float(r)), priority=1.0)
    # total 4, 4 segments [0,1) [1,2) [2,3) [3,4): one draw in each -> exactly slots 0, 1, 2, 3
    for _ in range(20):
        np.testing.assert_array_equal(buf.sample(4).indices, [0, 1, 2, 3])
    buf2 = per(alpha=1.0)
    buf2.add(exp(0.0), priority=1.0)
    buf2.add(exp(1.0), priority=3.0)
    # B = 2: segments [0,2) and [2,4); the second lies wholly inside slot 1's [1,4)
    assert all(buf2.sample(2).indices[1] == 1 for _ in range(20))


def test_empirical_frequencies_match_p():
    buf = per(alpha=1.0, seed=3)
    for r, p in enumerate((1.0, 2.0, 3.0, 4.0)):
        buf.add(exp(float(r)), priority=p)
    # P = p / 10 = [0.1, 0.2, 0.3, 0.4]; 400 batches of 50 = 20000 draws, std < 0.004 each
    draws = np.concatenate([buf.sample(50).indices for _ in range(400)])
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_per_rejects_bad_settings():
    with pytest.raises(ValueError, match="alpha"):
        PrioritizedReplayBuffer(8, alpha=1.5, beta_start=0.4, beta_steps=10)
    with pytest.raises(ValueError, match="beta_steps"):
        PrioritizedReplayBuffer(8, alpha=0.6, beta_start=0.4, beta_steps=0)


# ------------------------------------------------------------------ vectorised = sequential


def check_tree(tree: SumTree, expected: dict[int, float]) -> None:
    """The tree against what was written: leaves, every parent = its children, min/max."""
    leaves = np.zeros(tree.size)
    for i, v in expected.items():
        leaves[i] = v
    np.testing.assert_array_equal(tree._sum[tree.size:], leaves)
    parents = np.arange(1, tree.size)
    np.testing.assert_array_equal(tree._sum[parents],
                                  tree._sum[2 * parents] + tree._sum[2 * parents + 1])
    assert tree.filled == len(expected)
    assert (tree.min_priority, tree.max_priority) == (min(expected.values()),
                                                      max(expected.values()))


def test_update_many_keeps_every_sum_and_find_many_walks_the_prefix_sums():
    rng = np.random.default_rng(5)
    tree, written = SumTree(37), {}  # 64 leaves with padding
    for _ in range(20):
        idx = rng.integers(0, 37, size=8)  # repeats: the last write wins
        p = rng.uniform(0.001, 3, size=8).round(3)
        tree.update_many(idx, p)
        written.update(zip(idx.tolist(), p.tolist()))
        check_tree(tree, written)
    # find: the leaf whose cumulative-sum interval holds u (searchsorted on the leaves)
    cumsum = np.cumsum(tree._sum[tree.size:])
    inside = rng.uniform(0, tree.total, 200)
    leaves, priorities = tree.find_many(inside)
    np.testing.assert_array_equal(leaves, np.searchsorted(cumsum, inside, side="right"))
    np.testing.assert_array_equal(priorities, tree._sum[tree.size + leaves])
    # outside [0, total] it is clipped: the first and the last leaf holding a priority
    filled = sorted(i for i, v in written.items() if v > 0)
    assert tree.find_many([-1.0])[0].tolist() == [filled[0]]
    assert tree.find_many([tree.total + 1])[0].tolist() == [filled[-1]]
    with pytest.raises(IndexError):
        tree.update_many([37], [1.0])
    with pytest.raises(ValueError, match="finite"):
        tree.update_many([1], [np.nan])


def test_add_many_matches_add_one_at_a_time():
    rng = np.random.default_rng(6)
    exps = [exp(reward=float(r), dim=4, done=bool(r > 0.5)) for r in rng.uniform(0, 1, 11)]
    one, many = per(capacity=8), per(capacity=8)  # 11 > 8: wraps and overwrites
    for e in exps[:5]:
        one.add(e)
    many.add_many(exps[:5])
    one.update_priorities([0, 3], [2.0, 0.5])
    many.update_priorities([0, 3], [2.0, 0.5])
    for e in exps[5:]:
        one.add(e)
    assert many.add_many(exps[5:]).tolist() == [5, 6, 7, 0, 1, 2]
    assert len(one) == len(many) == 8 and one.nbytes() == many.nbytes()
    np.testing.assert_array_equal(many.tree._sum, one.tree._sum)
    a, b = one._gather(np.arange(8), np.ones(8)), many._gather(np.arange(8), np.ones(8))
    for field in ("states", "next_states", "dones", "rewards", "actions", "weights"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_add_many_refuses_a_bad_list_whole():
    buf = per(capacity=8)
    buf.add_many([exp(dim=4)])
    bad = [exp(dim=4), Experience(state=np.zeros(4), action=0, reward=float("inf"))]
    with pytest.raises(ValueError, match="reward"):
        buf.add_many(bad)
    with pytest.raises(ValueError, match="5 values; this buffer holds 4"):
        buf.add_many([exp(dim=5)])
    assert len(buf) == 1 and buf.tree.filled == 1


def test_update_range_keeps_every_sum():
    rng = np.random.default_rng(8)
    tree, written = SumTree(37), {}
    for start, stop in ((0, 5), (30, 37), (3, 31), (36, 37), (0, 37)):
        value = round(float(rng.uniform(0.1, 3)), 3)
        tree.update_range(start, stop, value)
        written.update(dict.fromkeys(range(start, stop), value))
        check_tree(tree, written)
    with pytest.raises(IndexError):
        tree.update_range(30, 38, 1.0)


def test_all_finite_reads_the_float16_exponent():
    from nn.buffers import all_finite

    ok = np.array([0.0, -0.0, 1.0, -65504.0, 6e-8, np.float16(65504)], dtype=np.float16)
    assert all_finite(ok)
    for bad in (np.inf, -np.inf, np.nan):
        assert not all_finite(np.append(ok, np.float16(bad)))


def test_storable_means_finite_once_stored_as_float16():
    from nn.buffers import STORE_DTYPE, storable

    ok = np.array([0.0, -0.0, 1.5, -65504.0, 65504.0, 1e-9], dtype=np.float32)
    assert storable(ok) and storable(ok.reshape(2, 3)) and storable(ok[::2])
    assert np.isfinite(ok.astype(STORE_DTYPE)).all()
    for bad in (np.inf, -np.inf, np.nan, 70000.0, -1e6):
        assert not storable(np.append(ok, np.float32(bad)))


def test_finite32_rejects_nan_and_inf_only():
    from nn.buffers import finite32

    big = np.finfo(np.float32).max
    ok = np.array([0.0, -0.0, 1e-45, -big, big, 70000.0], dtype=np.float32)
    assert finite32(ok) and finite32(ok.reshape(2, 3)) and finite32(ok[::2])
    for bad in (np.inf, -np.inf, np.nan):
        assert not finite32(np.append(ok, np.float32(bad)))


# ------------------------------------------------- states stored once (nn/state_store.py)


def chain(values: list[float], dim: int = 6) -> list[np.ndarray]:
    """States [dim] of the given values (exact in float16), one array each."""
    return [np.full(dim, v, dtype=np.float32) for v in values]


def test_a_state_shared_by_consecutive_experiences_is_stored_once():
    buf = ReplayBuffer(8)
    s = chain([0.25, 0.5, 0.75, 1.0, 1.25])
    # two lists, as the trainer hands them over: the second's first state is the first's
    # last next state (the same array; found again by content)
    buf.add_many([Experience(state=s[0], action=0, reward=0.0, next_state=s[1]),
                  Experience(state=s[1], action=1, reward=0.0, next_state=s[2])])
    buf.add_many([Experience(state=s[2], action=2, reward=0.0, next_state=s[3]),
                  Experience(state=s[3], action=0, reward=0.0, next_state=s[4])])
    assert len(buf.store) == 5  # 4 transitions, 5 states (not 8)
    # a state row: 6 float16 = 12 B, padded to two 8-byte words = 16 B, + 24 B bookkeeping
    # = 40 B; 5 states = 200 B; the ring 4 x 26 = 104 B -> 304 B, 76 B an experience
    # (storing both states of each: 4 x (2 x 12 + 11) = 140 B of rows before the change)
    assert buf.nbytes() == 5 * 40 + 4 * 26 == 304
    batch = buf._gather(np.arange(4), np.ones(4))
    np.testing.assert_array_equal(batch.states, s[:4])  # exactly what was given
    np.testing.assert_array_equal(batch.next_states, s[1:])
    assert batch.dones.tolist() == [0.0] * 4


def test_overwritten_experiences_free_their_states_for_reuse():
    buf = ReplayBuffer(2)
    s = chain([float(v) for v in range(7)], dim=4)
    for k in range(6):
        buf.add(Experience(state=s[k], action=0, reward=float(k), next_state=s[k + 1]))
        # the last two transitions (k-1 -> k -> k+1) keep 3 states; older ones are freed
        assert len(buf.store) == min(k + 1, 2) + 1
    assert buf.store.states._counts[1] == 4  # rows ever used: 3 live + 1 freed and reused
    batch = buf._gather(np.arange(2), np.ones(2))
    # slot 0 holds k = 4 (4 -> 5), slot 1 k = 5 (5 -> 6)
    np.testing.assert_array_equal(batch.states, [s[4], s[5]])
    np.testing.assert_array_equal(batch.next_states, [s[5], s[6]])
    assert batch.rewards.tolist() == [4.0, 5.0]


def test_parts_shared_by_states_are_stored_once():
    # dim 10: own columns 0-1, then two parts of 4: columns 2-5 and 6-9
    store = StateStore(StateLayout(10, ((2, 4, 2),)))
    w1, w2, w3 = [0.5] * 4, [1.5] * 4, [2.5] * 4
    a = np.array([1.0, 2.0, *w1, *w2], dtype=np.float16)
    b = np.array([3.0, 4.0, *w1, *w3], dtype=np.float16)  # shares w1 with a
    ids = store.intern(np.stack([a, b]))
    assert len(store) == 2 and len(store.parts[0]) == 3  # w1, w2, w3
    # part row: 4 float16 = one word, 8 + 24 = 32 B; state row: own 2 + two part ids as
    # uint16 pairs 4 = 6 uint16 -> two words, 16 + 24 = 40 B
    assert store.nbytes() == 3 * 32 + 2 * 40 == 176
    np.testing.assert_array_equal(store.gather(ids[::-1]), [b, a])
    assert store.intern(a[None]).tolist() == [ids[0]]  # found: one more reference
    store.release(ids[:1])
    assert len(store) == 2  # a still has a reference
    store.release(ids[:1])
    assert len(store) == 1 and len(store.parts[0]) == 2  # a and w2 freed; b keeps w1, w3
    np.testing.assert_array_equal(store.gather(ids[1:]), [b])
    store.release(ids[1:])
    assert store.nbytes() == 0 and len(store.parts[0]) == 0


def test_row_pool_counts_references_and_compares_bits():
    pool = RowPool(3, capacity=2)
    rows = np.array([[1, 2, 3], [1, 2, 3], [4, 5, 6]], dtype=np.uint16)
    ids, new = pool.intern(rows)
    assert ids[0] == ids[1] != ids[2] and new.tolist() == [True, False, True]
    assert pool.refs[ids[0]] == 2 and len(pool) == 2
    # +0.0 and -0.0 are equal numbers but different float16 bits: two rows
    zeros = np.array([[0.0] * 3, [-0.0] * 3], dtype=np.float16).view(np.uint16)
    assert len(set(pool.intern(zeros)[0].tolist())) == 2
    assert pool.release(ids[:1]).tolist() == []  # [1, 2, 3] still held once
    assert sorted(pool.release(ids[1:]).tolist()) == sorted(ids[1:].tolist())
    with pytest.raises(ValueError, match="not held"):
        pool.release(ids[2:])
    np.testing.assert_array_equal(pool.get(pool.intern(rows[2:])[0]), rows[2:])


def test_row_pool_grows_and_churns_like_a_dict():
    rng = np.random.default_rng(3)
    pool, held = RowPool(5, capacity=1), {}  # id -> [row, references]
    for _ in range(400):
        if rng.random() < 0.6 or not held:
            rows = rng.integers(0, 3, size=(int(rng.integers(1, 6)), 5)).astype(np.uint16)
            ids, _ = pool.intern(rows)
            for row, i in zip(rows, ids.tolist(), strict=True):
                held.setdefault(i, [tuple(row), 0])[1] += 1
                assert held[i][0] == tuple(row)  # an id is always the same content
        else:
            ids = rng.choice(list(held), size=min(len(held), 3), replace=False)
            freed = set(pool.release(ids).tolist())
            for i in ids.tolist():
                held[i][1] -= 1
                if not held[i][1]:
                    del held[i]
                    assert i in freed
        assert len(pool) == len(held) == len({row for row, _ in held.values()})
    ids = np.array(sorted(held))
    np.testing.assert_array_equal(pool.get(ids), [held[i][0] for i in ids.tolist()])
    assert pool.refs[ids].tolist() == [held[i][1] for i in ids.tolist()]


def test_compile_kernels_compiles_what_training_calls():
    from nn import state_store, sum_tree
    from nn.buffers import compile_kernels

    compile_kernels()  # what the services' warm-up can call, so no training step compiles
    for kernel in (state_store._intern, state_store._release, state_store._relink,
                   sum_tree._walk):
        assert len(kernel.signatures) >= 1
