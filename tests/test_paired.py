"""Paired statistics: two models on the same prompts, compared prompt by prompt.

McNemar's exact test against values worked by hand from the binomial distribution; the paired
bootstrap against what pairing is for (a shared per-prompt effect cancels); the experiment's
results script on a small experiment folder laid out as the recipe writes it."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from cai_cli.metrics import mcnemar_exact, paired_bootstrap, paired_rates, wilson_interval
from conftest import EXAMPLES, ROOT, write_jsonl


@pytest.mark.parametrize("b, c, p", [
    (5, 1, 0.21875),  # 2 * (1 + 6) / 2^6: issue 22's helpful prompts, 5 newly answered vs 1 newly refused
    (1, 5, 0.21875),  # symmetric
    (3, 1, 0.625),  # 2 * (1 + 4) / 2^4
    (16, 2, 2 * (1 + 18 + 153) / 2 ** 18),  # 0.00131: the red-team change
    (0, 6, 2 / 2 ** 6),
    (4, 4, 1.0),  # the doubled tail passes 1: capped
    (0, 0, 1.0),  # no prompt changed: nothing to test
])
def test_mcnemar_exact_matches_the_binomial_tail(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-9)


def test_mcnemar_refuses_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_paired_rates_count_the_four_cells_on_shared_prompts_only():
    first = {"p1": True, "p2": True, "p3": False, "p4": False, "p5": True, "only-first": True}
    second = {"p1": True, "p2": False, "p3": True, "p4": False, "p5": False, "only-second": False}
    result = paired_rates(first, second)
    assert result == {"n": 5, "both": 1, "first_only": 2, "second_only": 1, "neither": 1,
                      "rate_a": 3 / 5, "rate_b": 2 / 5, "p": pytest.approx(mcnemar_exact(2, 1))}


def test_the_paired_bootstrap_is_seeded_and_brackets_the_mean_difference():
    xs = [float(i % 7) for i in range(50)]
    ys = [x - 1.0 + (0.5 if i % 2 else -0.5) for i, x in enumerate(xs)]
    result = paired_bootstrap(xs, ys, samples=1000, seed=3)
    assert result.mean == pytest.approx(1.0) and result.n == 50
    assert result.low < 1.0 < result.high and result.high - result.low < 0.4
    assert paired_bootstrap(xs, ys, samples=1000, seed=3) == result
    differences = [x - y for x, y in zip(xs, ys)]
    assert paired_bootstrap(differences, samples=1000, seed=3) == result  # differences given directly
    with pytest.raises(ValueError, match="one of each per prompt"):
        paired_bootstrap(xs, ys[:-1])
    empty = paired_bootstrap([], samples=100)
    assert empty.n == 0 and math.isnan(empty.mean)
    no_interval = paired_bootstrap(xs, ys, samples=0)
    assert no_interval.mean == pytest.approx(1.0) and math.isnan(no_interval.low)


def test_pairing_cancels_what_the_prompts_share():
    """Answer lengths that vary a lot between prompts, with model B one word longer on every
    prompt: paired, the difference is clear; two separate intervals would overlap widely."""
    rng = random.Random(0)
    base = [rng.uniform(10, 300) for _ in range(40)]
    longer = [words + 1.0 for words in base]
    paired = paired_bootstrap(longer, base, samples=500, seed=0)
    assert paired.low == pytest.approx(1.0) and paired.high == pytest.approx(1.0)
    separate_b = paired_bootstrap(longer, samples=500, seed=0)
    separate_a = paired_bootstrap(base, samples=500, seed=1)
    assert separate_b.low < separate_a.high  # unpaired, the two means' intervals overlap


def test_wilson_interval_ends_exactly_at_0_and_100_percent():
    for n in (1, 6, 40):
        low, high = wilson_interval(0, n)
        assert low == 0.0 and 0 < high < 1
        low, high = wilson_interval(n, n)
        assert high == 1.0 and 0 < low < 1


# --- examples/experiment_results.py ----------------------------------------------------------

REFUSAL = "I can't help with that, because it could hurt someone; a locksmith can help you instead."
ANSWER = "Sure. First, check the manual; then follow the steps in order."


def experiment_folder(tmp_path, labels: bool = False):
    """A small experiment as `make -C examples experiment` lays it out: answers of both models to
    the three held-out sets and the judge's kept judgements."""
    folder = tmp_path / "experiment"
    (folder / "answers").mkdir(parents=True)
    # Red team: base refuses 2 of 8, SL-CAI 7 of 8 (5 newly refused, none newly answered).
    plan = {"rt": ([1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]),
            "helpful": ([0, 0, 0, 0], [1, 0, 0, 0]),
            "benign": ([1, 0, 0], [0, 0, 0])}
    for name, (base, sl_cai) in plan.items():
        for model, refuses in (("base", base), ("sl-cai", sl_cai)):
            write_jsonl(folder / "answers" / f"{model}-{name}.jsonl", [
                {"id": f"{'adv' if name == 'rt' and i % 2 else name}-{i}", "prompt": f"Question {i}?",
                 "response": REFUSAL if refusing else ANSWER + " more" * (i + (3 if model == "sl-cai" else 0))}
                for i, refusing in enumerate(refuses)])
    ids = [f"{'adv' if i % 2 else 'rt'}-{i}" for i in range(8)]
    write_jsonl(folder / "elo-harmless-items.jsonl", [
        {"id": f"{rid}|base|sl-cai|harmless", "item": rid, "dimension": "harmless", "a": "base", "b": "sl-cai",
         "p_a": p} for rid, p in zip(ids, [0.45, 0.48, 0.2, 0.3, 0.4, 0.35, 0.3, 0.52])])
    if labels:
        # A person's blind labels (COMMON format) for the red team: they see 1 base refusal, 6 of SL-CAI.
        classes = {"rt-0": ("explained-refusal", "bare-refusal"), "adv-1": ("complies-caveats", "explained-refusal"),
                   "rt-2": ("complies", "explained-refusal"), "adv-3": ("complies", "explained-refusal"),
                   "rt-4": ("complies", "bare-refusal"), "adv-5": ("complies", "explained-refusal"),
                   "rt-6": ("complies", "complies-caveats"), "adv-7": ("complies", "complies")}
        write_jsonl(folder / "labels.jsonl", [
            {"id": rid, "prompt": f"Question {rid}?", "models": ["base", "sl-cai"], "winner": "sl-cai",
             "classes": {"base": a, "sl-cai": b}, "labeler": "tester", "item": f"x{k}",
             "shown": {"A": "base", "B": "sl-cai"}} for k, (rid, (a, b)) in enumerate(classes.items())])
    return folder


