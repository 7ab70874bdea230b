"""Models by name. Adding a model: a module with a Learner subclass (its config dataclass,
actions, scores, look and the models it uses declared on it), and one line here.

The live loop (core/live/models.py) builds the enabled ones from ``models.<name>`` in
config.yaml, in ``run_order``: a model after the models it uses.
"""

from __future__ import annotations

import torch

from nn.base import Learner
from nn.book_direction import COBLearner
from nn.cnn import CNNLearner
from nn.dqn import DQNLearner

MODELS: dict[str, type[Learner]] = {
    "cnn": CNNLearner,
    "dqn": DQNLearner,
    "cob": COBLearner,
}


def run_order(names: list[str]) -> list[str]:
    """``names`` with every model after the ones it ``uses`` (registry order otherwise). A
    model that uses one not in ``names`` runs without it (it sees no offer)."""
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise ValueError(f"models use each other in a loop: {' -> '.join((*path, name))}")
        for used in MODELS[name].uses:
            if used in names:
                visit(used, (*path, name))
        done.append(name)

    for name in names:
        if name not in MODELS:
            raise ValueError(f"no model named {name!r}; registered: {', '.join(MODELS)}")
        visit(name, ())
    return done


def pick_device(wanted: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without CUDA is an error."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ValueError("models.device is 'cuda' but torch sees no CUDA device; use auto or cpu")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)
