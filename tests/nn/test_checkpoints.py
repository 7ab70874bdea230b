"""Tests for nn.checkpoints: round trips, retention, atomic writes and corrupt-file fallback."""

import logging

import pytest
import torch

from nn.book_direction import COBConfig, COBLearner
from nn.checkpoints import CheckpointManager

torch.set_num_threads(1)


def state(step: int) -> dict:
    return {"weights": torch.full((3,), float(step)), "train_steps": step, "epsilon": 0.25}


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_save_and_load_latest_round_trip(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    path = manager.save("dqn", state(7), step=7)
    assert path == tmp_path / "dqn" / "step-7.pt"
    found, loaded = manager.load_latest("dqn")
    assert found == path
    assert loaded["train_steps"] == 7 and loaded["epsilon"] == 0.25
    assert torch.equal(loaded["weights"], torch.tensor([7.0, 7.0, 7.0]))


def test_learner_state_round_trip(tmp_path):
    cfg = COBConfig(hidden=8, buffer_size=16)
    saved = COBLearner(cfg, ("1m",), n_book_features=3, seed=0)
    saved.train_steps = 42
    CheckpointManager(tmp_path).save("cob", saved.state_dict(), step=42)

    restored = COBLearner(cfg, ("1m",), n_book_features=3, seed=1)  # other initial weights
    assert not torch.equal(restored.net.out.weight, saved.net.out.weight)
    _, loaded = CheckpointManager(tmp_path).load_latest("cob")  # a fresh manager, as at start
    restored.load_state_dict(loaded)
    for a, b in zip(saved.net.state_dict().values(), restored.net.state_dict().values()):
        assert torch.equal(a, b)
    assert restored.train_steps == 42


def test_load_latest_picks_the_last_written(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (9, 10):  # "step-9" sorts after "step-10" as text; 10 was written last
        manager.save("cnn", state(step), step=step)
    path, loaded = manager.load_latest("cnn")
    assert path.name == "step-10.pt" and loaded["train_steps"] == 10
    # A fresh run (--no-load-models) saves step 2 after the old run's 10: 2 is the latest.
    manager.save("cnn", state(2), step=2)
    path, loaded = manager.load_latest("cnn")
    assert path.name == "step-2.pt" and loaded["train_steps"] == 2


def test_keep_two_leaves_the_newest_two(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (100, 200, 300, 400):
        manager.save("cnn", state(step), step=step)
    assert files(tmp_path / "cnn") == ["step-300.pt", "step-400.pt"]


def test_models_are_kept_apart(tmp_path):
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save("cnn", state(1), step=1)
    manager.save("dqn", state(2), step=2)
    assert files(tmp_path / "cnn") == ["step-1.pt"]
    assert files(tmp_path / "dqn") == ["step-2.pt"]
    assert manager.load_latest("cnn")[1]["train_steps"] == 1


def test_atomic_write_leaves_no_temp_files(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in range(1, 5):
        manager.save("dqn", state(step), step=step)
    assert files(tmp_path / "dqn") == ["step-2.pt", "step-3.pt", "step-4.pt"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save("dqn", state(5), step=5)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        manager.save("dqn", {"unpicklable": lambda: None}, step=5)
    assert files(tmp_path / "dqn") == ["step-5.pt"]
    assert manager.load_latest("dqn")[1]["train_steps"] == 5


def test_corrupt_newest_falls_back_to_the_previous(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save("dqn", state(1), step=1)
    manager.save("dqn", state(2), step=2)
    (tmp_path / "dqn" / "step-3.pt").write_bytes(b"not a checkpoint")  # torn write
    with caplog.at_level(logging.WARNING, logger="nn.checkpoints"):
        path, loaded = manager.load_latest("dqn")
    assert path.name == "step-2.pt" and loaded["train_steps"] == 2
    [record] = [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "nn.checkpoints"]
    assert "step-3.pt" in record.getMessage() and "unreadable" in record.getMessage()
    assert manager.latest_info("dqn")["step"] == 2  # what was really loaded


def test_all_corrupt_or_missing_is_none(tmp_path, caplog):
    manager = CheckpointManager(tmp_path)
    assert manager.load_latest("cob") is None  # no folder at all
    (tmp_path / "cob").mkdir()
    (tmp_path / "cob" / "step-1.pt").write_bytes(b"")
    (tmp_path / "cob" / "notes.txt").write_text("ignored: not a step file")
    with caplog.at_level(logging.WARNING, logger="nn.checkpoints"):
        assert manager.load_latest("cob") is None
    assert len([r for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "nn.checkpoints"]) == 1


def test_latest_info(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.latest_info("cnn") is None
    path = manager.save("cnn", state(3), step=3)
    info = manager.latest_info("cnn")
    assert info == {"path": str(path), "step": 3, "bytes": path.stat().st_size}
    assert info["bytes"] > 0
    # a fresh manager (a restart) reads it from the folder
    assert CheckpointManager(tmp_path).latest_info("cnn") == info
    manager.save("cnn", state(8), step=8)
    assert manager.latest_info("cnn")["step"] == 8


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_below_one_is_refused(tmp_path, keep):
    with pytest.raises(ValueError, match=f"keep must be >= 1, got {keep}"):
        CheckpointManager(tmp_path, keep=keep)


def test_saving_a_lower_step_keeps_the_file_just_written(tmp_path):
    # A run started from fresh weights (--no-load-models) saves step 100 into a folder that
    # still holds an earlier run's steps 300 and 400. The new file must survive retention.
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save("dqn", state(300), step=300)
    manager.save("dqn", state(400), step=400)
    path = manager.save("dqn", state(100), step=100)
    assert path.is_file()
    # keep = 2: the new file plus the newest other one
    assert files(tmp_path / "dqn") == ["step-100.pt", "step-400.pt"]
    assert manager.latest_info("dqn") == {"path": str(path), "step": 100,
                                          "bytes": path.stat().st_size}
