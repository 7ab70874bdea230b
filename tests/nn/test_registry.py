"""Tests for nn.registry: devices, building the enabled models, memory limits and estimates.

Parameter counts and memory estimates are worked out by hand in the comments.
"""

from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.live.models import (
    MB,
    ModelTooLarge,
    build_learners,
    estimate_memory,
    zero_observation,
)
from nn.book_direction import COBConfig, COBLearner
from nn.cnn import CNNLearner
from nn.contract import N_BOOK, N_SCALARS
from nn.dqn import DQNConfig, DQNLearner
from nn.registry import pick_device

torch.set_num_threads(1)
NO_CUDA = not torch.cuda.is_available()
CONFIG_YAML = Path(__file__).resolve().parents[2] / "config.yaml"


def config(**overrides):
    return load_config(CONFIG_YAML, overrides=overrides, environ={})


@pytest.fixture(scope="module")
def cfg():
    return config()


@pytest.fixture(scope="module")
def learners(cfg):
    return build_learners(cfg)


# -- pick_device -----------------------------------------------------------------------


def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="CUDA present: auto picks it")
def test_pick_device_auto_without_cuda_is_cpu():
    assert pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="CUDA present: asking for it is fine")
def test_pick_device_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="models.device is 'cuda' but torch sees no CUDA"):
        pick_device("cuda")


# -- build_learners --------------------------------------------------------------------


def test_default_config_builds_the_three_models(cfg, learners):
    assert list(learners) == ["cnn", "dqn", "cob"]
    assert isinstance(learners["cnn"], CNNLearner)
    assert isinstance(learners["dqn"], DQNLearner)
    assert isinstance(learners["cob"], COBLearner)
    for learner in learners.values():
        assert learner.device == pick_device(cfg.models.device)


def test_parameter_counts_are_real(learners):
    for name, learner in learners.items():
        counted = sum(p.numel() for p in learner.network.parameters())
        assert learner.parameters_count() == counted, name
        assert learner.status()["parameters"] == counted, name


def test_parameter_counts_by_hand(learners):
    # COB: features = 29 book + 1 flag + 10 returns + 4 timeframes = 44, hidden 128:
    # Linear 44*128+128 = 5760, LayerNorm 256, Linear 128*128+128 = 16512, LayerNorm 256,
    # Linear 128*2+2 = 258 -> 5760 + 256 + 16512 + 256 + 258 = 23042
    assert learners["cob"].parameters_count() == 23042
    # DQN state = 17 scalars + 2 * 4 tf * 5 ch * 60 + 4 * 64 cnn hidden + 4 * 3 probs + 4 one-hot
    #           = 17 + 2400 + 256 + 12 + 4 = 2689; hidden 256:
    # 2689*256+256 = 688640, 256*256+256 = 65792, value 257, advantage 256*3+3 = 771
    # -> 688640 + 65792 + 257 + 771 = 755460
    assert learners["dqn"].state_dim == 2689
    assert learners["dqn"].parameters_count() == 755460


def test_disabled_model_is_left_out():
    learners = build_learners(config(**{"models.cob.enabled": False}))
    assert list(learners) == ["cnn", "dqn"]
    learners = build_learners(config(**{"models.cnn.enabled": "false",
                                        "models.dqn.enabled": "false"}))
    assert list(learners) == ["cob"]


def test_model_over_its_own_limit_is_refused():
    # the CNN comes first and alone needs > 1 MB (its buffer: 5000 x (5*300*4 + 64) B = 30 MB)
    with pytest.raises(ModelTooLarge, match=r"model 'cnn' needs \d+ MB .*models.max_model_mb = 1"):
        build_learners(config(**{"models.max_model_mb": 1}))


def test_models_over_the_total_limit_are_refused():
    # Needs: cnn 32.3 MB, dqn 86.39 MB (see test_default_estimates_by_hand), cob 1.41 MB.
    # Each is under 100 MB, but cnn + dqn = 118.7 MB is over the total of 100.
    cfg = config(**{"models.max_model_mb": 100, "models.max_total_mb": 100})
    with pytest.raises(ModelTooLarge, match=r"models up to 'dqn' need 119 MB together, over "
                                            r"models.max_total_mb = 100"):
        build_learners(cfg)
    # ModelTooLarge is a ValueError, so start-up's config-error handling catches it
    assert issubclass(ModelTooLarge, ValueError)


def test_limits_just_above_the_needs_pass():
    # the largest is the dqn's 86.39 MB; together 32.3 + 86.39 + 1.41 = 120.1 MB
    learners = build_learners(config(**{"models.max_model_mb": 87, "models.max_total_mb": 121}))
    assert list(learners) == ["cnn", "dqn", "cob"]


# -- estimate_memory -------------------------------------------------------------------


def test_default_estimates_by_hand(cfg, learners):
    dqn = estimate_memory(learners["dqn"], cfg, cfg.models.dqn.buffer_size)
    # weights 755460 * 4 B = 3021840, twice with the target net = 6043680
    assert dqn.weights == 6_043_680
    assert dqn.optimiser == 6_043_680  # 2 moments x 3021840
    # replay, per experience in the live loop (nn/state_store.py, DQNLearner.replay_bytes):
    # the ring's columns 4 + 4 + 8 + 4 + 4 + 2 = 26 B;
    # one state row: own values 17 scalars + 12 probs + 4 one-hot = 33, part ids 12 x 2 uint16
    #   = 24 -> 57 uint16, padded to 15 uint64 words = 120 B + 24 B bookkeeping = 144 B;
    # two new windows (the symbol's and BTC's): 300 values = 75 words = 600 + 24 = 624 B each;
    # one new CNN hidden row: 64 values = 16 words = 128 + 24 = 152 B
    # -> 26 + 144 + 2 * 624 + 152 = 1570 B, x 50000 = 78.5 MB (two float16 states were 10820 B)
    assert dqn.replay == 78_500_000
    assert dqn.total == 90_587_360  # 86.39 MB
    cob = estimate_memory(learners["cob"], cfg, cfg.models.cob.buffer_size)
    # 23042 * 4 = 92168; optimiser 184336; replay (44 * 4 + 64) x 5000 = 240 x 5000
    assert (cob.weights, cob.optimiser, cob.replay) == (92_168, 184_336, 1_200_000)
    cnn = estimate_memory(learners["cnn"], cfg, cfg.models.cnn.buffer_size)
    # replay: (5 * 300 * 4 + 64) x 5000 = 6064 x 5000
    assert cnn.replay == 30_320_000
    # the CNN's batch-norm statistics count as weights but get no optimiser state
    params = sum(p.numel() for p in learners["cnn"].network.parameters())
    assert cnn.optimiser == 2 * 4 * params
    assert cnn.weights > 4 * params


def test_estimate_small_cob_by_hand(cfg):
    learner = COBLearner(COBConfig(hidden=8, buffer_size=100), cfg.market.timeframes,
                         n_book_features=N_BOOK)
    est = estimate_memory(learner, cfg, buffer_size=100)
    # features 29 + 1 + 10 + 4 = 44; Linear 44*8+8 = 360, LayerNorm 16, Linear 8*8+8 = 72,
    # LayerNorm 16, Linear 8*2+2 = 18 -> 482 parameters, no buffers
    assert learner.parameters_count() == 482
    assert est.weights == 482 * 4  # 1928 B
    assert est.optimiser == 2 * 4 * 482  # 3856 B
    assert est.replay == (44 * 4 + 64) * 100  # 24000 B
    assert est.total == 1928 + 3856 + 24000  # 29784 B


def test_estimate_small_dqn_by_hand(cfg):
    learner = DQNLearner(DQNConfig(window=8, hidden=8, buffer_size=100), cfg.market.timeframes,
                         n_scalars=N_SCALARS)
    est = estimate_memory(learner, cfg, buffer_size=100)
    # state = 17 + 2 * 4 * 5 * 8 + 4 * 64 + 4 * 3 + 4 = 17 + 320 + 256 + 12 + 4 = 609
    # Linear 609*8+8 = 4880, Linear 8*8+8 = 72, value 9, advantage 27 -> 4988 parameters
    assert learner.state_dim == 609
    assert learner.parameters_count() == 4988
    assert est.weights == 2 * 4 * 4988  # online + target: 39904 B
    assert est.optimiser == 2 * 4 * 4988  # 39904 B
    # replay: columns 26 B; state row 57 uint16 -> 15 words = 144 B (as above); two windows of
    # 5 * 8 = 40 values = 10 words = 80 + 24 = 104 B each; hidden row 152 B
    # -> (26 + 144 + 2 * 104 + 152) x 100 = 530 x 100
    assert est.replay == 53_000
    assert est.total == 39904 + 39904 + 53000
    assert est.total < MB


def test_zero_observation_fits_every_model(cfg, learners):
    obs = zero_observation(cfg)
    assert obs.symbol == cfg.market.symbols[0] and obs.timeframe == cfg.market.timeframes[0]
    assert obs.windows[obs.timeframe].shape == (5, 300)  # max(cnn 300, dqn 60)
    assert learners["dqn"].encode(obs).shape == (2689,)
    assert learners["cob"].encode(obs).shape == (44,)
    assert learners["cnn"].encode(obs).shape == (5, 300)
