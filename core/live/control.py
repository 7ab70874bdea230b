"""Per-model control: pause, freeze, roll back, and whether a model has gone stale.

``ModelStates`` is what the cycle and training ask (no locks, no service): a **paused** model
is not asked to predict and does not train; a **frozen** model predicts and its predictions are
resolved and scored, but no experience is made of them (dropped at the source, never queued:
nothing piles up while it is frozen, and unfreezing trains on what comes after). The two are
independent flags: ``resume`` clears the pause, ``unfreeze`` the freeze; a paused and frozen
model that is resumed is frozen. A paused model's predictions made before the pause still
resolve and are scored. The other models are untouched by either. The flags are kept in
``<runtime_dir>/control.json`` and hold across a restart.

``ModelControl`` is the service side (POST /api/models/<name>/pause|resume|freeze|unfreeze|
rollback, the card's buttons): every action is idempotent, answers the model's state and, when
the state changed, publishes a ``state`` event. A rollback loads one of the checkpoints kept
(nn/checkpoints.py) between cycles and training steps: weights, optimiser, step counter, loss
history and random generator as saved; the experiences waiting for a batch are kept (they are
market outcomes, not weights), and the model's next checkpoint starts a new run ranked above
the files it rolled back past, so a restart loads the rolled-back line.

Staleness (``training.stale_after_s`` market seconds, 0: three times the market time the
fastest model timeframe needs to fill a training batch): while training is on, a model whose
newest training step, or newest resolved prediction, is older than that (or, before the first,
training's start) is STALE, and its new predictions say so. A paused model is never stale (it
is meant to stand still). A frozen model's training age is expected: it shows FROZEN for that
criterion, and STALE only by resolution.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.live.service import LiveTraining

log = logging.getLogger(__name__)

ACTIONS = ("pause", "resume", "freeze", "unfreeze", "rollback")


class ControlError(ValueError):
    """A control request refused: ``status`` 404 (no such model) or 400 (a bad body)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def stale_after_ms(stale_after_s: float, batch_size: dict[str, int], tf_ms: dict[str, int],
                   timeframes: tuple[str, ...]) -> int | None:
    """``training.stale_after_s`` in ms; 0: three times the market time the fastest model
    timeframe needs to fill a batch; None when there is no model timeframe."""
    if stale_after_s > 0:
        return int(stale_after_s * 1000)
    if not timeframes:
        return None
    return 3 * min(batch_size[tf] * tf_ms[tf] for tf in timeframes)


def install_control(live: LiveTraining) -> ModelControl:
    """One ``ModelStates`` shared by the cycle and training, and the control of ``live``."""
    states = live.cycle.control = live.learning.control = ModelStates(
        lambda: live.market.clock.now_ms())
    training = live.cfg.training
    states.stale_after_ms = stale_after_ms(training.stale_after_s, dict(training.batch_size),
                                           live.tf_ms, live.timeframes)
    states.started_ms = lambda: live.started_at_ms if live.active else None
    states.path = live.cfg.runtime_path / "control.json"
    states.load(live.learners)
    return ModelControl(live, states)


