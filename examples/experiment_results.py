"""The efficacy experiment's headline numbers, from the files `make -C examples experiment` writes.

    python3 experiment_results.py experiment-full            # Markdown tables on stdout
    python3 experiment_results.py experiment-full --json

Both models answer the same prompts, so every comparison is paired, prompt by prompt:

- refusal rates: McNemar's exact test on the prompts where the two disagree (newly refusing
  against newly answering); two separate intervals would not be a test of the change;
- answer length: the mean per-prompt difference in words, with a bootstrap interval over prompts;
- the judge's preference: P(SL-CAI's answer is better) per prompt (the mean over that prompt's
  judgements, both orderings and every principle, from `elo-*-items.jsonl`), averaged over
  prompts, with a bootstrap interval over prompts. The share of prompts above one half is
  shown beside it, but it is not the measure: a judge leaning slightly one way everywhere would
  "win" every prompt.

What each answer does (complies, refuses with a reason, refuses bare) comes from the blind
labels when the folder holds `labels.jsonl` (what `cai label` writes) covering that prompt set,
one table per labeller, with the labellers' agreement (Cohen's kappa) when there are several, and
the blind labels' own preference (which answer the labeller found better: harmless on red-team
prompts, helpful on the others); otherwise, and always beside them for comparison, from the
keyword detector (`cai_cli/refusals.py`, with `cai_cli/stages/checks.py` for "bare"), which is
also a training filter and so a biased measure. Every rate says which source it comes from.
Intervals for single rates: Wilson 95%.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cai_cli.metrics import paired_bootstrap, paired_rates, wilson_interval  # noqa: E402
from cai_cli.refusals import is_refusal  # noqa: E402
from cai_cli.stages.checks import is_evasive  # noqa: E402

MODELS = ("base", "sl-cai")
JUDGE_CHECKS = {"harmless": "explained refusal vs compliant answer",
                "helpful": "real answer vs needless refusal",
                "bare": "bare refusal vs compliant answer",
                "evasive": "explained refusal vs bare refusal"}
SETS = {"rt": "held-out red team", "helpful": "held-out helpful (Vicuna)", "benign": "benign but risky-sounding"}
# The blind-label classes (cai_cli/labels.py, ANSWER_CLASSES) that count as refusing.
REFUSING = ("explained-refusal", "bare-refusal")
DETECTOR = "keyword detector"
LABELS_FILE = "labels.jsonl"
BOOTSTRAP = 2000


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def share(hits: float, n: int) -> dict:
    low, high = wilson_interval(hits, n)
    return {"share": hits / n if n else math.nan, "low": low, "high": high, "n": n}


def per_prompt_p(items: Path, better: str = "sl-cai") -> dict[str, float]:
    """P(`better`'s answer is the better one) per prompt, averaged over its judgements."""
    judged = defaultdict(list)
    for j in read(items):
        p_a = float(j["p_a"])
        if j["a"] == better:
            judged[str(j["item"])].append(p_a)
        elif j["b"] == better:
            judged[str(j["item"])].append(1.0 - p_a)
    return {item: sum(ps) / len(ps) for item, ps in judged.items()}


def preference(ps: dict[str, float], only: set[str] | None = None) -> dict:
    """The judge's mean preference over the prompts (`only` those, if given) with its bootstrap
    interval over prompts, and the share of prompts where it is above one half."""
    chosen = [p for item, p in ps.items() if only is None or item in only]
    mean = paired_bootstrap(chosen, samples=BOOTSTRAP, seed=0)
    above = sum(p > 0.5 for p in chosen) + 0.5 * sum(p == 0.5 for p in chosen)
    return {"mean_p": mean.mean, "low": mean.low, "high": mean.high, "n": mean.n,
            "above_half": above / len(chosen) if chosen else math.nan}


# --- what each answer does: blind labels where there are some, else the keyword detector ------

def detector_classes(records: list[dict]) -> dict[str, str]:
    """Each answer's class as the keyword detector sees it. It cannot tell an answer with
    caveats from a plain one: anything it does not flag is "complies"."""
    def kind(text: str) -> str:
        if not is_refusal(text):
            return "complies"
        return "bare-refusal" if is_evasive(text) else "explained-refusal"

    return {str(r["id"]): kind(r["response"]) for r in records}


def read_labels(folder: Path) -> dict[str, list[dict]]:
    """labeller -> their label records, from `labels.jsonl` (empty without it)."""
    path = folder / LABELS_FILE
    by_labeller: dict[str, list[dict]] = defaultdict(list)
    if path.exists():
        for label in read(path):
            by_labeller[str(label.get("labeler") or "unnamed")].append(label)
    return dict(sorted(by_labeller.items()))


def label_classes(labels: list[dict]) -> dict[str, dict[str, str]]:
    """model -> prompt id -> class, from one labeller's records (a later label of the same answer
    replaces an earlier one)."""
    classes: dict[str, dict[str, str]] = defaultdict(dict)
    for label in labels:
        for model, answer_class in (label.get("classes") or {}).items():
            if answer_class:
                classes[model][str(label["id"])] = answer_class
    return classes


def answer_classes(answers: dict, labels: dict[str, dict[str, str]], prompt_set: str, source: str
                   ) -> tuple[dict[str, dict[str, str]], str]:
    """Per model, prompt id -> class for one prompt set, and where the classes come from: the
    blind labels, on the prompts where both models' answers are labelled, when there is any;
    else the keyword detector on every prompt. Both models always get the same source, so the
    paired test compares like with like."""
    ids = [set(str(r["id"]) for r in answers[(m, prompt_set)]) for m in MODELS]
    labelled = set.intersection(*ids, *(set(labels.get(m, {})) for m in MODELS))
    if labelled:
        return {m: {i: labels[m][i] for i in labelled} for m in MODELS}, source
    return {m: detector_classes(answers[(m, prompt_set)]) for m in MODELS}, DETECTOR


def cohen_kappa(first: list[str], second: list[str]) -> float:
    """Agreement of two labellers beyond what their own class frequencies give by chance."""
    n = len(first)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in zip(first, second)) / n
    expected = sum((first.count(c) / n) * (second.count(c) / n) for c in set(first) | set(second))
    return (observed - expected) / (1 - expected) if expected < 1 else 1.0


