"""Options shared by several commands that belong to no settings object: the input and output
of a record stream and the constitution, declared once as typer `Annotated` aliases. The flags
of a settings object (the model, sampling, feedback, training settings) are declared on its
fields and given to a command with `cai_cli.flags.with_settings`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions
from cai_cli.flags import IO_PANEL

InputArg = Annotated[Optional[Path], typer.Argument(
    help="JSONL input file; '-' or none reads stdin.", show_default=False, allow_dash=True)]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "-o", "--output", help="Write records to FILE instead of stdout, a whole line at a time; "
    "FILE starts afresh unless --resume.",
    rich_help_panel=IO_PANEL, show_default=False)]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="With -o: skip input records whose id is already in the output file.",
    rich_help_panel=IO_PANEL)]
SkipInvalidOpt = Annotated[bool, typer.Option(
    "--skip-invalid", help="Report bad input lines on stderr and go on, instead of stopping.",
    rich_help_panel=IO_PANEL)]

ConstitutionOpt = Annotated[Optional[list[str]], typer.Option(
    "-c", "--constitution", show_default=False,
    help="Constitution file (own YAML/JSON, the paper's JSON, Hugging Face's JSON) or a built-in name; "
         "repeat to combine files (default: harmlessness).")]

# The model flags of every command that loads one (`with_settings(model_options=MODEL_OPTIONS)`);
# --repack shows the default it comes to.
MODEL_OPTIONS = BackendOptions(repack="auto")
