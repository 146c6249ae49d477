"""What every training run shares: the checkpoint folder and `--resume`, the trainer arguments
that make a run behave the same on a CPU and a GPU, progress lines on stderr, and the summary.

Checkpoints live in `OUT.checkpoints/` beside `--out` while training and are removed once the
final folder is written. A checkpoint counts as complete only when the trainer has finished
writing it (our callback marks it after the trainer's own save returns), so `--resume` after a
kill continues from the last complete one and reaches the same total number of steps.

Under `accelerate launch` (or torchrun, or DeepSpeed's launcher) every process runs the same
command, as TRL's trainers expect: the trainer splits the batches and syncs the gradients
(DDP, FSDP or DeepSpeed ZeRO, whatever accelerate's config says), and only the main process
writes: the run's settings, the checkpoint marks (once every process has written its part),
the final folder (gathered from the shards, see `save_run_model`), progress lines and the
summary. The processes wait for each other where one's writing is another's reading.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError, console
from cai_cli.training.config import TrainingConfig, config_as_dict

COMPLETE_MARKER = "cai_checkpoint_complete"
RUN_FILE = "cai_run.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# Settings that may differ between a run and its --resume without changing what is trained.
RESUME_MAY_CHANGE = {"resume", "overwrite", "verbose", "skip_invalid", "save_steps", "checkpoint_dir", "threads",
                     "report_to"}
# Where launchers put the process's global rank and the number of processes: torchrun,
# accelerate and DeepSpeed set RANK/WORLD_SIZE; MPI (accelerate's multi-CPU launch) its own.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def process_rank() -> int:
    """This process's global rank under a distributed launcher (0 when run alone). Read from the
    environment, so it is known before the trainer sets up torch.distributed."""
    return next((int(os.environ[name]) for name in RANK_VARIABLES if os.environ.get(name, "").isdigit()), 0)


def process_count() -> int:
    return next((int(os.environ[name]) for name in WORLD_SIZE_VARIABLES if os.environ.get(name, "").isdigit()), 1)


def is_main_process() -> bool:
    return process_rank() == 0


@dataclass
class RunPlan:
    """Where a run writes and what it resumes from; decided before any model is loaded, acted on
    (`start`) only once the model has loaded, so a run that cannot start leaves nothing behind."""

    command: str
    out: Path
    checkpoints: Path
    resume_from: Path | None
    settings: dict[str, Any]
    stale: list[Path]
    own_folder: bool  # the checkpoint folder is ours alone (not a --checkpoint-dir the user named)

    def start(self) -> None:
        """Clear what the run replaces and record its settings for a later --resume."""
        for path in self.stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        (self.checkpoints / RUN_FILE).write_text(json.dumps(self.settings, indent=2, default=str) + "\n",
                                                 encoding="utf-8")


def say(message: str) -> None:
    """One progress line on stderr, unwrapped and taken literally (paths may hold brackets);
    from the main process only, when several train together."""
    if is_main_process():
        console.print(message, soft_wrap=True, markup=False, highlight=False)


def plan_run(command: str, config: TrainingConfig) -> RunPlan:
    """Check --out, --overwrite and --resume against what is on disk; nothing is written yet."""
    from cai_cli.training.loading import prepare_output

    out = Path(config.out).expanduser()
    prepare_output(out, config.overwrite)
    check_trackers(report_targets(config.report_to))
    checkpoints = (Path(config.checkpoint_dir).expanduser() if config.checkpoint_dir
                   else out.parent / f"{out.name}.checkpoints")
    found = list_checkpoints(checkpoints)
    run_file = checkpoints / RUN_FILE
    settings = {k: v for k, v in config_as_dict(config).items() if k not in RESUME_MAY_CHANGE}
    # The number of processes sets the global batch, so a resumed run needs the same.
    settings["processes"] = process_count()
    resume_from, stale = None, []
    if config.resume:
        if run_file.is_file():
            check_same_settings(json.loads(run_file.read_text(encoding="utf-8")), settings, command)
        complete = [path for step, path in found if (path / COMPLETE_MARKER).is_file()]
        resume_from = complete[-1] if complete else None
        # A checkpoint cut short by the kill is of no use, and would confuse the rotation.
        stale = [path for step, path in found if resume_from is None or step > checkpoint_step(resume_from)]
        if resume_from is None:
            say(f"{command}: no complete checkpoint in {checkpoints}; starting from the beginning")
    elif found or run_file.exists():
        if not config.overwrite:
            raise CaiError(f"{checkpoints} holds checkpoints of an earlier run of {out}: pass --resume to "
                           "continue it, or --overwrite to start again")
        stale = [path for _, path in found] + [run_file]
    return RunPlan(command, out, checkpoints, resume_from, settings, stale, own_folder=not config.checkpoint_dir)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return sorted(found)


def checkpoint_step(path: Path) -> int:
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else -1


def check_same_settings(before: dict[str, Any], now: dict[str, Any], command: str) -> None:
    now = json.loads(json.dumps(now, default=str))  # compare in the form the run file holds
    before = {"processes": 1, **before}  # run files from before distributed runs
    changed = [key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if changed:
        details = ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed)
        raise CaiError(f"--resume needs the interrupted run's settings; these differ: {details}. "
                       f"Rerun {command} with the same settings, or --overwrite to start again")


def finish_run(plan: RunPlan) -> None:
    """The final folder is written: the checkpoints have done their job. A folder the user named
    with --checkpoint-dir loses only what this run put there."""
    if plan.own_folder:
        shutil.rmtree(plan.checkpoints, ignore_errors=True)
        return
    for _, path in list_checkpoints(plan.checkpoints):
        shutil.rmtree(path, ignore_errors=True)
    for name in (RUN_FILE, "README.md"):  # README.md: the model card TRL writes beside checkpoints
        (plan.checkpoints / name).unlink(missing_ok=True)


def trainer_arguments(config: TrainingConfig, plan: RunPlan, learning_rate: float) -> dict[str, Any]:
    """Keyword arguments for a TRL config (any `TrainingArguments` subclass), the same on a CPU
    and a GPU apart from precision: bf16 autocast where the GPU has it, float32 on a CPU (TRL's
    configs otherwise default to bf16 and stop on machines without it)."""
    import torch

    from cai_cli.training.loading import on_gpu

    cuda = on_gpu()
    trackers = report_targets(config.report_to)
    if "tensorboard" in trackers:
        # The trainer's default is inside the checkpoint folder, which goes once the run is done.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(plan.out.parent / f"{plan.out.name}.logs"))
    return {
        "output_dir": str(plan.checkpoints),
        "seed": config.seed,
        "learning_rate": learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "warmup_steps": config.warmup_ratio,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        # Two, so that a kill while the newest is being written still leaves a complete one.
        "save_total_limit": 2,
        # Every step is logged; the progress callback decides how often to print.
        "logging_steps": 1,
        "report_to": trackers or "none",
        # Every parameter that trains takes part in every step (LoRA adapters or all weights), so
        # DDP need not search the graph for unused ones after each backward pass.
        "ddp_find_unused_parameters": False,
        "disable_tqdm": True,
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "fp16": False,
        "activation_checkpointing": config.gradient_checkpointing,
        "dataloader_num_workers": 0,
    }


def report_targets(values: list[str]) -> list[str]:
    """The trackers `--report-to` names (repeated or comma-separated); 'none' is none."""
    names = [name.strip().lower() for value in values for name in value.split(",") if name.strip()]
    return [name for name in dict.fromkeys(names) if name != "none"]


def check_trackers(trackers: list[str]) -> None:
    """Refuse, before any model loads, a tracker the trainers do not know or whose package is
    not installed (the trainer itself would stop with a traceback, after the loading)."""
    if not trackers or trackers == ["all"]:
        return
    from transformers.integrations.integration_utils import (INTEGRATION_TO_CALLBACK,
                                                             get_available_reporting_integrations)

    for name in trackers:
        if name not in INTEGRATION_TO_CALLBACK:
            raise CaiError(f"--report-to {name}: not a tracker the trainers know; choose from "
                           f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if name not in get_available_reporting_integrations():
            package = name.replace("_", "-")
            raise CaiError(f"--report-to {name}: its package is not installed (pip install {package})")


def lora_settings(config: TrainingConfig, task_type: str):
    """The peft adapter configuration, or None for full fine-tuning."""
    from peft import LoraConfig

    from cai_cli.training.loading import on_gpu

    if not config.lora_enabled(on_gpu()):
        return None
    targets: Any = config.lora_targets
    if targets == ["all-linear"]:
        targets = "all-linear"
    else:
        targets = [name.strip() for item in targets for name in item.split(",") if name.strip()]
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type=task_type)


def make_callbacks(command: str):
    """Progress on stderr and complete-checkpoint marks, as a transformers callback."""
    from transformers import TrainerCallback

    class ProgressAndCheckpoints(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.first_step = state.global_step
            self.every = max(1, state.max_steps // 25)  # about 25 lines for a whole run
            if state.global_step:
                say(f"{command}: resumed at step {state.global_step} of {state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs:
                return
            step, total = state.global_step, state.max_steps
            if step % self.every and step != total:
                return
            done = step - self.first_step
            elapsed = time.perf_counter() - self.started
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = format_duration((total - step) / rate) if rate > 0 else "?"
            extras = "".join(f" · {name} {logs[key]:.3f}" for key, name in
                             (("reward", "reward"), ("kl", "kl"), ("rewards/accuracies", "accuracy"),
                              ("accuracy", "accuracy")) if isinstance(logs.get(key), (int, float)))
            say(f"{command}: step {step}/{total} · loss {logs['loss']:.4f}{extras} · {rate:.2f} steps/s · ETA {eta}")

        def on_save(self, args, state, control, **kwargs):
            if args.world_size > 1:
                # Each process writes its own part (RNG state, optimizer shards): the checkpoint
                # is complete once all of them are done.
                from accelerate import PartialState

                PartialState().wait_for_everyone()
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                (folder / COMPLETE_MARKER).write_text(str(state.global_step), encoding="utf-8")

    return [ProgressAndCheckpoints()]


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def prepare_trainer(trainer) -> None:
    """Leave stdout to the JSON summary: transformers' printer callbacks write logs there."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


