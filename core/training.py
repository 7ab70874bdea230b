"""Live training: candles close -> predictions resolve -> experiences -> models learn.

The service is driven by scheduler jobs (core/scheduler.py), each safe to run concurrently:

- ``process_closes``: for every candle that closed, build the observation at its close,
  resolve the predictions that targeted it (actual OHLCV, errors, reward), turn them into
  experiences, and (while active) let every model predict the next candle of that timeframe.
- ``train_due``: every model trains on a timeframe as soon as ``training.batch_size[tf]``
  experiences wait. It runs in its own thread: prediction never waits on training beyond a
  learner's lock around a forward pass or an optimiser step.
- ``signal_job``: fuses each symbol's latest votes into one signal and acts on paper.
- ``expire_job``: predictions whose candle never came expire.
- ``flush_job``: the prediction store writes what was recorded since its last flush.

Resolution goes on while training is stopped (so nothing pending is lost); predicting and
training only while active. ``stop`` lets a cycle or training step already under way finish
before it writes the checkpoints, so they hold every step and nothing changes after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import evaluation, scoring, verdicts
from core.config import Config
from core.live.models import observation_window
from core.market.candles import Candle
from core.market.service import MarketService
from core.observations import ObservationBuilder
from core.orchestrator import PaperBook, Signal, Vote, correlation, fuse, make_signal
from core.predictions import NewPrediction, PredictionStore
from core.rewards import absolute_ohlcv, hold_band, relative_ohlcv, resolve
from nn.base import Experience, Learner, Outcome
from nn.checkpoints import CheckpointManager

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # predictions/s and batches/min are measured over the last minute (wall)


@dataclass
class JobError:
    type: str
    message: str
    count: int = 0
    last_wall_ts: float = 0.0


@dataclass
class Rates:
    """Event times (wall clock) in a sliding window, for per-second and per-minute rates."""

    events: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def add(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.events.extend([now] * n)

    def per_second(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self.events and self.events[0] < now - RATE_WINDOW_S:
            self.events.popleft()
        span = min(RATE_WINDOW_S, max(1.0, now - self.events[0])) if self.events else 1.0
        return len(self.events) / span


@dataclass(eq=False)
class _Close:
    """One closed candle on its way through process_closes."""

    symbol: str
    tf: str
    candle: Candle
    close_ts: int
    obs: object
    states: dict = field(default_factory=dict)  # model -> encoded state
    outputs: dict | None = None  # model -> ModelOutput, when this close predicts


class LiveTrainingService:
    def __init__(self, cfg: Config, market: MarketService, store: PredictionStore,
                 learners: dict[str, Learner], checkpoints: CheckpointManager):
        self.cfg = cfg
        self.market = market
        self.store = store
        self.learners = learners
        self.checkpoints = checkpoints
        self.tf_ms = market.store.tf_ms
        # Models predict, learn from and are scored on real timeframes only (candles finer
        # than the source's bars are interpolated toward the bar's close: its future).
        self.timeframes = tuple(market.model_timeframes)
        self._modelled = frozenset(self.timeframes)
        # Per timeframe, the move up to which "no move" (HOLD) is right: every score's band.
        self.bands = {tf: hold_band(self.tf_ms[tf], cfg.signal.fee_rate) for tf in self.timeframes}
        # Models that another enabled model uses: what they offer goes into its observation.
        self._offering = [n for n in learners if any(n in lrn.uses for lrn in learners.values())]
        self.builder = ObservationBuilder(market.store, market.books, observation_window(cfg),
                                          reference="BTC/USDT", cob=market.cob,
                                          timeframes=self.timeframes)
        self.active = False
        self.started_at_ms: int | None = None
        self._closes: deque[tuple[str, str, Candle]] = deque(maxlen=100_000)
        self._waiting: dict[str, dict[str, list[Experience]]] = {
            name: {tf: [] for tf in self.timeframes} for name in learners
        }
        self._waiting_lock = threading.Lock()
        self._votes: dict[str, dict[tuple[str, str], Vote]] = {s: {} for s in market.store.symbols}
        self.signals: dict[str, Signal] = {}
        self.last_signal_ms: int | None = None
        self.paper = PaperBook(cfg.signal)
        self.errors: dict[str, JobError] = {}
        self.prediction_rate = Rates()
        self.batch_rate = Rates()
        self.dropped_experiences = Counter()
        self._last_checkpoint_step = {name: 0 for name in learners}
        self._lock = threading.Lock()
        self._cycle = threading.Lock()  # held by process_closes (stop waits for it)
        self._training_job = threading.Lock()  # held by train_due (stop waits for it)
        self._status_cache: tuple[float, dict] | None = None
        self._status_lock = threading.Lock()  # the first computation
        self._refreshing = threading.Lock()  # held while a background refresh runs
        self._quality_cache: tuple[float, dict, int] | None = None
        market.store.subscribe(self._on_close)

    # -- control ------------------------------------------------------------------------

    def start(self) -> dict:
        with self._lock:
            if not self.active:
                self.active = True
                self.started_at_ms = self.market.clock.now_ms()
                log.info("live training started")
        self.invalidate_status()
        return self.cached_status()

    def stop(self) -> dict:
        """Stop predicting and training. A cycle or training job already past its check of
        ``active`` finishes first, so nothing is predicted or trained once this returns and
        the checkpoints written here hold every step."""
        with self._lock:
            was_active = self.active
            self.active = False
        with self._cycle, self._training_job:  # wait for the jobs in flight
            pass
        if was_active:
            self.save_checkpoints()
            log.info("live training stopped")
        self.invalidate_status()
        return self.cached_status()

    # -- jobs ---------------------------------------------------------------------------

    def guarded(self, name: str, job) -> None:
        """Run a job; an error is recorded by type in the status and the next run goes on."""
        try:
            job()
        except Exception as exc:  # the top of a job: report by type, never swallow silently
            err = self.errors.setdefault(name, JobError(type(exc).__name__, str(exc)))
            err.type, err.message = type(exc).__name__, str(exc)[:300]
            err.count += 1
            err.last_wall_ts = time.time()
            if err.count <= 3 or err.count % 100 == 0:
                log.exception("job %s failed (%s, %d times)", name, err.type, err.count)

    def _on_close(self, symbol: str, tf: str, candle: Candle) -> None:
        if tf in self._modelled:  # interpolated candles are drawn, never predicted or scored
            self._closes.append((symbol, tf, candle))

    def process_closes(self) -> int:
        """Resolve and predict for every queued candle close; returns how many were handled.

        In phases, so each model runs one forward pass for all the closes of the batch (both
        symbols' candles of a market second): observations, the CNN over all of them, every
        model's state, the predictions, then per close the resolutions, experiences and new
        rows, and one ``store.record`` for the whole batch (the flush job writes it to the
        file). A close that fails in any phase before the record is left out and reported;
        the others go on. Experiences, votes and counts change only once it is recorded.
        """
        with self._cycle:
            return self._process_closes()

    def _process_closes(self) -> int:
        batch = []
        while self._closes:
            batch.append(self._closes.popleft())
        if not batch:
            return 0
        # Predict only from the newest close of each (symbol, tf): if the job fell behind, it
        # catches up instead of predicting candles that already closed.
        newest = {(s, tf): c.ts for s, tf, c in batch}
        failed: list[Exception] = []
        closes = self._observe(batch, failed)
        closes = self._encode(closes, failed)
        predicting = [c for c in closes
                      if self.active and newest[(c.symbol, c.tf)] == c.candle.ts]
        self._decide(predicting)
        resolved, experiences, rows = [], [], []
        for c in closes:
            try:
                c_resolved, c_experiences = self._resolve(c)
                c_rows = self._predict(c) if c.outputs else []
            except Exception as exc:  # one bad close must not undo or stop the others
                self._failed(failed, exc, c.symbol, c.tf, c.candle)
                continue
            resolved += c_resolved
            experiences += c_experiences
            rows += c_rows
        _, ids = self.store.record(resolved, rows)  # all of the batch at once
        for model, tf, exp in experiences:
            self._queue(model, tf, exp)
        self._predicted(rows, ids)
        if failed:
            raise failed[0]  # reported by guarded() once the good closes are recorded
        return len(batch)

    @staticmethod
    def _failed(failed: list, exc: Exception, symbol: str, tf: str, candle: Candle) -> None:
        exc.add_note(f"while processing the {symbol} {tf} candle at {candle.ts}")
        failed.append(exc)

    def _observe(self, batch, failed: list) -> list[_Close]:
        caches: dict[int, dict] = {}  # close time -> windows shared by its observations
        closes = []
        for symbol, tf, candle in batch:
            close_ts = candle.ts + self.tf_ms[tf]
            try:
                obs = self.builder.build(symbol, tf, close_ts, caches.setdefault(close_ts, {}))
            except Exception as exc:
                self._failed(failed, exc, symbol, tf, candle)
                continue
            closes.append(_Close(symbol, tf, candle, close_ts, obs))
        return closes

    def _encode(self, closes: list[_Close], failed: list) -> list[_Close]:
        """What each model used by another offers about every observation (the CNN's hidden
        layers and probabilities, for the DQN), then each model's state; the closes whose
        states could be made."""
        if closes:
            for name in self._offering:
                offers = self.learners[name].offer([c.obs for c in closes])
                for c, offer in zip(closes, offers or (), strict=bool(offers)):
                    c.obs.extras[name] = offer
        good = []
        for c in closes:
            try:
                c.states = {name: lrn.encode(c.obs) for name, lrn in self.learners.items()}
            except Exception as exc:
                self._failed(failed, exc, c.symbol, c.tf, c.candle)
                continue
            good.append(c)
        return good

    def _decide(self, closes: list[_Close]) -> None:
        """Every model's prediction for each close, one batched call per model."""
        if not closes:
            return
        for c in closes:
            c.outputs = {}
        for name, learner in self.learners.items():
            outs = learner.decide([c.obs for c in closes], [c.states[name] for c in closes])
            for c, out in zip(closes, outs, strict=True):
                c.outputs[name] = out

    def _resolve(self, c: _Close) -> tuple[list, list]:
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
            # The model's own rule turns the outcome into what it learns (nn/<model>.py).
            exp = learner.experience(Outcome(
                state=p.state, action=p.action, change=r.change, reward=r.reward,
                next_state=c.states.get(p.model), timeframe=c.tf, hold_band=band,
                target_ohlcv=target,
                weight=self.cfg.training.trade_weight if p.executed else 1.0))
            if exp is not None:
                experiences.append((p.model, c.tf, exp))
        return resolved, experiences

    def _queue(self, model: str, tf: str, exp: Experience) -> None:
        with self._waiting_lock:
            waiting = self._waiting[model][tf]
            waiting.append(exp)
            limit = 20 * self.cfg.training.batch_size[tf]
            if len(waiting) > limit:  # training cannot keep up: keep the newest
                self.dropped_experiences[model] += len(waiting) - limit
                del waiting[:-limit]

    def _predict(self, c: _Close) -> list[NewPrediction]:
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

    def _predicted(self, rows: list[NewPrediction], ids: list[int]) -> None:
        """Once stored: each model's last prediction and count, the votes the signal fuses."""
        for pid, row in zip(ids, rows):
            self.learners[row.model].note_prediction({
                "id": pid, "symbol": row.symbol, "timeframe": row.timeframe,
                "action": row.action, "confidence": row.confidence,
                "created_ts": row.created_ts, "target_ts": row.target_ts})
            if row.action in ("BUY", "SELL", "HOLD"):
                self._votes[row.symbol][(row.model, row.timeframe)] = Vote(
                    row.model, row.timeframe, row.action, row.confidence, pid)
        if rows:
            self.prediction_rate.add(len(rows))

    def flush_job(self) -> int:
        """Write what the store recorded since the last flush (see core/predictions.py)."""
        return self.store.flush()

    def train_due(self) -> int:
        """One training step for every (model, timeframe) with a full batch waiting."""
        with self._training_job:
            return self.train_batches(self.take_due())

    def take_due(self) -> list[tuple[str, str, list[Experience]]]:
        """Take every full batch waiting, as (model, timeframe, experiences); none unless
        active. Taking and training are separate so the evaluator can take batches at fixed
        market times and train them on another thread."""
        if not self.active:
            return []
        due = []
        with self._waiting_lock:
            for name in self.learners:
                for tf in self.timeframes:
                    size = self.cfg.training.batch_size[tf]
                    waiting = self._waiting[name][tf]
                    if len(waiting) >= size:
                        due.append((name, tf, waiting[:size]))
                        del waiting[:size]
        return due

    def train_batches(self, due: list[tuple[str, str, list[Experience]]]) -> int:
        """One training step per batch from :meth:`take_due`; checkpoints every N steps."""
        steps = 0
        for name, _tf, batch in due:
            learner = self.learners[name]
            if learner.learn(batch) is not None:
                steps += 1
                self.batch_rate.add()
            if learner.train_steps - self._last_checkpoint_step[name] >= \
                    self.cfg.training.checkpoint_every:
                self.save_checkpoint(name)
        return steps

    def signal_job(self) -> None:
        if not self.active:
            return
        now = self.market.clock.now_ms()
        weights = dict(self.cfg.signal.timeframe_weights)
        scores = {}
        for symbol in self.market.store.symbols:
            votes = list(self._votes[symbol].values())
            scores[symbol] = fuse(votes, weights)[0] if votes else None
        ref = self.builder.reference
        ref_returns = self._returns(ref)
        for symbol in self.market.store.symbols:
            if scores[symbol] is None:
                continue
            corr = None if symbol == ref else correlation(self._returns(symbol), ref_returns)
            signal = make_signal(symbol, now, scores[symbol],
                                 None if symbol == ref else scores.get(ref), corr,
                                 self.cfg.signal.confidence_threshold,
                                 len(self._votes[symbol]))
            self.signals[symbol] = signal
            price = self.market.store.last_price(symbol)
            trade = self.paper.act(signal, price) if price else None
            if trade is not None:
                ids = [v.prediction_id for v in self._votes[symbol].values()
                       if v.prediction_id is not None and v.action == signal.action]
                self.store.mark_executed(ids)
        self.last_signal_ms = now

    def _returns(self, symbol: str) -> np.ndarray:
        closes = self.market.store.closed(symbol, "1m" if "1m" in self.tf_ms else
                                          self.market.store.timeframes[0], 61)[:, 4]
        return np.diff(np.log(closes)) if len(closes) > 2 else np.empty(0)

    def expire_job(self) -> int:
        now = self.market.clock.now_ms()
        cutoff = now - int(self.cfg.scheduler.prediction_expiry_s * 1000)
        return self.store.expire_closed_before(cutoff, now)

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, name: str) -> None:
        learner = self.learners[name]
        with learner.lock:
            state = learner.state_dict()
        self.checkpoints.save(name, state, learner.train_steps)
        self._last_checkpoint_step[name] = learner.train_steps

    def save_checkpoints(self) -> None:
        for name in self.learners:
            self.save_checkpoint(name)

    def load_checkpoints(self) -> dict[str, str]:
        loaded = {}
        for name, learner in self.learners.items():
            found = self.checkpoints.load_latest(name)
            if found is None:
                continue
            path, state = found
            try:
                learner.load_state_dict(state)
            except (ValueError, KeyError, RuntimeError) as exc:
                # Another architecture or layout (an older version, a changed config): the
                # model starts from fresh weights; the file stays until newer ones replace it.
                log.warning("checkpoint %s does not fit the %s model (%s); starting it from "
                            "fresh weights", path, name, exc)
                continue
            self._last_checkpoint_step[name] = learner.train_steps
            loaded[name] = str(path)
        return loaded

    # -- status -------------------------------------------------------------------------

    QUALITY_ROWS = 1000  # resolved predictions per model behind the cards' scores
    QUALITY_MAX_AGE_S = 5.0
    ROLLING_WINDOW = 60  # predictions per point of the cards' rolling-skill sparkline

    def model_quality(self, resolved: int = 0) -> dict[str, dict]:
        """Per model, over its last QUALITY_ROWS resolved predictions: every measure of
        core/scoring.py it is judged by (``Learner.scores``), per symbol and timeframe, each
        with its baseline on the same rows and a 95 % block-bootstrap interval; the headline
        verdict; the headline measure rolling; calibration. It bootstraps (~60 ms a model), so
        it is recomputed every QUALITY_MAX_AGE_S, or sooner once the number of resolved
        predictions (``resolved``) has doubled: a few times in the first minute after Start
        (recomputing whenever 10 % more had resolved took ~40 % of a core then, away from the
        replay and the jobs)."""
        now = time.monotonic()
        cached = self._quality_cache
        if cached is not None and now - cached[0] < self.QUALITY_MAX_AGE_S \
                and resolved < 2 * cached[2]:
            return cached[1]
        quality = {}
        for name, learner in self.learners.items():
            rows = pd.DataFrame(self.store.recent(limit=self.QUALITY_ROWS, model=name,
                                                  status="resolved"))
            quality[name] = _quality(name, rows, learner.scores, self.cfg.signal.fee_rate,
                                     self.cfg.replay.seed, self.ROLLING_WINDOW)
        self._quality_cache = (now, quality, max(1, resolved))
        return quality

    STATUS_MAX_STALE_S = 2.0  # an older copy is recomputed on the request, not in the background

    def cached_status(self, max_age_s: float = 0.5) -> dict:
        """The published status (REST and the page read this), at most max_age_s old plus
        one refresh. A stale copy is refreshed on a background thread while callers keep
        getting the current one, so no request waits for the store's aggregate queries or
        the models' baseline comparison (hundreds of ms with many predictions stored), and
        twenty clients arriving together start one refresh, not twenty."""
        cached = self._status_cache
        if cached is None or time.monotonic() - cached[0] > self.STATUS_MAX_STALE_S:
            # Nothing published yet (start, stop), or nobody asked for a while: compute it
            # here, once; callers arriving meanwhile wait for that one computation.
            with self._status_lock:
                cached = self._status_cache
                if cached is None or time.monotonic() - cached[0] > self.STATUS_MAX_STALE_S:
                    cached = self._status_cache = (time.monotonic(), self.status())
                return cached[1]
        if time.monotonic() - cached[0] > max_age_s and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_status, name="status-refresh",
                             daemon=True).start()
        return cached[1]

    def invalidate_status(self) -> None:
        """The next status read recomputes (after start/stop, or when a caller must see the
        jobs' latest effects)."""
        self._status_cache = None

    def _refresh_status(self) -> None:
        try:
            self._status_cache = (time.monotonic(), self.status())
        except Exception:  # keep serving the last good copy; say why
            log.exception("status refresh failed")
        finally:
            self._refreshing.release()

    def status(self) -> dict:
        accuracy = self.store.accuracy()
        counts = self.store.counts()
        quality = self.model_quality(sum(c.get("resolved", 0) for c in counts.values()))
        roles = self.market.timeframe_roles()
        models = {}
        for name, learner in self.learners.items():
            s = learner.status()
            acc = {tf: v for (m, tf), v in accuracy.items() if m == name}
            models[name] = {
                **s,
                "active": self.active,
                "state": "ACTIVE" if self.active else ("IDLE" if s["train_steps"] else "UNTRAINED"),
                "checkpoint": self.checkpoints.latest_info(name),
                "accuracy": acc,
                "quality": quality.get(name),
                # per timeframe: "trained and scored" or "not scored: interpolated"
                "timeframes": {tf: role["label"] for tf, role in roles.items()},
            }
        prices = {s: p for s in self.market.store.symbols
                  if (p := self.market.store.last_price(s)) is not None}
        return {
            "active": self.active,
            "started_at": self.started_at_ms,
            # per timeframe: "trained and scored", or "not scored" and why (interpolated)
            "timeframes": roles,
            "market_time_ms": self.market.clock.now_ms(),
            "clock_speed": self.market.clock.speed,
            "source": {**self.market.source.describe(),
                       "lag_ms": self.market.source.lag_ms(self.market.clock.now_ms()),
                       "rejected": self.market.feed.rejected_by_reason()},
            "predictions_per_second": round(self.prediction_rate.per_second(), 3),
            "training_batches_per_minute": round(self.batch_rate.per_second() * 60, 2),
            "signal_generation": {
                "state": "ACTIVE" if self.active and self.last_signal_ms is not None
                and self.market.clock.now_ms() - self.last_signal_ms
                <= 3 * self.cfg.scheduler.signal_interval_s * 1000 else "INACTIVE",
                "last_signal_ms": self.last_signal_ms,
                "signals": {s: sig.__dict__ for s, sig in self.signals.items()},
            },
            "paper": self.paper.snapshot(prices),
            "models": models,
            # whether any model calls the direction better than its baselines, in words
            "direction": verdicts.direction_summary(
                [g for q in quality.values() if q for g in q["groups"]]),
            "errors": {k: v.__dict__ for k, v in self.errors.items()},
            "prediction_counts": counts,
            "dropped_experiences": dict(self.dropped_experiences),
        }


