"""The numbers behind every figure of `cai report`, from the inputs, as JSON-ready data.

Each function takes the inputs of one kind and returns one section of `summary.json`; the
figures are drawn from these sections and nothing else, so the summary holds exactly what the
figures show. Intervals are 95%: Wilson for shares, Student-t for means, the bootstrap over
prompts for Elo (as `cai elo` computed it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cai_cli.metrics import calibration, mean, mean_interval, wilson_interval
from cai_cli.errors import CaiError
from cai_cli.labels import BLIND_JUDGE
from cai_cli.prompts import prompt_messages
from cai_cli.refusals import refusal_pattern
from cai_cli.report.inputs import ReportInput
from cai_cli.stages.elo import rating_records, ratings_by_dimension

# The dimensions the paper plots against each other: helpfulness across, harmlessness up.
ACROSS, UP = "helpful", "harmless"
AI_JUDGE = "AI judge"
LABEL_BINS = 10
SAMPLES = 10
# Trainer log keys drawn as training curves, in panel order, with what they are.
TRAINING_METRICS = {
    "loss": "training loss",
    "reward": "mean reward (preference-model score)",
    "rewards/margins": "DPO reward margin",
    "kl": "KL divergence from the starting policy",
    "learning_rate": "learning rate",
}


def elo_section(inputs: Sequence[ReportInput]) -> dict[str, Any]:
    """Ratings per model and dimension, merged across files (harmlessness from one `cai elo`
    run and helpfulness from another, say): the AI judge's in `ratings`, those fitted from
    blind human labels (`cai elo --labels`) apart in `labels`, with each model's answer classes
    in `classes`. A model rated twice on one dimension by the same kind of judge is an error:
    two fits are on different scales and cannot be told apart."""
    by_judge: dict[str, dict[str, dict[str, dict[str, Any]]]] = {AI_JUDGE: {}, BLIND_JUDGE: {}}
    sources: dict[tuple[str, str, str], str] = {}
    classes: dict[str, dict[str, Any]] = {}
    for source in inputs:
        records = source.records if source.kind == "ratings" else refit(source)
        for record in records:
            judge = BLIND_JUDGE if record.get("judge") == BLIND_JUDGE else AI_JUDGE
            model, dimension = str(record["model"]), str(record["dimension"])
            if (judge, model, dimension) in sources:
                by = " (blind labels)" if judge == BLIND_JUDGE else ""
                raise CaiError(f"{source.path}: {model} is rated on {dimension}{by} here and in "
                               f"{sources[(judge, model, dimension)]}; give one rating per model and dimension")
            sources[(judge, model, dimension)] = str(source.path)
            by_judge[judge].setdefault(model, {})[dimension] = {
                "elo": record["elo"], "low": record["low"], "high": record["high"], "items": record["items"],
                "judgements": record.get("judgements"), "source": str(source.path),
                **({"mean_answer_words": record["mean_answer_words"]} if "mean_answer_words" in record else {})}
            if judge == BLIND_JUDGE and isinstance(record.get("classes"), dict):
                classes.setdefault(model, {})[dimension] = {
                    "classified": record.get("classified"), "refuses": record.get("refuses"),
                    "classes": record["classes"]}
    ratings, labels = by_judge[AI_JUDGE], by_judge[BLIND_JUDGE]
    models = list(dict.fromkeys([*ratings, *labels]))
    dimensions = list(dict.fromkeys(d for table in (ratings, labels) for by_dimension in table.values()
                                    for d in by_dimension))
    section: dict[str, Any] = {"models": models, "dimensions": dimensions,
                               "items": items_per_dimension(ratings, dimensions), "ratings": ratings}
    if labels:
        section.update(labels=labels, label_items=items_per_dimension(labels, dimensions), classes=classes)
    return section


def classes_section(inputs: Sequence[ReportInput]) -> dict[str, Any] | None:
    """What each model's answers do (complies ... off-topic), per dimension, from the classes
    that blind-label ratings (`cai elo --labels`) carry; None when no input has any."""
    section = elo_section(inputs)
    classes = section.get("classes")
    if not classes:
        return None
    return {"models": [m for m in section["models"] if m in classes],
            "dimensions": [d for d in section["dimensions"] if any(d in by_dimension for by_dimension in classes.values())],
            "classes": classes}


def items_per_dimension(ratings: dict[str, dict[str, dict[str, Any]]], dimensions: Sequence[str]) -> dict[str, int]:
    return {d: max(r[d]["items"] for r in ratings.values() if d in r) for d in dimensions
            if any(d in r for r in ratings.values())}


def refit(source: ReportInput) -> list[dict[str, Any]]:
    """Ratings from kept judgements, as `cai elo --from-items` fits them (1000 resamples, seed 0)."""
    return rating_records(ratings_by_dimension(source.records, bootstrap=1000, seed=0))


def revisions_section(inputs: Sequence[ReportInput]) -> dict[str, Any]:
    """Mean preference-model score per revision round (0: the first answer), per scored file:
    the paper's Figure 5. A round's score is that of the response in effect after it: a revision
    that `revise` rejected (it has `problems`) left the previous response in place, so the round
    scores that one, not the rejected text."""
    series = []
    for source in inputs:
        by_round: dict[int, list[float]] = {}
        for record in source.records:
            in_effect = record.get("initial_score")
            if in_effect is not None:
                by_round.setdefault(0, []).append(float(in_effect))
            for i, entry in enumerate(record.get("revisions", []), 1):
                if not entry.get("problems") and entry.get("score") is not None:
                    in_effect = entry["score"]
                if in_effect is not None:
                    by_round.setdefault(i, []).append(float(in_effect))
        rounds = []
        for number in sorted(by_round):
            centre, low, high = mean_interval(by_round[number])
            rounds.append({"round": number, "n": len(by_round[number]), "mean": centre, "low": low, "high": high})
        series.append({"name": source.name, "source": str(source.path), "records": source.size, "rounds": rounds})
    return {"series": series}


def calibration_section(inputs: Sequence[ReportInput]) -> dict[str, Any]:
    """Per `eval --items` file: accuracy, the reliability table, and accuracy per `kind`.

    A two-option item's confidence (the probability of the answer the model preferred) is
    max(p_correct, 1 - p_correct). An item of the paper's format with more than two options does
    not record the other options' probabilities, so it counts for accuracy but not in the
    reliability table."""
    series = []
    for source in inputs:
        binary = [r for r in source.records if options_of(r) == 2]
        table = calibration([max(r["p_correct"], 1 - r["p_correct"]) for r in binary],
                            [float(r["correct"]) for r in binary], [r["p_correct"] for r in binary])
        for row in table["bins"]:
            row["low_accuracy"], row["high_accuracy"] = wilson_interval(row["accuracy"] * row["items"], row["items"])
        scores = [float(r["correct"]) for r in source.records]
        kinds: dict[str, list[float]] = {}
        for record in source.records:
            kinds.setdefault(str(record.get("kind", "all")), []).append(float(record["correct"]))
        series.append({
            "name": source.name, "source": str(source.path), "items": source.size,
            **share_of(scores, "accuracy"),
            "ece": table["ece"], "brier": table["brier"], "log_loss": table["log_loss"],
            "reliability": table["bins"], "left_out_of_reliability": source.size - len(binary),
            "by_kind": {kind: {"items": len(values), **share_of(values, "accuracy")} for kind, values in kinds.items()},
        })
    return {"series": series}


def options_of(record: dict[str, Any]) -> int:
    if "corrects" in record or "incorrects" in record:
        return len(record.get("corrects") or []) + len(record.get("incorrects") or [])
    return 2


def share_of(outcomes: Sequence[float], key: str) -> dict[str, float]:
    """The share of successes (a tie counts half) with its Wilson interval."""
    low, high = wilson_interval(math.fsum(outcomes), len(outcomes))
    return {key: mean(outcomes), "low": low, "high": high}


def labels_section(inputs: Sequence[ReportInput]) -> dict[str, Any]:
    """The distribution of the soft labels P(chosen is better) of each `compare` file: near 0.5
    the feedback model could not tell the answers apart, near 1 it was sure."""
    series = []
    for source in inputs:
        labels = [float(r["label"]) for r in source.records]
        start = 0.5 if min(labels) >= 0.5 else 0.0  # compare's labels lie in [0.5, 1]
        width = (1.0 - start) / LABEL_BINS
        counts = [0] * LABEL_BINS
        for label in labels:
            counts[min(int((label - start) / width), LABEL_BINS - 1)] += 1
        ordered = sorted(labels)
        series.append({"name": source.name, "source": str(source.path), "pairs": len(labels),
                       "mean": mean(labels), "median": ordered[len(ordered) // 2],
                       "share_at_least_0.9": mean(label >= 0.9 for label in labels),
                       "share_below_0.6": mean(label < 0.6 for label in labels),
                       "edges": [start + i * width for i in range(LABEL_BINS + 1)], "counts": counts})
    return {"series": series}


def training_section(inputs: Sequence[ReportInput]) -> dict[str, Any]:
    """Each run's logged curves (step, value) for the metrics in `TRAINING_METRICS` it has."""
    runs = []
    for source in inputs:
        curves = {}
        for metric in TRAINING_METRICS:
            points = [[int(e["step"]), float(e[metric])] for e in source.records
                      if isinstance(e.get(metric), (int, float)) and math.isfinite(e[metric])]
            if points:
                curves[metric] = points
        settings = source.provenance.get("settings") or {}
        command = source.provenance.get("command")
        if command == "train-rl" and settings.get("algo"):
            command = f"train-rl --algo {settings['algo']}"
        runs.append({"name": source.name, "source": str(source.path), "command": command,
                     "steps": max(int(e["step"]) for e in source.records), "curves": curves})
    return {"metrics": [m for m in TRAINING_METRICS if any(m in run["curves"] for run in runs)], "runs": runs}


def answers_section(inputs: Sequence[ReportInput], samples: int = SAMPLES) -> dict[str, Any]:
    """Per model and prompt set: the share of answers that refuse or object (`cai_cli.refusals`),
    the mean length in words, the mean preference-model score where the answers were scored; and
    `samples` prompts answered by every model of a set, side by side."""
    models = list(dict.fromkeys(source.name for source in inputs))
    sets = list(dict.fromkeys(source.prompt_set or "" for source in inputs))
    seen: dict[tuple[str, str], str] = {}
    rows = []
    for source in inputs:
        key = (source.name, source.prompt_set or "")
        if key in seen:
            raise CaiError(f"{source.path}: {describe(*key)} is also in {seen[key]}; name each file MODEL@SET=FILE")
        seen[key] = str(source.path)
        texts = [r["response"] for r in source.records]
        refusals = [refusal_pattern(text) is not None for text in texts]
        words = [len(text.split()) for text in texts]
        centre, low, high = mean_interval(words)
        if low is not None:
            low = max(low, 0.0)  # no answer is shorter than no words
        row = {"model": source.name, "set": source.prompt_set or "", "source": str(source.path),
               "answers": len(texts), "refusals": sum(refusals), **share_of(refusals, "refusal_rate"),
               "mean_words": centre, "words_low": low, "words_high": high,
               "truncated": sum(bool(r.get("response_truncated")) for r in source.records)}
        scores = [r["score"] for r in source.records if isinstance(r.get("score"), (int, float))]
        if scores:
            row["mean_score"] = mean(scores)
        rows.append(row)
    return {"models": models, "sets": sets, "rows": rows, "samples": side_by_side(inputs, samples)}


