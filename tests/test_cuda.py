"""The CUDA path: the transformers backend and the trainers on a GPU (`make test-gpu`).

The tests marked `cuda` ask cai for the device in CAI_TEST_DEVICE (default cuda) through
CAI_DEVICE, which makes cai stop with an error rather than fall back to the CPU, and they check
where the weights were: on the model itself, in torch's memory counters and in the training
summary. Where CAI_TEST_DEVICE is cuda and torch sees no GPU they are skipped, with the reason.
`CAI_TEST_DEVICE=cpu make test-gpu` runs the same tests on the CPU: a dry run of everything but
the device, for machines without one.

They use the byte-level tiny random Llama of conftest.py (built here, no download), so the
whole run takes seconds on a GPU and fits in what a GPU machine is sent.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT, build_tiny_folder, cai_env, run_cai, write_jsonl
from test_distributed_training import free_port
from test_training import PROMPTS, compare_records, revised_records

DEVICES = ("cpu", "cuda")
DEVICE = os.environ.get("CAI_TEST_DEVICE", "cuda").strip().lower()
# bf16 keeps 8 bits of mantissa: on the tiny model, next-token log-probabilities in bf16 were
# within 0.02 of float32 ones (CPU, 726-token prompt), and the A-vs-B probability within 0.002.
LOGPROB_TOLERANCE, PROBABILITY_TOLERANCE = 0.1, 0.02

cuda = pytest.mark.cuda


@pytest.fixture(scope="module")
def device() -> str:
    """The device under test, or a skip saying why there is none."""
    if DEVICE not in DEVICES:
        pytest.fail(f"CAI_TEST_DEVICE={DEVICE!r}: choose one of {', '.join(DEVICES)}")
    if DEVICE == "cuda":
        import torch

        if torch.version.cuda is None:
            pytest.skip(f"torch {torch.__version__} is a CPU build (TORCH=torch make install gets a CUDA one); "
                        "CAI_TEST_DEVICE=cpu runs these tests on the CPU")
        if not torch.cuda.is_available():
            pytest.skip("torch sees no CUDA device; CAI_TEST_DEVICE=cpu runs these tests on the CPU")
    return DEVICE


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_folder(tmp_path_factory.mktemp("tiny-bytes"), byte_level=True)


def on(device: str) -> dict[str, str]:
    """The environment of a cai run on `device` (one CPU thread, for the dry run's sake)."""
    return {"CAI_DEVICE": device, "OMP_NUM_THREADS": "1"}


def summary_of(result) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result  # the JSON summary and nothing else
    return json.loads(lines[0])


def check_trained_on(summary: dict, device: str) -> None:
    """The weights trained where they were asked to, in bf16 autocast on a GPU, with LoRA."""
    assert summary["device"] == device, summary
    assert summary["bf16"] is (device == "cuda"), summary
    assert summary["lora"] is True and summary["steps"] == 2, summary
    assert math.isfinite(summary["final_loss"]), summary


def test_cai_device_picks_the_device_and_never_falls_back(monkeypatch):
    """Not marked cuda: the choice itself runs everywhere."""
    import torch

    from cai_cli.errors import CaiError
    from cai_cli.hardware import torch_device

    monkeypatch.delenv("CAI_DEVICE", raising=False)
    assert torch_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("CAI_DEVICE", "CPU")
    assert torch_device() == "cpu"
    monkeypatch.setenv("CAI_DEVICE", "tpu")
    with pytest.raises(CaiError, match="choose one of auto, cpu, cuda"):
        torch_device()
    monkeypatch.setenv("CAI_DEVICE", "cuda")
    if torch.cuda.is_available():
        assert torch_device() == "cuda"
    else:
        with pytest.raises(CaiError, match="torch sees no CUDA device"):
            torch_device()


# --- generation and scoring -------------------------------------------------------------------

@cuda
def test_sample_generates_in_batches_on_the_device(device, model, tmp_path, monkeypatch):
    import torch

    from cai_cli.backends import BackendOptions, Sampling, load_backend
    from cai_cli.stages.sample import SampleSettings, SampleStage

    monkeypatch.setenv("CAI_DEVICE", device)
    backend = load_backend(BackendOptions(model=str(model), backend="transformers", batch_size=4))
    weights = next(backend.model.parameters())
    assert backend.device == device and weights.device.type == device
    assert weights.dtype == (torch.bfloat16 if device == "cuda" else torch.float32)
    # Six prompts of different lengths: two batches of four, left-padded, sorted by length.
    prompts = [{"id": f"p{i}", "prompt": " ".join(PROMPTS[: i % 4 + 1])} for i in range(6)]
    records = list(SampleStage(backend, SampleSettings(sampling=Sampling(max_tokens=8)))(prompts))
    assert [r["id"] for r in records] == [p["id"] for p in prompts]
    assert all(isinstance(r["response"], str) for r in records)
    if device == "cuda":
        assert torch.cuda.max_memory_allocated() > 0

    # The command, as a user runs it.
    source = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    result = run_cai("sample", "--backend", "transformers", "-m", model, "--batch-size", "4", "--max-tokens", "8",
                     source, env=on(device))
    assert result.returncode == 0, result
    assert [r["id"] for r in result.records] == [p["id"] for p in prompts]


@cuda
def test_compare_on_the_device_gives_the_cpus_log_probabilities(device, model, tmp_path, monkeypatch):
    from cai_cli.backends import BackendOptions, load_backend

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": f"c{i}", "prompt": prompt, "responses": ["sorry i cannot help", "sure here is how " + prompt]}
        for i, prompt in enumerate(PROMPTS)])
    args = ("compare", "--backend", "transformers", "-m", model, "--batch-size", "4", pairs)
    here, cpu = run_cai(*args, env=on(device)), run_cai(*args, env=on("cpu"))
    assert here.returncode == 0 and cpu.returncode == 0, (here, cpu)
    assert [r["id"] for r in here.records] == [r["id"] for r in cpu.records] == ["c0", "c1", "c2", "c3"]
    for a, b in zip(here.records, cpu.records):
        assert a["label"] == pytest.approx(b["label"], abs=PROBABILITY_TOLERANCE)
        for x, y in zip(a["orderings"], b["orderings"], strict=True):
            assert (x["principle"], x["a"], x["b"]) == (y["principle"], y["a"], y["b"])
            assert x["p_a"] == pytest.approx(y["p_a"], abs=PROBABILITY_TOLERANCE)
    # The tiny model is no judge, but it is not indifferent either: the comparison can fail.
    assert max(abs(o["p_a"] - 0.5) for r in cpu.records for o in r["orderings"]) > 5 * PROBABILITY_TOLERANCE

    # The log-probabilities themselves, batched with shared prefixes on the device, one CPU pass each.
    monkeypatch.setenv("CAI_DEVICE", device)
    there = load_backend(BackendOptions(model=str(model), backend="transformers", batch_size=4))
    reference = load_backend(BackendOptions(model=str(model), backend="transformers", batch_size=1, device="cpu"))
    stem = "which answer is better ? " * 8  # a shared prefix long enough to be computed once per batch
    questions = [there.render([{"role": "user", "content": stem + prompt}]) + "The answer is: (" for prompt in PROMPTS]
    for x, y in zip(there.next_token_logprobs(questions, ["A", "B"]),
                    reference.next_token_logprobs(questions, ["A", "B"]), strict=True):
        assert x == pytest.approx(y, abs=LOGPROB_TOLERANCE)


