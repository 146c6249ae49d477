"""The `cai` command: the command list, global options and the one error policy.

Expected failures print `Error: <message>` and exit 1; usage errors exit 2 (typer/click);
a traceback appears only with `--debug` or CAI_DEBUG=1.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from cai_cli import __version__
from cai_cli.commands import constitution, critique, doctor, redteam, revise, sample
from cai_cli.commands import classify as classify_command, compare as compare_command, elo as elo_command
from cai_cli.commands import eval as eval_command, export_gguf, label as label_command, report as report_command
from cai_cli.commands import score, show as show_command, train_pm, train_rl, train_sft
from cai_cli.errors import CaiError, console
from cai_cli.streams import OutputClosed

app = typer.Typer(
    name="cai",
    help="Constitutional AI from the shell: small JSONL tools that pipe together.\n\n"
         "cai sample < prompts.jsonl | cai critique | cai revise > revised.jsonl",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# typer (0.29) prints a value type beside every option, flags included ("--resume <bool>"), which
# reads as if a flag took a value; a flag takes none, so its help shows none.
_display_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda option, ctx: None if option.is_flag else _display_type(option, ctx)


def add_command(function, panel: str) -> None:
    """Register `function` as a command; the listing shows its first paragraph as one line."""
    summary = " ".join(inspect.getdoc(function).split("\n\n")[0].split())
    app.command(rich_help_panel=panel, short_help=summary)(function)


# The command list, in pipeline order.
add_command(redteam.redteam, "SL-CAI data")
add_command(sample.sample, "SL-CAI data")
add_command(critique.critique, "SL-CAI data")
add_command(revise.revise, "SL-CAI data")
add_command(compare_command.compare, "RL-CAI data")
add_command(eval_command.eval, "RL-CAI data")
add_command(elo_command.elo, "Results")
add_command(label_command.label, "Results")
add_command(classify_command.classify, "Results")
add_command(report_command.report, "Results")
add_command(train_sft.train_sft, "Training")
add_command(train_pm.train_pm, "Training")
add_command(score.score, "Training")
add_command(train_rl.train_rl, "Training")
add_command(export_gguf.export_gguf, "Training")
app.add_typer(constitution.app, name="constitution", rich_help_panel="Tools")
add_command(show_command.show, "Tools")
add_command(doctor.doctor, "Tools")


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


def report_native_crashes() -> None:
    """Make a native crash (a segfault inside llama.cpp, say) print the Python stack it happened
    under instead of dying in silence: faulthandler writes to a copy of stderr taken now, which
    stays open while `quiet_native_logs` points stderr itself at /dev/null."""
    import faulthandler

    global CRASH_STREAM
    CRASH_STREAM = os.fdopen(os.dup(sys.stderr.fileno()), "w")
    faulthandler.enable(file=CRASH_STREAM)


CRASH_STREAM = None


def main() -> None:
    report_native_crashes()
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
