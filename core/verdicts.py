"""Scores in words: each model's headline verdict and whether any model calls the direction.

core/scoring/ measures (every score with its baseline, interval and verdict per model,
symbol and timeframe); this module picks what a person reads first, the same way for the
model cards, ``/status`` and the evaluation report:

- ``headline``: the clearest skill after holding each forecast to the best naive forecast on
  its rows (beating persistence while tying the EWMA is no skill); without skill, the model's
  main measure (its ``Learner.scores`` order), e.g. "range forecast 1h BTC/USDT: skill +0.09
  [+0.08, +0.11] vs ewma: learning" or "...: no skill yet";
- ``direction_summary``: every IC or balanced accuracy with skill, or a plain sentence that no
  model has direction skill.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from core import scoring

HUMAN_NAMES = {
    "close_skill_persistence": "close forecast",
    "close_skill_ewma": "close forecast",
    "range_skill_persistence": "range forecast",
    "range_skill_ewma": "range forecast",
    "ic": "IC",
    "ic_close": "IC",
    "balanced_accuracy": "direction (balanced accuracy)",
    "precision": "precision",
    "coverage": "coverage",
    "brier_skill": "confidence (Brier skill)",
    "ece": "calibration (ECE)",
    "pnl": "paper P&L",
    "accuracy": "accuracy",
}

HEADLINE_VERDICTS = {
    "skill": "learning",
    "no skill yet": "no skill yet",
    "worse": "worse than baseline",
    "too few rows": "too few rows",
}


def _decimals(ci: list[float]) -> int:
    """Decimals that show an interval's width: 2, or more for a narrow one (at most 6)."""
    width = abs(ci[1] - ci[0]) if all(map(math.isfinite, ci)) else 0.0
    return 2 if width < 1e-6 else min(6, max(2, math.ceil(-math.log10(width))))


def _signed(x: float | None, decimals: int) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.{decimals}f}"


def _headline_text(row: dict, metric: str, s: scoring.Score, word: str) -> str:
    where = f"{HUMAN_NAMES[metric]} {row['timeframe']} {row['symbol']}"
    d = _decimals(s["diff_ci"])
    lo, hi = (_signed(x, d) for x in s["diff_ci"])
    if metric in scoring.RELATIVE:
        return f"{where}: skill {_signed(s['value'], d)} [{lo}, {hi}] vs {s['baseline']}: {word}"
    return (
        f"{where}: {_signed(s['value'], d)} vs {s['baseline']} {_signed(s['baseline_value'], d)},"
        f" diff {_signed(s['diff'], d)} [{lo}, {hi}]: {word}"
    )


def _strength(s: scoring.Score) -> tuple[float, float]:
    """How clearly a diff is above 0, scale-free (P&L is in USD, the rest are fractions): its
    lower bound in units of the interval's width (inf for a zero-width positive interval),
    then the lower bound itself."""
    lo, hi = s["diff_ci"]
    width = hi - lo
    key = lo / width if width > 0 else math.copysign(math.inf, lo) if lo else 0.0
    return key, lo


