"""Typed training settings: one dataclass per `train-*` command, loadable from YAML.

The dataclass is the one place a setting is declared: its default, its type, its help text and
its flag (`cai_cli.flags.setting`; `training_command` gives a command the flags of its class). A run's settings come from the defaults, then `--config
FILE.yaml`, then the flags given on the command line, in that order of precedence. Unknown YAML
keys are an error, so a typo never trains silently with a default.

This module imports nothing heavy: `cai --help` reads the help texts from here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cai_cli.errors import CaiError
from cai_cli.flags import LORA_PANEL, OPTIMISATION_PANEL, RL_PANEL, RUN_PANEL, setting

RUN, OPTIMISATION, LORA = {"panel": RUN_PANEL}, {"panel": OPTIMISATION_PANEL}, {"panel": LORA_PANEL}
# Every command's --mix flag says the same: how a weight is read.
MIX = {"flag_help": "More training records, FILE or FILE:WEIGHT; repeatable (weight 0.5 takes a seeded half of the file, "
               "2 repeats it).", "show_default": False, **RUN}


@dataclass
class TrainingConfig:
    """Settings every training command shares."""

    out: Optional[str] = setting(
        None, "Folder to write the trained model to (a standard Hugging Face folder).", show_default=False, **RUN)
    overwrite: bool = setting(False, "Replace an existing --out folder (and stale checkpoints).", **RUN)
    resume: bool = setting(False, "Continue an interrupted run from its last complete checkpoint.", **RUN)
    checkpoint_dir: Optional[str] = setting(
        None, "Where checkpoints go while training (default: OUT.checkpoints beside --out; removed on success).",
        show_default=False, **RUN)
    save_steps: int = setting(50, "Write a checkpoint every N optimizer steps.", min=1, **RUN)
    seed: int = setting(0, "Seed for data order, LoRA initialisation and sampling.", **OPTIMISATION)
    learning_rate: Optional[float] = setting(
        None, "Peak learning rate (default depends on the command and on LoRA/full fine-tuning).",
        "--lr", "--learning-rate", min=0.0, show_default=False, **OPTIMISATION)
    epochs: float = setting(1.0, "Passes over the training data (ignored when --max-steps is set).", min=0.0,
                            **OPTIMISATION)
    max_steps: Optional[int] = setting(None, "Stop after this many optimizer steps (overrides --epochs).", min=1,
                                       show_default=False, **OPTIMISATION)
    batch_size: int = setting(4, "Examples per device per forward pass.", min=1, **OPTIMISATION)
    grad_accum: int = setting(1, "Forward passes accumulated into one optimizer step.", min=1, **OPTIMISATION)
    max_length: int = setting(
        1024, "Longest conversation + answer in tokens. Longer examples are left out and counted, never cut "
              "(a cut would train on an answer without its end); a preference model keeps this limit for scoring.",
        min=8, **OPTIMISATION)
    warmup_ratio: float = setting(0.0, "Fraction of the steps spent warming the learning rate up.", min=0.0, max=0.99,
                                  **OPTIMISATION)
    lora: Optional[bool] = setting(
        None, "Train LoRA adapters (peft) instead of all weights; default: LoRA on CPU, full fine-tuning on GPU.",
        "--lora/--full", show_default=False, **LORA)
    lora_r: int = setting(16, "LoRA rank.", min=1, **LORA)
    lora_alpha: int = setting(32, "LoRA alpha (the adapter's scale is alpha / rank).", min=1, **LORA)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA path.", min=0.0, max=1.0, **LORA)
    lora_targets: list[str] = setting(
        ["all-linear"], "Modules that get adapters: 'all-linear' or names such as q_proj,v_proj.",
        flag_help="Modules that get adapters: all-linear (default) or names, comma-separated or repeated (q_proj,v_proj).",
        show_default=False, **LORA)
    keep_adapter: bool = setting(False, "Also write the LoRA adapter (adapter/ inside --out) besides the merged model.",
                                 **LORA)
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass: less memory, about 20% slower.", **OPTIMISATION)
    threads: Optional[int] = setting(
        None, "CPU threads for torch (default: torch's choice); 1 is fastest on a machine busy with other work.",
        min=1, show_default=False, **OPTIMISATION)
    skip_invalid: bool = setting(False, "Report bad records on stderr and leave them out instead of stopping.", **RUN)
    keep_flagged: bool = setting(
        False, "Also train on records marked unfit: answers cut off at --max-tokens (*_truncated), records "
               "never usably revised (revised: false) and answers still refusing after cai sample "
               "--redraw-refusals (refused: true). They are left out and counted by default.", **RUN)
    verbose: bool = setting(False, "Show the training libraries' own logs and warnings.", **RUN)
    report_to: list[str] = setting(
        [], "Also log the run to these trackers, as the trainers do: tensorboard (event files in OUT.logs/), wandb, "
            "trackio, mlflow, ... (the tracker's package must be installed). Default: none.",
        flag_help="Also log the run to these trackers, as the trainers do: tensorboard (event files in OUT.logs/), wandb, "
             "trackio, mlflow, ... (the tracker's package must be installed). Default: none. Repeat it or separate "
             "names with commas.", metavar="TRACKER", show_default=False, **RUN)

    def lora_enabled(self, on_gpu: bool) -> bool:
        """LoRA unless asked otherwise on a CPU; full fine-tuning unless asked otherwise on a GPU."""
        return (not on_gpu) if self.lora is None else self.lora


@dataclass
class SFTConfig(TrainingConfig):
    """`cai train-sft`: supervised fine-tuning on prompt -> final response (SL-CAI)."""

    data: Optional[str] = setting(None, "JSONL records with `prompt` (or `messages`) and the final `response`.",
                                  argument=True, show_default=False)
    mix: list[str] = setting(
        [], "More training records, FILE or FILE:WEIGHT (weight 0.5 takes half the file, 2 repeats it).", **MIX)
    base: Optional[str] = setting(
        None, "Model to fine-tune: a Hugging Face folder or a .gguf file (default: the embedded SmolLM2-135M).",
        show_default=False)


@dataclass
class PMConfig(TrainingConfig):
    """`cai train-pm`: a preference model trained on soft AI labels."""

    data: Optional[str] = setting(
        None, "JSONL preference records: `prompt` (or `messages`), `chosen`, `rejected`, optional soft `label`.",
        argument=True, show_default=False)
    mix: list[str] = setting(
        [], "More preference records (e.g. helpfulness comparisons), FILE or FILE:WEIGHT.", **MIX)
    base: Optional[str] = setting(
        None, "Model the preference model starts from: a Hugging Face folder or a .gguf file (default: embedded).",
        show_default=False)
    eval_fraction: float = setting(
        0.1, "Share of the conversations whose pairs are held out to measure pairwise accuracy.", min=0.0, max=0.9)


@dataclass
class RLConfig(TrainingConfig):
    """`cai train-rl`: RL against the preference model (RLOO, GRPO) or offline DPO (RL-CAI).

    The settings of every `--algo`, as the command has one set of flags: a run records them all
    (and `--resume` compares them all), and each method reads those it uses. The on-policy
    methods, rloo and grpo (`cai_cli/training/rl.py`), read them as they are here; another method
    gives them its own defaults and checks in a subclass (`DPOConfig`, `cai_cli/training/dpo.py`).
    `cai_cli/training/algorithms.py` names each method's settings class and train function.
    """

    data: Optional[str] = setting(
        None, "rloo/grpo: JSONL prompts (`prompt` or `messages`); dpo: preference records from `cai compare`.",
        argument=True, show_default=False)
    algo: str = setting("rloo", "rloo, grpo (on-policy, need --reward-model) or dpo (offline, on compare records).",
                        panel=RL_PANEL)
    policy: Optional[str] = setting(
        None, "Policy to start from: a Hugging Face folder (e.g. train-sft's output) or a .gguf (default: embedded).",
        panel=RL_PANEL, show_default=False)
    reward_model: Optional[str] = setting(None, "Preference model folder from `cai train-pm` (rloo, grpo).",
                                          "--reward-model", "--pm", panel=RL_PANEL, show_default=False)
    mix: list[str] = setting(
        [], "More records of the same kind as DATA, FILE or FILE:WEIGHT.", **MIX)
    beta: Optional[float] = setting(
        None, "Weight of the KL penalty to the starting policy (default 0.05 for rloo/grpo, 0.1 for dpo).",
        min=0.0, panel=RL_PANEL, show_default=False)
    num_generations: int = setting(4, "rloo/grpo: completions sampled per prompt (at least 2).", min=2, panel=RL_PANEL)
    max_completion_length: int = setting(
        256, "rloo/grpo: most new tokens per sampled completion. Keep it at the --max-tokens the PM's pairs were "
             "sampled with (cai sample's default, 256): a completion cut off here is scored as the PM learnt "
             "cut-off answers (train-pm --keep-flagged), or else below every finished completion of its batch.",
        min=1, panel=RL_PANEL)
    min_margin: float = setting(
        0.05, "dpo: leave out pairs whose label is closer than this to 0.5 (counted in the summary): DPO "
              "trains on a pair as certain, so a 0.51 label would weigh as much as a 0.99 one. 0 keeps all but ties.",
        min=0.0, panel=RL_PANEL)
    temperature: float = setting(1.0, "rloo/grpo: sampling temperature of the policy.", min=0.0, panel=RL_PANEL)
    batch_size: int = setting(4, "Completions (rloo/grpo) or pairs (dpo) per device per forward pass.", min=1,
                              **OPTIMISATION)

    def beta_value(self) -> float:
        """--beta, or the method's default."""
        return 0.05 if self.beta is None else self.beta

    def check(self) -> None:
        """Settings that can be wrong for this method, checked before anything is loaded (after
        `check_config`): the method's own, then those every method takes."""
        self.check_method()
        if not 0 <= self.min_margin < 0.5:
            raise CaiError(f"min-margin must be in [0, 0.5), not {self.min_margin}")
        if self.beta is not None and self.beta < 0:
            raise CaiError(f"beta must be at least 0, not {self.beta}")

    def check_method(self) -> None:
        """rloo and grpo score completions with the preference model and compare those of one prompt."""
        if not self.reward_model:
            raise CaiError(f"--algo {self.algo} needs the preference model: --reward-model DIR (from `cai train-pm`)")
        if self.num_generations < 2:
            raise CaiError("num-generations must be at least 2: RLOO and GRPO compare completions of a prompt")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise CaiError(f"batch-size x grad-accum ({self.batch_size} x {self.grad_accum}) must be a multiple of "
                           f"num-generations ({self.num_generations}): each prompt's completions are scored together")