def describe(model: str, prompt_set: str) -> str:
    return f"{model} on {prompt_set}" if prompt_set else model


def side_by_side(inputs: Sequence[ReportInput], count: int) -> list[dict[str, Any]]:
    """Up to `count` prompts that every model of a set answered, spread evenly over each set's
    prompts (so not only its first few), with each model's answer and whether it refuses."""
    by_set: dict[str, list[ReportInput]] = {}
    for source in inputs:
        by_set.setdefault(source.prompt_set or "", []).append(source)
    picks: dict[str, list[str]] = {}
    for prompt_set, sources in by_set.items():
        answered = [{str(r["id"]): r for r in source.records} for source in sources]
        picks[prompt_set] = [rid for rid in answered[0] if all(rid in other for other in answered[1:])]
    quota = {prompt_set: 0 for prompt_set in picks}
    while sum(quota.values()) < count and any(quota[s] < len(picks[s]) for s in picks):
        for prompt_set in picks:  # one more per set in turn, while there are prompts left
            if quota[prompt_set] < len(picks[prompt_set]) and sum(quota.values()) < count:
                quota[prompt_set] += 1
    samples = []
    for prompt_set, ids in picks.items():
        chosen = evenly_spaced(ids, quota[prompt_set])
        answered = {source.name: {str(r["id"]): r for r in source.records} for source in by_set[prompt_set]}
        for rid in chosen:
            first = next(iter(answered.values()))[rid]
            samples.append({"set": prompt_set, "id": rid, "prompt": last_user_turn(first),
                            "answers": {model: {"text": records[rid]["response"],
                                                "refusal": refusal_pattern(records[rid]["response"])}
                                        for model, records in answered.items()}})
    return samples


def evenly_spaced(items: Sequence[str], count: int) -> list[str]:
    if count <= 0:
        return []
    if count >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / max(count - 1, 1))] for i in range(count)]


def last_user_turn(record: dict[str, Any]) -> str:
    """The last user turn: what the answer answers."""
    users = [m["content"] for m in prompt_messages(record) if m["role"] == "user"]
    return users[-1] if users else ""
