"""Where learners train (``training.backend``): the seam ``Learning`` trains through.

``ThreadBackend`` (the default) trains each learner in this process, on the thread that runs
the train job: today's path, nothing added. ``RayBackend`` (core/live/ray_training.py, imported
by core/services.py only when ``training.backend`` is ray: the default run never imports ray)
trains each one in a Ray actor and mirrors what predictions and the status need back into the
local learner.

Either way the local learner is the one that predicts: the backend only decides where its
training steps run. The evaluate command's publish rule (core/evaluator.py: weights predict
``lag`` steps after their batch was taken) asks ``snapshot`` for the weights, so it holds for
both backends.
"""

from __future__ import annotations

from nn.base import Learner
from nn.contract import Experience


class BackendError(RuntimeError):
    """The backend cannot start (a Ray address that does not answer, ray not installed):
    one line naming the config key; core/services.py makes it a StartupError."""


class LearnerUnavailable(RuntimeError):
    """A learner's trainer is lost (a Ray actor died) and not back yet: the batch waits
    (core/live/learning.py puts it back) and is trained once the learner is recreated."""


class ThreadBackend:
    """Training in this process: ``learner.learn`` on the calling thread."""

    kind = "thread"

    def start(self) -> None:
        """Nothing to connect to."""

    def stop(self) -> None:
        """Nothing to release."""

    def learn(self, name: str, learner: Learner, batch: list[Experience]) -> dict | None:
        return learner.learn(batch)

    def snapshot(self, name: str, learner: Learner) -> dict:
        """What predictions read, as trained so far (Learner.snapshot)."""
        return learner.snapshot()

    def state_dict(self, name: str, learner: Learner) -> dict:
        """Everything to resume the learner (its checkpoint)."""
        with learner.lock:
            return learner.state_dict()

    def reset(self, name: str) -> None:
        """The local learner ``name`` was loaded or replaced: nothing to copy."""

    def release(self, name: str, learner: Learner) -> None:
        """``learner`` leaves: nothing to bring back."""

    def learner_status(self, name: str) -> dict:
        """What the card shows that only the trainer knows (epsilon, memory): the local
        learner's own."""
        return {}

    def status(self, names: list[str]) -> dict:
        return {"kind": self.kind, "address": None, "actors": {}, "restarts": {},
                "lost_steps": {}}


TrainingBackend = ThreadBackend  # the interface; RayBackend offers the same methods