def build_config(config_class: type, config_file: Path | None, overrides: dict[str, Any]):
    """Defaults, then the YAML file's values, then `overrides` (the flags actually given)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_class, config_file))
    values.update(overrides)
    config = config_class(**values)
    check_config(config)
    return config


def read_config_file(config_class: type, path: Path) -> dict[str, Any]:
    """The settings in a YAML (or JSON) file, checked against the dataclass's fields and types."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaiError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CaiError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CaiError(f"{path}: a config file must be a mapping of setting: value")
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in dataclasses.fields(config_class)}
    values = {}
    for raw_key, value in loaded.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            suggestion = close_match(key, known)
            hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
            raise CaiError(f"{path}: unknown setting '{raw_key}'{hint}; known settings: {', '.join(sorted(known))}")
        values[key] = coerce(value, hints[key], f"{path}: '{raw_key}'")
    return values


def close_match(key: str, known: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(known), n=1)
    return matches[0] if matches else None


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check a YAML value against a field's type; ints are accepted where floats are expected,
    and a single string where a list of strings is."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CaiError(f"{where} must be a list of strings")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise CaiError(f"{where} must be true or false, not {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CaiError(f"{where} must be an integer, not {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaiError(f"{where} must be a number, not {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise CaiError(f"{where} must be a string, not {value!r}")
        return str(value)
    return value


def check_config(config: TrainingConfig) -> None:
    """Settings that can be wrong on their own, checked before anything is loaded."""
    if not config.out:
        raise CaiError("give the output folder with --out DIR (or `out:` in the config file)")
    if not config.data:
        raise CaiError("give the training data file (or `data:` in the config file)")
    positive = {"save_steps": config.save_steps, "batch_size": config.batch_size, "grad_accum": config.grad_accum,
                "max_length": config.max_length, "lora_r": config.lora_r}
    for name, value in positive.items():
        if value < 1:
            raise CaiError(f"{name.replace('_', '-')} must be at least 1, not {value}")
    if config.threads is not None and config.threads < 1:
        raise CaiError(f"threads must be at least 1, not {config.threads}")
    if config.max_steps is not None and config.max_steps < 1:
        raise CaiError(f"max-steps must be at least 1, not {config.max_steps}")
    if config.epochs <= 0:
        raise CaiError(f"epochs must be positive, not {config.epochs}")
    if config.learning_rate is not None and config.learning_rate <= 0:
        raise CaiError(f"learning rate must be positive, not {config.learning_rate}")
    if not 0 <= config.warmup_ratio < 1:
        raise CaiError(f"warmup ratio must be in [0, 1), not {config.warmup_ratio}")
    if isinstance(config, PMConfig) and not 0 <= config.eval_fraction < 1:
        raise CaiError(f"eval fraction must be in [0, 1), not {config.eval_fraction}")


def config_as_dict(config: TrainingConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
