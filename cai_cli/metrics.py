"""How good a judge is, in numbers: accuracy with its interval, position bias and calibration;
intervals for shares and means; paired tests of two models on the same prompts.

Pure arithmetic, no model and no records to parse: `cai eval` summarises scored items
(`EvalOutcome`) with it, and `cai report` draws its figures from the same pieces
(`wilson_interval`, `mean_interval`, `calibration`, `mean`, `rounded`).

Two models answering the same prompts are compared *paired*, prompt by prompt: separate
intervals per model are not a test of their difference. A yes/no measure (refuses or not) gets
McNemar's exact test on the prompts where the two disagree (`mcnemar_exact`, `paired_rates`); a
number per prompt (answer length, the judge's preference) gets a bootstrap over prompts of the
mean difference (`paired_bootstrap`).

A judge's answer to a comparison has a *confidence* (the probability of the answer it prefers),
a *score* (1 right, 0 wrong, 0.5 on a tie) and `p_correct`, the probability it gave the right
answer. A calibrated judge is right 70% of the time when it is 70% sure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CALIBRATION_BINS = 10
# Two-sided 95%: the normal quantile the intervals use.
Z_95 = 1.959964
# Student's t, 97.5% quantile, for 1..30 degrees of freedom: a mean of a handful of values
# needs a wider interval than the normal one.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


@dataclass
class EvalOutcome:
    """How the feedback model did on one labeled item."""

    record: dict[str, Any]
    p_correct: float  # probability given to the right answer (clamped like a label)
    confidence: float  # probability of the answer the model prefers
    score: float  # 1 right, 0 wrong, a share when it is a tie
    winners: list[str]  # the letter that won each question ('' on a tie)
    p_first: list[float]  # each question's probability of its first option, (A)
    right_letters: list[str]  # each question: the letter the right answer was shown as ('' if several)
    question_scores: list[float]  # each question on its own: right, wrong or tie
    options_unparsed: bool = False  # paper's format: options not found in the prompt, asked as written only


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default): unlike the normal
    approximation it stays inside [0, 1] and is honest for the small samples a hand-labeled set
    gives (32 pairs: 75% is 58-87%). A tie scored 0.5 counts as half a success."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    if p <= 0.0:  # exact ends: rounding would put the edge a hair on the wrong side of 0% or 100%
        return 0.0, (z * z / trials) / (1 + z * z / trials)
    if p >= 1.0:
        return 1 / (1 + z * z / trials), 1.0
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(outcomes: list[EvalOutcome]) -> dict[str, Any]:
    """Accuracy (with its 95% interval), position bias and calibration over scored items, as
    JSON-ready data."""
    if not outcomes:
        return {"items": 0}
    questions = [(letter, p, s) for o in outcomes
                 for letter, p, s in zip(o.right_letters, o.p_first, o.question_scores)]
    winners = [w for o in outcomes for w in o.winners]
    letters = sorted({w for w in winners if w} | {letter for letter, _, _ in questions if letter})
    accuracy = mean(o.score for o in outcomes)
    summary: dict[str, Any] = {
        "items": len(outcomes),
        "questions": len(questions),
        "accuracy": accuracy,
        "accuracy_interval": list(wilson_interval(accuracy * len(outcomes), len(outcomes))),
        # Position bias: a model without it wins under each letter about as often as the right
        # answer is shown under it (half and half with --swap), and is as accurate under each.
        "letter_wins": {letter: mean(w == letter for w in winners) for letter in letters},
        "accuracy_by_right_letter": {letter: mean(s for right, _, s in questions if right == letter)
                                     for letter in letters if any(right == letter for right, _, _ in questions)},
        "mean_p_first": mean(p for _, p, _ in questions),
        "options_unparsed": sum(o.options_unparsed for o in outcomes),
        "calibration": calibration([o.confidence for o in outcomes], [o.score for o in outcomes],
                                   [o.p_correct for o in outcomes]),
    }
    if ties := mean(w == "" for w in winners):
        summary["letter_wins"]["tie"] = ties
    kinds = sorted({str(o.record["kind"]) for o in outcomes if "kind" in o.record})
    if kinds:
        groups = {kind: [o for o in outcomes if str(o.record.get("kind")) == kind] for kind in kinds}
        summary["by_kind"] = {kind: {"items": len(group), "accuracy": mean(o.score for o in group)}
                              for kind, group in groups.items()}
    return rounded(summary)


def calibration(confidences: Sequence[float], scores: Sequence[float], p_correct: Sequence[float]) -> dict[str, Any]:
    """How well confidence matches accuracy: confidence bins of width 0.1 (each with its mean
    confidence and accuracy), the expected calibration error (the bins' accuracy gaps weighted by
    size), the Brier score and the log loss of the probability given to the right answer."""
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


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else 0.0


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded for a summary a person reads; the rest as it is."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def percentile_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap estimates: the percentile method."""
    ordered = sorted(values)
    if not ordered:
        return (math.nan, math.nan)
    low = ordered[int(math.floor((1 - confidence) / 2 * (len(ordered) - 1)))]
    high = ordered[int(math.ceil((1 + confidence) / 2 * (len(ordered) - 1)))]
    return (low, high)