def _quality(model: str, rows: pd.DataFrame, measures: tuple[str, ...], fee_rate: float,
             seed: int, window: int) -> dict | None:
    """One model's scores for the card and /status (JSON-safe); None before any resolved."""
    if rows.empty:
        return None
    table = scoring.score_table(rows, fee_rate=fee_rate, seed=seed)
    for row in table:  # the model's own measures only
        row["scores"] = {k: v for k, v in row["scores"].items() if k in measures}
    head = verdicts.headline(table, model, measures)
    rolling = None
    if head["metric"] is not None:
        group = rows[(rows["symbol"] == head["symbol"]) & (rows["timeframe"] == head["timeframe"])]
        curve = scoring.rolling(group, timeframe=head["timeframe"], fee_rate=fee_rate,
                                metric=head["metric"], window=window)
        rolling = {"metric": head["metric"], "symbol": head["symbol"],
                   "timeframe": head["timeframe"], "window": window,
                   "values": curve["value"].tolist()[-200:],
                   "baseline_values": curve["baseline_value"].tolist()[-200:]}
    conf = rows["confidence"].to_numpy(float)
    correct = rows["action_correct"].astype(bool).to_numpy()
    bins = evaluation.reliability(conf, correct, bins=5)
    return scoring.json_safe({
        "rows": len(rows),
        "headline": head,
        "groups": table,
        "rolling": rolling,
        "ece": evaluation.expected_calibration_error(conf, correct, bins=10),
        "reliability": [{"low": b[0], "high": b[1], "count": int(b[2]),
                         "accuracy": None if b[2] == 0 else float(b[4])} for b in bins],
    })
