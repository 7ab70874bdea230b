"""Whether the prediction store's database answers, as the page and ``/status`` show it.

A write (the flush) that fails keeps its rows queued in memory and marks the store DOWN; the
next write is tried after a backoff that doubles with each failure (``BASE_S`` .. ``CAP_S``,
jittered so that several processes losing one database do not come back in step). Until
then a flush writes nothing and a read that needs the database fails at once with
``StoreUnavailable`` instead of waiting on a connect timeout. The first write that succeeds
marks it OK again; nothing recorded meanwhile is lost while the process runs (see
core/predictions/__init__.py)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

BASE_S = 0.5
CAP_S = 15.0


class StoreUnavailable(RuntimeError):
    """The store's database cannot be read now (down, or waiting for the next retry)."""


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class StoreHealth:
    backend: str  # "sqlite" or "postgresql"
    where: str  # the file or the URL, its password masked
    base_s: float = BASE_S
    cap_s: float = CAP_S
    clock: object = time.monotonic
    down_since: float | None = None  # wall time (time.time) the outage began
    error: str = ""
    failures: int = 0  # in a row
    outages: int = 0  # since the store opened
    retry_at: float = 0.0  # monotonic
    last_write: float | None = None  # wall time of the last write that succeeded
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def may_try(self) -> bool:
        """Whether a write may be tried now (up, or the backoff has passed)."""
        return not self.down or self.clock() >= self.retry_at

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since, self.outages = time.time(), self.outages + 1
            self.failures += 1
            self.error = one_line(exc)
            wait = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + wait * random.uniform(0.8, 1.2)

    def succeeded(self) -> None:
        with self._lock:
            self.down_since, self.error, self.failures = None, "", 0
            self.last_write = time.time()

    def unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(f"the prediction store {self.where} is unreachable "
                                f"({self.error}); retrying")

    def describe(self, queued: int) -> dict:
        """What the page and ``/status`` show (JSON-safe)."""
        with self._lock:
            down = self.down_since is not None
            return {"backend": self.backend, "where": self.where,
                    "state": "DOWN" if down else "OK",
                    "down_since": self.down_since, "error": self.error or None,
                    "retry_in_s": round(max(0.0, self.retry_at - self.clock()), 1)
                    if down else None,
                    "queued_rows": queued, "outages": self.outages,
                    "last_write": self.last_write}
