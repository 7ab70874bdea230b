"""What each model costs, live: time and CPU over the last minute of wall time.

The signal cycle (core/live/cycle.py) and training (core/live/learning.py) time their pieces
with a ``perf_counter``/``thread_time`` pair around each call, in the thread that does the
work, and hand them here; the read model asks for the summaries (``model``, ``cycle``).

Per model:

- ``forward_ms``: the model's network passes of one cycle, p50/p99: its batched ``decide`` over
  every close the cycle predicts from, and what it ``offer``s the models that use it (the CNN
  runs its forward there, for the DQN, and its ``decide`` reuses it);
- ``cycle_share_ms``: everything the cycle spends in that model's own code in one cycle: what it
  offers the others (the CNN's hidden layers), encoding its state for every close, ``decide``
  and turning resolved predictions into its experiences, p50/p99;
- ``train_step_ms``: one ``learn`` call (a training step that happened), p50/p99;
- ``cpu_fraction``: CPU seconds of its cycle shares and training steps per wall second, over the
  window (1.0: one core busy). ``time.thread_time`` counts the calling thread only: work torch
  hands to its intra-op threads is not in it (for these small batches torch mostly runs inline).

The cycle's own part is shown separately, not apportioned: ``shared_ms`` is the cycle's total
minus the models' shares (building observations, the pending predictions' resolution and
rewards, the store's record), the same for every model, so a model's share is what removing it
would save. ``total_ms`` is the whole cycle, compared with the wall interval of the job that
runs it (``load``: the p99 cycle over that interval; above ~0.7 the cycle is near falling
behind).

Only cycles that handled closes are counted (a run with nothing queued costs nothing).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from time import perf_counter, thread_time

SPAN_S = 60.0  # the window: the last minute of wall time
MAX_SAMPLES = 20_000  # per window, whatever the rate (cycles run at most 50 times a second)
BEHIND_LOAD = 0.7  # above this fraction of its interval a cycle is close to falling behind


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100) of sorted values, by nearest rank: always one of
    the values (p50 of 1..100 is 50, p99 is 99, p100 the max)."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q={q} is out of range; use 0 < q <= 100")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Window:
    """Samples (end time, wall seconds, CPU seconds) of the last ``span_s`` seconds of
    ``clock``: their percentiles and the CPU they used per wall second."""

    def __init__(self, span_s: float = SPAN_S, clock=time.monotonic,
                 max_samples: int = MAX_SAMPLES):
        self.span_s = span_s
        self.clock = clock
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=max_samples)
        self._since: float | None = None  # when the first sample's work began
        self._lock = threading.Lock()

    def add(self, seconds: float, cpu_s: float = 0.0, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            if self._since is None:
                self._since = now - seconds
            samples = self._samples
            samples.append((now, seconds, cpu_s))
            while samples[0][0] < now - self.span_s:  # read or not, only the last minute kept
                samples.popleft()

    def _recent(self, now: float) -> list[tuple[float, float, float]]:
        with self._lock:
            samples = self._samples
            while samples and samples[0][0] < now - self.span_s:
                samples.popleft()
            return list(samples)

    def covered_s(self, now: float | None = None) -> float:
        """Wall seconds the window covers: the span, or less since the first sample."""
        now = self.clock() if now is None else now
        since = self._since
        return 0.0 if since is None else max(0.0, min(self.span_s, now - since))

    def summary(self, now: float | None = None) -> dict:
        """{"n", "p50_ms", "p99_ms"} of the samples in the window (None without any)."""
        now = self.clock() if now is None else now
        ordered = sorted(s[1] for s in self._recent(now))
        if not ordered:
            return {"n": 0, "p50_ms": None, "p99_ms": None}
        return {"n": len(ordered), "p50_ms": round(percentile(ordered, 50) * 1000, 3),
                "p99_ms": round(percentile(ordered, 99) * 1000, 3)}

    def cpu_s(self, now: float | None = None) -> float:
        """CPU seconds of the samples in the window."""
        now = self.clock() if now is None else now
        return sum(s[2] for s in self._recent(now))


class CycleMeter:
    """One cycle's time per model, added up by the hooks (``add`` after the work, with the
    ``perf_counter()`` and ``thread_time()`` read before it)."""

    __slots__ = ("shares", "forwards", "start")

    def __init__(self) -> None:
        self.shares: dict[str, list[float]] = {}  # model -> [wall s, CPU s]
        self.forwards: dict[str, list[float]] = {}
        self.start = (perf_counter(), thread_time())

    def add(self, name: str, wall0: float, cpu0: float, forward: bool = False) -> None:
        wall, cpu = perf_counter() - wall0, thread_time() - cpu0
        for spent in (self.shares, self.forwards) if forward else (self.shares,):
            acc = spent.get(name)
            if acc is None:
                spent[name] = [wall, cpu]
            else:
                acc[0] += wall
                acc[1] += cpu


class ModelCosts:
    """Per model: forward, cycle share and training step windows; the cycle's total and shared
    part. Models are added as they first appear (a challenger, a plugin)."""

    def __init__(self, span_s: float = SPAN_S, clock=time.monotonic):
        self.span_s = span_s
        self.clock = clock
        self._windows: dict[tuple[str, str], Window] = {}
        self._lock = threading.Lock()

    def window(self, name: str, kind: str) -> Window:
        key = (name, kind)
        found = self._windows.get(key)
        if found is None:
            with self._lock:
                found = self._windows.setdefault(key, Window(self.span_s, self.clock))
        return found

    def begin(self) -> CycleMeter:
        """A meter for one cycle; :meth:`end` records it."""
        return CycleMeter()

    def end(self, meter: CycleMeter) -> None:
        """The cycle that ``meter`` timed has finished: its total, each model's share and
        forward pass, and the shared rest."""
        now = self.clock()
        total = perf_counter() - meter.start[0]
        total_cpu = thread_time() - meter.start[1]
        for name, (wall, cpu) in meter.shares.items():
            self.window(name, "share").add(wall, cpu, now)
        for name, (wall, cpu) in meter.forwards.items():
            self.window(name, "forward").add(wall, cpu, now)
        models = sum(w for w, _ in meter.shares.values())
        models_cpu = sum(c for _, c in meter.shares.values())
        self.window("", "cycle").add(total, total_cpu, now)
        self.window("", "shared").add(max(0.0, total - models), max(0.0, total_cpu - models_cpu),
                                      now)

    def train_step(self, name: str, wall0: float, cpu0: float) -> None:
        """A training step of ``name`` that began at ``perf_counter() == wall0`` and
        ``thread_time() == cpu0`` has finished."""
        self.window(name, "train").add(perf_counter() - wall0, thread_time() - cpu0)

    def model(self, name: str, now: float | None = None) -> dict:
        """One model's costs over the window (the card's rows, /status' ``costs``)."""
        now = self.clock() if now is None else now
        share, train = self.window(name, "share"), self.window(name, "train")
        covered = max(share.covered_s(now), train.covered_s(now))
        cpu = share.cpu_s(now) + train.cpu_s(now)
        return {"forward_ms": self.window(name, "forward").summary(now),
                "cycle_share_ms": share.summary(now),
                "train_step_ms": train.summary(now),
                "cpu_fraction": round(cpu / covered, 4) if covered > 0 else 0.0,
                "window_s": self.span_s}

    def cycle(self, interval_s: float | None, now: float | None = None) -> dict:
        """The cycle's total and shared part over the window, against ``interval_s``: the wall
        seconds between runs of the job that runs it (None: not scheduled by wall time)."""
        now = self.clock() if now is None else now
        total = self.window("", "cycle").summary(now)
        load = None
        if interval_s and total["p99_ms"] is not None:
            load = round(total["p99_ms"] / (interval_s * 1000), 4)
        return {"total_ms": total, "shared_ms": self.window("", "shared").summary(now),
                "interval_ms": None if interval_s is None else round(interval_s * 1000, 3),
                "load": load, "behind_load": BEHIND_LOAD, "window_s": self.span_s}
