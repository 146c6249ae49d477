"""Ratings from pairwise judgements: Bradley-Terry strengths on the Elo scale, bootstrap
intervals, win rates, the judge's mean preference per pair. Pure numpy; used by `cai elo` and
`cai report`.

A judgement says how likely model `a`'s answer is the better one, `p` in [0, 1]: a soft label
from the feedback model, so a tie is 0.5 and counts as half a win each way. The strengths `r`
maximise the likelihood of those soft outcomes under P(a beats b) = sigma(r_a - r_b), with a
weak Gaussian prior (a few hundredths of a virtual game) so that a model that wins everything
still gets a finite rating. Ratings are reported on the Elo scale (400 points = 10:1 odds),
centred so that the models' mean is 1000.

Intervals come from the bootstrap over *items* (the prompts), not over judgements: the
judgements of one prompt (several model pairs, principles, orderings) are not independent, so
resampling them one by one would give intervals that are too narrow. This is how Chatbot
Arena's Elo analysis bootstraps its battles, one level up.

Example:

    judgements = [Judgement("rt-1", "base", "sl-cai", 0.2), Judgement("rt-2", "base", "sl-cai", 0.4)]
    table = rate(judgements, bootstrap=1000, seed=0)
    table.elo["sl-cai"], table.interval["sl-cai"]
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from cai_cli.metrics import BootstrapMean, paired_bootstrap, percentile_interval

ELO_PER_NAT = 400 / math.log(10)
ELO_CENTRE = 1000.0
PRIOR_PRECISION = 0.01  # weak L2 pull towards equal strengths, in nats^-2


@dataclass(frozen=True)
class Judgement:
    """One judged comparison: on item `item`, P(model `a`'s answer beats model `b`'s) = `p`."""

    item: str
    a: str
    b: str
    p: float


@dataclass
class Ratings:
    """Elo ratings with bootstrap intervals, pairwise win rates and how many judgements each
    figure rests on."""

    models: list[str]
    elo: dict[str, float]
    interval: dict[str, tuple[float, float]]
    win_rate: dict[tuple[str, str], float]  # (a, b): mean P(a beats b) over their judgements
    win_interval: dict[tuple[str, str], tuple[float, float]]
    comparisons: dict[tuple[str, str], int]  # judgements between a and b
    items: int
    bootstrap: int
    # (a, b): the mean over prompts of P(a's answer is better) (each prompt's judgements
    # averaged first), with its bootstrap interval over prompts: the judge's mean preference.
    preference: dict[tuple[str, str], BootstrapMean] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def judgements_of(self, model: str) -> int:
        return sum(n for (a, b), n in self.comparisons.items() if model in (a, b)) // 2


def fit_strengths(models: Sequence[str], judgements: Sequence[Judgement], iterations: int = 50) -> dict[str, float]:
    """Bradley-Terry strengths (nats, mean zero) maximising the soft-label likelihood, by
    Newton's method (the problem is small and concave)."""
    import numpy as np

    index = {name: i for i, name in enumerate(models)}
    a = np.array([index[j.a] for j in judgements], dtype=int)
    b = np.array([index[j.b] for j in judgements], dtype=int)
    p = np.array([j.p for j in judgements], dtype=float)
    n = len(models)
    r = np.zeros(n)
    for _ in range(iterations):
        q = 1.0 / (1.0 + np.exp(-(r[a] - r[b])))
        residual = p - q
        gradient = np.bincount(a, residual, n) - np.bincount(b, residual, n) - PRIOR_PRECISION * r
        weight = q * (1.0 - q)
        hessian = -PRIOR_PRECISION * np.eye(n)
        np.add.at(hessian, (a, a), -weight)
        np.add.at(hessian, (b, b), -weight)
        np.add.at(hessian, (a, b), weight)
        np.add.at(hessian, (b, a), weight)
        step = np.linalg.solve(hessian, gradient)
        r -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    r -= r.mean()
    return {name: float(r[index[name]]) for name in models}


def to_elo(strength: float) -> float:
    return ELO_CENTRE + ELO_PER_NAT * strength


def win_rates(models: Sequence[str], judgements: Sequence[Judgement]) -> tuple[dict, dict]:
    """Mean P(a beats b) for every ordered pair that met, and the number of judgements."""
    totals: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for j in judgements:
        for (x, y), p in (((j.a, j.b), j.p), ((j.b, j.a), 1.0 - j.p)):
            totals[(x, y)] = totals.get((x, y), 0.0) + p
            counts[(x, y)] = counts.get((x, y), 0) + 1
    return {pair: totals[pair] / counts[pair] for pair in totals}, counts


def mean_preferences(by_item: dict[str, list[Judgement]], bootstrap: int, seed: int
                     ) -> dict[tuple[str, str], BootstrapMean]:
    """For every ordered pair of models that met: the mean over prompts of P(a beats b), where
    a prompt judged several times (several principles, repeated runs) counts once
    with the mean of its judgements, and its interval from `bootstrap` resamples of the prompts.
    Unlike a count of prompts with P > 0.5, a judge that leans slightly one way everywhere
    shows as a mean barely above one half."""
    per_prompt: dict[tuple[str, str], list[float]] = {}
    for item_judgements in by_item.values():
        rates, _ = win_rates([], item_judgements)
        for pair, value in rates.items():
            per_prompt.setdefault(pair, []).append(value)
    # The same seed for every pair: the interval of (b, a) is the mirror image of (a, b)'s.
    return {pair: paired_bootstrap(values, samples=bootstrap, seed=seed) for pair, values in per_prompt.items()}


def rate(judgements: Sequence[Judgement], models: Sequence[str] | None = None, bootstrap: int = 1000,
         seed: int = 0) -> Ratings:
    """Ratings of every model in `judgements` (or `models`, in that order), with intervals from
    `bootstrap` resamples of the items (0: no intervals)."""
    if not judgements:
        raise ValueError("no judgements to rate")
    models = list(models or dict.fromkeys(name for j in judgements for name in (j.a, j.b)))
    strengths = fit_strengths(models, judgements)
    rates, counts = win_rates(models, judgements)
    by_item: dict[str, list[Judgement]] = {}
    for j in judgements:
        by_item.setdefault(j.item, []).append(j)
    items = list(by_item)
    samples: dict[str, list[float]] = {name: [] for name in models}
    rate_samples: dict[tuple[str, str], list[float]] = {pair: [] for pair in rates}
    draw = random.Random(seed)
    for _ in range(bootstrap):
        resampled = [j for item in draw.choices(items, k=len(items)) for j in by_item[item]]
        for name, value in fit_strengths(models, resampled).items():
            samples[name].append(to_elo(value))
        for pair, value in win_rates(models, resampled)[0].items():
            rate_samples[pair].append(value)
    return Ratings(
        preference=mean_preferences(by_item, bootstrap, seed),
        models=models,
        elo={name: to_elo(strengths[name]) for name in models},
        interval={name: percentile_interval(samples[name]) for name in models},
        win_rate=rates,
        win_interval={pair: percentile_interval(values) for pair, values in rate_samples.items()},
        comparisons=counts,
        items=len(items),
        bootstrap=bootstrap,
    )
