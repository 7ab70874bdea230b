"""The Ray training backend (``training.backend: ray``): one Ray actor per learner.

Imported only when the config asks for it (core/services.py ``make_backend``): the default
run never imports ray. Each learner (a model, or a challenger) gets an actor built from the
same class, config section and timeframes, loaded with the local learner's state (same
weights, optimiser, counters and random generators). A training step runs in the actor; it
answers with the snapshot of the weights predictions use, the step counter, the loss history
and the card's epsilon and memory, which the local learner takes over: in the app it installs
the snapshot at once, in the evaluate command the pipeline installs it ``lag`` steps later
(core/evaluator.py), as with the thread backend.

Every ``ray.sync_every`` steps the actor also sends its whole state (what a checkpoint holds);
checkpoints read it from the actor. A local learner loaded (a checkpoint, a rollback) or
replaced (a promotion) is rebuilt in its actor's worker before its next step. An actor that
dies (or does not answer in ``ray.call_timeout_s``) is reported in the status, its batch
waits, and it is recreated after a jittered, capped backoff from the newest state this process
holds: what is lost is the steps since that copy (at most ``ray.sync_every``) and the actor's
replay buffer. A checkpoint due meanwhile (or at a stop after Ray went away) is that copy.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import ray
import torch
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RaySystemError

from core.config import RayConfig
from core.config_check import ray_endpoint
from core.live.backends import BackendError, LearnerUnavailable
from nn.base import Learner
from nn.contract import Experience

log = logging.getLogger(__name__)

STATE_TIMEOUT_S = 10.0  # a checkpoint read that takes longer falls back to the newest copy


class RayDown(RuntimeError):
    """The Ray cluster's GCS does not answer (its processes got the stop signal too: Ctrl+C
    in a terminal and systemd signal the whole process group)."""


LOST = (RayActorError, GetTimeoutError, ObjectLostError, RaySystemError, RayDown)


class LearnerActor:
    """A learner in a Ray worker: trains, answers with what the local learner mirrors."""

    def __init__(self, threads: int, sync_every: int, *learner: object):
        torch.set_num_threads(threads)  # as training.torch.threads in the app
        self.sync_every = sync_every
        self.build(*learner)

    def build(self, cls: type[Learner], cfg: object, timeframes: tuple[str, ...], device: str,
              state: dict) -> None:
        """(Re)build the learner in this worker: a new process costs seconds, this ms."""
        self.learner = cls(cfg, timeframes, device=device)
        self.learner.load_state_dict(state)
        self.learner.auto_publish = False  # the snapshot goes back; nothing predicts here

    def learn(self, batch: list[Experience]) -> dict:
        learner = self.learner
        losses = learner.learn(batch)
        answer = {"losses": losses, "train_steps": learner.train_steps,
                  "loss_history": list(learner.losses), "snapshot": learner.snapshot(),
                  "status": {"epsilon": learner.epsilon,
                             "memory_bytes": learner.memory_bytes()}}
        if losses is not None and learner.train_steps % self.sync_every == 0:
            answer["state"] = learner.state_dict()
        return answer

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def pid(self) -> int:
        return os.getpid()


@dataclass
class ActorSlot:
    """One learner's actor and what this process keeps of it."""

    name: str
    actor: object | None = None
    state: dict | None = None  # the newest whole state copied here (creation, sync, checkpoint)
    stale: bool = True  # the local learner was loaded or replaced: the actor rebuilds from it
    snapshot: dict | None = None  # the newest weights predictions may use
    status: dict = field(default_factory=dict)  # epsilon, memory_bytes of the actor's learner
    lost: str | None = None  # why it was lost, until it is back
    retry_at: float = 0.0  # monotonic seconds
    failures: int = 0  # losses in a row
    restarts: int = 0
    lost_steps: int = 0  # steps trained by lost actors that no copy held


