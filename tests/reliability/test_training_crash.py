"""Fault matrix, training: kill -9 during training and during a checkpoint write, a damaged
newest checkpoint, a checkpoint that pickles an arbitrary object, a full disk. Each time the
models come back from a checkpoint, lose at most ``training.checkpoint_interval_s`` of
training, load nothing torn or foreign, say on their card what was skipped, and go on
training; a checkpoint write that fails loses no training step.

The killed process is tests/reliability/training_child.py: the app's services on the
bundled replay, training as fast as it can with a checkpoint every 0.5 s of training.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dashboard.training_view import model_card
from nn.checkpoints import decode, encode
from tests.test_live_training import make_services, run

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 0.5
MODELS = ("cnn", "dqn", "cob")


class Child:
    """The training process, its JSON lines read on a thread (a silent child never hangs the
    test: every wait has a deadline)."""

    def __init__(self, runtime: Path, *args: str):
        self.log = (runtime / "child.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.training_child", str(runtime),
             str(INTERVAL_S), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.reports: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def until(self, done, timeout_s: float = 40.0) -> dict:
        """Read reports until ``done(report)``; the report that made it true."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                report = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, self.failure()
                continue
            self.reports.append(report)
            if done(report):
                return report
        raise AssertionError(f"child did not get there in {timeout_s} s\n{self.failure()}")

    def kill(self) -> float:
        """SIGKILL, as ``kill -9``; the wall time it was sent. Every report the child wrote
        before it died is in ``reports`` afterwards."""
        killed_at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL
        self.reader.join(10)
        while not self.lines.empty():
            self.reports.append(self.lines.get())
        self.log.close()
        return killed_at

    def failure(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]


def restart(runtime: Path):
    """A new process's services on the same runtime folder, models resumed as at start."""
    services = make_services(runtime)
    loaded = services.training.load_checkpoints()
    return services, loaded, services.training.read.status().to_json()["models"]


def assert_files_intact(runtime: Path) -> None:
    """Every file under a checkpoint's name is complete and reads (checksum, weights_only)."""
    for model in MODELS:
        named = sorted((runtime / "checkpoints" / model).glob("*step-*.pt"))
        assert named, model
        for path in named:
            assert isinstance(decode(path.read_bytes()), dict), path


def assert_keeps_training(services, resumed: dict[str, int], covered: int = 0) -> None:
    """Training goes on from the resumed models. The restarted replay begins where the first
    run began: the ``covered`` bars whose predictions that run stored are predicted once only
    (the store's rule), so the models learn from the 30 bars after them."""
    training = services.training
    training.start()
    run(services, covered + 30)
    services.stop()  # writes the checkpoints
    for model in MODELS:
        assert training.learners[model].train_steps > resumed[model], model
        assert training.checkpoints.latest_info(model)["step"] == training.learners[model].train_steps


def test_kill_9_during_training_loses_at_most_the_checkpoint_interval(tmp_path):
    child = Child(tmp_path)
    # Once every model has a checkpoint from the interval, train on for a random-ish while.
    first = child.until(lambda r: len(r["saved"]) == 3)
    extra_s = random.Random(os.getpid()).uniform(0.2, 1.5)
    child.until(lambda r: r["t"] >= first["t"] + extra_s)
    killed_at = child.kill()
    last = child.reports[-1]

    assert_files_intact(tmp_path)
    services, loaded, cards = restart(tmp_path)
    assert set(loaded) == set(MODELS)
    assert not list((tmp_path / "checkpoints").glob("*/.tmp-*"))  # leftovers cleaned
    # What the child had trained more than one interval (plus the longest pause between its
    # reports since its first checkpoints: a job run, a checkpoint write) before the kill is
    # all in the checkpoints.
    times = [r["t"] for r in child.reports if r["t"] >= first["t"]]
    slack = max(b - a for a, b in zip(times, times[1:], strict=False)) + 0.25
    before = [r for r in child.reports if r["t"] <= killed_at - INTERVAL_S - slack]
    resumed = {}
    for model in MODELS:
        card = cards[model]
        resumed[model] = card["resumed_from_step"]
        assert card["checkpoint_warning"] is None
        reached = max((r["steps"][model] for r in before), default=0)
        assert reached <= resumed[model] <= last["steps"][model] + 2, (
            model, reached, resumed[model], last["steps"][model], extra_s, slack)
        assert services.training.learners[model].train_steps == resumed[model] > 0
    assert_keeps_training(services, resumed)


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    # The first write once every model has a checkpoint stops with its temporary file
    # complete but not yet renamed, and is killed there.
    child = Child(tmp_path, "--hang-in-save")
    hanging = child.until(lambda r: "hanging" in r)
    child.kill()
    assert child.reports[-1] is hanging
    before = child.reports[-2]["saved"]  # the last report before the write began
    temporary = Path(hanging["hanging"])
    assert temporary.is_file() and temporary.name.startswith(".tmp-")

    assert_files_intact(tmp_path)
    services, loaded, cards = restart(tmp_path)
    assert set(loaded) == set(MODELS)
    assert not temporary.exists()  # removed at load, never read
    resumed = {m: cards[m]["resumed_from_step"] for m in MODELS}
    assert resumed == before
    assert all(cards[m]["checkpoint_warning"] is None for m in MODELS)
    assert_keeps_training(services, resumed)


