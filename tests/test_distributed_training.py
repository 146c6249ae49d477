"""Training under `accelerate launch`: two real processes on this CPU, gloo between them.

`accelerate launch --multi_gpu --num_processes 2` starts them through torchrun (on a machine
without GPUs the trainers then train on the CPU and talk over gloo; `--cpu --num_processes 2`
would start a single process unless MPI is set up). The commands run unchanged: one model is
written, one summary printed, the step count is what two processes imply, and a two-process run
killed mid-way resumes. The tiny random Llama folder of conftest.py keeps each run to
seconds of training. The launcher starts `tests/forked_cai.py` in each process, which forks the
command from the worker's fork server (its imports are most of a fresh process's time: 73 s ->
44 s for this file); the run that is killed starts `python -m cai_cli` itself.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, FORKED_CAI, ROOT, cai_env, forked_cai_env, run_cai, write_jsonl
from test_training import compare_records, revised_records

ACCELERATE_CONFIGS = EXAMPLES / "accelerate"
# One torch thread per process: two processes on two shared cores.
LAUNCH_ENV = {"OMP_NUM_THREADS": "1", "ACCELERATE_DISABLE_RICH": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(*args: str | Path, processes: int = 2, config: Path | None = None, forked: bool = True) -> list[str]:
    """`accelerate launch ... -m cai_cli ARGS` on this CPU, on a port of its own; `forked`, each
    process it starts runs `tests/forked_cai.py ARGS` instead, which forks `cai ARGS` from the
    worker's fork server (see `environment`) with the environment the launcher gave it."""
    how = ["--config_file", str(config)] if config else ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    program = [str(FORKED_CAI)] if forked else ["-m", "cai_cli"]
    return [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", *how,
            "--num_processes", str(processes), "--mixed_precision", "no", "--main_process_port", str(free_port()),
            *program, *map(str, args)]


def environment(forked: bool = True) -> dict[str, str]:
    """`LAUNCH_ENV` for the launcher and its processes; `forked`, with the address of the
    worker's fork server for `forked_cai.py`. A run that is killed is not forked: the kill
    reaches the launcher's descendants, and a forked command is the server's child."""
    env = cai_env(LAUNCH_ENV)
    return forked_cai_env(env) if forked else env


def launch(*args: str | Path, config: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(launch_command(*args, config=config), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=600)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts its workers in sessions of
    their own, so killing the launcher's process group would leave them training)."""
    def children(parent: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                found += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
        return found

    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children(current)
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def summary_of(result: subprocess.CompletedProcess) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result  # one summary: the main process's
    return json.loads(lines[0])


def test_the_example_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    kinds = {path.stem: load_config_from_file(str(path)) for path in sorted(ACCELERATE_CONFIGS.glob("*.yaml"))}
    assert set(kinds) == {"ddp", "fsdp", "deepspeed_zero3"}
    assert kinds["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert kinds["fsdp"].distributed_type == DistributedType.FSDP
    assert kinds["fsdp"].fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # cai gathers the final folder
    assert kinds["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3
    assert kinds["deepspeed_zero3"].deepspeed_config["zero3_save_16bit_model"] is True


def test_report_to_passes_the_logs_to_tensorboard(tmp_path, tiny):
    pytest.importorskip("tensorboardX")
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(4))
    out = tmp_path / "sft"
    # One process, as a user runs it (forked from the worker's fork server: no launcher here).
    result = run_cai("train-sft", data, "--base", tiny, "--out", out, "--max-steps", "2", "--report-to", "tensorboard",
                     timeout=300)
    assert result.returncode == 0, result.stderr
    assert summary_of(result)["steps"] == 2
    events = list((tmp_path / "sft.logs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0  # beside --out, not in the checkpoints that go
    assert not (tmp_path / "sft.checkpoints").exists()

    for name, message in (("nonesuch", "not a tracker the trainers know"), ("wandb", "pip install wandb")):
        if name == "wandb" and importlib.util.find_spec("wandb"):
            continue
        result = run_cai("train-sft", data, "--base", tiny, "--out", tmp_path / "other", "--report-to", f"none,{name}",
                         timeout=300)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_sft_on_two_processes_writes_one_model_and_one_summary(tmp_path, tiny):
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(8))
    out = tmp_path / "sft"
    result = launch("train-sft", data, "--base", tiny, "--out", out, "--batch-size", "1", "--epochs", "2",
                    "--save-steps", "3", "--keep-adapter")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    # 8 examples, 1 per process per step, 2 processes, 2 epochs: 8 optimizer steps.
    assert summary["steps"] == 8 and summary["processes"] == 2 and summary["distributed"] == "MULTI_CPU"
    assert math.isfinite(summary["final_loss"])
    assert result.stderr.count("train-sft: step 8/8") == 1 and result.stderr.count("train-sft: 8 examples") == 1
    assert "Traceback" not in result.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "cai_training.json", "adapter"} <= {
        p.name for p in out.iterdir()}
    # Nothing else beside it: no checkpoints, no gathered or partial folders.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["revised.jsonl", "sft"]


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_needs_the_same_processes(tmp_path, tiny):
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(8))
    out, checkpoints = tmp_path / "sft", tmp_path / "sft.checkpoints"
    args = ["train-sft", data, "--base", tiny, "--out", out, "--batch-size", "1", "--epochs", "5",
            "--save-steps", "2"]  # 8 examples x 5 epochs / 2 processes = 20 steps
    proc = subprocess.Popen(launch_command(*args, forked=False), cwd=ROOT, env=environment(forked=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/cai_checkpoint_complete")):
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_tree(proc.pid)  # the launcher and both training processes, as a crashed machine would
    proc.wait()
    assert not out.exists()
    complete = [int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/cai_checkpoint_complete")]
    killed_at = max(complete)
    assert killed_at < 20
    # Each process wrote its part before the checkpoint was marked complete.
    parts = {p.name for p in (checkpoints / f"checkpoint-{killed_at}").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= parts

    alone = run_cai(*args, "--resume", env=LAUNCH_ENV, timeout=300)
    assert alone.returncode == 1 and "processes (2 -> 1)" in alone.stderr
    result = launch(*args, "--resume")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["steps"] == 20 and summary["resumed_from_step"] >= killed_at and summary["processes"] == 2
    assert result.stderr.count(f"resumed at step {summary['resumed_from_step']} of 20") == 1
    assert (out / "model.safetensors").is_file() and not checkpoints.exists()


@pytest.mark.slow
def test_train_pm_and_train_rl_on_two_processes(tmp_path, tiny):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", compare_records(12))
    pm = tmp_path / "pm"
    result = launch("train-pm", prefs, "--base", tiny, "--out", pm, "--batch-size", "2", "--max-steps", "3",
                    "--eval-fraction", "0.25")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["steps"] == 3 and summary["processes"] == 2 and summary["held_out"]["pairs"] == 3
    assert json.loads((pm / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]

    dpo = tmp_path / "dpo"
    result = launch("train-rl", prefs, "--algo", "dpo", "--policy", tiny, "--out", dpo, "--batch-size", "1",
                    "--max-steps", "2", "--max-length", "64")
    assert result.returncode == 0, result.stderr
    assert summary_of(result)["steps"] == 2 and (dpo / "model.safetensors").is_file()

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": i, "prompt": r["prompt"]}
                                                        for i, r in enumerate(revised_records(4))])
    grpo = tmp_path / "grpo"
    result = launch("train-rl", prompts, "--algo", "grpo", "--policy", tiny, "--reward-model", pm, "--out", grpo,
                    "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "4", "--max-steps", "2")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["steps"] == 2 and summary["processes"] == 2 and "reward" in summary
    assert (grpo / "model.safetensors").is_file()
