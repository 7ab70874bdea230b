"""Calibration of confidences: the reliability table and the expected calibration error.
Pure functions (numpy), no I/O."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.scoring import checks

# Slack when binning confidences: 0.57 * 100 is 56.99999999999999 in binary, and a confidence
# written as a bin edge belongs to the bin that starts there.
BIN_SLACK = 1e-9


def bin_index(confidences: np.ndarray, bins: int) -> np.ndarray:
    """Per confidence, its bin: [k/bins, (k+1)/bins), the last bin closed. int [n]."""
    return np.minimum(np.floor(confidences * bins + BIN_SLACK).astype(int), bins - 1)


def reliability(
    confidences: Any, correct: Any, bins: int = 10
) -> list[tuple[float, float, int, float, float]]:
    """Reliability table: (bin_low, bin_high, count, mean_confidence, accuracy) per bin.

    ``bins`` equal-width bins on [0, 1], each [low, high) except the last, [low, 1]. Every bin is
    listed, so a reliability diagram keeps its axis; an empty one has count 0 and NaN mean
    confidence and accuracy.
    """
    correct = checks.correct(correct)
    confidences = checks.confidences(confidences, len(correct))
    bins = checks.count("bins", bins)
    index = bin_index(confidences, bins)  # [n]
    table = []
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        mean_conf = float(confidences[members].mean()) if count else math.nan
        accuracy = float(correct[members].mean()) if count else math.nan
        table.append((k / bins, (k + 1) / bins, count, mean_conf, accuracy))
    return table


def expected_calibration_error(confidences: Any, correct: Any, bins: int = 10) -> float:
    """ECE = sum over non-empty bins of (count / N) * |accuracy - mean_confidence|.

    0 is perfectly calibrated; a model that says 0.9 and is right half the time scores 0.4.
    """
    table = reliability(confidences, correct, bins)
    total = sum(count for _, _, count, _, _ in table)
    return float(sum(count / total * abs(acc - conf) for _, _, count, conf, acc in table if count))
