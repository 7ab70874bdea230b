"""Champion and challenger: a shadow copy of a model, with other hyperparameters, that predicts
and trains on the same candles as the model (its champion) and replaces it once it is better.

- ``start(model, body)``: the body's keys are overrides of the model's own config dataclass
  (``models.<model>`` in config.yaml; checked as config.yaml is, by core/config_load.py), plus
  ``"from": "fresh" | "champion"`` (fresh weights, or a copy of the champion's weights,
  optimiser and counters). The challenger is a second instance of the model's class, a learner
  named ``<model>~challenger`` among the live learners: the cycle encodes, predicts, resolves
  and trains it like any model, the store keeps and scores its predictions under that name.
  It never trades (the signal desk skips it, core/live/signals.py), never offers to other
  models (the cycle's offers are the champion's) and is never checkpointed (a restart drops
  it). One challenger per model; starting another replaces it.
- ``compare(model)``: the paired rule (core/scoring/paired.py) on the predictions both made
  for the same candles since the challenger started (out of sample), rolling: the newest
  max(1000, 2 x ``training.promote_min_resolved``) pairs.
- ``promote(model)``: only when promotable (the rule holds over at least
  ``training.promote_min_resolved`` pairs). The champion is checkpointed first (a rollback
  to that step undoes the promotion), the challenger's learner takes the model's name (its
  weights, optimiser, replay and hyperparameters; its step counter continues the champion's:
  champion's steps + the steps the challenger trained), the slot is cleared and the promotion
  recorded (``<runtime_dir>/promotions.json``: the cards show it after a restart).
  ``check()`` (after each cycle) promotes by itself when ``training.auto_promote``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.config_load import ConfigError, build
from core.live.models import MB, estimate_memory
from core.scoring.paired import Paired, compare, measure_for, pair_rows
from nn.base import Learner

if TYPE_CHECKING:
    from core.live.service import LiveTraining

log = logging.getLogger(__name__)

SUFFIX = "~challenger"
ORIGINS = ("fresh", "champion")
FIXED = frozenset({"enabled"})  # config keys that are not a challenger's to change
HISTORY_FILE = "promotions.json"  # in runtime_dir: every promotion, kept across restarts


ROLLING_MIN = 1000  # the comparison's window: the newest max(this, 2 x min_resolved) pairs


def rolling_window(min_resolved: int) -> int:
    return max(ROLLING_MIN, 2 * min_resolved)


def challenger_name(model: str) -> str:
    return model + SUFFIX


def is_challenger(name: str) -> bool:
    """A challenger's predictions are scored like any model's but never trade."""
    return name.endswith(SUFFIX)


class ChallengeError(ValueError):
    """A request the challenger API refuses: ``status`` 400 (bad body, not promotable) or 404
    (no such model)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_overrides(model: str, section: object, body: object) -> tuple[dict, str]:
    """(the overrides, coerced to the config's types, and where the challenger starts from).
    Every bad key or value is named in one ChallengeError (400)."""
    if not isinstance(body, dict):
        raise ChallengeError(f"the body must be a JSON object of models.{model} keys (and "
                             f"\"from\"), got {type(body).__name__}")
    body = dict(body)
    origin = body.pop("from", "fresh")
    cls = type(section)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in FIXED]
    errors, values = [], {}
    if origin not in ORIGINS:
        errors.append(f"from: {origin!r} is not allowed; use one of: {', '.join(ORIGINS)}")
    for key, value in body.items():
        if key not in allowed:
            errors.append(f"models.{model}.{key}: unknown key; allowed: {', '.join(allowed)}")
            continue
        try:
            values[key] = getattr(build(cls, {key: value}, f"models.{model}"), key)
        except ConfigError as exc:
            errors.append(f"{exc.key}: " + str(exc).removeprefix(f"config key '{exc.key}': "))
    if errors:
        raise ChallengeError("; ".join(errors))
    return values, origin


@dataclass
class Slot:
    """A model's running challenger."""

    model: str
    name: str  # its learner's (and its predictions') name
    learner: Learner
    overrides: dict
    origin: str  # "fresh" or "champion"
    started_ms: int  # market time: only predictions made from then on are compared
    started_step: int  # its train_steps at start (the champion's, from the champion)
    cached: tuple[int, Paired] | None = None  # (resolved count it was computed at, result)

    def describe(self) -> dict:
        return {"name": self.name, "overrides": self.overrides, "from": self.origin,
                "started_ms": self.started_ms, "train_steps": self.learner.train_steps,
                "trained_steps": self.learner.train_steps - self.started_step}


@dataclass
class Challengers:
    live: LiveTraining
    slots: dict[str, Slot] = field(default_factory=dict)
    history: dict[str, list[dict]] = field(default_factory=dict)  # model -> its promotions
    # Called with {"type": "promotion", **record} for each promotion: the event stream
    # subscribes here (core/live/service.py, core/live/events.py).
    listeners: list[Callable[[dict], object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """The promotions of earlier runs, from ``<runtime_dir>/promotions.json``."""
        self.path = self.live.cfg.runtime_path / HISTORY_FILE
        try:
            if self.path.exists():
                self.history = {str(k): list(v) for k, v in
                                json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:  # unreadable: start a new one
            log.warning("%s unreadable (%s); the promotion history starts empty",
                        self.path.name, exc)

    def _save_history(self) -> None:
        """Written whole, atomically (a temporary file renamed over it)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.history, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            log.exception("could not write %s; the promotion is kept in memory", self.path)

    # -- REST ---------------------------------------------------------------------------------

    def champion(self, model: str) -> Learner:
        learner = self.live.learners.get(model)
        if learner is None or is_challenger(model):
            champions = [n for n in self.live.learners if not is_challenger(n)]
            raise ChallengeError(f"no model named {model!r}; models: {', '.join(champions)}",
                                 404)
        return learner

    def start(self, model: str, body: object, now_ms: int | None = None) -> dict:
        """Start (or replace) ``model``'s challenger; returns its card entry."""
        champion = self.champion(model)
        # Overrides of the settings the champion runs with (a promoted one's own).
        section = getattr(champion, "cfg", None) or getattr(self.live.cfg.models, model)
        overrides, origin = check_overrides(model, section, body)
        cfg = dataclasses.replace(section, **overrides)
        learner = self._build(model, champion, cfg, origin)
        now = self.live.market.clock.now_ms() if now_ms is None else now_ms
        name = challenger_name(model)
        with self.quiet():
            if model in self.slots:
                self.live.learning.remove_learner(name)
            self.live.learning.add_learner(name, learner, saved=False)
            self.live.cycle.challenger_errors.pop(name, None)
            self.slots[model] = Slot(model, name, learner, overrides, origin, now,
                                     learner.train_steps)
        self.live.read.invalidate()
        log.info("challenger of %s started (%s, %s)", model, origin, overrides)
        return self.card(model)

    def _build(self, model: str, champion: Learner, cfg: object, origin: str) -> Learner:
        """The challenger's learner: the champion's class with ``cfg``, fresh or with the
        champion's state; refused (400) when it cannot run or does not fit in memory."""
        live = self.live
        try:
            learner = type(champion)(cfg, live.timeframes, device=champion.device)
            need = estimate_memory(learner, live.cfg, getattr(cfg, "buffer_size", 0),
                                   live.timeframes).total
        except Exception as exc:  # a shape the observation cannot feed, say
            raise ChallengeError(f"models.{model}: a challenger with these values cannot run "
                                 f"({str(exc)[:200]})") from None
        limit, total = live.cfg.models.max_model_mb, live.cfg.models.max_total_mb
        if need > limit * MB:
            raise ChallengeError(f"models.{model}: the challenger needs {need / MB:.0f} MB, over "
                                 f"models.max_model_mb = {limit}")
        held = sum(lrn.memory_bytes() for name, lrn in list(live.learners.items())
                   if name != challenger_name(model))  # a replaced challenger frees its own
        if held + need > total * MB:
            raise ChallengeError(f"models.{model}: the challenger needs {need / MB:.0f} MB, and "
                                 f"the models hold {held / MB:.0f} MB: over "
                                 f"models.max_total_mb = {total}")
        if origin == "champion":
            # Where it trains (core/live/backends.py): a Ray actor's, not the local copy's.
            state = copy.deepcopy(live.learning.state_dict(model))
            try:
                learner.load_state_dict(state)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ChallengeError(f"models.{model}: the champion's weights do not fit a "
                                     f"network with these values ({str(exc)[:160]}); start "
                                     "from \"fresh\"") from None
        learner.auto_publish = champion.auto_publish
        learner.publish()
        # Its card and chart markers say what it is (the class's own look once promoted).
        learner.look = dataclasses.replace(champion.look, title=f"{champion.look.title} · "
                                                                "challenger")
        return learner

    def stop(self, model: str) -> None:
        """Drop ``model``'s challenger (its stored predictions stay)."""
        self.champion(model)
        with self.quiet():
            slot = self.slots.pop(model, None)
            if slot is not None:
                self.live.learning.remove_learner(slot.name)
        self.live.read.invalidate()

    # -- the rule -------------------------------------------------------------------------------

    def compare(self, model: str, fresh: bool = False) -> Paired:
        """The paired comparison over the newest ``rolling_window`` pairs since the challenger
        started. Recomputed (unless ``fresh``) once 5 % more of the challenger's predictions
        have resolved (each one while there are fewer than 20): a bootstrap of thousands of
        pairs is not repeated every second on a 1s stream."""
        slot = self.slots.get(model)
        if slot is None:
            raise ChallengeError(f"model {model!r} has no challenger; start one with POST "
                                 f"/api/models/{model}/challenger")
        store, training = self.live.store, self.live.cfg.training
        resolved = store.counts().get(slot.name, {}).get("resolved", 0)
        if not fresh and slot.cached is not None and \
                resolved - slot.cached[0] < max(1, slot.cached[0] // 20):
            return slot.cached[1]
        rows = store.resolved_frame(after_created_ts=slot.started_ms - 1)
        champ = chal = []
        if len(rows):
            champ, chal = pair_rows(rows[rows["model"] == model],
                                    rows[rows["model"] == slot.name],
                                    measure_for(slot.learner.scores))
            window = rolling_window(training.promote_min_resolved)
            champ, chal = champ[-window:], chal[-window:]
        result = compare(champ, chal, training.promote_min_resolved, seed=self.live.cfg.replay.seed)
        slot.cached = (resolved, result)
        return result

    def check(self) -> list[dict]:
        """After each cycle: with ``training.auto_promote`` on, every promotable challenger
        promoted. Returns the promotions made."""
        if not self.live.cfg.training.auto_promote:
            return []
        done = []
        for model in list(self.slots):
            if self.compare(model).promotable:
                try:
                    done.append(self.promote(model, automatic=True))
                except ChallengeError as exc:  # not trained yet, a full disk: the next cycle
                    log.info("challenger of %s not promoted yet: %s", model, exc)
        return done

    # -- promotion ----------------------------------------------------------------------------

    def promote(self, model: str, automatic: bool = False) -> dict:
        """The challenger becomes ``model`` (see the module's doc); 400 with the reason when it
        is not promotable."""
        self.champion(model)
        result = self.compare(model, fresh=True)
        if not result.promotable:
            raise ChallengeError(f"the challenger of {model} is not promotable: {result.reason}")
        live = self.live
        with self.quiet():
            slot = self.slots[model]
            trained = slot.learner.train_steps - slot.started_step
            if trained < 1:
                raise ChallengeError(f"the challenger of {model} has not trained a step yet")
            champion = live.learners[model]
            try:
                live.learning.save_checkpoint(model)  # a rollback to this step undoes it
            except OSError as exc:
                raise ChallengeError(f"the champion {model} could not be checkpointed first "
                                     f"({exc}); nothing changed", 503) from None
            step = champion.train_steps
            self._take_over(model, slot, step + trained)
        record = {"model": model, "market_ms": live.market.clock.now_ms(),
                  "champion_step": step, "step": step + trained, "automatic": automatic,
                  "overrides": slot.overrides, "from": slot.origin,
                  "started_ms": slot.started_ms, "skill": result.to_json()}
        self.history.setdefault(model, []).append(record)
        self._save_history()
        live.read.invalidate()
        log.info("challenger of %s promoted at step %d (%s)", model, step, result.reason)
        self.publish(record)
        return record

    def _take_over(self, model: str, slot: Slot, step: int) -> None:
        """Under ``quiet``: the challenger's learner becomes ``model`` at ``step``."""
        learning, learner = self.live.learning, slot.learner
        learner.__dict__.pop("look", None)  # the model's own title again
        with learner.lock:
            offset = step - learner.train_steps
            learner.train_steps += offset
            learner.published_steps += offset
        waiting = learning.remove_learner(slot.name)
        learning.add_learner(model, learner, waiting)  # the same key: the run order is kept
        del self.slots[model]
        try:  # a restart resumes the promoted model (else the next train job writes it)
            learning.save_checkpoint(model)
        except OSError:
            log.exception("checkpoint of the promoted %s failed; its next checkpoint keeps it",
                          model)

    def publish(self, record: dict) -> None:
        """Tell the listeners (the event stream) of a promotion; one failing never stops it."""
        for listener in list(self.listeners):
            try:
                listener({"type": "promotion", **record})
            except Exception:  # a listener's fault, not the promotion's
                log.exception("promotion listener failed")

    @contextmanager
    def quiet(self):
        """No cycle and no training step runs inside (the live loop's own locks, in its
        order): learners join and leave between them."""
        with self.live._cycle_lock, self.live._training_job:
            yield

    # -- the card -----------------------------------------------------------------------------

    def card(self, name: str) -> dict:
        """What a model's card and /status show: its role, its challenger (with the paired
        comparison) and its promotions."""
        if is_challenger(name):
            model = name.removesuffix(SUFFIX)
            return {"role": "challenger", "challenger": self._challenger(model),
                    "promotions": []}
        return {"role": "champion", "challenger": self._challenger(name),
                "promotions": list(self.history.get(name, []))}

    def _challenger(self, model: str) -> dict | None:
        slot = self.slots.get(model)
        if slot is None:
            return None
        try:
            skill = self.compare(model).to_json()
        except Exception as exc:  # the card shows why, the rest of the status goes on
            log.exception("comparing the challenger of %s failed", model)
            skill = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        return {**slot.describe(), "skill": skill, "measure": measure_for(slot.learner.scores),
                "last_error": self.live.cycle.challenger_errors.get(slot.name),
                "min_resolved": self.live.cfg.training.promote_min_resolved,
                "auto_promote": self.live.cfg.training.auto_promote}