def mcnemar_exact(first_only: int, second_only: int) -> float:
    """McNemar's exact test: the two-sided p-value that two paired yes/no measures have the same
    rate, from the discordant prompts alone (`first_only`: yes for the first model only,
    `second_only`: for the second only). Under the null each discordant prompt is a fair coin,
    so p = min(1, 2 P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); 1 when none disagree.
    5 vs 1 gives 0.22: six changed prompts cannot show a change."""
    if first_only < 0 or second_only < 0:
        raise ValueError("discordant counts cannot be negative")
    discordant = first_only + second_only
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    # At p = 1/2 the distribution is symmetric: scipy's two-sided p is exactly the doubled tail.
    return min(1.0, float(binomtest(min(first_only, second_only), discordant, 0.5).pvalue))


def paired_rates(first: dict[str, bool], second: dict[str, bool]) -> dict[str, Any]:
    """Two models' yes/no measure (refuses, say) on the prompts both were measured on (keyed by
    prompt id): how many prompts, the four paired counts, each model's rate and McNemar's exact
    p-value for the difference."""
    shared = [key for key in first if key in second]
    both = sum(first[k] and second[k] for k in shared)
    first_only = sum(first[k] and not second[k] for k in shared)
    second_only = sum(second[k] and not first[k] for k in shared)
    n = len(shared)
    return {"n": n, "both": both, "first_only": first_only, "second_only": second_only,
            "neither": n - both - first_only - second_only,
            "rate_a": (both + first_only) / n if n else math.nan,
            "rate_b": (both + second_only) / n if n else math.nan,
            "p": mcnemar_exact(first_only, second_only)}


@dataclass
class BootstrapMean:
    """A mean over prompts with its percentile bootstrap interval (resampling the prompts)."""

    mean: float
    low: float
    high: float
    n: int
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def paired_bootstrap(first: Sequence[float], second: Sequence[float] | None = None, samples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> BootstrapMean:
    """The mean per-prompt difference `first[i] - second[i]` (or the mean of `first` when it
    already holds one number per prompt, such as the judge's preference) and its percentile
    interval from `samples` resamples of the prompts. Resampling whole prompts keeps each
    prompt's two values together: that is what makes it paired. No interval (NaN) for no
    prompts or `samples` 0."""
    import numpy as np

    values = np.asarray(first, dtype=float)
    if second is not None:
        if len(second) != len(values):
            raise ValueError(f"paired values need one of each per prompt: {len(values)} and {len(second)}")
        values = values - np.asarray(second, dtype=float)
    n = len(values)
    if n == 0:
        return BootstrapMean(math.nan, math.nan, math.nan, 0, samples)
    centre = float(values.mean())
    if samples <= 0:
        return BootstrapMean(centre, math.nan, math.nan, n, 0)
    rng = np.random.default_rng(seed)
    means: list[float] = []
    block = max(1, 2_000_000 // n)  # resamples at a time: bounded memory for many prompts
    while len(means) < samples:
        draws = rng.integers(0, n, size=(min(block, samples - len(means)), n))
        means += values[draws].mean(axis=1).tolist()
    low, high = percentile_interval(means, confidence)
    return BootstrapMean(centre, low, high, n, samples)
