"""Command-line flags declared on settings dataclasses: one field, one flag.

A field made with `setting(default, help, ...)` carries what its flag needs besides its name,
type and default: the help panel, the environment variable, bounds, a metavar. `with_settings`
gives a command the flags of whole settings objects and hands each object to it built: the
command declares only the flags that are its own.

    @with_settings(sampling=Sampling(max_tokens=96), model_options=BackendOptions)
    def redteam(n: ..., *, sampling: Sampling, model_options: BackendOptions): ...

A class gives its own defaults; an instance gives the command's (redteam's 96 tokens). A field
whose default is itself a settings object (the feedback settings' `reasoning` sampling) gives
the flags of its fields in turn. The flag is `--field-name` unless the setting names others.

typer is imported only when a command is built, so the settings classes stay light to import.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

# The panels of --help.
IO_PANEL = "Input and output"
MODEL_PANEL = "Model"
SERVER_PANEL = "Server (--backend openai)"
SAMPLING_PANEL = "Sampling"
FEEDBACK_PANEL = "Feedback"
RUN_PANEL = "Run"
OPTIMISATION_PANEL = "Optimisation"
LORA_PANEL = "LoRA"
RL_PANEL = "RL"


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line."""

    names: tuple[str, ...] = ()  # default: --field-name
    panel: str | None = None  # the --help panel
    envvar: str | None = None
    min: float | None = None
    max: float | None = None
    metavar: str | None = None
    show_default: bool = True
    argument: bool = False  # a positional argument instead of an option
    help: str | None = None  # the flag's help, where it says more than the setting's
    cli_type: Any = None  # the type typer reads, where it is not the field's (then `parse` converts)
    parse: Callable[[Any], Any] | None = None


def setting(default: Any, help: str, *names: str, flag: bool = True, flag_help: str | None = None,
            **flag_options: Any) -> Any:
    """A dataclass field carrying its help text and, unless `flag=False`, its flag (named `names`,
    or --field-name; `flag_help` where the flag says more than the setting)."""
    metadata: dict[str, Any] = {"help": help}
    if flag:
        metadata["flag"] = Flag(names=names, help=flag_help, **flag_options)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def setting_help(settings_class: type, name: str) -> str:
    """The help text declared with a setting."""
    return next(f.metadata["help"] for f in dataclasses.fields(settings_class) if f.name == name)


@dataclass(frozen=True)
class FlagField:
    """One flag of a command: the settings field it sets (a path, for nested settings) and the
    command parameter typer sees."""

    path: tuple[str, ...]
    parameter: inspect.Parameter
    parse: Callable[[Any], Any] | None


@dataclass(frozen=True)
class Some:
    """A settings group of which a command takes all flags but those `without`."""

    defaults: Any
    without: tuple[str, ...] = ()


def flag_fields(defaults: Any, prefix: tuple[str, ...] = (), without: tuple[str, ...] = ()) -> list[FlagField]:
    """The flags of a settings class (its defaults) or instance (its values as defaults)."""
    import typer

    settings_class = defaults if isinstance(defaults, type) else type(defaults)
    hints = typing.get_type_hints(settings_class)
    made = []
    for field in dataclasses.fields(settings_class):
        default = getattr(defaults, field.name) if not isinstance(defaults, type) else field_default(field)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            made += flag_fields(default, prefix + (field.name,))
            continue
        flag: Flag | None = field.metadata.get("flag")
        if flag is None or field.name in without:
            continue
        kind = flag.cli_type or optional_list(hints[field.name])
        shown = None if isinstance(default, (list, tuple)) else default
        help_text = flag.help or field.metadata["help"]
        if flag.argument:
            info = typer.Argument(help=help_text, show_default=flag.show_default, metavar=flag.metavar)
        else:
            names = flag.names or ("--" + field.name.replace("_", "-"),)
            bounds = {k: v for k, v in (("min", flag.min), ("max", flag.max)) if v is not None}
            info = typer.Option(*names, help=help_text, rich_help_panel=flag.panel, envvar=flag.envvar,
                                metavar=flag.metavar, show_default=flag.show_default and shown is not None,
                                **bounds)
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        parameter = inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                      default=inspect.Parameter.empty if required else shown,
                                      annotation=typing.Annotated[kind, info])
        made.append(FlagField(prefix + (field.name,), parameter, flag.parse))
    return made


def field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def optional_list(annotation: Any) -> Any:
    """The type typer reads for a field's type: `X | None` as Optional[X], a list or tuple of
    strings as an optional repeatable option."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return Optional[optional_list(inner[0])] if len(inner) == 1 else annotation
    if origin in (list, tuple):
        return Optional[list[args[0]]]
    return annotation


def build_settings(defaults: Any, given: dict[tuple[str, ...], Any]) -> Any:
    """The settings object: `defaults` (a class or an instance) with the given values, by path."""
    base = defaults() if isinstance(defaults, type) else defaults
    values: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in given.items():
        if len(path) > 1:
            nested.setdefault(path[0], {})[path[1:]] = value
        else:
            values[path[0]] = value
    for name, inner in nested.items():
        values[name] = build_settings(getattr(base, name), inner)
    return dataclasses.replace(base, **values)


def flag_value(flag: FlagField, value: Any, default: Any) -> Any:
    """A flag's value as the field takes it: parsed, and a repeatable option not given is the
    field's default (typer's default for it is None, so --help shows none)."""
    if flag.parse is not None:
        return flag.parse(value)
    if value is None and isinstance(default, (list, tuple)):
        return default
    if isinstance(default, tuple) and value is not None:
        return tuple(value)
    return value


def field_at(settings: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        settings = getattr(settings, name)
    return settings


def with_settings(**groups: Any) -> Callable[[Callable], Callable]:
    """Give a command the flags of each settings object in `groups` (parameter name -> a class, an
    instance, or `Some(...)` of either); it is called with each object built from the flags."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # resolves postponed annotations
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in signature.parameters.values() if p.name not in groups]
        specs = {group: spec if isinstance(spec, Some) else Some(spec) for group, spec in groups.items()}
        flags = {group: flag_fields(spec.defaults, without=spec.without) for group, spec in specs.items()}
        # Each group's defaults as an instance, made once: a class gives its own.
        defaults = {group: spec.defaults() if isinstance(spec.defaults, type) else spec.defaults
                    for group, spec in specs.items()}
        names = [p.name for p in own] + [f.parameter.name for fields in flags.values() for f in fields]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TypeError(f"{command.__name__}: flags declared twice: {', '.join(repeated)}")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for group, base in defaults.items():
                given = {f.path: flag_value(f, kwargs.pop(f.parameter.name), field_at(base, f.path))
                         for f in flags[group]}
                kwargs[group] = build_settings(base, given)
            return command(**kwargs)

        parameters = own + [f.parameter for fields in flags.values() for f in fields]
        wrapper.__signature__ = signature.replace(parameters=parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate
