"""Tests for nn.checkpoints: round trips, retention, atomic writes and corrupt-file fallback."""

import io
import logging
import os
import struct

import pytest
import torch

from nn.book_direction import COBConfig, COBLearner
from nn.checkpoints import CheckpointManager, encode

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


def test_load_latest_picks_the_highest_step_whatever_the_file_times(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (10, 9):  # "step-9" sorts after "step-10" as text
        manager.save("cnn", state(step), step=step)
    # step 9 was written last and its file time is the newest (a copy, a restore, a clock
    # step back): the step decides, not the file time.
    older = tmp_path / "cnn" / "step-10.pt"
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    path, loaded = CheckpointManager(tmp_path).load_latest("cnn")
    assert path.name == "step-10.pt" and loaded["train_steps"] == 10


def test_a_fresh_run_ranks_above_an_earlier_runs_higher_steps(tmp_path):
    first = CheckpointManager(tmp_path, keep=5)
    first.save("cnn", state(400), step=400)
    # A restart that does not load (--no-load-models) saves step 2 after the old run's 400:
    # a new run, numbered in the name, and the latest.
    fresh = CheckpointManager(tmp_path, keep=5)
    assert fresh.save("cnn", state(2), step=2).name == "run-1-step-2.pt"
    resumed = CheckpointManager(tmp_path, keep=5)
    path, loaded = resumed.load_latest("cnn")
    assert path.name == "run-1-step-2.pt" and loaded["train_steps"] == 2
    # resuming continues that run
    assert resumed.save("cnn", state(3), step=3).name == "run-1-step-3.pt"
    resumed.start_fresh("cnn")  # the loaded state did not fit the model: a new run again
    assert resumed.save("cnn", state(1), step=1).name == "run-2-step-1.pt"
    assert CheckpointManager(tmp_path).load_latest("cnn")[1]["train_steps"] == 1


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
    assert manager.warnings["dqn"] == "dqn/step-3.pt skipped: not a checkpoint file"
    # set aside for a look, never tried again
    assert files(tmp_path / "dqn") == ["step-1.pt", "step-2.pt", "step-3.pt.unreadable"]
    assert CheckpointManager(tmp_path).load_latest("dqn")[0].name == "step-2.pt"


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
    fresh = CheckpointManager(tmp_path, keep=2)
    path = fresh.save("dqn", state(100), step=100)
    assert path.is_file()
    # keep = 2: the new file plus the newest other one
    assert files(tmp_path / "dqn") == ["run-1-step-100.pt", "step-400.pt"]
    assert fresh.latest_info("dqn") == {"path": str(path), "step": 100,
                                        "bytes": path.stat().st_size}


# -------------------------------------------------------------- damaged and foreign files


def good_then(tmp_path, damage) -> CheckpointManager:
    """Steps 1 and 2 saved, then step 2's file damaged by ``damage(path)``."""
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save("dqn", state(1), step=1)
    damage(manager.save("dqn", state(2), step=2))
    return CheckpointManager(tmp_path)  # a restart reads them


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:25]), "truncated header"),
    (lambda p: p.write_bytes(b""), "not a checkpoint file"),
    (lambda p: p.write_bytes(os.urandom(p.stat().st_size)), "not a checkpoint file"),
    (lambda p: flip_a_weight(p), "checksum mismatch"),
])
def test_a_damaged_newest_is_skipped_and_the_one_before_loads(tmp_path, damage, why):
    manager = good_then(tmp_path, damage)
    path, loaded = manager.load_latest("dqn")
    assert path.name == "step-1.pt" and torch.equal(loaded["weights"], state(1)["weights"])
    assert manager.warnings["dqn"].startswith("dqn/step-2.pt skipped: ")
    assert why in manager.warnings["dqn"]


def flip_a_weight(path) -> None:
    """One bit of rot in the weights' bytes: torch alone loads such a file without a word."""
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<3f", 2.0, 2.0, 2.0))  # state(2)'s weights
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    silently = torch.load(io.BytesIO(bytes(data[32:])), weights_only=True)["weights"]
    assert not torch.equal(silently, state(2)["weights"])


class Opens:
    """Unpickling this would create a file: what a malicious checkpoint could run."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def test_a_checkpoint_that_pickles_an_arbitrary_object_is_refused(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save("cob", state(1), step=1)
    marker = tmp_path / "ran"
    # Well formed (header and checksum right), but it pickles a call to open().
    manager.save("cob", {**state(2), "payload": Opens(marker)}, step=2)
    restarted = CheckpointManager(tmp_path)
    path, loaded = restarted.load_latest("cob")
    assert path.name == "step-1.pt" and loaded["train_steps"] == 1
    assert not marker.exists()  # nothing in the file ran
    assert restarted.warnings["cob"] == (
        "cob/step-2.pt skipped: refused: it pickles io.open, not only tensors and "
        "plain values")
    assert str(tmp_path) not in restarted.warnings["cob"]


def test_a_checkpoint_from_before_the_header_still_loads(tmp_path):
    (tmp_path / "cnn").mkdir()
    torch.save(state(4), tmp_path / "cnn" / "step-4.pt")  # a bare torch.save file
    path, loaded = CheckpointManager(tmp_path).load_latest("cnn")
    assert path.name == "step-4.pt" and loaded["train_steps"] == 4


def test_a_write_interrupted_by_a_crash_is_never_loaded_and_is_cleaned_up(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save("dqn", state(1), step=1)
    # What kill -9 during a save leaves: a partial temporary file beside the good ones.
    header, payload = encode(state(2))
    (tmp_path / "dqn" / ".tmp-abc123.pt").write_bytes(header + payload[:1000])
    restarted = CheckpointManager(tmp_path)
    path, _ = restarted.load_latest("dqn")
    assert path.name == "step-1.pt" and "dqn" not in restarted.warnings
    assert files(tmp_path / "dqn") == ["step-1.pt"]


def test_a_write_that_fails_half_way_keeps_the_old_file(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save("dqn", state(1), step=1)

    def full_disk(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        manager.save("dqn", state(1), step=1)  # over the same name: must not tear it
    monkeypatch.undo()
    assert files(tmp_path / "dqn") == ["step-1.pt"]
    assert CheckpointManager(tmp_path).load_latest("dqn")[1]["train_steps"] == 1
