"""The training commands' shared flags, declared once as typer `Annotated` aliases.

Each flag's help text is the setting's own (from `cai_cli.training.config`), and its default is
the dataclass default, shown in `--help`. A flag overrides `--config FILE.yaml` only when it is
given on the command line: `given_settings` asks click where each value came from.
`@training_command(ConfigClass)` gives a command all shared flags and hands it the finished
settings as one typed `settings` argument.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cai_cli.training.config import TrainingConfig, field_help

RUN_PANEL = "Run"
OPTIMISATION_PANEL = "Optimisation"
LORA_PANEL = "LoRA"


def _help(name: str) -> str:
    return field_help(TrainingConfig, name)


ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", show_default=False, rich_help_panel=RUN_PANEL,
    help="YAML file of settings (the long flag names with _ or -); flags given on the command line win.")]
OutOpt = Annotated[Optional[str], typer.Option("--out", show_default=False, rich_help_panel=RUN_PANEL,
                                               help=_help("out"))]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", rich_help_panel=RUN_PANEL, help=_help("overwrite"))]
ResumeOpt = Annotated[bool, typer.Option("--resume", rich_help_panel=RUN_PANEL, help=_help("resume"))]
CheckpointDirOpt = Annotated[Optional[str], typer.Option("--checkpoint-dir", show_default=False,
                                                         rich_help_panel=RUN_PANEL, help=_help("checkpoint_dir"))]
SaveStepsOpt = Annotated[int, typer.Option("--save-steps", min=1, rich_help_panel=RUN_PANEL, help=_help("save_steps"))]
SkipInvalidOpt = Annotated[bool, typer.Option("--skip-invalid", rich_help_panel=RUN_PANEL, help=_help("skip_invalid"))]
KeepFlaggedOpt = Annotated[bool, typer.Option("--keep-flagged", rich_help_panel=RUN_PANEL, help=_help("keep_flagged"))]
VerboseOpt = Annotated[bool, typer.Option("--verbose", rich_help_panel=RUN_PANEL, help=_help("verbose"))]
ReportToOpt = Annotated[Optional[list[str]], typer.Option(
    "--report-to", show_default=False, rich_help_panel=RUN_PANEL, metavar="TRACKER",
    help=_help("report_to") + " Repeat it or separate names with commas.")]
MixOpt = Annotated[Optional[list[str]], typer.Option(
    "--mix", show_default=False, rich_help_panel=RUN_PANEL,
    help="More training records, FILE or FILE:WEIGHT; repeatable (weight 0.5 takes a seeded half of the file, "
         "2 repeats it).")]

SeedOpt = Annotated[int, typer.Option("--seed", rich_help_panel=OPTIMISATION_PANEL, help=_help("seed"))]
LearningRateOpt = Annotated[Optional[float], typer.Option(
    "--lr", "--learning-rate", min=0.0, show_default=False, rich_help_panel=OPTIMISATION_PANEL,
    help=_help("learning_rate"))]
EpochsOpt = Annotated[float, typer.Option("--epochs", min=0.0, rich_help_panel=OPTIMISATION_PANEL,
                                          help=_help("epochs"))]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", min=1, show_default=False,
                                                    rich_help_panel=OPTIMISATION_PANEL, help=_help("max_steps"))]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, rich_help_panel=OPTIMISATION_PANEL,
                                           help=_help("batch_size"))]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, rich_help_panel=OPTIMISATION_PANEL,
                                           help=_help("grad_accum"))]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=8, rich_help_panel=OPTIMISATION_PANEL,
                                           help=_help("max_length"))]
WarmupOpt = Annotated[float, typer.Option("--warmup-ratio", min=0.0, max=0.99, rich_help_panel=OPTIMISATION_PANEL,
                                          help=_help("warmup_ratio"))]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, show_default=False,
                                                  rich_help_panel=OPTIMISATION_PANEL, help=_help("threads"))]
GradientCheckpointingOpt = Annotated[bool, typer.Option("--gradient-checkpointing", rich_help_panel=OPTIMISATION_PANEL,
                                                        help=_help("gradient_checkpointing"))]

LoraOpt = Annotated[Optional[bool], typer.Option("--lora/--full", show_default=False, rich_help_panel=LORA_PANEL,
                                                 help=_help("lora"))]
LoraROpt = Annotated[int, typer.Option("--lora-r", min=1, rich_help_panel=LORA_PANEL, help=_help("lora_r"))]
LoraAlphaOpt = Annotated[int, typer.Option("--lora-alpha", min=1, rich_help_panel=LORA_PANEL, help=_help("lora_alpha"))]
LoraDropoutOpt = Annotated[float, typer.Option("--lora-dropout", min=0.0, max=1.0, rich_help_panel=LORA_PANEL,
                                               help=_help("lora_dropout"))]
LoraTargetsOpt = Annotated[Optional[list[str]], typer.Option(
    "--lora-targets", show_default=False, rich_help_panel=LORA_PANEL,
    help="Modules that get adapters: all-linear (default) or names, comma-separated or repeated (q_proj,v_proj).")]
KeepAdapterOpt = Annotated[bool, typer.Option("--keep-adapter", rich_help_panel=LORA_PANEL, help=_help("keep_adapter"))]


def given_settings(ctx: typer.Context) -> dict[str, Any]:
    """The settings given on the command line (or through an environment variable), by name;
    defaults are left out so that a `--config` file's values stand."""
    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        # Compared by name: typer ships its own copy of click, with its own ParameterSource enum.
        if name != "config" and source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[name] = list(value) if isinstance(value, tuple) else value
    return given


