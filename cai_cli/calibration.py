"""How well stated probabilities match outcomes, and intervals for shares and means. Pure
Python; used by `cai eval` (the summary it prints) and `cai report` (the figures).

A feedback model's answer to a comparison has a *confidence* (the probability of the answer it
prefers), a *score* (1 right, 0 wrong, 0.5 on a tie) and `p_correct`, the probability it gave
the right answer. A calibrated model is right 70% of the time when it is 70% sure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

CALIBRATION_BINS = 10
Z_95 = 1.959964
# Student's t, 97.5% quantile, for 1..30 degrees of freedom: a mean of a handful of scores
# needs a wider interval than the normal one.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else 0.0


def calibration(confidences: Sequence[float], scores: Sequence[float], p_correct: Sequence[float]) -> dict[str, Any]:
    """Confidence bins of width 0.1 (each with its mean confidence and accuracy), the expected
    calibration error (the bins' accuracy gaps weighted by size), the Brier score and the log loss
    of the probability given to the right answer."""
    bins: dict[int, list[int]] = {}
    for i, confidence in enumerate(confidences):
        bins.setdefault(min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1), []).append(i)
    rows, gap = [], 0.0
    for index in sorted(bins):
        group = bins[index]
        confidence, accuracy = mean(confidences[i] for i in group), mean(scores[i] for i in group)
        gap += len(group) * abs(confidence - accuracy)
        rows.append({"low": index / CALIBRATION_BINS, "high": (index + 1) / CALIBRATION_BINS,
                     "items": len(group), "confidence": confidence, "accuracy": accuracy})
    return {
        "ece": gap / len(confidences) if confidences else 0.0,
        "brier": mean((1.0 - p) ** 2 for p in p_correct),
        "log_loss": mean(-math.log(max(p, 1e-12)) for p in p_correct),
        "bins": rows,
    }


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a share `successes / n`: unlike the normal
    interval it stays inside [0, 1] and is not empty at 0 or n successes. A tie counted as half a
    success is allowed."""
    if n <= 0:
        return (math.nan, math.nan)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(share * (1 - share) / n + z * z / (4 * n * n), 0.0))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """The mean and its 95% Student-t interval (None for fewer than two values)."""
    n = len(values)
    centre = mean(values)
    if n < 2:
        return centre, None, None
    spread = math.sqrt(math.fsum((v - centre) ** 2 for v in values) / (n - 1))
    df = n - 1
    # Beyond the table, the first Cornish-Fisher term of t from the normal quantile.
    t = T_975[df - 1] if df <= len(T_975) else Z_95 + (Z_95 ** 3 + Z_95) / (4 * df)
    half = t * spread / math.sqrt(n)
    return centre, centre - half, centre + half


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded for a summary a person reads; the rest as it is."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
