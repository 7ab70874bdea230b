"""Each model's scores on the page and in /status: over its last QUALITY_ROWS resolved
predictions, every measure of core/scoring it is judged by (``Learner.scores``), per symbol
and timeframe, each with its baseline on the same rows and a 95 % block-bootstrap interval;
the headline verdict; the headline measure rolling; calibration."""

from __future__ import annotations

import time

import pandas as pd

from core import scoring, verdicts
from core.config import Config
from core.predictions import PredictionStore, StoreUnavailable
from nn.base import Learner

QUALITY_ROWS = 1000  # resolved predictions per model behind the cards' scores
QUALITY_MAX_AGE_S = 5.0
ROLLING_WINDOW = 60  # predictions per point of the cards' rolling-skill sparkline


class QualityCache:
    """The scores bootstrap (~60 ms a model), so a model's are recomputed every
    QUALITY_MAX_AGE_S, or sooner once the number of resolved predictions has doubled: a few
    times in the first minute after Start (recomputing whenever 10 % more had resolved took
    ~40 % of a core then, away from the replay and the jobs). One model per call once each
    has scores (the stalest; those without any yet, all at once), so a refresh of the status holds a core for one bootstrap, not
    all of them: the REST requests served meanwhile wait less (bench/store_load.py)."""

    def __init__(self, store: PredictionStore, learners: dict[str, Learner], cfg: Config):
        self.store = store
        self.learners = learners
        self.fee_rate = cfg.signal.fee_rate
        self.seed = cfg.replay.seed
        self._cached: dict[str, tuple[float, dict | None, int]] = {}  # name -> (at, q, resolved)

    def get(self, resolved: int = 0) -> dict[str, dict | None]:
        now = time.monotonic()
        cached = dict(self._cached)
        missing = [name for name in self.learners  # no scores yet: all at once
                   if cached.get(name, (0, None))[1] is None
                   and (name not in cached or resolved > cached[name][2])]
        stale = sorted((at, name) for name, (at, _, seen) in cached.items()
                       if name in self.learners
                       and (now - at >= QUALITY_MAX_AGE_S or resolved >= 2 * seen))
        for name in missing or [name for _, name in stale[:1]]:
            try:
                rows = pd.DataFrame(self.store.recent(limit=QUALITY_ROWS, model=name,
                                                      status="resolved", own=True))
            except StoreUnavailable:  # the database is DOWN (the status says so): keep the
                break  # scores computed before it went, try again at the next refresh
            quality = model_quality(name, rows, self.learners[name].scores, self.fee_rate,
                                    self.seed, ROLLING_WINDOW)
            cached[name] = (now, quality, max(1, resolved))
        self._cached = cached
        return {name: cached[name][1] for name in self.learners}


def model_quality(model: str, rows: pd.DataFrame, measures: tuple[str, ...], fee_rate: float,
                  seed: int, window: int) -> dict | None:
    """One model's scores for the card and /status (JSON-safe); None before any resolved."""
    if rows.empty:
        return None
    table = scoring.score_table(rows, fee_rate=fee_rate, seed=seed)
    for row in table:  # the model's own measures only
        row["scores"] = {k: v for k, v in row["scores"].items() if k in measures}
    head = verdicts.headline(table, model, measures)
    conf = rows["confidence"].to_numpy(float)
    correct = rows["action_correct"].astype(bool).to_numpy()
    bins = scoring.reliability(conf, correct, bins=5)
    return scoring.json_safe({
        "rows": len(rows),
        "headline": head,
        "groups": table,
        "rolling": _rolling(rows, head, fee_rate, window),
        "ece": scoring.expected_calibration_error(conf, correct, bins=10),
        "reliability": [{"low": b[0], "high": b[1], "count": int(b[2]),
                         "accuracy": None if b[2] == 0 else float(b[4])} for b in bins],
    })


def _rolling(rows: pd.DataFrame, head: dict, fee_rate: float, window: int) -> dict | None:
    """The headline measure rolling over ``window`` predictions, beside its baseline."""
    if head["metric"] is None:
        return None
    group = rows[(rows["symbol"] == head["symbol"]) & (rows["timeframe"] == head["timeframe"])]
    curve = scoring.rolling(group, timeframe=head["timeframe"], fee_rate=fee_rate,
                            metric=head["metric"], window=window)
    return {"metric": head["metric"], "symbol": head["symbol"],
            "timeframe": head["timeframe"], "window": window,
            "values": curve["value"].tolist()[-200:],
            "baseline_values": curve["baseline_value"].tolist()[-200:]}
