"""Honest scores of resolved predictions, each against a baseline that costs nothing, with a
paired block-bootstrap interval and a verdict: the one scoring package behind the evaluation
report, the page and the REST status. Pure functions (numpy, pandas), no I/O, no torch.
Definitions are ``/work/shared/SCORING.md``'s.

From the rows up:

- :mod:`~core.scoring.rows`: one (model, symbol, timeframe)'s resolved rows, validated and
  sorted, with the causal indices (previous candle, candles closed so far);
- :mod:`~core.scoring.calls`: was each call right (with the HOLD band), rolling accuracy,
  one-candle paper P&L after fees;
- :mod:`~core.scoring.calibration`: reliability bins and the expected calibration error;
- :mod:`~core.scoring.baselines`: the naive calls and forecasts every score is compared with;
- :mod:`~core.scoring.sums` and :mod:`~core.scoring.measures`: every score as a function of
  column sums (the table of scores is in ``measures``);
- :mod:`~core.scoring.bootstrap`: the paired moving-block bootstrap, intervals and verdicts;
- :mod:`~core.scoring.table`: ``score_group``, ``score_table``, ``rolling`` and ``json_safe``,
  what callers use.

Their verdicts in words (a model's headline, whether any model calls the direction) are
core/verdicts.py's.
"""

from core.scoring.baselines import (
    BASELINE_CONFIDENCE,
    EWMA_SPAN,
    Baseline,
    always_hold,
    as_direction,
    causal_base_rate,
    causal_ewma,
    momentum,
)
from core.scoring.bootstrap import (
    HORIZON,
    LEVEL,
    MIN_ROWS,
    Score,
    block_length,
    draw_block_starts,
    group_rng,
    resample_sums,
    verdict,
)
from core.scoring.calibration import expected_calibration_error, reliability
from core.scoring.calls import PNL_SIZE_USD, correctness, paper_pnl, rolling_accuracy
from core.scoring.measures import ECE_BINS, RELATIVE, SCORE_NAMES
from core.scoring.rows import previous_index
from core.scoring.table import json_safe, rolling, score_group, score_table

__all__ = [
    "BASELINE_CONFIDENCE", "ECE_BINS", "EWMA_SPAN", "HORIZON", "LEVEL", "MIN_ROWS",
    "PNL_SIZE_USD", "RELATIVE", "SCORE_NAMES", "Baseline", "Score", "always_hold",
    "as_direction", "block_length", "causal_base_rate", "causal_ewma", "correctness",
    "draw_block_starts", "expected_calibration_error", "group_rng", "json_safe", "momentum",
    "paper_pnl", "previous_index", "reliability", "resample_sums", "rolling",
    "rolling_accuracy", "score_group", "score_table", "verdict",
]  # fmt: skip