@contextlib.contextmanager
def stdout_to_stderr():
    """Anything a library prints while training goes to stderr; stdout carries the summary only."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def run_training(trainer, plan: RunPlan) -> dict[str, Any]:
    """Train (from the resume checkpoint if any) and return the step and loss figures."""
    accelerator = trainer.accelerator
    # Every process has checked the disk (plan_run) before the main one changes it, and the
    # checkpoint folder is ready before any process trains.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        plan.start()
    accelerator.wait_for_everyone()
    started = time.perf_counter()
    resume = str(plan.resume_from) if plan.resume_from else None
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.perf_counter() - started
    state = trainer.state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    first_step = checkpoint_step(plan.resume_from) if plan.resume_from else 0
    steps_run = state.global_step - first_step
    return {
        "steps": state.global_step,
        "resumed_from_step": first_step if plan.resume_from else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "train_seconds": round(elapsed, 2),
        "steps_per_second": round(steps_run / elapsed, 4) if elapsed > 0 else None,
        "epochs": round(state.epoch or 0.0, 4),
        "processes": accelerator.num_processes,
        "distributed": accelerator.distributed_type.value,  # NO, MULTI_GPU, MULTI_CPU, FSDP, DEEPSPEED
        # Where the weights trained and in what precision, read from the model itself: a run
        # meant for a GPU that fell back to the CPU shows here.
        "device": next(trainer.model.parameters()).device.type,
        "bf16": bool(trainer.args.bf16),
    }


def last_logged(history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """The last logged value of each of `keys` the trainer reported (rewards, KL, DPO margins),
    named with `_` for `/`."""
    found: dict[str, float] = {}
    for entry in history:
        for key in keys:
            if key in entry:
                found[key.replace("/", "_")] = entry[key]
    return found


def save_run_model(trainer, tokenizer, plan: RunPlan, provenance: dict[str, Any], keep_adapter: bool,
                   load_base) -> None:
    """Write the trained model to `plan.out` (atomically) and clear the checkpoints.

    Alone, the trainer's model is saved as it is. With several processes the weights may be
    sharded (FSDP, DeepSpeed ZeRO-3), so the trainer's own `save_model` gathers them, every
    process taking part and the main one writing, into a folder beside `--out`; the main process
    then builds the final folder from it: a LoRA adapter is merged into a fresh copy of the base
    model from `load_base()`, full weights are loaded as they are.
    """
    from cai_cli.training.loading import save_trained_model

    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        save_trained_model(trainer.model, tokenizer, plan.out, provenance, keep_adapter, trainer.state.log_history)
        finish_run(plan)
        return
    gathered = plan.out.parent / f".{plan.out.name}.gathered"
    if accelerator.is_main_process:
        shutil.rmtree(gathered, ignore_errors=True)
    accelerator.wait_for_everyone()
    trainer.save_model(str(gathered))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            model = load_gathered_model(accelerator.unwrap_model(trainer.model), gathered, load_base)
            save_trained_model(model, tokenizer, plan.out, provenance, keep_adapter, trainer.state.log_history)
        finally:
            shutil.rmtree(gathered, ignore_errors=True)
        finish_run(plan)
    accelerator.wait_for_everyone()


def load_gathered_model(trained, gathered: Path, load_base):
    """The trained model back from the folder `Trainer.save_model` wrote: the base with the
    adapter loaded (peft), or the full weights in the trained model's own class."""
    import torch
    from accelerate.utils import is_peft_model

    if is_peft_model(trained):
        from peft import PeftModel

        return PeftModel.from_pretrained(load_base(), gathered)
    return type(trained).from_pretrained(gathered, dtype=torch.float32, use_safetensors=True)


def provenance(command: str, config: TrainingConfig, base: Path, source_gguf: Path | None,
               figures: dict[str, Any]) -> dict[str, Any]:
    """What `cai_training.json` records: how the folder was made and the GGUF it started from."""
    from cai_cli import __version__

    return {"command": command, "cai_version": __version__, "base": str(base),
            "source_gguf": str(source_gguf) if source_gguf else None,
            "settings": config_as_dict(config), "figures": figures}


def print_summary(summary: dict[str, Any]) -> None:
    """The run's JSON summary: the one thing a training command writes to stdout (the main
    process's, when several train together)."""
    if not is_main_process():
        return
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()