D = TrainingConfig
# The flags every training command takes, with their defaults, in --help order.
TRAINING_OPTIONS: dict[str, tuple[Any, Any]] = {
    "out": (OutOpt, None),
    "config": (ConfigOpt, None),
    "overwrite": (OverwriteOpt, D.overwrite),
    "resume": (ResumeOpt, D.resume),
    "checkpoint_dir": (CheckpointDirOpt, None),
    "save_steps": (SaveStepsOpt, D.save_steps),
    "mix": (MixOpt, None),
    "skip_invalid": (SkipInvalidOpt, D.skip_invalid),
    "keep_flagged": (KeepFlaggedOpt, D.keep_flagged),
    "verbose": (VerboseOpt, D.verbose),
    "report_to": (ReportToOpt, None),
    "seed": (SeedOpt, D.seed),
    "learning_rate": (LearningRateOpt, None),
    "epochs": (EpochsOpt, D.epochs),
    "max_steps": (MaxStepsOpt, None),
    "batch_size": (BatchSizeOpt, D.batch_size),
    "grad_accum": (GradAccumOpt, D.grad_accum),
    "max_length": (MaxLengthOpt, D.max_length),
    "warmup_ratio": (WarmupOpt, D.warmup_ratio),
    "gradient_checkpointing": (GradientCheckpointingOpt, D.gradient_checkpointing),
    "threads": (ThreadsOpt, None),
    "lora": (LoraOpt, None),
    "lora_r": (LoraROpt, D.lora_r),
    "lora_alpha": (LoraAlphaOpt, D.lora_alpha),
    "lora_dropout": (LoraDropoutOpt, D.lora_dropout),
    "lora_targets": (LoraTargetsOpt, None),
    "keep_adapter": (KeepAdapterOpt, D.keep_adapter),
}


def training_command(config_class: type) -> Callable[[Callable], Callable]:
    """Give a command the shared training flags. Its own parameters declare its own flags (named
    like the settings they set); it is called with `settings`, the `config_class` instance built
    from the defaults, `--config FILE.yaml` and the flags given, in that order."""
    from cai_cli.training.config import build_config

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in signature.parameters.values() if p.name != "settings"]
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                  for name, (annotation, default) in TRAINING_OPTIONS.items() if name not in signature.parameters]

        @functools.wraps(command)
        def wrapper(ctx: typer.Context, **values: Any) -> Any:
            settings = build_config(config_class, values.get("config"), given_settings(ctx))
            return command(settings=settings)

        parameters = [context] + own + shared
        wrapper.__signature__ = signature.replace(parameters=parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate
