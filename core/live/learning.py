"""Training: experiences wait per model and timeframe until a batch is full, then one step.

``take_due`` and ``train_batches`` are separate so the evaluate command can take batches at
fixed market times and train them on another thread (core/evaluator.py); the app's train job
does both at once (``train_due``). Checkpoints: every ``training.checkpoint_every`` steps of
a model, after every ``training.checkpoint_interval_s`` seconds of active training (wall time
while training is on, so a crash loses at most that much of it), and all of them when
training stops.

Where a step runs is the backend's business (``training.backend``, core/live/backends.py): in
this process, or in a Ray actor per learner (core/live/ray_training.py). A learner whose actor
is lost gets its batch back at the front of its queue, trained once the actor is recreated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter, thread_time

from core.live.backends import LearnerUnavailable, ThreadBackend, TrainingBackend
from core.live.control import ModelStates
from core.live.costs import ModelCosts
from core.live.events import training_step
from nn.base import Learner
from nn.checkpoints import CheckpointManager
from nn.contract import Experience

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # predictions/s and batches/min are measured over the last minute (wall)


@dataclass
class Rates:
    """Event times (wall clock) in a sliding window, for per-second and per-minute rates."""

    events: deque = field(default_factory=lambda: deque(maxlen=100_000))
    since: float = field(default_factory=time.monotonic)  # when counting (re)started

    def add(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.events.extend([now] * n)

    def restart(self, now: float | None = None) -> None:
        """Count from ``now`` (training started): nothing before it is in the rate."""
        self.events.clear()
        self.since = time.monotonic() if now is None else now

    def per_second(self, now: float | None = None) -> float:
        """Events over the last ``RATE_WINDOW_S`` seconds, or over the time since counting
        started when that is shorter (at least 1 s): 3 batches in the first 3.3 s of a
        session are 3 per 3.3 s, not the 54 a minute their own first-to-now span suggests
        when a fourth is seconds away."""
        now = time.monotonic() if now is None else now
        while self.events and self.events[0] < now - RATE_WINDOW_S:
            self.events.popleft()
        return len(self.events) / min(RATE_WINDOW_S, max(1.0, now - self.since))


class Learning:
    def __init__(self, learners: dict[str, Learner], timeframes: tuple[str, ...],
                 batch_size: dict[str, int], checkpoints: CheckpointManager,
                 checkpoint_every: int, checkpoint_interval_s: float = 60.0,
                 clock=time.monotonic, backend: TrainingBackend | None = None):
        self.learners = learners
        self.backend = backend or ThreadBackend()  # where steps run (core/live/backends.py)
        self.timeframes = timeframes
        self.batch_size = batch_size
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self.waiting: dict[str, dict[str, list[Experience]]] = {
            name: {tf: [] for tf in timeframes} for name in learners}
        self._lock = threading.Lock()
        self.batch_rate = Rates()
        self.costs = ModelCosts()  # training step times (core/live/costs.py)
        self.dropped_experiences = Counter()
        self._last_checkpoint_step = dict.fromkeys(learners, 0)
        # Seconds of active training: banked while off, counting while on (set_active).
        self.checkpoint_interval_s = checkpoint_interval_s
        self.clock = clock  # monotonic seconds; tests pass their own
        self._active_total = 0.0
        self._active_since: float | None = None
        self._active_lock = threading.Lock()
        self._checkpoint_active_s = dict.fromkeys(learners, 0.0)  # active seconds at each save
        self.resumed_from: dict[str, int] = {}  # model -> the step its checkpoint held at load
        self.unsaved: set[str] = set()  # learners never checkpointed (challengers)
        self.events = None  # the event stream (core/live/events.py), set by LiveTraining
        self.control = ModelStates()  # paused / frozen models (core/live/control.py)

    def add_learner(self, name: str, learner: Learner, waiting: dict | None = None,
                    saved: bool = True) -> None:
        """A learner joins, or replaces the one of that name in its place of the run order
        (challengers, core/live/challengers.py), with ``waiting`` experiences; ``saved=False``:
        never checkpointed. Call between cycles and training steps."""
        with self._lock:
            self.learners[name] = learner
            self.waiting[name] = {tf: list((waiting or {}).get(tf, ())) for tf in self.timeframes}
            self._last_checkpoint_step[name] = learner.train_steps
            self._checkpoint_active_s[name] = self.active_seconds()
            (self.unsaved.discard if saved else self.unsaved.add)(name)
            self.backend.reset(name)  # a new learner under this name: a new trainer

    def remove_learner(self, name: str) -> dict[str, list[Experience]]:
        """A learner leaves; returns the experiences it had waiting."""
        with self._lock:
            learner = self.learners.pop(name, None)
            if learner is not None:  # its trainer's state comes back into it first
                self.backend.release(name, learner)
            self.unsaved.discard(name)
            self._last_checkpoint_step.pop(name, None)
            self._checkpoint_active_s.pop(name, None)
            return self.waiting.pop(name, {})

    def queue(self, model: str, tf: str, exp: Experience) -> None:
        with self._lock:
            waiting = self.waiting[model][tf]
            waiting.append(exp)
            limit = 20 * self.batch_size[tf]
            if len(waiting) > limit:  # training cannot keep up: keep the newest
                self.dropped_experiences[model] += len(waiting) - limit
                del waiting[:-limit]

    def take_due(self) -> list[tuple[str, str, list[Experience]]]:
        """Take every full batch waiting, as (model, timeframe, experiences)."""
        due = []
        with self._lock:
            for name in self.learners:
                if not self.control.trains(name):  # paused or frozen: its batches wait
                    continue
                for tf in self.timeframes:
                    size = self.batch_size[tf]
                    waiting = self.waiting[name][tf]
                    if len(waiting) >= size:
                        due.append((name, tf, waiting[:size]))
                        del waiting[:size]
        return due

    def train_batches(self, due: list[tuple[str, str, list[Experience]]]) -> int:
        """One training step per batch from :meth:`take_due`, then the checkpoints due."""
        steps, trained = 0, []
        for name, tf, batch in due:
            wall, cpu = perf_counter(), thread_time()
            learner = self.learners[name]
            try:
                losses = self.backend.learn(name, learner, batch)
            except LearnerUnavailable as exc:  # its actor is lost: the batch waits for it
                self.put_back(name, tf, batch)
                log.debug("batch of %s %s waits: %s", name, tf, exc)
                continue
            if losses is not None:
                self.costs.train_step(name, wall, cpu)
                steps += 1
                self.batch_rate.add()
                self.control.note_trained(name)
                trained.append(training_step(name, tf, learner.train_steps, losses))
        if trained and self.events is not None:  # one event per run of the train job
            self.events.publish("training", {"steps": trained})
        self.save_due_checkpoints()
        return steps

    def put_back(self, name: str, tf: str, batch: list[Experience]) -> None:
        """A batch that could not be trained goes back to the front of its queue."""
        with self._lock:
            waiting = self.waiting.get(name)
            if waiting is not None:
                waiting[tf][:0] = batch

    def snapshot(self, name: str) -> dict:
        """Model ``name``'s weights as trained so far, for the evaluate command to install."""
        return self.backend.snapshot(name, self.learners[name])

    def state_dict(self, name: str) -> dict:
        """Model ``name``'s whole state as trained so far (where its trainer holds it)."""
        return self.backend.state_dict(name, self.learners[name])

    def save_due_checkpoints(self) -> None:
        """Every model's checkpoint that is due (every run of the train job, with batches or
        without). A failed write (a full disk) is raised once the others are written; the
        training steps are kept and the next run tries again."""
        failed = None
        for name in list(self.learners):
            if name not in self.unsaved and self._checkpoint_due(name):
                try:
                    self.save_checkpoint(name)
                except Exception as exc:  # raised below, after the other models' writes
                    failed = failed or exc
        if failed is not None:
            raise failed

    def set_active(self, active: bool) -> None:
        """Training turned on or off: the checkpoint interval counts only time while on."""
        with self._active_lock:
            now = self.clock()
            if active and self._active_since is None:
                self._active_since = now
            elif not active and self._active_since is not None:
                self._active_total += now - self._active_since
                self._active_since = None

    def active_seconds(self) -> float:
        """Wall seconds training has been on in this process."""
        with self._active_lock:
            since = self._active_since
            return self._active_total + (0.0 if since is None else self.clock() - since)

    def _checkpoint_due(self, name: str) -> bool:
        """``checkpoint_every`` steps since the last checkpoint, or some steps and
        ``checkpoint_interval_s`` of active training."""
        unsaved = self.learners[name].train_steps - self._last_checkpoint_step[name]
        return unsaved >= self.checkpoint_every or (
            unsaved > 0 and self.active_seconds() - self._checkpoint_active_s[name]
            >= self.checkpoint_interval_s)

    @contextmanager
    def publishing_deferred(self):
        """Within: a training step does not publish its weights to predictions; the caller
        installs snapshots at times of its choosing (the evaluate command, by market time)."""
        saved = {name: lrn.auto_publish for name, lrn in self.learners.items()}
        for lrn in self.learners.values():
            lrn.auto_publish = False
        try:
            yield
        finally:
            for name, lrn in self.learners.items():
                lrn.auto_publish = saved[name]

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, name: str) -> None:
        active_s = self.active_seconds()
        state = self.state_dict(name)
        steps = int(state.get("train_steps", self.learners[name].train_steps))
        self.checkpoints.save(name, state, steps)
        self._last_checkpoint_step[name] = steps
        self._checkpoint_active_s[name] = active_s

    def rolled_back(self, name: str) -> None:
        """Model ``name`` was loaded from an older checkpoint (core/live/control.py): its
        next checkpoint counts from there, in a new run ranked above the newer files."""
        self.backend.reset(name)  # its trainer starts again from the loaded state
        self._last_checkpoint_step[name] = self.learners[name].train_steps
        self._checkpoint_active_s[name] = self.active_seconds()
        self.checkpoints.start_fresh(name)

    def save_checkpoints(self) -> None:
        for name in list(self.learners):
            if name not in self.unsaved:
                self.save_checkpoint(name)

    def load_checkpoints(self) -> dict[str, str]:
        loaded = {}
        for name, learner in self.learners.items():
            found = self.checkpoints.load_latest(name)
            if found is None:
                continue
            path, state = found
            try:
                learner.load_state_dict(state)
            except (ValueError, KeyError, RuntimeError) as exc:
                # Another architecture or layout (an older version, a changed config): the
                # model starts from fresh weights, in a new run that ranks above the file.
                log.warning("checkpoint %s does not fit the %s model (%s); starting it from "
                            "fresh weights", path, name, exc)
                self._warn(name, f"{name}/{path.name} does not fit this model "
                                 f"({str(exc)[:160]}); started from fresh weights")
                self.checkpoints.start_fresh(name)
                continue
            self.backend.reset(name)
            self._last_checkpoint_step[name] = learner.train_steps
            self._checkpoint_active_s[name] = self.active_seconds()
            self.resumed_from[name] = learner.train_steps
            loaded[name] = str(path)
        return loaded

    def _warn(self, name: str, text: str) -> None:
        earlier = self.checkpoints.warnings.get(name)
        self.checkpoints.warnings[name] = f"{earlier}; {text}" if earlier else text
