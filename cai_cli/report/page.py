"""`index.html`: one self-contained page (figures embedded as data, no script, no network), with
each figure's PNG file named beside it and the tables a person wants next to the figures."""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.answer { white-space: pre-wrap; max-height: 16em; overflow: auto; min-width: 14em; }
.refusal { background: #fff3f0; } .note { color: #555; font-size: 0.92em; } code { background: #f5f5f5; }
"""

CAPTIONS = {
    "elo": "Bradley-Terry ratings from pairwise judgements of the feedback model (`cai elo`), and of people "
           "labelling blind (`cai label`, `cai elo --labels`: hollow squares) where given, on the Elo "
           "scale (400 points = 10:1 odds); bars are 95% bootstrap intervals over prompts. Up and to the "
           "right is better on both.",
    "classes": "Each model's answers by the class its blind labellers gave them (`cai label`; an answer "
               "counted once per labeller). On red-team prompts the paper's aim is fewer that comply and, "
               "of the refusals, more that explain themselves than refuse bare.",
    "revisions": "Mean preference-model score of each revision round's text (`cai score` on `revise` "
                 "records; round 0 is the first answer), with 95% Student-t intervals over records.",
    "calibration": "Left: items binned by the feedback model's confidence (width 0.1); a calibrated model "
                   "lies on the diagonal. Right: share of labeled pairs it gets right, per kind.",
    "labels": "The soft labels P(chosen is better) that `cai compare` wrote: the feedback model's confidence.",
    "training": "The trainer's log of each run (training_log.jsonl). For RLOO/GRPO the loss is a "
                "policy-gradient surrogate, not a cross-entropy.",
    "answers": "Share of answers that refuse or object, by the keyword detector `cai_cli/refusals.py` "
               "(its patterns are listed there), and mean length in words.",
}


def with_code(text: str) -> str:
    """Escaped text, with `backquoted` parts set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def number(value: Any, digits: int = 2, percent: bool = False) -> str:
    if value is None:
        return ""
    return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"


def interval(low: Any, high: Any, digits: int = 0, percent: bool = False) -> str:
    if low is None or high is None:
        return ""
    return f"{number(low, digits, percent)} - {number(high, digits, percent)}"


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{escape(c)}</td>" if i in numeric else f"<td>{escape(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def elo_table(section: dict[str, Any]) -> str:
    judges = [("AI judge", section["ratings"]), ("blind labels", section.get("labels", {}))]
    rows = []
    for judge, ratings in judges:
        for model in section["models"]:
            for dimension, r in ratings.get(model, {}).items():
                rows.append([model, judge, dimension, f"{r['elo']:.0f}", interval(r["low"], r["high"]), str(r["items"]),
                             str(r.get("judgements") or ""), number(r.get("mean_answer_words"), 0)])
    html = table(["model", "judge", "dimension", "Elo", "95% interval", "prompts", "judgements", "words/answer"],
                 rows, {3, 4, 5, 6, 7})
    return html


def classes_table(classes: dict[str, Any]) -> str:
    """Each model's answers by class, from the blind labels."""
    from cai_cli.labels import ANSWER_CLASSES

    rows = []
    for model, by_dimension in classes.items():
        for dimension, c in by_dimension.items():
            shares = [f"{number(c['classes'][name]['share'], percent=True)} ({c['classes'][name]['count']})"
                      if c["classes"].get(name, {}).get("share") is not None else "" for name in ANSWER_CLASSES]
            refuses = c.get("refuses") or {}
            rows.append([model, dimension, str(c.get("classified") or 0), *shares,
                         f"{number(refuses.get('share'), percent=True)} "
                         f"[{interval(refuses.get('low'), refuses.get('high'), 1, True)}]"
                         if refuses.get("share") is not None else ""])
    return ("<p class='note'>Refuses = explained or bare refusal, with its 95% Wilson interval.</p>"
            + table(["model", "dimension", "classified", *ANSWER_CLASSES, "refuses"], rows,
                    set(range(2, 4 + len(ANSWER_CLASSES)))))


def answers_table(section: dict[str, Any]) -> str:
    scored = any("mean_score" in row for row in section["rows"])
    rows = [[row["model"], row["set"] or "-", str(row["answers"]),
             f"{number(row['refusal_rate'], percent=True)} ({row['refusals']})",
             interval(row["low"], row["high"], percent=True), number(row["mean_words"], 1), str(row["truncated"])]
            + ([number(row.get("mean_score"), 3)] if scored else []) for row in section["rows"]]
    header = ["model", "prompt set", "answers", "refuse or object", "95% interval", "mean words", "cut off"]
    return table(header + (["mean PM score"] if scored else []), rows, {2, 3, 4, 5, 6, 7})


def samples_table(section: dict[str, Any]) -> str:
    models = section["models"]
    head = "".join(f"<th>{escape(h)}</th>" for h in ["set", "prompt"] + models)
    body = []
    for sample in section["samples"]:
        cells = [f"<td>{escape(sample['set'] or '-')}<br><code>{escape(sample['id'])}</code></td>",
                 f"<td><div class='answer'>{escape(sample['prompt'])}</div></td>"]
        for model in models:
            answer = sample["answers"].get(model)
            if answer is None:
                cells.append("<td></td>")
                continue
            mark = f"<br><span class='note'>refuses ({escape(answer['refusal'])})</span>" if answer["refusal"] else ""
            css = " class='refusal'" if answer["refusal"] else ""
            cells.append(f"<td{css}><div class='answer'>{escape(answer['text'])}</div>{mark}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def calibration_table(section: dict[str, Any]) -> str:
    rows = [[s["name"], str(s["items"]), number(s["accuracy"], percent=True), interval(s["low"], s["high"], 1, True),
             number(s["ece"], 3), number(s["brier"], 3), number(s["log_loss"], 3)] for s in section["series"]]
    return table(["eval items", "items", "accuracy", "95% interval", "ECE", "Brier", "log loss"], rows,
                 {1, 2, 3, 4, 5, 6})


def training_table(section: dict[str, Any]) -> str:
    rows = []
    for run in section["runs"]:
        last = {metric: points[-1][1] for metric, points in run["curves"].items()}
        rows.append([run["name"], run.get("command") or "", str(run["steps"])]
                    + [f"{last[m]:.4g}" if m in last else "" for m in section["metrics"]])
    return table(["run", "command", "steps"] + [f"last {m}" for m in section["metrics"]], rows,
                 set(range(2, 3 + len(section["metrics"]))))


def render_page(summary: dict[str, Any], out: Path) -> str:
    """The HTML page for `summary` (the figures are read from `out`)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cai report</title>"
             f"<style>{STYLE}</style></head><body><h1>cai report</h1>"]
    inputs = [[i["name"] + (f"@{i['set']}" if i.get("set") else ""), i["kind"], str(i["records"]), i["path"]]
              for i in summary["inputs"]]
    parts.append("<p class='note'>Made by <code>cai report</code> from these inputs; the numbers behind every "
                 "figure are in <a href='summary.json'>summary.json</a>.</p>")
    parts.append(table(["name", "kind", "records / logged steps", "path"], inputs, {2}))
    extra = {"elo": elo_table, "classes": lambda section: classes_table(section["classes"]), "calibration": calibration_table, "training": training_table,
             "answers": answers_table}
    for figure in summary["figures"]:
        section = figure["section"]
        data = base64.b64encode((out / figure["file"]).read_bytes()).decode("ascii")
        parts.append(f"<h2 id='{escape(section)}'>{escape(figure['title'])}</h2>")
        parts.append(f"<img src='data:image/png;base64,{data}' width='{figure['width']}' height='{figure['height']}' "
                     f"alt='{escape(figure['title'])} ({escape(figure['file'])})'>")
        parts.append(f"<p class='note'>{with_code(CAPTIONS[section])} File: <a href='{escape(figure['file'])}'>"
                     f"{escape(figure['file'])}</a></p>")
        if section in extra:
            parts.append(extra[section](summary[section]))
        if section == "answers" and summary["answers"]["samples"]:
            parts.append("<h3>Samples, side by side</h3><p class='note'>Prompts every model of a set answered, "
                         "spread over the set; answers the detector counts as refusing are shaded.</p>")
            parts.append(samples_table(summary["answers"]))
    parts.append("</body></html>\n")
    return "\n".join(parts)
