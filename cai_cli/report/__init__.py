"""`cai report`: the paper's figures from your own runs, as PNG files, `summary.json` (the
numbers behind every figure) and one self-contained `index.html`.

It takes whatever outputs it is given (their kinds are told from their content: `inputs.py`)
and draws the figures they allow:

| figure | from |
|---|---|
| `elo.png`: harmlessness vs helpfulness Elo | `cai elo` ratings (several files merge) or its `--items` |
| `classes.png`: what each model's answers do | `cai elo --labels` ratings (the blind labels' classes) |
| `revisions.png`: PM score per revision round | `cai score` output of `revise` records |
| `calibration.png`: reliability and accuracy by kind | `cai eval --items` |
| `labels.png`: soft labels of the AI feedback | `cai compare` output |
| `training.png`: loss, reward, KL, learning rate | `cai train-*` folders |
| `answers.png`: refusal rate and answer length | `cai sample` answers, one file per model (and prompt set) |

As a library:

    from cai_cli.report import build_report
    summary = build_report(["runs/elo.jsonl", "base@red-team=answers/base.jsonl", "runs/sl-cai"], Path("report"))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError
from cai_cli.report import figures, measures
from cai_cli.report.inputs import ReportInput, read_input

SUMMARY_FILE = "summary.json"
PAGE_FILE = "index.html"
SIGNIFICANT_DIGITS = 6


@dataclass(frozen=True)
class Section:
    """One figure: the input kinds it is drawn from, how its numbers are computed and drawn."""

    name: str
    kinds: frozenset[str]
    measure: Callable[[Sequence[ReportInput]], dict[str, Any]]
    draw: Callable[[dict[str, Any], Path], dict[str, Any]]

    @property
    def file(self) -> str:
        return f"{self.name}.png"


SECTIONS = (
    Section("elo", frozenset({"ratings", "judgements"}), measures.elo_section, figures.draw_elo),
    Section("classes", frozenset({"ratings"}), measures.classes_section, figures.draw_classes),
    Section("revisions", frozenset({"revision-scores"}), measures.revisions_section, figures.draw_revisions),
    Section("calibration", frozenset({"eval-items"}), measures.calibration_section, figures.draw_calibration),
    Section("labels", frozenset({"preferences"}), measures.labels_section, figures.draw_labels),
    Section("training", frozenset({"training-run"}), measures.training_section, figures.draw_training),
    Section("answers", frozenset({"answers"}), measures.answers_section, figures.draw_answers),
)


def build_report(specs: Sequence[str], out: Path, samples: int = measures.SAMPLES) -> dict[str, Any]:
    """Read every input (all of them, before anything is written), compute each section the
    inputs allow, draw its figure into `out`, and write `summary.json` and `index.html` there."""
    from cai_cli.report.page import render_page

    if not specs:
        raise CaiError("give the files to report on (outputs of elo, score, eval --items, compare, sample, train-*)")
    inputs = [read_input(spec) for spec in specs]
    sections: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        chosen = [i for i in inputs if i.kind in section.kinds]
        if chosen:
            numbers = (measures.answers_section(chosen, samples) if section.name == "answers"
                       else section.measure(chosen))
            if numbers is not None:  # None: these inputs hold nothing this figure draws
                sections[section.name] = significant(numbers)
    if out.exists() and not out.is_dir():
        raise CaiError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for section in SECTIONS:
        path = out / section.file
        if section.name in sections:
            drawn.append({**section.draw(sections[section.name], path), "section": section.name})
        else:
            path.unlink(missing_ok=True)  # a figure of an earlier report would not match this summary
    summary = {"inputs": [describe_input(i) for i in inputs], "figures": drawn, **sections}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / PAGE_FILE).write_text(render_page(summary, out), encoding="utf-8")
    return summary


def describe_input(source: ReportInput) -> dict[str, Any]:
    described = {"name": source.name, "path": str(source.path), "kind": source.kind, "records": source.size}
    if source.prompt_set:
        described["set"] = source.prompt_set
    return described


def significant(value: Any) -> Any:
    """Floats to `SIGNIFICANT_DIGITS` significant digits (a learning rate of 1.7e-05 stays one),
    so the summary reads well and the figures show exactly what it holds."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: significant(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [significant(v) for v in value]
    return value
