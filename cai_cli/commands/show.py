"""cai show: any stage's records as a before/after table."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cai_cli.options import InputArg, SkipInvalidOpt

VIEW_PANEL = "View"


def show(
    input: InputArg = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, metavar="N", show_default=False, rich_help_panel=VIEW_PANEL,
        help="Show the first N records (the summary line still counts them all).")] = None,
    width: Annotated[Optional[int], typer.Option(
        "--width", min=40, metavar="COLUMNS", show_default=False, rich_help_panel=VIEW_PANEL,
        help="Columns to fit (default: the terminal's width, or 100 in a pipe).")] = None,
    words: Annotated[int, typer.Option(
        "--words", min=0, metavar="N", rich_help_panel=VIEW_PANEL,
        help="Cut each answer after N words, saying how many are left out (0: whole answers).")] = 60,
    skip_invalid: SkipInvalidOpt = False,
) -> None:
    """Show records of any stage (sample, critique, revise) as a before/after table: the
    prompt, the first answer, what each round did and the final answer.

    A round says "revised" when its revision replaced the answer, and "kept" with
    the checks that rejected it (truncated, meta, copies-critique, copies-example,
    evasive, empty: cai_cli/stages/checks.py) when the answer stayed as it was.
    Records without rounds show the prompt and the answer. A last line counts the
    answers the rounds changed and those that decline with a reason, before and
    after; those are the keyword checks (the refusal detector of
    cai_cli/refusals.py, minus the bare refusals that is_evasive flags), a quick
    look and not a measure. On a terminal: a table, paged when it is taller than
    the screen; in a pipe: plain text blocks with no colour codes.

    Examples:

        cai show out/demo.jsonl

        cai sample prompts.jsonl | cai critique | cai revise | cai show --limit 5

        cai show revised.jsonl --words 0 > revised.txt
    """
    import shutil
    import textwrap

    from rich.console import Console

    from cai_cli.errors import CaiError
    from cai_cli.streams import read_records
    from cai_cli.stages.show import describe, plain_text, summary_line, table, validate_shown

    shown = [describe(record) for record in read_records(input, validate_shown, skip_invalid)]
    if not shown:
        raise CaiError("no records to show")
    visible = shown[:limit] if limit else shown
    summary = summary_line(shown)
    if len(visible) < len(shown):
        summary = f"first {len(visible)} of {len(shown)} records shown; " + summary
    if not sys.stdout.isatty():
        columns = width or shutil.get_terminal_size((100, 24)).columns
        print(plain_text(visible, columns, words) + "\n\n" + textwrap.fill(summary, columns), flush=True)
        return
    console = Console(width=width, highlight=False)
    with console.capture() as captured:
        console.print(table(visible, words))
        console.print(summary, markup=False)
    text = captured.get()
    if text.count("\n") < console.height:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    import os

    # less shows colours only with -R; the user's own LESS settings win.
    os.environ.setdefault("LESS", "-R")
    with console.pager(styles=True):
        console.print(table(visible, words))
        console.print(summary, markup=False)
