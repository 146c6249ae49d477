"""The recipe in examples/Makefile, run the way its header says: make targets, resumable steps."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import EXAMPLES, ROOT, cai_env

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
    rounds = make("-n", "sl-cai", f"OUT={tmp_path}", "ROUND_OPTS=-c mine.json --no-few-shot")
    assert rounds.returncode == 0, rounds.stderr
    lines = [line for line in rounds.stdout.splitlines() if " critique " in line or " revise " in line]
    assert len(lines) == 4 and all("-c mine.json --no-few-shot" in line for line in lines)


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
    # The RL models: their adapters were trained from SL-CAI, whose adapter is merged first.
    for model in ("rl-cai", "dpo-cai"):
        (tmp_path / f"{model}-adapter").mkdir()
        (tmp_path / f"{model}-adapter" / "adapter_model.safetensors").write_bytes(b"")
    plan = make("-n", "rl-cai-model", "dpo-cai-model", f"ADAPTER={adapter}", f"RL_ADAPTERS={tmp_path}",
                f"POLICY={policy}", f"MODELS={tmp_path}")
    assert plan.returncode == 0, plan.stderr
    for model in ("rl-cai", "dpo-cai"):
        assert (f" export-gguf {tmp_path}/{model}-adapter --base {policy} --base-adapter {adapter} "
                f"--out {tmp_path}/{model}.gguf --type q8_0") in plan.stdout
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


def shared_data(tmp_path) -> str:
    """SHARED=... for a dry run: the public data files the prompt sets are read from (empty)."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    for name in ("advbench_harmful_behaviors.csv", "vicuna_questions.jsonl"):
        (shared / name).touch()
    return f"SHARED={shared}"


def rl_plan(tmp_path, *settings: str) -> str:
    """`make -n rl-experiment` from nothing: the SL-CAI half's steps, then the RL half's."""
    (tmp_path / "judge.gguf").touch()
    plan = make("-n", "rl-experiment", f"XOUT={tmp_path}/x", shared_data(tmp_path), f"JUDGE={tmp_path}/judge.gguf",
                *settings)
    assert plan.returncode == 0, plan.stderr
    return plan.stdout


def test_the_rl_half_labels_sl_cai_answers_under_both_constitutions_and_trains_from_sl_cai(tmp_path):
    x = f"{tmp_path}/x"
    plan = rl_plan(tmp_path, "XTOKENS=64")
    # A spread subset of the training prompts, red-team and helpful, answered twice by SL-CAI.
    assert f"awk '(NR - 1) % 3 == 0' {x}/prompts/sl-prompts.jsonl > {x}/rl-redteam-prompts.jsonl.part" in plan
    assert f"awk '(NR - 1) % 3 == 0' {x}/prompts/helpful-train.jsonl > {x}/rl-helpful-prompts.jsonl.part" in plan
    for kind in ("redteam", "helpful"):
        assert f" sample -m {x}/sl-cai.gguf -n 2 --temperature 1 --max-tokens 64 {x}/rl-{kind}-prompts.jsonl " in plan
    # The judge labels red-team pairs for harmlessness and helpful pairs for helpfulness; no --cot by default.
    assert f" compare -m {tmp_path}/judge.gguf -c harmlessness --principles 2  {x}/pairs-redteam.jsonl " in plan
    assert f" compare -m {tmp_path}/judge.gguf -c helpfulness --principles 2  {x}/pairs-helpful.jsonl " in plan
    assert " --cot" not in plan.split(" train-pm ")[0]
    # The PM learns from both label files, with a held-out part; RLOO and DPO start from SL-CAI.
    assert f" train-pm {x}/prefs-redteam.jsonl --mix {x}/prefs-helpful.jsonl --base " in plan
    assert " --eval-fraction 0.2 " in plan
    rloo = plan.split(" train-rl ")[1].split("\n\n")[0]
    rloo = " ".join(rloo.replace("\\\n", " ").split())
    assert rloo.startswith(f"{x}/rl-redteam-prompts.jsonl --mix {x}/rl-helpful-prompts.jsonl --algo rloo "
                           f"--policy {x}/sl-cai --reward-model {x}/pm --beta 0.05 ")
    # RLOO samples as long as the PM's answers were sampled: nothing cut off in RL that was whole in the PM data.
    assert " --max-completion-length 64 " in rloo
    assert " --max-steps 16 --lr 1e-4 " in rloo  # the short run steps at SFT's rate, not train-rl's 1e-5
    dpo = " ".join(plan.split(" train-rl ")[2].replace("\\\n", " ").split())
    assert dpo.startswith(f"{x}/prefs-redteam.jsonl --mix {x}/prefs-helpful.jsonl --algo dpo --policy {x}/sl-cai "
                          "--min-margin 0.05 ")
    for model in ("rl-cai", "dpo-cai"):
        assert f" export-gguf {x}/{model} --out {x}/{model}.gguf --type q8_0" in plan
        for name in ("rt", "helpful", "benign"):
            assert (f" sample -m {x}/{model}.gguf --temperature 0 --max-tokens 64 {x}/prompts/{name}-eval.jsonl "
                    f"--seed 0 -o {x}/answers/{model}-{name}.jsonl.part") in plan
    assert (f" elo {x}/answers/base-rt.jsonl {x}/answers/sl-cai-rt.jsonl {x}/answers/rl-cai-rt.jsonl "
            f"{x}/answers/dpo-cai-rt.jsonl --name base --name sl-cai --name rl-cai --name dpo-cai") in plan
    assert f" score --pm {x}/pm {x}/judge-bare-pairs.jsonl " in plan
    assert "\nrm " not in plan  # the sampled pairs are kept, not removed as intermediate files


