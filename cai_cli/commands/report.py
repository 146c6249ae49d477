"""cai report: figures, summary.json and a self-contained index.html from cai's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.flags import IO_PANEL


def report(
    inputs: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME=]FILE", show_default=False,
        help="Outputs of cai elo, score (of revise records), eval --items, compare, sample, and train-* folders; "
             "each one's kind is told from its content. NAME names it in legends (default: the file name); "
             "for answers, MODEL@SET=FILE also names the prompt set.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False, rich_help_panel=IO_PANEL,
        help="Folder for the PNG figures, summary.json and index.html (made if missing).")] = ...,
    samples: Annotated[int, typer.Option(
        "--samples", min=0, rich_help_panel=IO_PANEL,
        help="Prompts shown with every model's answer side by side in index.html.")] = 10,
) -> None:
    """Draw the figures your runs allow: Elo, PM score per revision round, calibration of the AI
    labels, soft labels, training curves, refusal rate and answer length.

    Writes one PNG per figure, summary.json (the numbers behind every figure)
    and index.html (figures embedded: it opens offline) into --out; stdout gets
    a JSON line naming them. A file it cannot use stops it with one `Error:`
    line naming the file, before anything is written.

    Examples:

        cai report elo-harmless.jsonl elo-helpful.jsonl scored.jsonl -o report/

        cai report base@red-team=base.rt.jsonl base@helpful=base.hp.jsonl \\
          sl-cai@red-team=sl.rt.jsonl sl-cai@helpful=sl.hp.jsonl -o report/

        cai report eval-items.jsonl prefs.jsonl runs/sl-cai runs/pm -o report/
    """
    from cai_cli.errors import console
    from cai_cli.report import PAGE_FILE, SUMMARY_FILE, build_report

    summary = build_report(inputs or [], out, samples)
    for described in summary["inputs"]:
        name = described["name"] + (f"@{described['set']}" if "set" in described else "")
        console.print(f"report: {described['path']}: {described['kind']}, {described['records']} "
                      f"{'logged steps' if described['kind'] == 'training-run' else 'records'} ({name})",
                      markup=False, soft_wrap=True)
    files = [figure["file"] for figure in summary["figures"]]
    console.print(f"report: wrote {', '.join(files) or 'no figures'}, {SUMMARY_FILE} and {PAGE_FILE} to {out}",
                  markup=False, soft_wrap=True)
    print(json.dumps({"out": str(out), "index": str(out / PAGE_FILE), "summary": str(out / SUMMARY_FILE),
                      "figures": files}), flush=True)