# --- training ---------------------------------------------------------------------------------

@cuda
def test_train_sft_with_lora_on_the_device(device, model, tmp_path):
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(4))
    result = run_cai("train-sft", data, "--base", model, "--out", tmp_path / "sft", "--lora", "--lora-r", "4",
                     "--max-steps", "2", "--batch-size", "2", env=on(device))
    assert result.returncode == 0, result
    check_trained_on(summary_of(result), device)
    assert (tmp_path / "sft" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def trained_pm(device, model, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("pm")
    prefs = write_jsonl(folder / "prefs.jsonl", compare_records(8))
    result = run_cai("train-pm", prefs, "--base", model, "--out", folder / "pm", "--lora", "--lora-r", "4",
                     "--max-steps", "2", "--batch-size", "2", env=on(device))
    assert result.returncode == 0, result
    return folder / "pm", summary_of(result)


@cuda
def test_train_pm_with_lora_on_the_device_then_score_there(device, trained_pm, tmp_path):
    pm, summary = trained_pm
    check_trained_on(summary, device)
    # The preference model scores in bf16 on a GPU.
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"id": "a", "prompt": PROMPTS[0], "response": "sorry i cannot"},
                                                       {"id": "b", "prompt": PROMPTS[1], "response": "sure here"}])
    result = run_cai("score", "--reward-model", pm, answers, env=on(device))
    assert result.returncode == 0, result
    assert [r["id"] for r in result.records] == ["a", "b"]
    assert all(math.isfinite(r["score"]) for r in result.records)


@cuda
@pytest.mark.parametrize("algo", ["rloo", "dpo"])
def test_train_rl_with_lora_on_the_device(algo, device, model, trained_pm, tmp_path):
    if algo == "dpo":
        data = write_jsonl(tmp_path / "prefs.jsonl", compare_records(4))
        method = ["--algo", "dpo", "--batch-size", "1", "--max-length", "128"]
    else:
        data = write_jsonl(tmp_path / "prompts.jsonl", [{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)])
        method = ["--reward-model", trained_pm[0], "--batch-size", "2", "--num-generations", "2",
                  "--max-completion-length", "6"]
    result = run_cai("train-rl", data, "--policy", model, "--out", tmp_path / algo, "--lora", "--lora-r", "4",
                     "--max-steps", "2", *method, env=on(device))
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["algo"] == algo
    check_trained_on(summary, device)


@cuda
def test_accelerate_launch_on_one_device(device, model, tmp_path):
    """The DDP config of the examples, one process: what a user with one GPU runs."""
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(4))
    # On the CPU the config's bf16 would be CPU autocast, which cai does not use there.
    precision = ["--mixed_precision", "no"] if device == "cpu" else []
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
               "--config_file", str(EXAMPLES / "accelerate" / "ddp.yaml"), "--num_processes", "1", *precision,
               "--main_process_port", str(free_port()),
               "-m", "cai_cli", "train-sft", str(data), "--base", str(model), "--out", str(tmp_path / "sft"),
               "--lora", "--lora-r", "4", "--max-steps", "2", "--batch-size", "2"]
    result = subprocess.run(command, cwd=ROOT, env=cai_env({**on(device), "ACCELERATE_DISABLE_RICH": "1"}),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["processes"] == 1
    check_trained_on(summary, device)