class ModelStates:
    """Each model's flags, when it last trained and resolved, and its last rollback."""

    def __init__(self, clock: Callable[[], int] | None = None):
        self.clock = clock  # market ms; None: training times are not noted (bare tests)
        self.paused: set[str] = set()
        self.frozen: set[str] = set()
        self.rolled_back: dict[str, dict] = {}  # model -> {from_step, to_step, market_ms}
        self.last_trained: dict[str, int] = {}  # model -> market ms of its newest step
        self.last_resolved: dict[str, int] = {}  # model -> market ms of its newest resolution
        self.stale_after_ms: int | None = None  # None: staleness is not judged
        self.started_ms: Callable[[], int | None] = lambda: None  # training's start (market)
        self.path: Path | None = None  # where the flags persist (None: not kept)

    # -- the flags across restarts --------------------------------------------------------

    def save(self) -> None:
        """Write the paused and frozen models (atomically: a crash leaves the old file or the
        new one), so a restart keeps a model the trader stopped stopped."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"paused": sorted(self.paused),
                                   "frozen": sorted(self.frozen)}))
        os.replace(tmp, self.path)

    def load(self, known: Iterable[str]) -> None:
        """The flags saved by the last run, for the models of this one. A file that cannot be
        read is set aside (``control.json.bad``) with a warning; every model starts active."""
        if self.path is None or not self.path.exists():
            return
        known = set(known)
        try:
            saved = json.loads(self.path.read_text())
            flags = {key: set(saved[key]) for key in ("paused", "frozen")}
            if not all(isinstance(n, str) for names in flags.values() for n in names):
                raise ValueError("model names must be strings")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s cannot be read (%s); set aside as %s.bad, every model starts "
                        "active", self.path, exc, self.path.name)
            os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
            return
        for key, names in flags.items():
            gone = sorted(names - known)
            if gone:
                log.info("%s: %s no longer %s (not a model of this run)", self.path.name,
                         ", ".join(gone), key)
            getattr(self, key).update(names & known)

    def predicts(self, name: str) -> bool:
        return name not in self.paused

    def trains(self, name: str) -> bool:
        return name not in self.paused and name not in self.frozen

    def state(self, name: str) -> str:
        return ("paused" if name in self.paused else
                "frozen" if name in self.frozen else "active")

    def note_trained(self, name: str) -> None:
        if self.clock is not None:
            self.last_trained[name] = self.clock()

    def note_resolved(self, name: str, market_ms: int) -> None:
        if market_ms > self.last_resolved.get(name, market_ms - 1):
            self.last_resolved[name] = market_ms

    def staleness(self, name: str, now_ms: int | None = None) -> dict:
        """{stale, training, resolution, limit_s}: each criterion "ok", "STALE", "FROZEN"
        (frozen: training age expected) or None (not judged: training off, or paused)."""
        started, limit = self.started_ms(), self.stale_after_ms
        out = {"stale": False, "training": None, "resolution": None,
               "limit_s": None if limit is None else limit / 1000}
        if started is None or limit is None or name in self.paused:
            return out
        now = self.clock() if now_ms is None else now_ms
        trained = max(self.last_trained.get(name, started), started)
        resolved = max(self.last_resolved.get(name, started), started)
        out["training_age_s"] = max(0, now - trained) / 1000
        out["resolution_age_s"] = max(0, now - resolved) / 1000
        old_training = now - trained > limit
        out["training"] = ("FROZEN" if name in self.frozen else
                           "STALE" if old_training else "ok")
        out["resolution"] = "STALE" if now - resolved > limit else "ok"
        out["stale"] = "STALE" in (out["training"], out["resolution"])
        return out

    def is_stale(self, name: str) -> bool:
        return self.clock is not None and self.staleness(name)["stale"]


class ModelControl:
    """The actions on one model, for the REST routes and the card's buttons."""

    def __init__(self, live: LiveTraining, states: ModelStates):
        self.live = live
        self.states = states
        self._lock = threading.Lock()

    def _known(self, name: str) -> None:
        if name not in self.live.learners:
            known = ", ".join(self.live.learners) or "none"
            raise ControlError(f"no model named {name!r}; known models: {known}", 404)

    def kept_steps(self, name: str) -> list[int]:
        return self.live.checkpoints.kept_steps(name)

    def describe(self, name: str) -> dict:
        """The model's state, as every action answers it and the card shows it."""
        self._known(name)
        learner = self.live.learners[name]
        return {"model": name, "state": self.states.state(name),
                "train_steps": learner.train_steps, "published_steps": learner.published_steps,
                "rolled_back": self.states.rolled_back.get(name),
                "kept_steps": self.kept_steps(name),
                "staleness": self.states.staleness(name)}

    def apply(self, name: str, action: str, body: object = None) -> dict:
        """One action on model ``name``; the model's state after it."""
        self._known(name)
        if action not in ACTIONS:
            raise ControlError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}",
                               404)
        if action == "rollback":
            return self.rollback(name, body)
        if body not in (None, {}):
            raise ControlError(f"{action} takes no body")
        flags = self.states.frozen if action in ("freeze", "unfreeze") else self.states.paused
        with self._lock:
            before = self.states.state(name)
            (flags.add if action in ("pause", "freeze") else flags.discard)(name)
            after = self.states.state(name)
            if after != before:
                self.states.save()
        if after != before:
            self._changed(name, action)
        return self.describe(name)

    def rollback(self, name: str, body: object) -> dict:
        """Load the kept checkpoint of ``body["step"]`` into model ``name``."""
        self._known(name)
        kept = self.kept_steps(name)
        step = _step(body, kept)
        live, learner = self.live, self.live.learners[name]
        # Between cycles and training steps: nothing predicts or trains on half a model.
        with self._lock, live._cycle_lock, live._training_job:
            try:
                _, state = live.checkpoints.load_step(name, step)
                from_step = learner.train_steps
                learner.load_state_dict(state)  # publishes the loaded weights
            except KeyError:  # pruned since the check above
                raise ControlError(f"step {step} is no longer kept; kept steps: "
                                   f"{', '.join(map(str, self.kept_steps(name)))}") from None
            except (ValueError, RuntimeError, OSError) as exc:
                raise ControlError(f"the checkpoint of step {step} cannot be loaded: "
                                   f"{str(exc)[:200]}") from None
            live.learning.rolled_back(name)
            self.states.rolled_back[name] = {"from_step": from_step, "to_step": step,
                                             "market_ms": live.market.clock.now_ms()}
        self._changed(name, "rollback")
        return self.describe(name)

    def _changed(self, name: str, action: str) -> None:
        publish_state_change(self.live, name, action, self.describe(name))
        self.live.read.invalidate()


def publish_state_change(live: LiveTraining, name: str, action: str, state: dict) -> None:
    """The one hook for the event stream: a ``state`` event of one model's change."""
    events = getattr(live, "events", None)
    if events is not None:
        events.publish("state", {"model": name, "action": action,
                                 "state": state["state"], "train_steps": state["train_steps"],
                                 "rolled_back": state["rolled_back"],
                                 "market_ms": live.market.clock.now_ms()})


def _step(body: object, kept: list[int]) -> int:
    """The step of a rollback body ``{"step": N}``, one of ``kept``; else ControlError."""
    named = ", ".join(map(str, kept)) or "none (no checkpoint written yet)"
    if not isinstance(body, dict) or "step" not in body:
        raise ControlError(f'rollback needs a JSON body {{"step": N}}; kept steps: {named}')
    extra = sorted(set(body) - {"step"})
    if extra:
        raise ControlError(f"rollback takes only 'step', not {', '.join(extra)}")
    step = body["step"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise ControlError(f"step must be an integer, got {step!r}; kept steps: {named}")
    if step not in kept:
        raise ControlError(f"step {step} is not a kept checkpoint; kept steps: {named}")
    return step