class RayBackend:
    """Learners trained by Ray actors (see the module doc)."""

    kind = "ray"

    def __init__(self, cfg: RayConfig, threads: int, clock=time.monotonic):
        self.cfg = cfg
        self.threads = threads
        self.clock = clock
        self.slots: dict[str, ActorSlot] = {}
        self._lock = threading.RLock()
        self._owns_ray = False  # started Ray here: shut it down at stop
        self._gcs: str | None = None  # host:port of the GCS, probed when a call is slow
        self._remote = ray.remote(LearnerActor)

    # -- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect to ``ray.address`` or start a local Ray (once). BackendError naming the key
        and the address when it does not answer within ``ray.connect_timeout_s``."""
        address = self.cfg.address
        try:
            endpoint = ray_endpoint(address)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        if endpoint is not None:
            self._probe(address, *endpoint)
        if ray.is_initialized():  # this process is connected already (a test's Ray)
            return
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=self.cfg.num_cpus, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise BackendError(f"ray.address {address or '(local)'!r}: cannot start or "
                               f"connect to Ray ({why})") from None
        self._owns_ray = True
        log.info("training on Ray at %s", address or f"a local Ray ({self.cfg.num_cpus} CPUs)")

    def _probe(self, address: str, host: str, port: int) -> None:
        """A TCP connection to the address first: Ray itself retries for a minute or more."""
        try:
            socket.create_connection((host, port), timeout=self.cfg.connect_timeout_s).close()
        except OSError as exc:
            raise BackendError(f"ray.address {address!r}: cannot connect "
                               f"({exc.strerror or exc or 'timed out'})") from None

    def stop(self) -> None:
        with self._lock:
            for slot in self.slots.values():
                self._kill(slot)
            if self._owns_ray and ray.is_initialized():
                ray.shutdown()
            self._owns_ray = False

    # -- training ---------------------------------------------------------------------------

    def learn(self, name: str, learner: Learner, batch: list[Experience]) -> dict | None:
        """One step in ``name``'s actor; LearnerUnavailable when it is lost (the batch waits).
        A failure inside the step (a bad batch) is raised as the learner raised it."""
        slot = self._ready(name, learner)
        try:
            if slot.stale:  # loaded or replaced here: the same worker rebuilds it
                slot.state = self._local_state(learner)
                self._get(slot.actor.build.remote(*self._build_args(learner, slot.state)),
                          self.cfg.call_timeout_s)
                slot.stale = False
            answer = self._get(slot.actor.learn.remote(batch), self.cfg.call_timeout_s)
        except LOST as exc:
            self._lost(slot, exc)
            raise LearnerUnavailable(f"{name}: {slot.lost}") from None
        with learner.lock:  # the local learner mirrors the actor's counters
            learner.train_steps = answer["train_steps"]
            learner.losses = deque(answer["loss_history"], maxlen=learner.losses.maxlen)
            if learner.auto_publish:
                learner.install(answer["snapshot"])
        slot.snapshot, slot.status = answer["snapshot"], answer["status"]
        slot.state = answer.get("state", slot.state)
        slot.failures = 0
        return answer["losses"]

    def _ready(self, name: str, learner: Learner) -> ActorSlot:
        """``name``'s slot with an actor: a new one (from the local learner, or after a loss
        from the newest state held here) unless its backoff has not run out."""
        with self._lock:
            slot = self.slots.setdefault(name, ActorSlot(name))
            if slot.actor is not None:
                return slot
            if slot.retry_at > self.clock():
                raise LearnerUnavailable(f"{name}: {slot.lost}")
            if not ray.is_initialized():  # a caller that did not start the backend first
                self.start()
            if slot.stale or slot.state is None:
                slot.state = self._local_state(learner)
            elif slot.lost is not None:  # recreated: the steps no copy held are gone
                lost = max(0, learner.train_steps - int(slot.state["train_steps"]))
                slot.lost_steps += lost
                slot.restarts += 1
                log.warning("recreating the %s actor from step %s (%d steps lost)", name,
                            slot.state["train_steps"], lost)
                with learner.lock:
                    learner.train_steps = int(slot.state["train_steps"])
            slot.actor = self._remote.options(num_cpus=self.cfg.actor_cpus).remote(
                self.threads, self.cfg.sync_every, *self._build_args(learner, slot.state))
            slot.lost, slot.stale = None, False
            return slot

    @staticmethod
    def _local_state(learner: Learner) -> dict:
        with learner.lock:
            return learner.state_dict()

    @staticmethod
    def _build_args(learner: Learner, state: dict) -> tuple:
        return type(learner), learner.cfg, tuple(learner.timeframes), str(learner.device), state

    def _lost(self, slot: ActorSlot, exc: Exception) -> None:
        """The actor is gone: dropped, and recreated after a jittered, capped backoff."""
        with self._lock:
            slot.failures += 1
            delay = min(self.cfg.actor_retry_max_s,
                        self.cfg.actor_retry_s * 2 ** (slot.failures - 1))
            delay *= random.uniform(0.5, 1.0)
            slot.retry_at = self.clock() + delay
            why = (str(exc).strip().splitlines() or [""])[0][:160]
            slot.lost = f"{type(exc).__name__}: {why}" if why else type(exc).__name__
            self._kill(slot)
        log.warning("training actor %s lost (%s); recreated in %.1f s", slot.name, slot.lost,
                    delay)

    def _kill(self, slot: ActorSlot) -> None:
        if slot.actor is not None:
            try:
                ray.kill(slot.actor)
            except Exception:  # already gone (the usual case after a loss)  # noqa: BLE001
                log.debug("actor %s already gone", slot.name)
            slot.actor = None

    # -- state in and out -------------------------------------------------------------------

    def snapshot(self, name: str, learner: Learner) -> dict:
        """The newest weights the actor sent (the local learner's while it has sent none)."""
        slot = self.slots.get(name)
        if slot is None or slot.snapshot is None:
            return learner.snapshot()
        return slot.snapshot

    def state_dict(self, name: str, learner: Learner) -> dict:
        """The actor's whole state (a checkpoint). While the actor is lost (or Ray is gone, at
        a stop): the newest copy held here, from which it would be recreated."""
        slot = self.slots.get(name)
        if slot is None or slot.stale or (slot.actor is None and slot.lost is None):
            return self._local_state(learner)  # nothing trained since the local state
        if slot.actor is not None:
            try:
                slot.state = self._get(slot.actor.state_dict.remote(),
                                       min(self.cfg.call_timeout_s, STATE_TIMEOUT_S))
                return slot.state
            except LOST as exc:
                self._lost(slot, exc)
        log.warning("%s: the actor is lost (%s); its newest copy, of step %s, stands in", name,
                    slot.lost, slot.state["train_steps"])
        return slot.state

    def _get(self, ref: object, timeout: float) -> object:
        """``ray.get`` in one-second slices, so that a Ray whose GCS stopped answering is
        noticed at once (RayDown) rather than after the whole ``timeout``."""
        deadline = self.clock() + timeout
        while True:
            ready, _ = ray.wait([ref], timeout=max(0.0, min(1.0, deadline - self.clock())))
            if ready:
                return ray.get(ready[0])
            if not self._gcs_answers():
                raise RayDown(f"the Ray GCS at {self._gcs} does not answer")
            if self.clock() >= deadline:
                raise GetTimeoutError(f"no answer in {timeout:.0f} s")

    def _gcs_answers(self) -> bool:
        if self._gcs is None:
            try:
                self._gcs = ray.get_runtime_context().gcs_address
            except Exception:  # Ray Client has none to offer: nothing to probe  # noqa: BLE001
                self._gcs = ""
        host, _, port = (self._gcs or "").rpartition(":")
        if not host or not port.isdigit():
            return True
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
        except OSError:
            return False
        return True

    def reset(self, name: str) -> None:
        """The local learner ``name`` was loaded (checkpoint, rollback) or replaced: before
        its next step the actor rebuilds it from the local learner's state."""
        slot = self.slots.get(name)
        if slot is not None:
            slot.stale, slot.snapshot, slot.status = True, None, {}

    def release(self, name: str, learner: Learner) -> None:
        """``learner`` leaves (a challenger stopped or promoted): the actor's state comes back
        into it, its step counters kept (a promotion moves them), then the actor goes."""
        slot = self.slots.get(name)
        if slot is not None and not slot.stale:
            state = self.state_dict(name, learner)
            with learner.lock:
                steps, published = learner.train_steps, learner.published_steps
                learner.load_state_dict(state)
                learner.train_steps, learner.published_steps = steps, published
        with self._lock:
            slot = self.slots.pop(name, None)
            if slot is not None:
                self._kill(slot)

    # -- status -----------------------------------------------------------------------------

    def learner_status(self, name: str) -> dict:
        slot = self.slots.get(name)
        return dict(slot.status) if slot is not None else {}

    def status(self, names: list[str]) -> dict:
        actors, now = {}, self.clock()
        for name in names:
            slot = self.slots.get(name)
            if slot is None or (slot.actor is None and slot.lost is None):
                actors[name] = "not started"
            elif slot.lost is not None:
                actors[name] = f"lost: {slot.lost}; retry in {max(0.0, slot.retry_at - now):.0f} s"
            else:
                actors[name] = "ok"
        slots = [slot for n in names if (slot := self.slots.get(n)) is not None]
        return {"kind": self.kind,
                "address": self.cfg.address or f"local ({self.cfg.num_cpus} CPUs)",
                "actors": actors,
                "restarts": {s.name: s.restarts for s in slots if s.restarts},
                "lost_steps": {s.name: s.lost_steps for s in slots if s.lost_steps}}
