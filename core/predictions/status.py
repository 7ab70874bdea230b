"""A prediction's life in one vocabulary: its status, and how it turned out in a word.

Status moves one way only: ``pending -> resolved`` (its candle closed and judged it) or
``pending -> expired`` (its candle never came, e.g. the feed was down).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    RESOLVED = "resolved"
    EXPIRED = "expired"


STATUSES = tuple(s.value for s in Status)  # ("pending", "resolved", "expired")
# The same as plain strings, for the hot paths: looking up an enum member costs ~0.4 us.
PENDING, RESOLVED, EXPIRED = STATUSES

# A resolved prediction's ``action_correct`` in a word: was the call right?
HIT, MISS = "hit", "miss"


def outcome(status: str, action_correct: bool | None) -> str:
    """How a prediction turned out, in one word: "pending", "expired", or for a resolved one
    "hit" (its call was right, ``action_correct``) or "miss"."""
    if status == Status.RESOLVED:
        return HIT if action_correct else MISS
    return Status(status).value