def headline(table: list[dict], model: str, priority: Sequence[str] = ()) -> dict:
    """The model's best result over its (symbol, timeframe) rows of ``scoring.score_table``.

    Among scores with verdict "skill", the clearest (highest lower diff bound, measured in
    units of its interval's width so that USD and fractions compare): verdict "learning". If
    none: "worse than baseline" when every score with a verdict is "worse", else "no skill
    yet", each showing the model's main measure (the first of ``priority``, the model's
    ``Learner.scores``, that has one; else the highest scaled lower bound); "too few rows" when
    no score has scoring.MIN_ROWS rows. A forecast's skill counts only against the best naive
    forecast on its rows. Keys: text, verdict, metric, symbol, timeframe, value, ci
    (of the value), baseline, diff, diff_ci.
    """
    found = [
        (row, name, s)
        for row in table
        if row["model"] == model
        for name, s in row["scores"].items()
        if s["verdict"] is not None
    ]
    found = _against_the_best_naive(found)
    judged = [item for item in found if item[2]["verdict"] != "too few rows"]
    if not judged:
        most = max((row["n"] for row in table if row["model"] == model), default=0)
        return {
            "text": f"{model}: too few rows ({most} resolved, a verdict needs {scoring.MIN_ROWS})",
            "verdict": "too few rows", "metric": None, "symbol": None, "timeframe": None,
            "value": None, "ci": None, "baseline": None, "diff": None, "diff_ci": None,
        }  # fmt: skip
    skilled = [item for item in judged if item[2]["verdict"] == "skill"]
    if skilled:
        pool, word = skilled, HEADLINE_VERDICTS["skill"]
    elif all(item[2]["verdict"] == "worse" for item in judged):
        pool, word = judged, HEADLINE_VERDICTS["worse"]
    else:
        pool = [item for item in judged if item[2]["verdict"] == "no skill yet"]
        word = HEADLINE_VERDICTS["no skill yet"]
    rank = {name: i for i, name in enumerate(priority)}
    if word == HEADLINE_VERDICTS["skill"] or not rank:
        row, metric, s = max(pool, key=lambda item: _strength(item[2]))
    else:  # the model's main measure, then the clearest
        first = min(rank.get(item[1], len(rank)) for item in pool)
        row, metric, s = max((item for item in pool if rank.get(item[1], len(rank)) == first),
                             key=lambda item: _strength(item[2]))
    return {
        "text": _headline_text(row, metric, s, word), "verdict": word, "metric": metric,
        "symbol": row["symbol"], "timeframe": row["timeframe"], "value": s["value"],
        "ci": s["ci"], "baseline": s["baseline"], "diff": s["diff"], "diff_ci": s["diff_ci"],
    }  # fmt: skip


DIRECTION_SCORES = ("ic", "ic_close", "balanced_accuracy")


def direction_summary(table: list[dict]) -> dict:
    """Whether any model calls the direction of the next move better than its naive
    baselines: every (model, symbol, timeframe, measure) among the IC and the balanced
    accuracy with verdict "skill", and a sentence that says it plainly either way."""
    found = [
        {"model": row["model"], "symbol": row["symbol"], "timeframe": row["timeframe"],
         "metric": name, "text": f"{row['model'].upper()} {_headline_text(row, name, s, 'skill')}"}
        for row in table
        for name, s in row["scores"].items()
        if name in DIRECTION_SCORES and s["verdict"] == "skill"
    ]
    if not found:
        text = ("No model has direction skill: no IC or balanced accuracy beats momentum, a "
                "constant or chance on a real timeframe.")
    else:
        text = (f"Direction skill: {'; '.join(f['text'] for f in found[:3])}"
                f"{f' (and {len(found) - 3} more)' if len(found) > 3 else ''}. Every other "
                f"model and timeframe: none.")
    return {"any": bool(found), "text": text, "found": found}


def _against_the_best_naive(found: list[tuple]) -> list[tuple]:
    """Of a forecast's skills against several naive forecasts (``range_skill_persistence``
    and ``range_skill_ewma`` of one symbol and timeframe), keep the one against the best
    naive forecast on those rows (the lowest skill): beating a weak baseline while losing to
    a strong one is no skill. Other scores pass unchanged."""
    lowest: dict[tuple, float] = {}
    for row, name, s in found:
        if "_skill_" in name:
            key = (row["symbol"], row["timeframe"], name.split("_skill_")[0])
            value = s["value"] if math.isfinite(s["value"]) else math.inf
            lowest[key] = min(lowest.get(key, math.inf), value)
    return [
        (row, name, s) for row, name, s in found
        if "_skill_" not in name
        or (s["value"] if math.isfinite(s["value"]) else math.inf)
        == lowest[(row["symbol"], row["timeframe"], name.split("_skill_")[0])]
    ]
