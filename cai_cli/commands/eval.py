"""cai eval: how good a feedback model is on comparisons whose right answer is known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cai_cli.backends import BackendOptions, load_backend
from cai_cli.errors import CaiError, console
from cai_cli.flags import IO_PANEL, with_settings
from cai_cli.options import MODEL_OPTIONS, ConstitutionOpt, InputArg, SkipInvalidOpt
from cai_cli.settings import FeedbackSettings

ItemsOpt = Annotated[Optional[Path], typer.Option(
    "--items", show_default=False, rich_help_panel=IO_PANEL,
    help="Also write each input record with its 'p_correct' and 'correct' to FILE (JSONL), one line as each "
         "item is scored.")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", rich_help_panel=IO_PANEL,
    help="With --items: count the items already scored in FILE and ask only the others.")]


@with_settings(settings=FeedbackSettings, model_options=MODEL_OPTIONS)
def eval(  # noqa: A001 - the command is `cai eval`
    input: InputArg = None,
    constitution: ConstitutionOpt = None,
    items: ItemsOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    settings: FeedbackSettings,
    model_options: BackendOptions,
) -> None:
    """Measure a feedback model on labeled comparisons: accuracy, position bias (how often each
    letter wins) and calibration, as a table on stderr and a JSON summary on stdout.

    Reads labeled pairs (`prompt` or `messages`, `chosen` = the better one,
    `rejected`), asked as `cai compare` asks, and the paper's evaluation
    format (`prompt` holding question and options, `corrects`, `incorrects`
    such as " (A)"), asked as one chat turn: with --swap (the default) a
    second time with the option texts reversed, which needs them on lines
    starting "(A)", "(B)"; a prompt where they are not found is asked as
    written and counted.

    Examples:

        cai eval examples/labeled_pairs.jsonl

        cai eval --no-swap examples/labeled_pairs.jsonl | jq .letter_wins

        cai eval --layout paper --principles 4 examples/labeled_pairs.jsonl | jq .accuracy_interval

        cai eval -m my-feedback-model.gguf --principles 4 paper_eval.jsonl --items scored.jsonl --resume
    """
    from cai_cli.constitution import load_constitution
    from cai_cli.metrics import summarise
    from cai_cli.stages.eval import EvalRun, item_record, kept_outcome, validate_item_record
    from cai_cli.stages.feedback import check_feedback_settings
    from cai_cli.streams import SideFile, StreamInput, source_name

    rules = load_constitution(constitution)
    check_feedback_settings(rules, settings)
    with SideFile("eval", items, resume, validate_item_record, "the items already scored") as side:
        if side.kept is not None:
            console.print(f"eval: {len(side.kept.records)} item(s) kept in {items}; those whose texts and settings "
                          "are unchanged are not asked again", markup=False, soft_wrap=True)
        backend = load_backend(model_options)
        run = EvalRun(backend, rules, settings, side.kept)
        source = StreamInput(input, run.validate, skip_invalid)
        made = []
        for outcome in run(source.records(skip=())):
            made.append(outcome)
            side.write(item_record(outcome, run.key(outcome.record)))
    if source.error is not None:
        raise source.error
    reused = [kept_outcome(line) for line in side.finish()]
    outcomes = reused + made
    if side.kept is not None:
        console.print(f"eval: {len(reused)} item(s) reused, {len(made)} asked", markup=False, soft_wrap=True)
    if not outcomes:
        raise CaiError(f"no labeled comparisons to evaluate in {source_name(input)}")
    summary = summarise(outcomes)
    summary["model"] = Path(backend.model_path).name
    summary["backend"] = backend.name
    if side.kept is not None:
        summary["resumed"] = {"reused": len(reused), "asked": len(made), "dropped_stale": side.stale}
    summary["settings"] = {"principle": settings.principle, "principles": settings.principles, "swap": settings.swap,
                           "layout": settings.layout, "cot": settings.cot,
                           "clamp": list(settings.clamp) if settings.clamp else None}
    console.print(summary_table(summary))
    if summary["options_unparsed"]:
        console.print(f"{summary['options_unparsed']} item(s) in the paper's format: options not found (asked as "
                      "written, in one ordering; put each option on a line starting '(A) ', '(B) ')", soft_wrap=True)
    print(json.dumps(summary), flush=True)


def summary_table(summary: dict[str, Any]):
    """The summary as a rich table for a person reading stderr."""
    from rich.table import Table

    table = Table(title="Feedback model evaluation", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("model", summary["model"])
    table.add_row("backend", summary["backend"])
    table.add_row("items (questions)", f"{summary['items']} ({summary['questions']})")
    if summary["options_unparsed"]:
        table.add_row("options not found, one ordering", str(summary["options_unparsed"]))
    low, high = summary["accuracy_interval"]
    table.add_row("accuracy (95% interval)", f"{percent(summary['accuracy'])} ({percent(low)}-{percent(high)})")
    for kind, part in summary.get("by_kind", {}).items():
        table.add_row(f"  accuracy, {kind}", f"{percent(part['accuracy'])} of {part['items']}")
    for letter, share in summary["letter_wins"].items():
        table.add_row(f"wins for ({letter})" if letter != "tie" else "ties", percent(share))
    for letter, accuracy in summary["accuracy_by_right_letter"].items():
        table.add_row(f"accuracy when right answer is ({letter})", percent(accuracy))
    table.add_row("mean P(A)", f"{summary['mean_p_first']:.3f}")
    calibration = summary["calibration"]
    table.add_row("calibration error (ECE)", f"{calibration['ece']:.3f}")
    table.add_row("Brier score / log loss", f"{calibration['brier']:.3f} / {calibration['log_loss']:.3f}")
    for row in calibration["bins"]:
        table.add_row(f"  confidence {row['low']:.1f}-{row['high']:.1f}",
                      f"{row['items']} items, accuracy {percent(row['accuracy'])}")
    return table


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"