class Opens:
    """Unpickling this would create a file: what a malicious checkpoint could run."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def test_a_damaged_or_foreign_newest_checkpoint_is_skipped_with_a_warning_on_the_card(tmp_path):
    services = make_services(tmp_path)
    training = services.training
    steps = []
    for _ in range(2):  # two rounds of training, a checkpoint per model after each
        training.start()
        run(services, 30)  # 60 bars in all, their predictions stored
        training.stop()
        steps.append({m: training.learners[m].train_steps for m in MODELS})
    services.stop()
    assert all(steps[1][m] > steps[0][m] > 0 for m in MODELS)
    newest = {m: tmp_path / "checkpoints" / m / f"step-{steps[1][m]}.pt" for m in MODELS}
    data = newest["cnn"].read_bytes()
    newest["cnn"].write_bytes(data[: len(data) // 3])  # truncated
    data = bytearray(newest["dqn"].read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit in the middle (torch alone would load it)
    newest["dqn"].write_bytes(bytes(data))
    marker = tmp_path / "ran"
    state = decode(newest["cob"].read_bytes())
    newest["cob"].write_bytes(b"".join(encode({**state, "extra": Opens(marker)})))

    services, loaded, cards = restart(tmp_path)
    assert set(loaded) == set(MODELS)
    assert not marker.exists()  # the foreign object was refused, never constructed
    why = {"cnn": "truncated", "dqn": "checksum mismatch", "cob": "refused: it pickles io.open"}
    for model in MODELS:
        card = cards[model]
        assert card["resumed_from_step"] == steps[0][model]  # the one before
        assert services.training.learners[model].train_steps == steps[0][model]
        warning = card["checkpoint_warning"]
        assert warning.startswith(f"{model}/step-{steps[1][model]}.pt skipped: ")
        assert why[model] in warning and str(tmp_path) not in warning
        shown = str(model_card(model, card).to_plotly_json())
        assert "checkpoint warning" in shown and warning in shown
        assert f"resumed from step {steps[0][model]:,}" in shown
    # The same warnings in the REST status's JSON.
    status = services.training.read.status_json()
    assert status["models"]["dqn"]["checkpoint_warning"] == cards["dqn"]["checkpoint_warning"]
    assert_keeps_training(services, steps[0], covered=60)
    # The damaged files were set aside: the next start loads the new ones, with no warning.
    services, loaded, cards = restart(tmp_path)
    for model in MODELS:
        assert cards[model]["checkpoint_warning"] is None
        assert cards[model]["resumed_from_step"] > steps[0][model]
        assert (newest[model].parent / f"{newest[model].name}.unreadable").is_file()
    services.stop()


def test_a_full_disk_fails_the_checkpoint_write_not_the_training(tmp_path, monkeypatch):
    services = make_services(tmp_path)
    training, src = services.training, services.market.source
    training.start()
    run(services, 30)
    training.stop()  # one checkpoint per model
    training.start()
    training.learning.checkpoint_every = 1  # from now on one is due after every step
    written = {m: training.checkpoints.latest_info(m)["step"] for m in MODELS}
    steps = {m: training.learners[m].train_steps for m in MODELS}
    assert written == steps

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # every checkpoint write fails at its fsync
    taken, take_due = [], training.learning.take_due
    training.learning.take_due = lambda: (due := take_due(), taken.extend(due))[0]
    now = src.next_ts
    for _ in range(20):  # the scheduler's way: each job guarded
        now += src.base_ms
        src.emit_until(now)
        services.market.clock.set(now)
        training.guarded("process_closes", training.process_closes)
        training.guarded("train", training.train_due)
    # Every batch taken was trained: none dropped with a failed write.
    trained = sum(training.learners[m].train_steps - steps[m] for m in MODELS)
    assert taken and trained == len(taken), (trained, len(taken))
    error = training.read.status().to_json()["errors"]["train"]
    assert error["type"] == "OSError" and "No space left" in error["message"]
    for model in MODELS:
        assert training.learners[model].train_steps > steps[model]  # it kept training
        assert training.checkpoints.latest_info(model)["step"] == written[model]
    assert not list((tmp_path / "checkpoints").glob("*/.tmp-*"))  # no half-written file
    assert_files_intact(tmp_path)
    monkeypatch.undo()  # space again: the next run of the job writes them all
    training.guarded("train", training.train_due)
    for model in MODELS:
        assert training.checkpoints.latest_info(model)["step"] == training.learners[model].train_steps
    services.stop()
