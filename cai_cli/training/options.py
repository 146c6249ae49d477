"""The training commands' flags: those of their settings class, plus `--config FILE.yaml`.

Each flag is declared on its setting (`cai_cli/training/config.py`, with `cai_cli.flags.setting`):
its help text, panel, bounds, and the dataclass default shown in `--help`. A flag overrides
`--config FILE.yaml` only when it is given on the command line: `given_settings` asks click where
each value came from. `@training_command(ConfigClass)` gives a command every flag of the class
and hands it the finished settings as one typed `settings` argument.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cai_cli.flags import RUN_PANEL, flag_fields

ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", show_default=False, rich_help_panel=RUN_PANEL,
    help="YAML file of settings (the long flag names with _ or -); flags given on the command line win.")]


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


def training_command(config_class: type) -> Callable[[Callable], Callable]:
    """Give a command the flags of `config_class` and `--config`; it is called with `settings`,
    the `config_class` instance built from the defaults, `--config FILE.yaml` and the flags given,
    in that order."""
    from cai_cli.training.config import build_config

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt)
        flags = [flag.parameter for flag in flag_fields(config_class)]

        @functools.wraps(command)
        def wrapper(ctx: typer.Context, **values: Any) -> Any:
            settings = build_config(config_class, values.get("config"), given_settings(ctx))
            return command(settings=settings)

        after_out = [p.name for p in flags].index("out") + 1  # --help lists --config beside --out
        parameters = [context] + flags[:after_out] + [config] + flags[after_out:]
        wrapper.__signature__ = signature.replace(parameters=parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate
