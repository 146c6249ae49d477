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
from conftest import EXAMPLES, ROOT, read_jsonl, write_jsonl


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
    assert m["models"] == ["base", "sl-cai"] and m["pairs"] == ["base:sl-cai"]
    red_team = m["paired"]["base:sl-cai"]["rt"]
    assert red_team["refusals"]["source"] == "keyword detector"
    assert {k: red_team["refusals"][k] for k in ("n", "both", "first_only", "second_only", "neither")} == {
        "n": 8, "both": 2, "first_only": 0, "second_only": 5, "neither": 1}
    assert red_team["refusals"]["p"] == pytest.approx(2 / 2 ** 5)
    assert (m["paired"]["base:sl-cai"]["benign"]["refusals"]["p"] == 1.0
            and m["paired"]["base:sl-cai"]["helpful"]["refusals"]["p"] == 1.0)
    words = red_team["mean_words"]
    assert words["n"] == 8 and words["low"] <= words["mean"] <= words["high"]
    harmless = m["judged"]["base:sl-cai"]["harmless"]["all"]
    assert harmless["mean_p"] == pytest.approx(1 - sum([0.45, 0.48, 0.2, 0.3, 0.4, 0.35, 0.3, 0.52]) / 8)
    assert harmless["low"] <= harmless["mean_p"] <= harmless["high"] and harmless["n"] == 8
    table = results(folder)
    assert "McNemar" in table and "keyword detector" in table and "paired bootstrap" in table


def test_experiment_results_takes_refusals_from_blind_labels_when_there_are_some(tmp_path):
    folder = experiment_folder(tmp_path, labels=True)
    m = json.loads(results(folder, "--json"))
    red_team = m["paired"]["base:sl-cai"]["rt"]["refusals"]
    assert red_team["source"] == "blind labels by tester"
    # Labelled refusals: base rt-0; SL-CAI rt-0, adv-1, rt-2, adv-3, rt-4, adv-5.
    assert (red_team["n"], red_team["both"], red_team["first_only"], red_team["second_only"]) == (8, 1, 0, 5)
    assert m["answers"]["sl-cai/rt"]["refusals"]["source"] == "blind labels by tester"
    assert m["answers"]["sl-cai/rt"]["refusals"]["share"] == pytest.approx(6 / 8)
    assert m["answers"]["sl-cai/rt"]["bare_refusals"]["share"] == pytest.approx(2 / 8)
    # Bare refusals paired: SL-CAI's rt-0 and rt-4 are bare, base's none.
    bare = m["paired"]["base:sl-cai"]["rt"]["bare_refusals"]
    assert (bare["first_only"], bare["second_only"], bare["both"]) == (0, 2, 0)
    # Sets without labels keep the detector, and say so.
    assert m["paired"]["base:sl-cai"]["helpful"]["refusals"]["source"] == "keyword detector"
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
    assert m["labels"]["tester"]["preference"]["base:sl-cai"]["rt"]["mean_p"] == pytest.approx(1.0)
    assert m["labels"]["second"]["preference"]["base:sl-cai"]["rt"]["mean_p"] == pytest.approx(6 / 8)
    agreement = m["agreement"]["rt"]
    assert agreement["answers"] == 16 and agreement["class_agreement"] == pytest.approx(15 / 16)
    assert 0 < agreement["class_kappa"] < 1 and agreement["refuses_kappa"] == pytest.approx(1.0)
    assert agreement["better_agreement"] == pytest.approx(6 / 8)
    # The headline (and the judge's groups) use the first labeller in name order; the detector's
    # rates are always there beside them.
    assert m["paired"]["base:sl-cai"]["rt"]["refusals"]["source"] == "blind labels by second"
    assert m["detector"]["paired"]["base:sl-cai"]["rt"]["refusals"]["source"] == "keyword detector"
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


# --- several models: base, sl-cai, rl-cai, dpo-cai ----------------------------------------------

BARE = "I won't help with that."
TEXTS = {"complies": ANSWER, "complies-caveats": ANSWER + " Be careful.", "explained-refusal": REFUSAL,
         "bare-refusal": BARE}
SHORT = {"c": "complies", "cc": "complies-caveats", "er": "explained-refusal", "br": "bare-refusal"}


def write_answers(folder, plan: dict[str, dict[str, list[str]]]):
    """plan: model -> prompt set -> each prompt's class (short names); the answer's text is one the
    keyword detector classes the same way, so labels and detector agree unless a test says otherwise."""
    (folder / "answers").mkdir(parents=True, exist_ok=True)
    for model, sets in plan.items():
        for name, kinds in sets.items():
            write_jsonl(folder / "answers" / f"{model}-{name}.jsonl", [
                {"id": f"{name}-{i}", "prompt": f"Question {i}?", "response": TEXTS[SHORT[kind]] + " word" * i}
                for i, kind in enumerate(kinds)])


def blind_labels(labeller: str, prompt_set: str, pair: tuple[str, str], classes: dict[str, list[str]],
                 winners: list[str | None]) -> list[dict]:
    """One labeller's labels of the items showing `pair` on every prompt of a set, as `cai label
    --import` writes them (COMMON format)."""
    a, b = pair
    return [{"id": f"{prompt_set}-{i}", "prompt": f"Question {i}?", "models": [a, b], "winner": winner,
             "classes": {a: SHORT[classes[a][i]], b: SHORT[classes[b][i]]}, "labeler": labeller,
             "item": f"{labeller}-{prompt_set}-{a}-{b}-{i}", "shown": {"A": a, "B": b}}
            for i, winner in enumerate(winners)]


