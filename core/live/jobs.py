"""The one job table: what the live loop runs, and how often, in market time.

The app's scheduler (core/scheduler.py) turns each market interval into wall seconds by the
clock's speed; the evaluate command (core/evaluator.py) into steps of its bar. Both call the
same methods of :class:`core.live.service.LiveTraining`, with the market time passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    method: str  # LiveTraining's method; called with the market time (ms) when ``timed``
    market_s: float | None  # market seconds between runs; None: ``wall_s`` of wall time
    wall_s: float | None = None  # for work that is about the machine, not the market
    timed: bool = False  # the method takes now_ms

    def wall_interval(self, speed: float, floor_s: float) -> float:
        """Wall seconds between runs at the clock's ``speed`` (never below ``floor_s``)."""
        seconds = self.wall_s if self.market_s is None else self.market_s / speed
        return max(floor_s, seconds)


def job_table(bar_s: float, signal_s: float, flush_s: float) -> tuple[Job, ...]:
    """The jobs, for a source whose finest candle is ``bar_s`` market seconds:

    - ``process_closes``: resolve and predict every candle that closed (each bar);
    - ``train``: one step for every model and timeframe with a full batch waiting (each bar);
    - ``signal``: fuse each symbol's votes and act on paper (``scheduler.signal_interval_s``);
    - ``flush``: the prediction store writes what was recorded (``scheduler.store_flush_s``
      of wall time: it is about the disk, not the market);
    - ``expire``: predictions whose candle never came expire (each market minute).
    """
    return (
        Job("process_closes", "process_closes", bar_s),
        Job("train", "train_due", bar_s),
        Job("signal", "signal_job", signal_s, timed=True),
        Job("flush", "flush_job", None, wall_s=flush_s),
        Job("expire", "expire_job", 60.0, timed=True),
    )