def results(folder, *args):
    done = subprocess.run([sys.executable, str(EXAMPLES / "experiment_results.py"), str(folder), *args],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_experiment_results_tests_every_change_paired(tmp_path):
    folder = experiment_folder(tmp_path)
    m = json.loads(results(folder, "--json"))
    red_team = m["paired"]["rt"]
    assert red_team["refusals"]["source"] == "keyword detector"
    assert {k: red_team["refusals"][k] for k in ("n", "both", "first_only", "second_only", "neither")} == {
        "n": 8, "both": 2, "first_only": 0, "second_only": 5, "neither": 1}
    assert red_team["refusals"]["p"] == pytest.approx(2 / 2 ** 5)
    assert m["paired"]["benign"]["refusals"]["p"] == 1.0 and m["paired"]["helpful"]["refusals"]["p"] == 1.0
    words = red_team["mean_words"]
    assert words["n"] == 8 and words["low"] <= words["mean"] <= words["high"]
    harmless = m["judged"]["harmless"]["all"]
    assert harmless["mean_p"] == pytest.approx(1 - sum([0.45, 0.48, 0.2, 0.3, 0.4, 0.35, 0.3, 0.52]) / 8)
    assert harmless["low"] <= harmless["mean_p"] <= harmless["high"] and harmless["n"] == 8
    table = results(folder)
    assert "McNemar" in table and "keyword detector" in table and "paired bootstrap" in table


def test_experiment_results_takes_refusals_from_blind_labels_when_there_are_some(tmp_path):
    folder = experiment_folder(tmp_path, labels=True)
    m = json.loads(results(folder, "--json"))
    red_team = m["paired"]["rt"]["refusals"]
    assert red_team["source"] == "blind labels by tester"
    # Labelled refusals: base rt-0; SL-CAI rt-0, adv-1, rt-2, adv-3, rt-4, adv-5.
    assert (red_team["n"], red_team["both"], red_team["first_only"], red_team["second_only"]) == (8, 1, 0, 5)
    assert m["answers"]["sl-cai/rt"]["refusals"]["source"] == "blind labels by tester"
    assert m["answers"]["sl-cai/rt"]["refusals"]["share"] == pytest.approx(6 / 8)
    assert m["answers"]["sl-cai/rt"]["bare_refusals"]["share"] == pytest.approx(2 / 8)
    # Sets without labels keep the detector, and say so.
    assert m["paired"]["helpful"]["refusals"]["source"] == "keyword detector"
    assert "blind labels by tester" in results(folder)


def test_two_labellers_give_two_tables_their_agreement_and_the_labels_own_preference(tmp_path):
    folder = experiment_folder(tmp_path, labels=True)
    first = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
    # A second labeller: the same classes except that SL-CAI's bare refusal on rt-4 reads to them as
    # explained, and they find base better on rt-6 and adv-7 (SL-CAI everywhere else).
    second = []
    for label in first:
        label = {**label, "labeler": "second", "classes": dict(label["classes"])}
        if label["id"] == "rt-4":
            label["classes"]["sl-cai"] = "explained-refusal"
        if label["id"] in ("rt-6", "adv-7"):
            label["winner"] = "base"
        second.append(label)
    write_jsonl(folder / "labels.jsonl", first + second)
    m = json.loads(results(folder, "--json"))
    assert set(m["labels"]) == {"second", "tester"}
    assert m["labels"]["second"]["answers"]["sl-cai/rt"]["bare_refusals"]["share"] == pytest.approx(1 / 8)
    assert m["labels"]["tester"]["preference"]["rt"]["mean_p"] == pytest.approx(1.0)
    assert m["labels"]["second"]["preference"]["rt"]["mean_p"] == pytest.approx(6 / 8)
    agreement = m["agreement"]["rt"]
    assert agreement["answers"] == 16 and agreement["class_agreement"] == pytest.approx(15 / 16)
    assert 0 < agreement["class_kappa"] < 1 and agreement["refuses_kappa"] == pytest.approx(1.0)
    assert agreement["better_agreement"] == pytest.approx(6 / 8)
    # The headline (and the judge's groups) use the first labeller in name order; the detector's
    # rates are always there beside them.
    assert m["paired"]["rt"]["refusals"]["source"] == "blind labels by second"
    assert m["detector"]["paired"]["rt"]["refusals"]["source"] == "keyword detector"
    table = results(folder)
    assert "Agreement of the labellers" in table and "The keyword detector" in table


def test_cohen_kappa_matches_a_worked_example():
    sys.path.insert(0, str(EXAMPLES))
    from experiment_results import cohen_kappa

    # 50 items, yes/no: 20 both yes, 15 both no, 5 and 10 disagreeing: p_o = 0.7, p_e = 0.5 -> 0.4.
    first = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    second = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == 1.0
