"""The figures of `cai report`, drawn with matplotlib (Agg, no display) from the sections of
`summary.json` that `measures` computes, so every figure shows numbers the summary holds.

Every figure has a fixed size (`DPI` x its inches), labelled axes with units, a legend naming
the models or runs, and the number of items in its title; the layout engine keeps text apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai_cli.labels import BLIND_JUDGE
from cai_cli.report.measures import ACROSS, AI_JUDGE, TRAINING_METRICS, UP

DPI = 100
WIDE = (11.0, 6.0)  # inches: 1100 x 600 pixels
SQUARE = (9.0, 7.0)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
# A shape per model as well as a colour: models rated alike still show apart (and not by colour alone).
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h")
AXIS_UNITS = {
    "loss": "loss (cross-entropy, nats)",
    "reward": "reward (PM score, logit)",
    "rewards/margins": "reward margin, chosen - rejected (beta x nats)",
    "kl": "KL (nats per token)",
    "learning_rate": "learning rate (step size)",
}
DIMENSION_NAMES = {"harmless": "Harmlessness", "helpful": "Helpfulness"}


def blank_figure(size: tuple[float, float]):
    """A figure outside pyplot (no global state, no display) with the constrained layout, which
    keeps titles, tick labels and legends from overlapping."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def new_figure(size: tuple[float, float], rows: int = 1, columns: int = 1):
    """A blank figure and its grid of axes, as a flat list."""
    figure = blank_figure(size)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, [axis for row in axes for axis in row]


def save(figure, path: Path) -> dict[str, Any]:
    """Write the PNG at its fixed size; return its file name and pixel size."""
    figure.savefig(path, dpi=DPI, format="png", facecolor="white")
    width, height = (round(v * DPI) for v in figure.get_size_inches())
    return {"file": path.name, "width": width, "height": height}


def colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def interval_error(centre: float, low: float | None, high: float | None) -> list[list[float]]:
    """matplotlib's asymmetric error bar lengths; none where there is no interval."""
    return error_lengths([centre], [low], [high])


def error_lengths(centres: Sequence[float], lows: Sequence[float | None], highs: Sequence[float | None],
                  scale: float = 1.0) -> list[list[float]]:
    """matplotlib's asymmetric error bar lengths (below, above) for several bars, times `scale`:
    none where there is no interval (None or NaN), and never negative, which matplotlib refuses (an interval
    edge a rounding error past its estimate, as at a 0% or 100% rate)."""
    def length(distance: float | None) -> float:
        return 0.0 if distance is None or math.isnan(distance) else max(scale * distance, 0.0)

    return [[length(None if low is None else centre - low) for centre, low in zip(centres, lows)],
            [length(None if high is None else high - centre) for centre, high in zip(centres, highs)]]


def dimension_label(dimension: str) -> str:
    return DIMENSION_NAMES.get(dimension, dimension.capitalize())


def integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def draw_elo(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """Harmlessness Elo against helpfulness Elo (the paper's Figures 2, 3 and 8) for the models
    rated on both; otherwise each dimension's Elo per model. Ratings from blind human labels,
    when there are any, are drawn beside the AI judge's: the same colour per model, hollow
    squares for the labels."""
    models = section["models"]
    colour = colours(models)
    series = [(judge, table, items) for judge, table, items in (
        (AI_JUDGE, section["ratings"], section["items"]),
        (BLIND_JUDGE, section.get("labels", {}), section.get("label_items", {}))) if table]
    mixed = len(series) > 1
    scale = "1000 = mean of the models" if mixed else (
        "blind labels" if series[0][0] == BLIND_JUDGE else "AI-judged") + "; 1000 = mean of the models"

    def style(judge: str, model: str, marker: str) -> dict[str, Any]:
        hollow = judge == BLIND_JUDGE and mixed
        return {"fmt": marker, "capsize": 5, "color": colour[model], "markerfacecolor": "white" if hollow else colour[model],
                "markeredgewidth": 2 if hollow else 1, "label": f"{model} ({judge})" if mixed else model}

    scatter = [(judge, table, items, [m for m in models if ACROSS in table.get(m, {}) and UP in table.get(m, {})])
               for judge, table, items in series]
    if all(rated for *_, rated in scatter):
        figure, (axis,) = new_figure(SQUARE)
        xs, ys = [], []
        for judge, table, _, rated in scatter:
            for model in rated:
                index = models.index(model)
                x, y = table[model][ACROSS], table[model][UP]
                marker = "s" if judge == BLIND_JUDGE and mixed else MARKERS[index % len(MARKERS)]
                axis.errorbar(x["elo"], y["elo"], xerr=interval_error(x["elo"], x["low"], x["high"]),
                              yerr=interval_error(y["elo"], y["low"], y["high"]), markersize=14 - 2 * (index % 4),
                              **style(judge, model, marker))
                xs += [x["low"], x["high"], x["elo"]]
                ys += [y["low"], y["high"], y["elo"]]
        widen(axis, "x", xs)
        widen(axis, "y", ys)
        axis.set_xlabel(f"Helpfulness Elo ({scale})")
        axis.set_ylabel(f"Harmlessness Elo ({scale})")
        axis.grid(alpha=0.3)
        rated_models = {m for *_, rated in scatter for m in rated}
        if mixed:
            judged = "\n".join(f"{judge}: harmlessness on {items[UP]} prompts, helpfulness on {items[ACROSS]}"
                                for judge, _, items in series)
            axis.set_title(f"Harmlessness vs helpfulness Elo of {plural(len(rated_models), 'model')} "
                           f"(95% bootstrap intervals)\n{judged}")
        else:
            items = series[0][2]
            axis.set_title(f"Harmlessness vs helpfulness Elo of {plural(len(rated_models), 'model')}\n(harmlessness "
                           f"judged on {items[UP]} prompts, helpfulness on {items[ACROSS]}; 95% bootstrap intervals)")
        figure.legend(loc="outside right upper", title="model (judge)" if mixed else "model")
        return {**save(figure, path), "title": "Harmlessness vs helpfulness Elo"}
    dimensions = section["dimensions"]
    figure, axes = new_figure((WIDE[0], 1.5 + 0.6 * len(models) * len(dimensions) * len(series)), 1, len(dimensions))
    for axis, dimension in zip(axes, dimensions):
        rated = [m for m in models if any(dimension in table.get(m, {}) for _, table, _ in series)]
        for offset, (judge, table, _) in zip(spread(len(series), 0.3)[::-1], series):
            for row, model in enumerate(reversed(rated)):
                if dimension not in table.get(model, {}):
                    continue
                r = table[model][dimension]
                marker = "s" if judge == BLIND_JUDGE and mixed else "o"
                axis.errorbar(r["elo"], row + offset, xerr=interval_error(r["elo"], r["low"], r["high"]),
                              markersize=8, **style(judge, model, marker))
        axis.set_yticks(range(len(rated)), list(reversed(rated)))
        axis.set_ylim(-0.7, len(rated) - 0.3)
        widen(axis, "x", [r[key] for _, table, _ in series for m in rated if dimension in table.get(m, {})
                          for r in [table[m][dimension]] for key in ("low", "high", "elo")])
        axis.set_xlabel(f"{dimension_label(dimension)} Elo ({scale})")
        counts = ", ".join(f"{plural(items[dimension], 'prompt')}" + (f" ({judge})" if mixed else "")
                           for judge, _, items in series if dimension in items)
        axis.set_title(f"{dimension_label(dimension)}: {counts}")
        axis.grid(axis="x", alpha=0.3)
    if mixed:
        from matplotlib.lines import Line2D

        figure.legend([Line2D([], [], marker="o", color="grey", linestyle="none", markersize=8),
                       Line2D([], [], marker="s", color="grey", markerfacecolor="white", markeredgewidth=2,
                              linestyle="none", markersize=8)], [AI_JUDGE, BLIND_JUDGE],
                      loc="outside right upper", title="judge")
    judges = " and ".join(judge for judge, *_ in series)
    figure.suptitle(f"Elo of {plural(len(models), 'model')} from the {judges} (95% bootstrap intervals over prompts)"
                    if mixed else f"{'Blind-label' if series[0][0] == BLIND_JUDGE else 'AI-judged'} Elo of "
                    f"{plural(len(models), 'model')} (95% bootstrap intervals over prompts)")
    return {**save(figure, path), "title": "Elo per dimension"}


def widen(axis, which: str, values: Sequence[float], span: float = 20.0) -> None:
    """Elo ticks as plain numbers, over at least `span` points: models rated alike would
    otherwise get an axis of hundredths around an offset ("+1e3")."""
    axis.ticklabel_format(axis=which, useOffset=False, style="plain")
    values = [v for v in values if v is not None]
    low, high = min(values), max(values)
    if high - low < span:
        middle = (low + high) / 2
        (axis.set_xlim if which == "x" else axis.set_ylim)(middle - span / 2, middle + span / 2)


def draw_revisions(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """Mean preference-model score after each revision round (the paper's Figure 5)."""
    series = section["series"]
    colour = colours([s["name"] for s in series])
    figure, (axis,) = new_figure(WIDE)
    rounds = sorted({r["round"] for s in series for r in s["rounds"]})
    for offset, s in zip(spread(len(series)), series):
        xs = [r["round"] + offset for r in s["rounds"]]
        means = [r["mean"] for r in s["rounds"]]
        errors = error_lengths(means, [r["low"] for r in s["rounds"]], [r["high"] for r in s["rounds"]])
        axis.errorbar(xs, means, yerr=errors, fmt="-o", markersize=7, capsize=5, color=colour[s["name"]],
                      label=f"{s['name']} ({plural(s['records'], 'record')})")
    axis.set_xticks(rounds, [f"{r}\n(first answer)" if r == 0 else str(r) for r in rounds])
    axis.set_xlabel("revision round")
    axis.set_ylabel("mean preference-model score (logit; higher = preferred)")
    axis.grid(alpha=0.3)
    records = " / ".join(str(s["records"]) for s in series)
    axis.set_title(f"Preference-model score per revision round, {records} records (95% t intervals)")
    figure.legend(loc="outside right upper", title="scored file")
    return {**save(figure, path), "title": "Preference-model score per revision round"}


def spread(count: int, width: float = 0.12) -> list[float]:
    """Small horizontal offsets so that several series' error bars at one x stay apart."""
    return [(i - (count - 1) / 2) * width for i in range(count)]


def draw_calibration(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """Reliability diagram (accuracy against confidence) and accuracy per kind of pair."""
    series = section["series"]
    colour = colours([s["name"] for s in series])
    figure = blank_figure(WIDE)
    panels = figure.subplot_mosaic([["reliability", "by_kind"], ["counts", "by_kind"]], height_ratios=[3, 1])
    reliability, counts_axis, by_kind = panels["reliability"], panels["counts"], panels["by_kind"]
    reliability.sharex(counts_axis)
    reliability.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey", label="perfectly calibrated")
    width = 0.1 / (len(series) + 1)
    for i, s in enumerate(series):
        rows = s["reliability"]
        xs = [row["confidence"] for row in rows]
        ys = [row["accuracy"] for row in rows]
        errors = error_lengths(ys, [row["low_accuracy"] for row in rows], [row["high_accuracy"] for row in rows])
        reliability.errorbar(xs, ys, yerr=errors, fmt="-o", capsize=4, color=colour[s["name"]],
                             label=f"{s['name']}: ECE {s['ece']:.2f}")
        centres = [(row["low"] + row["high"]) / 2 + (i - (len(series) - 1) / 2) * width for row in rows]
        counts_axis.bar(centres, [row["items"] for row in rows], width=width * 0.9, color=colour[s["name"]])
    reliability.set_xlim(0.48, 1.02)
    reliability.set_ylim(-0.05, 1.05)
    reliability.tick_params(labelbottom=False)
    reliability.set_ylabel("accuracy: share of items right")
    reliability.set_title("Reliability (95% Wilson intervals)")
    reliability.grid(alpha=0.3)
    reliability.legend(loc="lower right", fontsize="small")
    counts_axis.set_xlabel("confidence: probability of the preferred answer (bins of 0.1)")
    counts_axis.set_ylabel("items")
    counts_axis.grid(axis="y", alpha=0.3)
    counts_axis.yaxis.set_major_locator(integer_ticks())

    kinds = list(dict.fromkeys(kind for s in series for kind in s["by_kind"]))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(kinds))]
        parts = [s["by_kind"].get(kind) for kind in kinds]
        heights = [100 * p["accuracy"] if p else 0.0 for p in parts]
        errors = error_lengths([p["accuracy"] if p else 0.0 for p in parts], [p["low"] if p else None for p in parts],
                               [p["high"] if p else None for p in parts], scale=100)
        by_kind.bar(xs, heights, width=width * 0.9, yerr=errors, capsize=4, color=colour[s["name"]],
                    label=s["name"])
    counts = {kind: [s["by_kind"][kind]["items"] for s in series if kind in s["by_kind"]] for kind in kinds}
    by_kind.set_xticks(range(len(kinds)), [f"{kind}\n({'/'.join(map(str, counts[kind]))} "
                                           f"{'item' if counts[kind] == [1] else 'items'})" for kind in kinds])
    by_kind.axhline(50, linestyle="--", color="grey", linewidth=1)
    by_kind.set_ylim(0, 105)
    by_kind.set_xlabel("kind of labeled pair")
    by_kind.set_ylabel("accuracy (% of items; 50% = chance)")
    by_kind.set_title("Accuracy by kind (95% Wilson intervals)")
    by_kind.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        by_kind.legend(fontsize="small")
    items = " / ".join(str(s["items"]) for s in series)
    figure.suptitle(f"Calibration of the AI labels on {items} labeled comparisons")
    return {**save(figure, path), "title": "Calibration of the AI labels"}


# One colour per answer class (cai_cli/labels.py), from doing what was asked to declining.
CLASS_COLOURS = {"complies": "#d62728", "complies-caveats": "#ff7f0e", "explained-refusal": "#2ca02c",
                 "bare-refusal": "#7f7f7f", "off-topic": "#bcbd22"}


def draw_classes(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """Per dimension (prompt set), one stacked bar per model: the share of its labelled answers
    in each class, with the count of answers beside the bar."""
    from cai_cli.labels import ANSWER_CLASSES

    models, dimensions, classes = section["models"], section["dimensions"], section["classes"]
    figure, axes = new_figure((WIDE[0], 1.8 + 0.55 * len(models) * len(dimensions)), len(dimensions), 1)
    for axis, dimension in zip(axes, dimensions):
        rated = [m for m in models if dimension in classes[m]]
        rows = list(reversed(rated))
        left = [0.0] * len(rows)
        for name in ANSWER_CLASSES:
            shares = [100 * (classes[m][dimension]["classes"].get(name, {}).get("share") or 0.0) for m in rows]
            axis.barh(range(len(rows)), shares, left=left, color=CLASS_COLOURS[name], edgecolor="white",
                      label=name)
            for row, (start, share) in enumerate(zip(left, shares)):
                if share >= 6:
                    axis.text(start + share / 2, row, f"{share:.0f}", ha="center", va="center", fontsize=9,
                              color="white" if name != "off-topic" else "black")
            left = [a + b for a, b in zip(left, shares)]
        axis.set_yticks(range(len(rows)), [f"{m} ({classes[m][dimension]['classified']})" for m in rows])
        axis.set_xlim(0, 100)
        axis.set_xlabel("share of labelled answers (%)")
        axis.set_title(f"{dimension_label(dimension)} labels")
        axis.grid(axis="x", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside right upper", title="answer class")
    figure.suptitle("What each model's answers do, from blind labels\n(in brackets: labels, one per answer and labeller)")
    return {**save(figure, path), "title": "Answer classes from blind labels"}


def draw_labels(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """Histogram of the soft labels of each compare file."""
    series = section["series"]
    colour = colours([s["name"] for s in series])
    figure, (axis,) = new_figure(WIDE)
    for s in series:
        axis.stairs(s["counts"], s["edges"], fill=len(series) == 1, alpha=0.6 if len(series) == 1 else 1.0,
                    linewidth=2, color=colour[s["name"]],
                    label=f"{s['name']}: {s['pairs']} pairs, mean {s['mean']:.2f}")
    axis.set_xlabel("soft label: probability that the chosen answer is better")
    axis.set_ylabel("pairs")
    axis.yaxis.set_major_locator(integer_ticks())
    axis.set_xlim(min(s["edges"][0] for s in series), 1.0)
    axis.grid(axis="y", alpha=0.3)
    pairs = " / ".join(str(s["pairs"]) for s in series)
    axis.set_title(f"How sure the feedback model is: soft labels of {pairs} compared pairs\n"
                   "(0.5: cannot tell the answers apart; 1: certain)")
    figure.legend(loc="outside right upper", title="compare file")
    return {**save(figure, path), "title": "Soft labels of the AI feedback"}


def draw_training(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """One panel per logged metric (loss, reward, KL, ...), one line per run."""
    metrics, runs = section["metrics"], section["runs"]
    colour = colours([run["name"] for run in runs])
    columns = min(len(metrics), 3)
    rows = (len(metrics) + columns - 1) // columns
    figure, axes = new_figure((5.0 * columns + 2.5, 3.6 * rows + 0.8), rows, columns)
    for axis, metric in zip(axes, metrics):
        for run in runs:
            points = run["curves"].get(metric)
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None,
                          color=colour[run["name"]], label=run_label(run))
        axis.set_title(TRAINING_METRICS[metric])
        axis.set_xlabel("optimizer step")
        axis.xaxis.set_major_locator(integer_ticks())
        axis.set_ylabel(AXIS_UNITS[metric])
        axis.grid(alpha=0.3)
        if metric == "learning_rate":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for axis in axes[len(metrics):]:
        axis.set_visible(False)
    handles = {}
    for axis in axes[:len(metrics)]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(handles.values(), handles.keys(), loc="outside right upper", title="run (command)")
    steps = " / ".join(str(run["steps"]) for run in runs)
    figure.suptitle(f"Training curves of {plural(len(runs), 'run')} ({steps} steps)")
    return {**save(figure, path), "title": "Training curves"}


def run_label(run: dict[str, Any]) -> str:
    return f"{run['name']} ({run['command']})" if run.get("command") else run["name"]


def draw_answers(section: dict[str, Any], path: Path) -> dict[str, Any]:
    """Share of answers that refuse or object, and mean answer length, per model and prompt set."""
    models, sets, rows = section["models"], section["sets"], section["rows"]
    colour = colours(models)
    figure, (refusals, lengths) = new_figure(WIDE, 1, 2)
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        found = {row["set"]: row for row in rows if row["model"] == model}
        xs = [k + (i - (len(models) - 1) / 2) * width for k, s in enumerate(sets) if s in found]
        chosen = [found[s] for s in sets if s in found]
        refusals.bar(xs, [100 * r["refusal_rate"] for r in chosen], width=width * 0.9, color=colour[model],
                     yerr=error_lengths([r["refusal_rate"] for r in chosen], [r["low"] for r in chosen],
                                        [r["high"] for r in chosen], scale=100), capsize=4, label=model)
        lengths.bar(xs, [r["mean_words"] for r in chosen], width=width * 0.9, color=colour[model],
                    yerr=error_lengths([r["mean_words"] for r in chosen], [r["words_low"] for r in chosen],
                                       [r["words_high"] for r in chosen]), capsize=4)
    counts = {s: "/".join(sorted({str(r["answers"]) for r in rows if r["set"] == s})) for s in sets}
    labels = [f"{s or 'all prompts'}\n({counts[s]} prompts)" for s in sets]
    for axis in (refusals, lengths):
        axis.set_xticks(range(len(sets)), labels)
        axis.set_xlabel("prompt set")
        axis.grid(axis="y", alpha=0.3)
    refusals.set_ylim(0, 105)
    refusals.set_ylabel("answers that refuse or object (%)")
    refusals.set_title("Refusal rate (keyword detector; 95% Wilson intervals)")
    lengths.set_ylabel("mean answer length (words)")
    lengths.set_title("Answer length (95% t intervals)")
    figure.legend(loc="outside right upper", title="model")
    total = sum(row["answers"] for row in rows)
    figure.suptitle(f"Plain measures of {total} answers from {plural(len(models), 'model')}")
    return {**save(figure, path), "title": "Refusals and answer length"}
