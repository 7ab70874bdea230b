"""The signal cycle: candles close -> predictions resolve -> experiences -> new predictions.

For every candle of a model timeframe that closed, in phases, so each model runs one forward
pass for all the closes of a batch (both symbols' candles of a market second):

1. the observation at the close (core/observations.py);
2. what the models used by others offer (the CNN's hidden layers, for the DQN), then every
   model's state (``Learner.encode``);
3. while training is active, every model's prediction of the next candle (``Learner.decide``),
   only from the newest close of each (symbol, timeframe): a cycle that fell behind catches up
   instead of predicting candles that already closed;
4. per close, the pending predictions that targeted the candle, resolved (actual OHLCV,
   errors, reward: core/rewards.py), each turned into an experience by its model's own rule
   (``Learner.experience``);
5. one ``store.record`` for the whole batch, without the candles a model has already
   predicted (``store.unpredicted``: one prediction per model and candle, across restarts);
   then experiences go to the trainer and the new predictions to the signal desk.

A close that fails in any phase before the record is left out and reported; the others go on.
Experiences, votes and counts change only once the batch is recorded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from time import perf_counter, thread_time, time

import numpy as np

from core.live.challengers import is_challenger
from core.live.control import ModelStates
from core.live.costs import ModelCosts
from core.live.events import prediction_event, resolution_event
from core.market.candles import Candle
from core.observations import ObservationBuilder
from core.predictions import NewPrediction, PredictionStore
from core.rewards import absolute_ohlcv, relative_ohlcv, resolve
from nn.base import Learner
from nn.contract import ModelOutput, Observation, Outcome


@dataclass(eq=False)
class Close:
    """One closed candle on its way through the cycle."""

    symbol: str
    tf: str
    candle: Candle
    close_ts: int
    obs: Observation
    states: dict[str, np.ndarray] = field(default_factory=dict)  # model -> encoded state
    outputs: dict[str, ModelOutput] | None = None  # model -> output, when this close predicts


class Cycle:
    def __init__(self, store: PredictionStore, learners: dict[str, Learner],
                 builder: ObservationBuilder, tf_ms: dict[str, int], bands: dict[str, float],
                 trade_weight: float):
        self.store = store
        self.learners = learners  # in run order: a model after the ones it uses
        self.builder = builder
        self.tf_ms = tf_ms
        self.bands = bands  # per timeframe, the move up to which HOLD is right
        self.trade_weight = trade_weight
        # Models that another enabled model uses: what they offer goes into its observation.
        self.offering = [n for n in learners if any(n in lrn.uses for lrn in learners.values())]
        self.closes: deque[tuple[str, str, Candle]] = deque(maxlen=100_000)
        self.challenger_errors: dict[str, str] = {}  # a challenger's last skipped prediction
        self.costs = ModelCosts()  # each model's time in the cycle (core/live/costs.py)
        self.meter = self.costs.begin()  # the running cycle's
        self.events = None  # the event stream (core/live/events.py), set by LiveTraining
        self.resolutions: list = []  # the running cycle's (prediction, resolution, time)
        self.control = ModelStates()  # paused / frozen models (core/live/control.py)

    def on_close(self, symbol: str, tf: str, candle: Candle) -> None:
        self.closes.append((symbol, tf, candle))

    def run(self, predicting: bool) -> tuple[list, list[NewPrediction], list[int], list]:
        """Every queued close handled: returns (experiences as (model, tf, experience), the new
        predictions, their ids, the errors of the closes left out)."""
        batch = []
        while self.closes:
            batch.append(self.closes.popleft())
        failed: list[Exception] = []
        if not batch:
            return [], [], [], failed
        self.meter = self.costs.begin()
        newest = {(s, tf): c.ts for s, tf, c in batch}
        closes = self._encode(self._observe(batch, failed), failed)
        self._decide([c for c in closes
                      if predicting and newest[(c.symbol, c.tf)] == c.candle.ts])
        resolved, experiences, rows = [], [], []
        self.resolutions, resolved_wall = [], time()
        for c in closes:
            kept = len(self.resolutions)
            try:
                c_resolved, c_experiences = self._resolve(c)
                c_rows = self._predict(c) if c.outputs else []
            except Exception as exc:  # one bad close must not undo or stop the others
                _failed(failed, exc, c.symbol, c.tf, c.candle)
                del self.resolutions[kept:]
                continue
            resolved += c_resolved
            experiences += c_experiences
            rows += c_rows
        # A candle a model has already predicted (before a restart that rewound the market)
        # is not predicted again: scores count each candle once. From memory in the live case.
        rows = self.store.unpredicted(rows)
        _, ids = self.store.record(resolved, rows)  # all of the batch at once
        self.costs.end(self.meter)
        if self.events is not None:  # one event each per cycle, after the record
            if self.resolutions:
                self.events.publish("resolutions",
                                    resolution_event(self.resolutions, resolved_wall))
            if rows:
                self.events.publish("predictions", prediction_event(rows, ids))
        self.resolutions = []
        return experiences, rows, ids, failed

    def _observe(self, batch, failed: list) -> list[Close]:
        caches: dict[int, dict] = {}  # close time -> windows shared by its observations
        closes = []
        for symbol, tf, candle in batch:
            close_ts = candle.ts + self.tf_ms[tf]
            try:
                obs = self.builder.build(symbol, tf, close_ts, caches.setdefault(close_ts, {}))
            except Exception as exc:
                _failed(failed, exc, symbol, tf, candle)
                continue
            closes.append(Close(symbol, tf, candle, close_ts, obs))
        return closes

    def _encode(self, closes: list[Close], failed: list) -> list[Close]:
        """What each model used by another offers about every observation, then each model's
        state; the closes whose states could be made."""
        if closes:
            for name in self.offering:
                wall, cpu = perf_counter(), thread_time()
                offers = self.learners[name].offer([c.obs for c in closes])
                self.meter.add(name, wall, cpu, forward=True)  # a forward pass (the CNN's)
                for c, offer in zip(closes, offers or [None] * len(closes), strict=True):
                    c.obs.extras[name] = offer
        good = []
        for c in closes:
            try:
                c.states = self._states(c.obs)
            except Exception as exc:
                _failed(failed, exc, c.symbol, c.tf, c.candle)
                continue
            good.append(c)
        return good

    def _states(self, obs: Observation) -> dict[str, np.ndarray]:
        """Every model's state of one observation, each model's time metered."""
        states = {}
        for name, lrn in self.learners.items():
            wall, cpu = perf_counter(), thread_time()
            states[name] = lrn.encode(obs)
            self.meter.add(name, wall, cpu)
        return states

    def _decide(self, closes: list[Close]) -> None:
        """Every model's prediction for each close, one batched call per model."""
        if not closes:
            return
        for c in closes:
            c.outputs = {}
        for name, learner in self.learners.items():
            if not self.control.predicts(name):  # paused: not asked
                continue
            wall, cpu = perf_counter(), thread_time()
            outs = learner.decide([c.obs for c in closes], [c.states[name] for c in closes])
            self.meter.add(name, wall, cpu, forward=True)
            for c, out in zip(closes, outs, strict=True):
                c.outputs[name] = out

    def _resolve(self, c: Close) -> tuple[list, list]:
        """The predictions that targeted this candle, resolved: (id, resolution, market time)
        rows for the store and the (model, tf, experience) each makes."""
        pending = self.store.pending(c.symbol, c.tf, c.candle.ts)
        if not pending:
            return [], []
        candle = c.candle
        actual = (candle.open, candle.high, candle.low, candle.close, candle.volume)
        resolved, experiences = [], []
        band = self.bands[c.tf]
        targets: dict[float, np.ndarray] = {}  # reference price -> the candle relative to it
        for p in pending:
            r = resolve(p.action, p.confidence, p.reference_price, p.predicted_ohlcv, actual,
                        hold_band=band)
            resolved.append((p.id, r, c.close_ts))
            self.resolutions.append((p, r, c.close_ts))  # for the event stream
            self.control.note_resolved(p.model, c.close_ts)
            learner = self.learners.get(p.model)
            if learner is None or p.state is None or not self.control.trains(p.model):
                continue
            # Every model predicted this candle from the same close: one target for all,
            # shared by their experiences, so read-only.
            target = targets.get(p.reference_price)
            if target is None:
                target = targets[p.reference_price] = relative_ohlcv(p.reference_price, actual)
                target.flags.writeable = False
            wall, cpu = perf_counter(), thread_time()
            exp = learner.experience(Outcome(  # the model's own rule (nn/<model>.py)
                state=p.state, action=p.action, change=r.change, reward=r.reward,
                next_state=c.states.get(p.model), timeframe=c.tf, hold_band=band,
                target_ohlcv=target, weight=self.trade_weight if p.executed else 1.0))
            self.meter.add(p.model, wall, cpu)
            if exp is not None:
                experiences.append((p.model, c.tf, exp))
        return resolved, experiences

    def _predict(self, c: Close) -> list[NewPrediction]:
        """Every model's prediction of the next candle, from the one that just closed."""
        ref_price = float(c.candle.close)  # the reference: the close the models just saw
        rows = []
        for name, learner in self.learners.items():
            out = c.outputs.get(name)
            if out is None:  # paused
                continue
            try:
                ohlcv = absolute_ohlcv(ref_price, out.ohlcv) if out.ohlcv is not None else None
                rows.append(NewPrediction(
                    model=name, model_step=learner.published_steps, symbol=c.symbol,
                    timeframe=c.tf, created_ts=c.close_ts,
                    target_ts=c.close_ts,  # the next candle opens where this one closed
                    reference_price=ref_price, action=learner.actions[out.action],
                    confidence=float(out.confidence), predicted_ohlcv=ohlcv,
                    state=c.states[name], stale=self.control.is_stale(name)))
            except (ValueError, OverflowError) as exc:  # out of range (a diverged network)
                if not is_challenger(name):
                    raise
                # A challenger's fault never costs the others their predictions.
                self.challenger_errors[name] = f"{type(exc).__name__}: {exc}"[:200]
        return rows


def _failed(failed: list, exc: Exception, symbol: str, tf: str, candle: Candle) -> None:
    exc.add_note(f"while processing the {symbol} {tf} candle at {candle.ts}")
    failed.append(exc)