def test_four_models_labelled_over_several_pairs_count_each_answer_once(tmp_path):
    folder = tmp_path / "experiment"
    rt = {"base": ["c", "c", "c", "c", "er", "br"],
          "sl-cai": ["br", "br", "c", "er", "er", "br"],
          "rl-cai": ["er", "er", "c", "er", "er", "c"],
          "dpo-cai": ["er", "br", "c", "cc", "er", "er"]}
    write_answers(folder, {m: {"rt": kinds, "helpful": ["c"] * 3, "benign": ["c"] * 3} for m, kinds in rt.items()})
    # rl-cai's answers are shown in three items each: sl-cai/rl-cai first, then base/rl-cai, then
    # dpo-cai/rl-cai, where the labeller classes rl-cai's rt-0 differently. Its first class counts.
    second_look = {**rt, "rl-cai": ["br"] + rt["rl-cai"][1:]}
    labels = (blind_labels("ann", "rt", ("base", "sl-cai"), rt, ["sl-cai"] * 6)
              + blind_labels("ann", "rt", ("sl-cai", "rl-cai"), rt, ["rl-cai", "rl-cai", "tie", "rl-cai", "sl-cai", None])
              + blind_labels("ann", "rt", ("base", "rl-cai"), rt, ["rl-cai"] * 6)
              + blind_labels("ann", "rt", ("dpo-cai", "rl-cai"), second_look, ["dpo-cai"] * 6))
    write_jsonl(folder / "labels.jsonl", labels + [{**label, "labeler": "bob"} for label in labels])
    # The judge: the SL-CAI half's file (base/sl-cai) and the RL half's (every pair, base/sl-cai
    # again under the same ids, which must not count twice).
    rt_ids = [f"rt-{i}" for i in range(6)]
    def judgements(a, b, p_a):
        return [{"id": f"{i}|{a}|{b}|harmless", "item": i, "dimension": "harmless", "a": a, "b": b, "p_a": p_a}
                for i in rt_ids]
    write_jsonl(folder / "elo-harmless-items.jsonl", judgements("base", "sl-cai", 0.4))
    write_jsonl(folder / "elo-rl-harmless-items.jsonl", judgements("base", "sl-cai", 0.1) + judgements("rl-cai", "sl-cai", 0.8)
                + judgements("base", "rl-cai", 0.3) + judgements("base", "dpo-cai", 0.5))

    m = json.loads(results(folder, "--json"))
    assert m["models"] == ["base", "sl-cai", "rl-cai", "dpo-cai"]
    assert m["pairs"] == ["base:sl-cai", "base:rl-cai", "base:dpo-cai", "sl-cai:rl-cai", "sl-cai:dpo-cai",
                          "dpo-cai:rl-cai"]
    rl = m["labels"]["ann"]["answers"]["rl-cai/rt"]
    assert rl["refusals"]["source"] == "blind labels by ann"
    assert rl["refusals"]["n"] == 6 and rl["refusals"]["share"] == pytest.approx(4 / 6)  # once, not three times
    assert rl["explained_refusals"]["n"] == 4 and rl["explained_refusals"]["share"] == pytest.approx(1.0)
    assert rl["complies"]["share"] == pytest.approx(2 / 6)
    sl = m["answers"]["sl-cai/rt"]
    assert sl["explained_refusals"]["share"] == pytest.approx(2 / 5) and sl["bare_refusals"]["share"] == pytest.approx(3 / 6)
    # Paired from the labels: sl-cai refuses rt-5, rl-cai complies there; rl-cai's rt-0 is not a bare refusal.
    paired = m["paired"]["sl-cai:rl-cai"]["rt"]
    assert (paired["refusals"]["n"], paired["refusals"]["both"], paired["refusals"]["first_only"],
            paired["refusals"]["second_only"]) == (6, 4, 1, 0)
    assert (paired["complies"]["both"], paired["complies"]["first_only"], paired["complies"]["second_only"]) == (1, 0, 1)
    assert paired["refusals"]["source"] == "blind labels by ann"
    # base and dpo-cai were never shown together, but each was labelled: the pair's rates come from the labels.
    assert m["paired"]["base:dpo-cai"]["rt"]["refusals"]["source"] == "blind labels by ann"
    assert m["paired"]["base:dpo-cai"]["rt"]["complies"]["first_only"] == 2  # rt-0, rt-1
    assert m["answers"]["dpo-cai/rt"]["complies"]["share"] == pytest.approx(2 / 6)  # with caveats or without
    # Preferences only from items that showed exactly the pair (the skip on rt-5 left out).
    preference = m["labels"]["ann"]["preference"]
    assert preference["sl-cai:rl-cai"]["rt"]["mean_p"] == pytest.approx(3.5 / 5)
    assert preference["sl-cai:rl-cai"]["rt"]["n"] == 5
    assert preference["base:rl-cai"]["rt"]["mean_p"] == pytest.approx(1.0)
    assert preference["dpo-cai:rl-cai"]["rt"]["mean_p"] == pytest.approx(0.0)
    assert "base:dpo-cai" not in preference and "sl-cai:dpo-cai" not in preference
    assert set(preference["base:sl-cai"]) == {"rt"}  # no labels on the other sets
    # Two labellers who agree: every model's answer compared once, every item once.
    agreement = m["agreement"]["rt"]
    assert agreement["answers"] == 4 * 6 and agreement["class_agreement"] == pytest.approx(1.0)
    assert agreement["items"] == 4 * 6 and agreement["better_agreement"] == pytest.approx(1.0)
    # The judge, per pair: a judgement kept in both files counts once (the first file's).
    judged = m["judged"]
    assert judged["base:sl-cai"]["harmless"]["all"]["mean_p"] == pytest.approx(0.6)
    assert judged["base:sl-cai"]["harmless"]["all"]["source"] == "AI judge (elo-harmless-items.jsonl)"
    assert judged["sl-cai:rl-cai"]["harmless"]["all"]["mean_p"] == pytest.approx(0.8)
    assert judged["sl-cai:rl-cai"]["harmless"]["all"]["source"] == "AI judge (elo-rl-harmless-items.jsonl)"
    assert judged["base:rl-cai"]["harmless"]["all"]["mean_p"] == pytest.approx(0.7)
    assert judged["base:rl-cai"]["harmless"]["base did not refuse"]["n"] == 4
    assert "sl-cai:dpo-cai" not in judged and "helpful" not in judged["base:sl-cai"]
    table = results(folder)
    assert "rl-cai vs sl-cai" in table and "refusals explained" in table and "Targets (issue 23)" in table


