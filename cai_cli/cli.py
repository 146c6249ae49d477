"""The `cai` command: the command list, global options and the one error policy.

Expected failures print `Error: <message>` and exit 1; usage errors exit 2 (typer/click);
a traceback appears only with `--debug` or CAI_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from cai_cli import __version__
from cai_cli.commands import constitution, critique, revise, sample
from cai_cli.commands import compare as compare_command, eval as eval_command
from cai_cli.commands import export_gguf, score, train_pm, train_rl, train_sft
from cai_cli.errors import CaiError, console
from cai_cli.records import OutputClosed

app = typer.Typer(
    name="cai",
    help="Constitutional AI from the shell: small JSONL tools that pipe together.\n\n"
         "cai sample < prompts.jsonl | cai critique | cai revise > revised.jsonl",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The command list, in pipeline order.
app.command(rich_help_panel="SL-CAI data")(sample.sample)
app.command(rich_help_panel="SL-CAI data")(critique.critique)
app.command(rich_help_panel="SL-CAI data")(revise.revise)
app.command(rich_help_panel="RL-CAI data")(compare_command.compare)
app.command(rich_help_panel="RL-CAI data")(eval_command.eval)
app.command(rich_help_panel="Training")(train_sft.train_sft)
app.command(rich_help_panel="Training")(train_pm.train_pm)
app.command(rich_help_panel="Training")(score.score)
app.command(rich_help_panel="Training")(train_rl.train_rl)
app.command(rich_help_panel="Training")(export_gguf.export_gguf)
app.add_typer(constitution.app, name="constitution", rich_help_panel="Tools")


def show_version(value: bool) -> None:
    if value:
        print(f"cai {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    debug: Annotated[bool, typer.Option("--debug", envvar="CAI_DEBUG",
                                        help="Show a traceback on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if debug:
        os.environ["CAI_DEBUG"] = "1"


def main() -> None:
    try:
        app()
    except CaiError as exc:
        if os.environ.get("CAI_DEBUG") == "1":
            raise
        # Escaped, since messages quote user data ('[/x]' would be read as markup); one unwrapped
        # line, so `Error: <source>:<line>:` stays greppable.
        console.print(f"[bold red]Error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        sys.exit(1)
    except (BrokenPipeError, OutputClosed):
        # A reader such as `head` went away: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        console.print("Interrupted; completed records are written (rerun with -o FILE --resume to continue)")
        sys.exit(130)