def test_the_rl_half_runs_quick_with_cot_labels_when_asked(tmp_path):
    x = f"{tmp_path}/x"
    plan = rl_plan(tmp_path, "EXPERIMENT=quick", "RL_COT=1")
    assert f" compare -m {tmp_path}/judge.gguf -c harmlessness --principles 2 --cot {x}/pairs-redteam.jsonl " in plan
    assert f"% 3 == 0' {x}/prompts/sl-prompts.jsonl" in plan
    assert " --max-steps 2 " in plan and " --max-completion-length 256 " in plan


def test_blind_label_items_are_one_round_per_rl_model_against_base_and_feed_one_elo_fit(tmp_path):
    labels, x = tmp_path / "labels", f"{tmp_path}/x"
    plan = make("-n", "rl-label-items", f"XOUT={x}", f"LABELS={labels}", shared_data(tmp_path))
    assert plan.returncode == 0, plan.stderr
    for name in ("rt", "helpful", "benign"):
        for round_, model in (("rl", "rl-cai"), ("dpo", "dpo-cai")):
            assert (f" label {x}/answers/base-{name}.jsonl {x}/answers/{model}-{name}.jsonl --name base --name {model} "
                    f"--export {labels}/{round_}-{name}-items.jsonl --key {labels}/{round_}-{name}-key.json") in plan.stdout
    labels.mkdir()
    for name in ("rt", "helpful", "benign", "rl-rt", "rl-helpful", "rl-benign", "dpo-rt"):
        for suffix in ("filled.jsonl", "key.json", "items.jsonl"):
            (labels / f"{name}-{suffix}").touch()
    plan = make("-n", "rl-experiment-labels", f"XOUT={x}", f"LABELS={labels}", shared_data(tmp_path))
    assert plan.returncode == 0, plan.stderr
    assert f" label --import {labels}/rl-rt-filled.jsonl --key {labels}/rl-rt-key.json" in plan.stdout
    assert f" label --import {labels}/dpo-rt-filled.jsonl --key {labels}/dpo-rt-key.json" in plan.stdout
    assert "dpo-helpful" not in plan.stdout  # a set not labelled yet is left out, not waited for
    # experiment_results.py reads every label, the RL rounds' too, from one file
    assert (f"cat {x}/labels-rt.jsonl {x}/labels-helpful.jsonl {x}/labels-benign.jsonl "
            f"{x}/labels-rl-benign.jsonl {x}/labels-rl-helpful.jsonl {x}/labels-rl-rt.jsonl {x}/labels-dpo-rt.jsonl "
            f"> {x}/labels.jsonl.part && mv {x}/labels.jsonl.part {x}/labels.jsonl") in plan.stdout
    one_line = " ".join(plan.stdout.replace("\\\n", " ").split())
    assert (f" elo --labels harmless={x}/labels-rt.jsonl --labels helpful={x}/labels-helpful.jsonl "
            f"--labels benign-helpful={x}/labels-benign.jsonl --labels benign-helpful={x}/labels-rl-benign.jsonl "
            f"--labels helpful={x}/labels-rl-helpful.jsonl --labels harmless={x}/labels-rl-rt.jsonl "
            f"--labels harmless={x}/labels-dpo-rt.jsonl --seed 0 ") in one_line


def test_the_report_of_both_halves_draws_all_four_models_and_both_judges_calibration(tmp_path):
    """rl-report (docs/results/run-5): the AI judge's Elo of all four models beside the blind labels',
    and the preference model's scores of the hand-checked pairs as its calibration."""
    labels, x = tmp_path / "labels", f"{tmp_path}/x"
    labels.mkdir()
    for name in ("rt", "helpful", "benign", "rl-rt", "dpo-rt"):
        for suffix in ("filled.jsonl", "key.json", "items.jsonl"):
            (labels / f"{name}-{suffix}").touch()
    (tmp_path / "judge.gguf").touch()
    plan = make("-n", "rl-report", f"XOUT={x}", f"LABELS={labels}", shared_data(tmp_path), f"JUDGE={tmp_path}/judge.gguf")
    assert plan.returncode == 0, plan.stderr
    one_line = " ".join(plan.stdout.replace("\\\n", " ").split())
    assert (f"python3 pm_judge_items.py {x}/pm-judge-harmless.jsonl {x}/pm-judge-helpful.jsonl "
            f"{x}/pm-judge-bare.jsonl {x}/pm-judge-evasive.jsonl > {x}/pm-judge-items.jsonl.part") in one_line
    assert f" report base@red-team={x}/answers/base-rt.jsonl " in one_line
    assert f" dpo-cai@benign={x}/answers/dpo-cai-benign.jsonl {x}/elo-rl-harmless.jsonl {x}/elo-rl-helpful.jsonl " in one_line
    assert f" pm-judge={x}/pm-judge-items.jsonl " in one_line and f" dpo-cai={x}/dpo-cai --out {x}/rl-report" in one_line