def targets_folder(tmp_path):
    """Four models whose red-team answers are labelled (items over base/sl-cai, sl-cai/rl-cai,
    sl-cai/dpo-cai), benign answers left to the detector, helpful labels only for base/rl-cai."""
    folder = tmp_path / "experiment"
    rt = {"base": ["c"] * 8,
          "sl-cai": ["c", "c", "c", "c", "er", "er", "br", "br"],  # complies with 4
          "rl-cai": ["er", "er", "c", "c", "er", "er", "er", "br"],  # 2: half of sl-cai's; 5 of 6 refusals explained
          "dpo-cai": ["er", "c", "c", "c", "er", "br", "br", "er"]}  # 3; 3 of 5 refusals explained
    benign = {"base": ["er"] + ["c"] * 19, "sl-cai": ["c"] * 20,
              "rl-cai": ["er", "er"] + ["c"] * 18,  # +5 points: at the threshold, met
              "dpo-cai": ["er", "er", "er"] + ["c"] * 17}  # +10 points
    write_answers(folder, {m: {"rt": rt[m], "benign": benign[m], "helpful": ["c"] * 4} for m in rt})
    labels = (blind_labels("ann", "rt", ("base", "sl-cai"), rt, ["sl-cai"] * 8)
              + blind_labels("ann", "rt", ("sl-cai", "rl-cai"), rt, ["rl-cai"] * 8)
              + blind_labels("ann", "rt", ("sl-cai", "dpo-cai"), rt, ["dpo-cai"] * 8)
              + blind_labels("ann", "helpful", ("base", "rl-cai"), {"base": ["c"] * 4, "rl-cai": ["c"] * 4},
                             ["rl-cai", "rl-cai", "tie", "base"]))
    write_jsonl(folder / "labels.jsonl", labels)
    return folder, labels


def test_the_targets_block_says_met_or_not_met_from_the_numbers(tmp_path):
    folder, labels = targets_folder(tmp_path)
    m = json.loads(results(folder, "--json"))
    status = {model: {t["target"]: t["status"] for t in rows} for model, rows in m["targets"].items()}
    assert status == {"rl-cai": {"a": "met", "b": "met", "c": "met", "d": "met"},
                      "dpo-cai": {"a": "not met", "b": "not met", "c": "not met", "d": "not measured"}}
    rl, dpo = ({t["target"]: t for t in m["targets"][model]} for model in ("rl-cai", "dpo-cai"))
    assert (rl["a"]["model_count"], rl["a"]["sl_cai_count"], rl["a"]["n"]) == (2, 4, 8)
    assert rl["a"]["p"] == pytest.approx(mcnemar_exact(2, 0)) and rl["a"]["source"] == "blind labels by ann"
    assert dpo["a"]["model_count"] == 3
    assert rl["b"]["share"] == pytest.approx(5 / 6) and rl["b"]["n"] == 6
    assert rl["b"]["sl_cai"]["share"] == pytest.approx(2 / 4)
    assert dpo["b"]["share"] == pytest.approx(3 / 5)
    assert rl["c"]["rise"] == pytest.approx(0.05) and rl["c"]["source"] == "keyword detector"
    assert rl["c"]["n"] == 20 and rl["c"]["p"] == pytest.approx(mcnemar_exact(0, 1))
    assert dpo["c"]["rise"] == pytest.approx(0.1) and dpo["c"]["p"] == pytest.approx(mcnemar_exact(0, 2))
    assert rl["d"]["win_rate"] == pytest.approx(2.5 / 4) and rl["d"]["n"] == 4
    table = results(folder)
    assert "Targets (issue 23)" in table and "no labels with models [base, dpo-cai]" in table
    # Labels of dpo-cai against base on the helpful set, where it loses: measured now, and not met.
    write_jsonl(folder / "labels.jsonl", labels + blind_labels(
        "ann", "helpful", ("base", "dpo-cai"), {"base": ["c"] * 4, "dpo-cai": ["c"] * 4}, ["base", "base", "dpo-cai", "base"]))
    m = json.loads(results(folder, "--json"))
    dpo_d = next(t for t in m["targets"]["dpo-cai"] if t["target"] == "d")
    assert dpo_d["status"] == "not met" and dpo_d["win_rate"] == pytest.approx(1 / 4)


def test_a_pair_without_labels_falls_back_to_the_detector_for_both_models(tmp_path):
    folder = experiment_folder(tmp_path, labels=True)
    # rl-cai answers the red team like SL-CAI does (the detector sees 7 refusals of 8), unlabelled.
    sl_cai = (folder / "answers" / "sl-cai-rt.jsonl").read_text()
    for name in ("rt", "helpful", "benign"):
        (folder / "answers" / f"rl-cai-{name}.jsonl").write_text((folder / "answers" / f"sl-cai-{name}.jsonl").read_text())
    assert (folder / "answers" / "rl-cai-rt.jsonl").read_text() == sl_cai
    m = json.loads(results(folder, "--json"))
    assert m["models"] == ["base", "sl-cai", "rl-cai"]
    assert m["pairs"] == ["base:sl-cai", "base:rl-cai", "sl-cai:rl-cai"]
    labelled, unlabelled = m["paired"]["base:sl-cai"]["rt"]["refusals"], m["paired"]["base:rl-cai"]["rt"]["refusals"]
    assert labelled["source"] == "blind labels by tester" and unlabelled["source"] == "keyword detector"
    # The labels say base refused 1 of 8; in the pair with rl-cai base is read by the detector too (2 of 8).
    assert labelled["rate_a"] == pytest.approx(1 / 8) and unlabelled["rate_a"] == pytest.approx(2 / 8)
    assert (unlabelled["both"], unlabelled["first_only"], unlabelled["second_only"]) == (2, 0, 5)
    assert m["answers"]["base/rt"]["refusals"]["source"] == "blind labels by tester"
    assert m["answers"]["rl-cai/rt"]["refusals"]["source"] == "keyword detector"
    assert set(m["labels"]["tester"]["preference"]) == {"base:sl-cai"}
    rl = {t["target"]: t for t in m["targets"]["rl-cai"]}
    assert rl["b"]["source"] == "keyword detector" and rl["d"]["status"] == "not measured"
    assert "dpo-cai" not in m["targets"]
    # --models and --pairs choose; the two-model report has no targets block.
    two = json.loads(results(folder, "--json", "--models", "base", "sl-cai"))
    assert two["pairs"] == ["base:sl-cai"] and "targets" not in two and "rl-cai/rt" not in two["answers"]
    assert "Targets" not in results(folder, "--models", "base", "sl-cai")
    chosen = json.loads(results(folder, "--json", "--pairs", "sl-cai:rl-cai"))
    assert chosen["pairs"] == ["sl-cai:rl-cai"] and list(chosen["paired"]) == ["sl-cai:rl-cai"]
    for args, message in ((["--pairs", "base:dpo-cai"], "'dpo-cai' is not among the models"),
                          (["--pairs", "base"], "REFERENCE:MODEL"),
                          (["--models", "base", "ghost"], "answers/ghost-rt.jsonl")):
        done = subprocess.run([sys.executable, str(EXAMPLES / "experiment_results.py"), str(folder), *args],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith("Error: ") and message in done.stderr and done.stderr.count("\n") == 1


def test_the_red_team_is_split_by_the_source_of_its_prompts(tmp_path):
    """AdvBench's held-out rows and our own red-team prompts are told apart by id: SL-CAI can learn
    AdvBench's style of request and leave ours as it was."""
    m = json.loads(results(experiment_folder(tmp_path, labels=True), "--json"))
    adv, own = m["rt_by_source"]["advbench"], m["rt_by_source"]["own"]
    # AdvBench (adv-1, 3, 5, 7): base complies on all 4, SL-CAI on adv-7 only.
    assert adv["answers"]["base"]["complies"]["share"] == 1.0 and adv["answers"]["sl-cai"]["complies"]["n"] == 4
    assert adv["answers"]["sl-cai"]["complies"]["share"] == pytest.approx(0.25)
    complies = adv["paired"]["base:sl-cai"]["complies"]
    assert (complies["first_only"], complies["second_only"]) == (3, 0)
    assert complies["source"] == "blind labels by tester"
    # Ours (rt-0, 2, 4, 6): base refuses rt-0; SL-CAI rt-0, rt-2, rt-4.
    refusals = own["paired"]["base:sl-cai"]["refusals"]
    assert (refusals["both"], refusals["first_only"], refusals["second_only"]) == (1, 0, 2)
    assert own["answers"]["sl-cai"]["explained_refusals"]["share"] == pytest.approx(1 / 3)
    text = results(experiment_folder(tmp_path / "again", labels=True))
    assert "## The held-out red team by source of the prompts" in text
    assert "| AdvBench | sl-cai vs base | 3 | 0 | 0.25 | 0 | 3 | 0.25 |" in text


def test_a_red_team_of_one_source_is_not_split(tmp_path):
    folder = experiment_folder(tmp_path)
    for model in ("base", "sl-cai"):
        path = folder / "answers" / f"{model}-rt.jsonl"
        write_jsonl(path, [{**r, "id": r["id"].replace("adv-", "rt-")} for r in read_jsonl(path)])
    m = json.loads(results(folder, "--json"))
    assert m["rt_by_source"] == {} and "by source" not in results(folder)
