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

import numpy as np

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
        newest = {(s, tf): c.ts for s, tf, c in batch}
        closes = self._encode(self._observe(batch, failed), failed)
        self._decide([c for c in closes
                      if predicting and newest[(c.symbol, c.tf)] == c.candle.ts])
        resolved, experiences, rows = [], [], []
        for c in closes:
            try:
                c_resolved, c_experiences = self._resolve(c)
                c_rows = self._predict(c) if c.outputs else []
            except Exception as exc:  # one bad close must not undo or stop the others
                _failed(failed, exc, c.symbol, c.tf, c.candle)
                continue
            resolved += c_resolved
            experiences += c_experiences
            rows += c_rows
        # A candle a model has already predicted (before a restart that rewound the market)
        # is not predicted again: scores count each candle once. From memory in the live case.
        rows = self.store.unpredicted(rows)
        _, ids = self.store.record(resolved, rows)  # all of the batch at once
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
                offers = self.learners[name].offer([c.obs for c in closes])
                for c, offer in zip(closes, offers or [None] * len(closes), strict=True):
                    c.obs.extras[name] = offer
        good = []
        for c in closes:
            try:
                c.states = {name: lrn.encode(c.obs) for name, lrn in self.learners.items()}
            except Exception as exc:
                _failed(failed, exc, c.symbol, c.tf, c.candle)
                continue
            good.append(c)
        return good

    def _decide(self, closes: list[Close]) -> None:
        """Every model's prediction for each close, one batched call per model."""
        if not closes:
            return
        for c in closes:
            c.outputs = {}
        for name, learner in self.learners.items():
            outs = learner.decide([c.obs for c in closes], [c.states[name] for c in closes])
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
            learner = self.learners.get(p.model)
            if learner is None or p.state is None:
                continue
            # Every model predicted this candle from the same close: one target for all,
            # shared by their experiences, so read-only.
            target = targets.get(p.reference_price)
            if target is None:
                target = targets[p.reference_price] = relative_ohlcv(p.reference_price, actual)
                target.flags.writeable = False
            exp = learner.experience(Outcome(  # the model's own rule (nn/<model>.py)
                state=p.state, action=p.action, change=r.change, reward=r.reward,
                next_state=c.states.get(p.model), timeframe=c.tf, hold_band=band,
                target_ohlcv=target, weight=self.trade_weight if p.executed else 1.0))
            if exp is not None:
                experiences.append((p.model, c.tf, exp))
        return resolved, experiences

    def _predict(self, c: Close) -> list[NewPrediction]:
        """Every model's prediction of the next candle, from the one that just closed."""
        ref_price = float(c.candle.close)  # the reference: the close the models just saw
        rows = []
        for name, learner in self.learners.items():
            out = c.outputs[name]
            ohlcv = absolute_ohlcv(ref_price, out.ohlcv) if out.ohlcv is not None else None
            rows.append(NewPrediction(
                model=name, model_step=learner.published_steps, symbol=c.symbol,
                timeframe=c.tf, created_ts=c.close_ts,
                target_ts=c.close_ts,  # the next candle opens where this one closed
                reference_price=ref_price, action=learner.actions[out.action],
                confidence=float(out.confidence), predicted_ohlcv=ohlcv, state=c.states[name],
            ))
        return rows


def _failed(failed: list, exc: Exception, symbol: str, tf: str, candle: Candle) -> None:
    exc.add_note(f"while processing the {symbol} {tf} candle at {candle.ts}")
    failed.append(exc)