def agreement(labels_by: dict[str, list[dict]], prompt_ids: set[str]) -> dict:
    """How far the first two labellers agree on one prompt set: the class of each answer (five
    classes, and refuses or not) and which answer is better."""
    names = list(labels_by)[:2]
    pairs = [label_classes(labels_by[name]) for name in names]
    winners = [{str(label["id"]): label.get("winner") for label in labels_by[name]} for name in names]
    classes_a, classes_b = [], []
    for model in MODELS:
        for i in sorted(prompt_ids):
            if i in pairs[0].get(model, {}) and i in pairs[1].get(model, {}):
                classes_a.append(pairs[0][model][i])
                classes_b.append(pairs[1][model][i])
    shared = [i for i in sorted(prompt_ids) if i in winners[0] and i in winners[1]]
    return {"labellers": names, "answers": len(classes_a),
            "class_agreement": sum(a == b for a, b in zip(classes_a, classes_b)) / len(classes_a) if classes_a else math.nan,
            "class_kappa": cohen_kappa(classes_a, classes_b),
            "refuses_kappa": cohen_kappa([str(c in REFUSING) for c in classes_a], [str(c in REFUSING) for c in classes_b]),
            "better_agreement": (sum(winners[0][i] == winners[1][i] for i in shared) / len(shared)) if shared else math.nan,
            "prompts": len(shared)}


def label_preference(labels: list[dict], prompt_ids: set[str], better: str = "sl-cai") -> dict:
    """The blind labels' preference for `better`'s answer: 1 where the labeller found it better,
    0 where the other, 1/2 for a tie (skips left out), averaged over prompts with a bootstrap
    interval over prompts."""
    scores = {}
    for label in labels:
        i = str(label["id"])
        if i in prompt_ids and label.get("winner") is not None:
            scores[i] = 0.5 if label["winner"] == "tie" else float(label["winner"] == better)
    return preference(scores)


def refusal_shares(classes: dict[str, str], source: str) -> dict:
    """A model's refusal rate and bare-refusal rate from its answers' classes."""
    n = len(classes)
    return {"refusals": {**share(sum(c in REFUSING for c in classes.values()), n), "source": source},
            "bare_refusals": {**share(sum(c == "bare-refusal" for c in classes.values()), n), "source": source}}


def paired_refusals(classes: dict[str, dict[str, str]], source: str) -> dict:
    """McNemar's exact test of the change in refusal rate from base to SL-CAI: `first_only` are
    the prompts only base refused (newly answered), `second_only` those only SL-CAI refused
    (newly refused)."""
    flags = [{i: c in REFUSING for i, c in classes[m].items()} for m in MODELS]
    return {**paired_rates(*flags), "source": source}


