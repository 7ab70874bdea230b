"""The market pump's supervisor: runs a source, and restarts it with backoff when it stops.

A source's life is ``backfill()`` once, then ``run(clock, stop)`` until ``stop`` is set.
Whatever ends it early (an unexpected exception, a permanent exchange error the source does not
handle itself) is logged with its traceback, counted and shown in ``status()`` (the market
snapshot: the page's footer and ``/api/market/status``), and the source is started again after
a jittered, capped exponential delay (``initial_s * 2**attempt`` up to ``max_s``, each delay
drawn uniformly from its upper half so that a failing source is never hammered). A run that
lasted ``healthy_after_s`` starts the backoff over. A backfill that failed is tried again; one
that worked is not repeated (an exchange source fills what it missed when it reconnects). A
``run`` that returns while ``stop`` is not set has finished (a replay with on_end: stop).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from core.clock import Clock

log = logging.getLogger(__name__)


class SourceSupervisor:
    def __init__(self, source: Any, clock: Clock, *, initial_s: float = 1.0,
                 max_s: float = 60.0, healthy_after_s: float = 60.0,
                 on_backfilled: Callable[[], None] | None = None,
                 rng: random.Random | None = None, wall: Callable[[], float] = time.time):
        self.source, self.clock = source, clock
        self.initial_s, self.max_s = initial_s, max(max_s, initial_s)
        self.healthy_after_s = healthy_after_s
        self.on_backfilled = on_backfilled
        self.rng = rng if rng is not None else random.Random()
        self.wall = wall
        self.state = "idle"  # idle, backfilling, running, restarting, finished, stopped
        self.restarts = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_ms: int | None = None  # wall time, UTC ms
        self.next_retry_ms: int | None = None  # wall time of the next start while restarting
        self.delays: list[float] = []  # the delays waited, oldest first (the last 100)
        self._backfilled = False

    def delay_s(self, attempt: int) -> float:
        """Uniform in the upper half of min(max_s, initial_s * 2**attempt) seconds."""
        cap = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 60))
        return cap * (0.5 + 0.5 * self.rng.random())

    def run(self, stop: threading.Event) -> None:
        """The pump thread's body: the source, restarted after failures, until ``stop``."""
        attempt = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                self._run_once(stop)
            except Exception as exc:  # the pump's top: any failure is shown, then restarted
                self._failed(exc)
            else:
                self.state = "stopped" if stop.is_set() else "finished"
                log.info("market source %s %s", self.source.kind, self.state)
                return
            if stop.is_set():
                break
            if time.monotonic() - started >= self.healthy_after_s:
                attempt = 0
            delay = self.delay_s(attempt)
            attempt += 1
            self.delays = [*self.delays[-99:], delay]
            self.state = "restarting"
            self.next_retry_ms = int((self.wall() + delay) * 1000)
            log.warning("market source %s: restarting in %.2f s (restart #%d)",
                        self.source.kind, delay, self.restarts + 1)
            if stop.wait(delay):
                break
            self.restarts += 1
            self.next_retry_ms = None
        self.state = "stopped"

    def _run_once(self, stop: threading.Event) -> None:
        if not self._backfilled:
            self.state = "backfilling"
            self.source.backfill()
            self._backfilled = True
            if self.on_backfilled is not None:
                self.on_backfilled()
        self.state = "running"
        log.info("market source %s streaming from %d", self.source.kind, self.clock.now_ms())
        self.source.run(self.clock, stop)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self.last_error_ms = int(self.wall() * 1000)
        log.error("market source %s stopped (failure #%d): %s", self.source.kind, self.failures,
                  self.last_error, exc_info=exc)

    @property
    def running(self) -> bool:
        """The source is up (or backfilling, or a replay that finished its recording)."""
        return self.state in ("backfilling", "running", "finished")

    def status(self) -> dict[str, Any]:
        """What the page's footer and /api/market/status show about the source's life."""
        retry = self.next_retry_ms
        return {
            "state": self.state,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            "next_retry_ms": retry,
            "next_retry_in_s": None if retry is None
            else max(0.0, retry / 1000 - self.wall()),
        }
