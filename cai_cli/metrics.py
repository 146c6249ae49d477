"""How good a judge is, in numbers: accuracy with its interval, position bias and calibration.

Pure arithmetic over scored items (`EvalOutcome`), no model and no records to parse: `cai eval`
reports with it, and any other report on judgements (a ranking, a comparison of judges) can use
the same pieces (`wilson_interval`, `calibration`, `mean`, `rounded`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CALIBRATION_BINS = 10
# Two-sided 95%: the normal quantile the intervals use.
Z_95 = 1.959964


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
        "calibration": calibration(outcomes),
    }
    if ties := mean(w == "" for w in winners):
        summary["letter_wins"]["tie"] = ties
    kinds = sorted({str(o.record["kind"]) for o in outcomes if "kind" in o.record})
    if kinds:
        groups = {kind: [o for o in outcomes if str(o.record.get("kind")) == kind] for kind in kinds}
        summary["by_kind"] = {kind: {"items": len(group), "accuracy": mean(o.score for o in group)}
                              for kind, group in groups.items()}
    return rounded(summary)


def calibration(outcomes: list[EvalOutcome]) -> dict[str, Any]:
    """How well confidence matches accuracy: confidence bins of width 0.1, the expected
    calibration error (their accuracy gaps weighted by size), the Brier score and the log loss
    of the probability given to the right answer."""
    bins: dict[int, list[EvalOutcome]] = {}
    for outcome in outcomes:
        bins.setdefault(min(int(outcome.confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1), []).append(outcome)
    rows, gap = [], 0.0
    for index in sorted(bins):
        group = bins[index]
        confidence, accuracy = mean(o.confidence for o in group), mean(o.score for o in group)
        gap += len(group) * abs(confidence - accuracy)
        rows.append({"low": index / CALIBRATION_BINS, "high": (index + 1) / CALIBRATION_BINS,
                     "items": len(group), "confidence": confidence, "accuracy": accuracy})
    return {
        "ece": gap / len(outcomes),
        "brier": mean((1.0 - o.p_correct) ** 2 for o in outcomes),
        "log_loss": mean(-math.log(max(o.p_correct, 1e-12)) for o in outcomes),
        "bins": rows,
    }


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