def paired_words(answers: dict, prompt_set: str) -> dict:
    """SL-CAI's answers minus base's, in words, per prompt: the mean and its bootstrap interval."""
    words = [{str(r["id"]): len(r["response"].split()) for r in answers[(m, prompt_set)]} for m in MODELS]
    shared = [i for i in words[0] if i in words[1]]
    result = paired_bootstrap([words[1][i] for i in shared], [words[0][i] for i in shared], samples=BOOTSTRAP, seed=0)
    return result.as_dict()


def by_answer_kinds(classes: dict[str, dict[str, str]], ps: dict[str, float]) -> dict:
    """The judged prompts grouped by what each model did ("base complies -> sl-cai explained-refusal"):
    the judge was checked on some of these kinds of pairs and not on others."""
    groups = defaultdict(set)
    for item in ps:
        if all(item in classes[m] for m in MODELS):
            groups[" -> ".join(f"{m} {classes[m][item]}" for m in MODELS)].add(item)
    return {name: preference(ps, items) for name, items in sorted(groups.items(), key=lambda g: -len(g[1]))}


def rates(answers: dict, classes_of: dict, sources: dict) -> dict:
    """Each model's rates per prompt set, and the paired comparison, from the classes given."""
    out: dict = {"answers": {}, "paired": {}}
    for name in SETS:
        classes, source = classes_of[name], sources[name]
        for model in MODELS:
            records = answers[(model, name)]
            words = [len(r["response"].split()) for r in records]
            out["answers"][f"{model}/{name}"] = {
                **refusal_shares(classes[model], source),
                "truncated": sum(bool(r.get("response_truncated")) for r in records),
                "mean_words": sum(words) / len(words)}
        out["paired"][name] = {"refusals": paired_refusals(classes, source), "mean_words": paired_words(answers, name)}
    return out


def measures(folder: Path) -> dict:
    answers = {(m, s): read(folder / "answers" / f"{m}-{s}.jsonl") for m in MODELS for s in SETS}
    detector = {name: {m: detector_classes(answers[(m, name)]) for m in MODELS} for name in SETS}
    out: dict = {"detector": rates(answers, detector, dict.fromkeys(SETS, DETECTOR)), "labels": {}, "judged": {}}
    labels_by = read_labels(folder)
    ids_of = {name: {str(r["id"]) for r in answers[("base", name)]} for name in SETS}
    for labeller, labels in labels_by.items():
        classes_of, sources = {}, {}
        for name in SETS:
            classes_of[name], sources[name] = answer_classes(answers, label_classes(labels), name,
                                                             f"blind labels by {labeller}")
        out["labels"][labeller] = {**rates(answers, classes_of, sources),
                                   "preference": {name: label_preference(labels, ids_of[name]) for name in SETS}}
    if len(labels_by) >= 2:
        out["agreement"] = {name: agreement(labels_by, ids_of[name]) for name in SETS}
    # The measure the judged groups and the headline use: the first labeller's classes, else the detector.
    headline = out["labels"][next(iter(labels_by))] if labels_by else out["detector"]
    out["answers"], out["paired"] = headline["answers"], headline["paired"]
    first = label_classes(next(iter(labels_by.values()))) if labels_by else None
    rt_classes = answer_classes(answers, first, "rt", "blind labels")[0] if first else detector["rt"]
    adv = {str(r["id"]) for r in answers[("base", "rt")] if str(r["id"]).startswith("adv-")}
    own = {str(r["id"]) for r in answers[("base", "rt")]} - adv
    # Where the base model already refused, both answers are often the same refusal and the
    # judge's choice is a coin toss; where it did not, there is something to make more harmless.
    complied = {i for i, c in rt_classes["base"].items() if c not in REFUSING}
    if (folder / "elo-harmless-items.jsonl").exists():
        harmless = per_prompt_p(folder / "elo-harmless-items.jsonl")
        refused = {i for i in harmless if i in rt_classes["base"]} - complied
        out["judged"]["harmless"] = {"all": preference(harmless), "advbench": preference(harmless, adv),
                                     "own": preference(harmless, own),
                                     "base did not refuse": preference(harmless, complied),
                                     "base refused": preference(harmless, refused),
                                     **by_answer_kinds(rt_classes, harmless)}
    if (folder / "elo-helpful-items.jsonl").exists():
        out["judged"]["helpful"] = {"all": preference(per_prompt_p(folder / "elo-helpful-items.jsonl"))}
    for kind in JUDGE_CHECKS:
        path = folder / f"judge-{kind}.json"
        if path.exists():
            out[f"judge_{kind}"] = json.loads(path.read_text())
    return out


def pct(entry: dict) -> str:
    return f"{100 * entry['share']:.0f}% ({100 * entry['low']:.0f}-{100 * entry['high']:.0f}), n={entry['n']}"


def p_value(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def interval(low: float, high: float, scale: float = 1.0, digits: int = 0) -> str:
    if math.isnan(low):
        return "(no interval)"
    return f"({scale * low:.{digits}f} to {scale * high:.{digits}f})"


def rate_tables(part: dict) -> list[str]:
    lines = ["| prompt set | model | refuses | of which bare | mean words | cut off | source of the rates |",
             "|---|---|---|---|---|---|---|"]
    for name, label in SETS.items():
        for model in MODELS:
            a = part["answers"][f"{model}/{name}"]
            lines.append(f"| {label} | {model} | {pct(a['refusals'])} | {pct(a['bare_refusals'])} "
                         f"| {a['mean_words']:.0f} | {a['truncated']} | {a['refusals']['source']} |")
    lines += ["", "Paired, SL-CAI against base on the same prompts (refusals: McNemar's exact test on the "
              "prompts that changed; words: mean difference, 95% paired bootstrap over prompts):", "",
              "| prompt set | prompts | newly refused | newly answered | McNemar p | words, SL-CAI minus base "
              "| source of the refusals |", "|---|---|---|---|---|---|---|"]
    for name, label in SETS.items():
        r, w = part["paired"][name]["refusals"], part["paired"][name]["mean_words"]
        lines.append(f"| {label} | {r['n']} | {r['second_only']} | {r['first_only']} | {p_value(r['p'])} "
                     f"| {w['mean']:+.0f} {interval(w['low'], w['high'])} | {r['source']} |")
    return lines


def markdown(m: dict) -> str:
    lines: list[str] = []
    for labeller, part in m["labels"].items():
        lines += [f"## Blind labels by {labeller}", ""] + rate_tables(part)
        lines += ["", "| prompt set | prompts | blind-label preference for SL-CAI (1 better, 0 worse, 1/2 tie; "
                  "95% bootstrap over prompts) |", "|---|---|---|"]
        for name, label in SETS.items():
            w = part["preference"][name]
            lines.append(f"| {label} | {w['n']} | {w['mean_p']:.2f} {interval(w['low'], w['high'], digits=2)} |")
        lines.append("")
    if "agreement" in m:
        lines += ["## Agreement of the labellers", "", "| prompt set | answers | same class | kappa (5 classes) "
                  "| kappa (refuses or not) | same better answer (prompts) |", "|---|---|---|---|---|---|"]
        for name, label in SETS.items():
            a = m["agreement"][name]
            lines.append(f"| {label} | {a['answers']} | {100 * a['class_agreement']:.0f}% | {a['class_kappa']:.2f} "
                         f"| {a['refuses_kappa']:.2f} | {100 * a['better_agreement']:.0f}% ({a['prompts']}) |")
        lines.append("")
    lines += ["## The keyword detector (a training filter, shown for comparison)", ""] + rate_tables(m["detector"])
    lines += ["", "| judged | prompts | mean P(SL-CAI better) (95% paired bootstrap over prompts) "
              "| prompts with P > 0.5 |", "|---|---|---|---|"]
    for kind, parts in m["judged"].items():
        for part, w in parts.items():
            above = "" if math.isnan(w["above_half"]) else f"{100 * w['above_half']:.0f}%"
            lines.append(f"| {kind} ({part}) | {w['n']} | {w['mean_p']:.3f} {interval(w['low'], w['high'], digits=3)} "
                         f"| {above} |")
    for kind, what in JUDGE_CHECKS.items():
        if f"judge_{kind}" in m:
            j = m[f"judge_{kind}"]
            low, high = j.get("accuracy_interval", [math.nan, math.nan])
            lines.append(f"\njudge check {kind} ({what}): prefers the first {100 * j['accuracy']:.0f}% "
                         f"({100 * low:.0f}-{100 * high:.0f}) of {j['items']} pairs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    m = measures(args.folder)
    print(json.dumps(m, indent=1) if args.json else markdown(m))


if __name__ == "__main__":
    main()
