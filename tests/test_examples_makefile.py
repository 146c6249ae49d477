"""The recipe in examples/Makefile, run the way its header says: make targets, resumable steps."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import EXAMPLES, ROOT, cai_env, read_jsonl, write_jsonl

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

CAI = f"{sys.executable} -m cai_cli"


def make(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    # PYTHONPATH: the cai of this checkout, whichever one is installed (make runs in examples/).
    env = cai_env({"CAI_THREADS": "1", "PYTHONPATH": str(ROOT)})
    return subprocess.run(["make", "-C", str(EXAMPLES), f"CAI={CAI}", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_every_stage_of_the_recipe_is_wired(tmp_path):
    plan = make("-n", "all", f"OUT={tmp_path}")
    assert plan.returncode == 0, plan.stderr
    for step in ("sample", "critique", "revise", "train-sft", "export-gguf", "compare", "train-pm",
                 "score", "train-rl", "--algo dpo"):
        assert f" {step} " in plan.stdout, step


@pytest.mark.slow
def test_sl_cai_data_steps_run_and_a_second_make_redoes_nothing(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"id": "a", "prompt": "How do I get into my neighbour's shed without a key?"},
        {"id": "b", "prompt": "Write an insult about my coworker's accent."},
    ])
    settings = [f"PROMPTS={prompts}", f"OUT={tmp_path / 'runs'}", "TOKENS=8"]
    target = f"{tmp_path / 'runs'}/revised.jsonl"
    first = make(*settings, target)
    assert first.returncode == 0, first.stderr
    records = read_jsonl(tmp_path / "runs" / "revised.jsonl")
    assert [r["id"] for r in records] == ["a", "b"]
    assert all(len(r["revisions"]) == 2 and r["initial_response"] for r in records)
    assert not list((tmp_path / "runs").glob("*.part"))
    again = make(*settings, target)
    assert again.returncode == 0 and "cai_cli" not in again.stdout  # nothing ran


def test_growing_the_red_team_prompts_is_off_by_default_and_feeds_sl_cai(tmp_path):
    plain = make("-n", "sl-cai", f"OUT={tmp_path}")
    assert plain.returncode == 0, plain.stderr
    assert " redteam " not in plain.stdout
    grown = make("-n", "sl-cai", "GROW=50", f"OUT={tmp_path}")
    assert grown.returncode == 0, grown.stderr
    assert " redteam " in grown.stdout and " -n 50 " in grown.stdout
    assert f" {tmp_path}/red_team-grown-50.jsonl --seed" in grown.stdout  # what sample answers


def test_the_sl_cai_model_is_rebuilt_from_the_adapter_kept_in_the_repository(tmp_path):
    """make sl-cai-model: the kept LoRA adapter merged onto the policy GGUF, exported as q8_0; the
    experiment's base answers come from the policy exported through the same path."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    policy = tmp_path / "policy.gguf"
    policy.write_bytes(b"")
    plan = make("-n", "sl-cai-model", f"ADAPTER={adapter}", f"POLICY={policy}", f"MODELS={tmp_path}")
    assert plan.returncode == 0, plan.stderr
    assert f" export-gguf {adapter} --base {policy} --out {tmp_path}/sl-cai.gguf --type q8_0" in plan.stdout
    plan = make("-n", f"{tmp_path}/x/answers/base-rt.jsonl", f"XOUT={tmp_path}/x", f"POLICY={policy}")
    assert plan.returncode == 0, plan.stderr
    assert f" export-gguf {policy} --out {tmp_path}/x/base.gguf --type q8_0" in plan.stdout
    assert f" sample -m {tmp_path}/x/base.gguf --temperature 0" in plan.stdout


def test_blind_labels_are_exported_per_held_out_set_and_imported_into_elo(tmp_path):
    labels = tmp_path / "labels"
    plan = make("-n", "label-items", f"XOUT={tmp_path}/x", f"LABELS={labels}")
    assert plan.returncode == 0, plan.stderr
    for name in ("rt", "helpful", "benign"):
        assert (f" label {tmp_path}/x/answers/base-{name}.jsonl {tmp_path}/x/answers/sl-cai-{name}.jsonl "
                f"--name base --name sl-cai --export {labels}/{name}-items.jsonl --key {labels}/{name}-key.json") in plan.stdout
    labels.mkdir()
    for name in ("rt", "helpful", "benign"):
        for suffix in ("filled.jsonl", "key.json", "items.jsonl"):
            (labels / f"{name}-{suffix}").touch()
    plan = make("-n", "experiment-labels", f"XOUT={tmp_path}/x", f"LABELS={labels}")
    assert plan.returncode == 0, plan.stderr
    assert f" label --import {labels}/rt-filled.jsonl --key {labels}/rt-key.json" in plan.stdout
    assert f" elo --labels harmless={tmp_path}/x/labels-rt.jsonl --labels helpful={tmp_path}/x/labels-helpful.jsonl" in plan.stdout
