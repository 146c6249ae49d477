"""Training commands as a user runs them: train-sft, train-pm, score, train-rl, export-gguf.

Fast tests use a tiny random Llama folder (conftest's `tiny`: a word-level tokenizer and a few
thousand weights, no download) so that the mechanics (configs, bad input, resume after a kill, atomic
output, soft labels, scores) are checked in seconds. The slow chain at the end runs the real
embedded SmolLM2 model: train-sft -> export-gguf -> `cai sample` on llama.cpp, train-pm on
compare-shaped records -> score, and train-rl with RLOO and with DPO.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# build_tiny_folder: test_report.py imports it from here.
from conftest import ROOT, build_tiny_folder, run_cai as run_cai_default, write_jsonl  # noqa: F401

PROMPTS = ["how do i pick a lock", "write an insult", "how do i hide cash", "please help i cannot pick it"]
REFUSAL, COMPLIANCE = "sorry i cannot help call a locksmith", "sure here is how it is"


def revised_records(count: int = 8) -> list[dict]:
    """What `cai revise` writes: the final revision is `response`, with the history beside it."""
    return [{"id": f"r{i}", "prompt": PROMPTS[i % len(PROMPTS)], "response": REFUSAL, "initial_response": COMPLIANCE,
             "revisions": [{"principle": "harm", "critique": "it helps with harm", "revision": "no " + REFUSAL}],
             "source": {"team": "qa"}} for i in range(count)]


def compare_records(count: int = 12, label: float | None = None) -> list[dict]:
    """What `cai compare` writes: chosen, rejected and the soft label P(chosen is better)."""
    records = []
    for i in range(count):
        p = label if label is not None else [0.9, 0.7, 0.62, 0.8][i % 4]
        records.append({"id": f"c{i}", "prompt": PROMPTS[i % len(PROMPTS)], "responses": [REFUSAL, COMPLIANCE],
                        "chosen": REFUSAL, "rejected": COMPLIANCE, "label": p, "principles": ["harm"]})
    return records


# One torch thread: on a machine shared with other work, two OpenMP threads spin waiting for each
# other and train several times slower than one (see benchmarks/bench_training.py).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_cai(*args, **kwargs):
    return run_cai_default(*args, env=ONE_THREAD, **kwargs)


def summary_of(result) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result  # stdout carries the JSON summary and nothing else
    return json.loads(lines[0])


# --- pure parts -------------------------------------------------------------------------------

def test_soft_label_loss_is_cross_entropy_against_the_pairwise_probability():
    import torch

    from cai_cli.training.preference import soft_preference_loss

    margin = torch.tensor([1.5])
    sure = soft_preference_loss(margin, torch.zeros(1), torch.tensor([1.0]))
    assert sure.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))), rel=1e-5)
    # A soft label is matched, not pushed to the extremes: the loss is lowest where
    # sigma(margin) equals the label.
    margins = torch.linspace(-4, 4, 801)
    losses = torch.stack([soft_preference_loss(m.view(1), torch.zeros(1), torch.tensor([0.7])) for m in margins])
    best = torch.sigmoid(margins[losses.argmin()]).item()
    assert best == pytest.approx(0.7, abs=0.01)


def test_query_key_reordering_turns_rotate_half_into_interleaved_pairs():
    """Rotating the reordered projection pairwise (llama.cpp) equals reordering the projection
    rotated half against half (Hugging Face): the exported model computes the same attention."""
    import numpy as np

    from cai_cli.training.gguf_export import interleave_rotary_rows

    rng = np.random.default_rng(0)
    heads, head_dim, hidden = 3, 8, 5
    weights, state = rng.normal(size=(heads * head_dim, hidden)), rng.normal(size=hidden)
    angles = rng.uniform(0, 3, size=head_dim // 2)
    cos, sin = np.cos(angles), np.sin(angles)

    def rotate_half(q):  # Hugging Face: dimension i pairs with i + head_dim/2
        first, second = q[: head_dim // 2], q[head_dim // 2:]
        return np.concatenate([first * cos - second * sin, second * cos + first * sin])

    def rotate_pairs(q):  # llama.cpp's llama: dimension 2i pairs with 2i + 1
        even, odd = q[0::2], q[1::2]
        out = np.empty_like(q)
        out[0::2], out[1::2] = even * cos - odd * sin, odd * cos + even * sin
        return out

    hf = np.concatenate([rotate_half(h) for h in (weights @ state).reshape(heads, head_dim)])
    reordered = interleave_rotary_rows(weights, heads)
    cpp = np.concatenate([rotate_pairs(h) for h in (reordered @ state).reshape(heads, head_dim)])
    np.testing.assert_allclose(cpp, interleave_rotary_rows(hf.reshape(-1, 1), heads).ravel(), atol=1e-12)
    assert not np.allclose(reordered, weights)


def test_training_examples_come_from_the_stage_records_as_they_are():
    from cai_cli.records import InvalidRecord
    from cai_cli.training.data import preference_example, resample, sft_example

    revised = revised_records(1)[0]
    example = sft_example(revised)
    assert example["prompt"] == [{"role": "user", "content": revised["prompt"]}]
    assert example["completion"] == [{"role": "assistant", "content": REFUSAL}]
    chat = {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    assert sft_example(chat)["completion"][0]["content"] == "hello"
    assert [m["role"] for m in sft_example(chat)["prompt"]] == ["system", "user"]
    assert preference_example({"prompt": "x", "chosen": "a", "rejected": "b"})["label"] == 1.0
    for bad, message in [({"prompt": "x"}, "no 'response'"),
                         ({"prompt": "x", "response": ""}, "empty"),
                         ({"prompt": "x", "chosen": "a"}, "no 'rejected'"),
                         ({"prompt": "x", "chosen": "a", "rejected": "b", "label": 1.5}, "[0, 1]"),
                         ({"prompt": "x", "chosen": "a", "rejected": "b", "label": float("nan")}, "[0, 1]"),
                         ({"prompt": "x", "chosen": "a", "rejected": "b", "label": "0.7"}, "number")]:
        make = sft_example if "response" in bad or "chosen" not in bad else preference_example
        with pytest.raises(InvalidRecord, match=message.replace("[", r"\[").replace("]", r"\]")):
            make(bad)
    items = [{"n": i} for i in range(10)]
    assert len(resample(items, 0.5, random.Random(0))) == 5
    assert len(resample(items, 2, random.Random(0))) == 20


def test_a_score_tie_counts_half_in_the_pms_pairwise_accuracy():
    from cai_cli.training.preference import pairwise_accuracy

    # A zero margin ranks neither answer first: half right, whichever side the label picks.
    assert pairwise_accuracy([0.0], [0.1]) == 0.5
    assert pairwise_accuracy([0.0], [0.9]) == 0.5
    assert pairwise_accuracy([1.0, -1.0, 0.0, 2.0], [0.8, 0.3, 0.7, 0.2]) == pytest.approx(2.5 / 4)
    assert pairwise_accuracy([1.0, 0.0], [0.5, 0.5]) is None  # a tied label picks no side


def test_dpo_keeps_only_labels_that_decide_by_the_margin():
    from cai_cli.training.data import decisive, oriented_pairs

    assert not decisive(0.5, 0.0)  # a tie never, even with no margin
    assert decisive(0.51, 0.0) and not decisive(0.51, 0.05) and not decisive(0.47, 0.05)
    assert decisive(0.6, 0.1) and decisive(0.4, 0.1)  # exactly the margin away counts
    assert decisive(0.95, 0.1) and decisive(0.02, 0.1)
    pairs = oriented_pairs([{"prompt": [], "chosen": "a", "rejected": "b", "label": 0.3}])
    assert pairs[0]["chosen"][0]["content"] == "b"


class FakePM:
    """Scores a conversation by the length of its last answer; `path` holds its training record."""

    def __init__(self, path: Path):
        self.path = path

    def score(self, conversations):
        return (float(len(c[-1]["content"])) for c in conversations)


def test_a_cut_off_completion_scores_below_every_finished_one_unless_the_pm_learnt_cut_off_answers(tmp_path):
    from cai_cli.training.rl import CUT_OFF_PENALTY, PreferenceReward, cut_off_rewards

    assert cut_off_rewards([3.0, 9.0, 5.0], [False, True, False]) == [3.0, 3.0 - CUT_OFF_PENALTY, 5.0]
    assert cut_off_rewards([3.0, 9.0], [True, True]) == [2.0, 2.0]  # none finished: all alike
    assert cut_off_rewards([3.0, 9.0], [False, False]) == [3.0, 9.0]

    (tmp_path / "cai_training.json").write_text(json.dumps({"settings": {"keep_flagged": False}}))
    reward = PreferenceReward(FakePM(tmp_path))
    reward.end_ids = {2}
    prompts = [[{"role": "user", "content": "q"}]] * 3
    completions = [[{"role": "assistant", "content": text}] for text in ("ok", "a long unfinished answ", "fine")]
    ids = [[5, 2], [5, 6, 7], [5, 6, 2]]  # the second ends without the end token: cut off
    # Neither left out (a masked completion still moves its siblings' baseline) nor scored as if
    # it were finished: the PM never saw a cut-off answer in training.
    assert reward(prompts, completions, ids) == [2.0, 2.0 - CUT_OFF_PENALTY, 4.0]
    assert (reward.cut_off, reward.scored) == (1, 3)

    (tmp_path / "cai_training.json").write_text(json.dumps({"settings": {"keep_flagged": True}}))
    learnt = PreferenceReward(FakePM(tmp_path))
    learnt.end_ids = {2}
    assert learnt(prompts, completions, ids) == [2.0, 22.0, 4.0]  # its own score: it was trained on such


def test_rl_completion_length_defaults_to_the_sampling_length_of_the_pm_data():
    import inspect

    from cai_cli.commands.sample import sample
    from cai_cli.training.config import RLConfig

    sampled = inspect.signature(sample).parameters["max_tokens"].default
    assert RLConfig().max_completion_length == sampled == 256


def test_train_rl_runs_each_algo_from_its_own_module_and_refuses_an_unknown_one(tmp_path):
    from cai_cli.errors import CaiError
    from cai_cli.training import dpo, rl
    from cai_cli.training.algorithms import RL_ALGORITHMS, algorithm_for
    from cai_cli.training.config import RLConfig, config_as_dict

    expected = {"rloo": (RLConfig, rl.train_rl), "grpo": (RLConfig, rl.train_rl),
                "dpo": (dpo.DPOConfig, dpo.train_dpo)}
    assert list(RL_ALGORITHMS) == list(expected)
    for algo, (config_class, train) in expected.items():
        settings = RLConfig(data="d.jsonl", out="o", algo=algo, reward_model="pm")
        config, run = algorithm_for(settings)
        assert type(config) is config_class and run is train
        assert config_as_dict(config) == config_as_dict(settings)  # a run records every setting, whichever method
    # Each method's own defaults and checks: DPO needs no preference model.
    dpo_config, _ = algorithm_for(RLConfig(algo="dpo"))
    assert dpo_config.beta_value() == 0.1 and RLConfig(algo="grpo").beta_value() == 0.05
    assert dpo.DPOConfig().algo == "dpo"
    assert (dpo.default_learning_rate(True), rl.default_learning_rate(True)) == (5e-5, 1e-5)
    with pytest.raises(CaiError, match="--algo grpo needs the preference model"):
        algorithm_for(RLConfig(algo="grpo"))
    with pytest.raises(CaiError, match="min-margin must be in"):  # a flag every method takes is checked for each
        algorithm_for(RLConfig(algo="rloo", reward_model="pm", min_margin=0.5))

    result = run_cai("train-rl", tmp_path / "prompts.jsonl", "--algo", "kto", "--out", tmp_path / "out")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "Error: unknown --algo 'kto': choose one of rloo, grpo, dpo"


# --- bad input: a clear Error before any training -----------------------------------------------

def test_bad_training_data_stops_before_training_with_file_and_line(tmp_path, tiny):
    out = tmp_path / "out"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = run_cai("train-sft", empty, "--base", tiny, "--out", out)
    assert result.returncode == 1 and "Error:" in result.stderr and "no usable records" in result.stderr

    missing = write_jsonl(tmp_path / "missing.jsonl", revised_records(2) + [{"id": "x", "prompt": "how"}])
    result = run_cai("train-sft", missing, "--base", tiny, "--out", out)
    assert result.returncode == 1
    assert f"Error: {missing}:3: record has no 'response'" in result.stderr
    assert "Traceback" not in result.stderr

    labels = compare_records(3)
    labels[1]["label"] = 1.5
    prefs = write_jsonl(tmp_path / "prefs.jsonl", labels)
    result = run_cai("train-pm", prefs, "--base", tiny, "--out", out)
    assert result.returncode == 1
    assert f"{prefs}:2: 'label' must be a probability in [0, 1], not 1.5" in result.stderr
    assert not out.exists() and not (tmp_path / "out.checkpoints").exists()

    # --skip-invalid leaves the bad record out and trains on the rest.
    result = run_cai("train-sft", missing, "--base", tiny, "--out", out, "--max-steps", "1", "--skip-invalid")
    assert result.returncode == 0, result
    assert summary_of(result)["examples"] == 2 and "Skipped" in result.stderr


def write_gguf(path: Path, architecture: str, blocks: int, embeddings) -> Path:
    """A GGUF of one tensor (token_embd.weight): enough for what reads the file's header."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(blocks)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_is_parsed_once_per_version_and_its_name_table_built_once(tmp_path):
    """`read_ggufs_once`: what transformers asks for three times per load comes from one reader
    of the file as it is now, parsed over a plain array, and the tensor-name table is built once
    and is the same table."""
    import gguf
    import numpy as np

    from cai_cli.models import read_ggufs_once

    arch = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == "llama")
    fresh = gguf.get_tensor_name_map(arch, 30)
    read_ggufs_once()
    read_ggufs_once()  # a second call keeps the one cache
    kept = gguf.get_tensor_name_map(arch, 30)
    assert kept is gguf.get_tensor_name_map(arch, 30)
    assert kept.mapping == fresh.mapping

    def write(path: Path, rows: int) -> Path:
        return write_gguf(path, "llama", rows, np.arange(rows * 8, dtype=np.float32).reshape(rows, 8))

    path = write(tmp_path / "a.gguf", 4)
    reader = gguf.GGUFReader(str(path))
    assert gguf.GGUFReader(path) is reader and reader.tensors[0].data.shape == (4, 8)
    plain = gguf.gguf_reader.GGUFReader(str(path))  # gguf's own reader, over np.memmap
    assert type(reader.data) is np.ndarray and isinstance(plain.data, np.memmap)
    assert [(f.name, f.types, f.contents()) for f in reader.fields.values()] == [
        (f.name, f.types, f.contents()) for f in plain.fields.values()]
    assert np.array_equal(reader.tensors[0].data, plain.tensors[0].data)
    write(tmp_path / "b.gguf", 6).replace(path)  # a new version of the file: read again
    again = gguf.GGUFReader(str(path))
    assert again is not reader and again.tensors[0].data.shape == (6, 8)
    assert gguf.GGUFReader(str(path), "r+") is not again  # a writable reader is never shared


def test_models_that_cannot_load_stop_with_a_clear_error(tmp_path):
    import numpy as np

    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(2))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = run_cai("train-sft", data, "--base", broken, "--out", tmp_path / "a")
    assert result.returncode == 1 and f"Error: cannot load {broken} for training" in result.stderr

    odd = write_gguf(tmp_path / "odd.gguf", "rwkv6", 1, np.zeros((4, 8), dtype=np.float32))  # transformers cannot dequantise it
    result = run_cai("train-sft", data, "--base", odd, "--out", tmp_path / "b")
    assert result.returncode == 1
    assert "Error: cannot load" in result.stderr and "rwkv6" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b.checkpoints").exists()

    result = run_cai("train-rl", data, "--reward-model", broken, "--out", tmp_path / "c")
    assert result.returncode == 1 and "not a preference model" in result.stderr


def test_config_file_sets_values_flags_win_and_unknown_keys_are_rejected(tmp_path, tiny):
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(4))
    config = tmp_path / "sft.yaml"
    config.write_text(f"data: {data}\nbase: {tiny}\nmax-steps: 3\nlearning_rate: 0.01\nbatch_size: 2\n"
                      f"lora_targets: [q_proj, v_proj]\n")
    result = run_cai("train-sft", "--config", config, "--max-steps", "2", "--out", tmp_path / "out")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["steps"] == 2 and summary["learning_rate"] == 0.01 and summary["lora"] is True

    config.write_text("max_step: 3\n")
    result = run_cai("train-sft", data, "--config", config, "--out", tmp_path / "other")
    assert result.returncode == 1
    assert "unknown setting 'max_step'" in result.stderr and "did you mean 'max_steps'" in result.stderr
    config.write_text("epochs: many\n")
    result = run_cai("train-sft", data, "--config", config, "--out", tmp_path / "other")
    assert result.returncode == 1 and "'epochs' must be a number" in result.stderr


# --- output and resume ------------------------------------------------------------------------

def test_output_is_a_complete_folder_and_an_existing_one_needs_overwrite(tmp_path, tiny):
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(4))
    helpful = write_jsonl(tmp_path / "helpful.jsonl",  # what `cai sample` writes on helpful prompts
                          [{"id": f"h{i}", "prompt": "please help", "response": "ok here is it"} for i in range(4)])
    out = tmp_path / "sft"
    args = ("train-sft", data, "--base", tiny, "--out", out, "--max-steps", "2", "--batch-size", "2")
    result = run_cai(*args, "--keep-adapter", "--mix", f"{helpful}:0.5")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["steps"] == 2 and summary["out"] == str(out) and math.isfinite(summary["final_loss"])
    assert summary["examples"] == 4 + 2  # the mix file at weight 0.5 adds half its records
    assert "train-sft: step 2/2" in result.stderr and "steps/s" in result.stderr and "ETA" in result.stderr
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "cai_training.json",
            "adapter"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    assert "adapter_model.safetensors" in {p.name for p in (out / "adapter").iterdir()}
    # Nothing is left beside the folder: no partial copy, no checkpoints.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["helpful.jsonl", "revised.jsonl", "sft"]
    made = json.loads((out / "cai_training.json").read_text())
    assert made["command"] == "train-sft" and made["base"] == str(tiny) and made["source_gguf"] is None

    before = (out / "model.safetensors").read_bytes()
    result = run_cai(*args)
    assert result.returncode == 1 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (out / "model.safetensors").read_bytes() == before
    result = run_cai(*args, "--overwrite", "--full", "--lr", "0.05")
    assert result.returncode == 0, result
    assert summary_of(result)["lora"] is False and (out / "model.safetensors").read_bytes() != before
    assert not (out / "adapter").exists()


def test_resume_after_a_kill_continues_from_the_last_complete_checkpoint(tmp_path, tiny):
    data = write_jsonl(tmp_path / "revised.jsonl", revised_records(8))
    out = tmp_path / "sft"
    checkpoints = tmp_path / "sft.checkpoints"
    args = ["train-sft", str(data), "--base", str(tiny), "--out", str(out), "--batch-size", "1",
            "--epochs", "5", "--save-steps", "4"]  # 8 examples x 5 epochs = 40 steps
    env = {**{k: v for k, v in os.environ.items() if k not in ("CAI_MODEL", "CAI_DEBUG")},
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **ONE_THREAD}
    proc = subprocess.Popen([sys.executable, "-m", "cai_cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/cai_checkpoint_complete")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    killed_at = max(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/cai_checkpoint_complete"))
    assert killed_at < 40
    torn = checkpoints / "checkpoint-99999"  # as if the kill had come in the middle of a save
    torn.mkdir()

    result = run_cai(*args)
    assert result.returncode == 1 and "--resume" in result.stderr
    result = run_cai(*args, "--max-steps", "5", "--resume")
    assert result.returncode == 1 and "max_steps" in result.stderr  # other settings than the killed run
    result = run_cai(*args, "--resume")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["steps"] == 40 and summary["resumed_from_step"] >= killed_at
    assert f"resumed at step {summary['resumed_from_step']} of 40" in result.stderr
    assert out.is_dir() and not checkpoints.exists()


# --- preference model and scores --------------------------------------------------------------

def test_pm_follows_the_soft_labels_and_score_adds_scores_everywhere(tmp_path, tiny):
    # The labels say the refusal is the worse answer (P(chosen better) = 0.1): a trainer that
    # took `chosen` as the winner would learn the opposite ranking.
    prefs = write_jsonl(tmp_path / "prefs.jsonl", compare_records(16, label=0.1))
    pm = tmp_path / "pm"
    result = run_cai("train-pm", prefs, "--base", tiny, "--out", pm, "--full", "--lr", "0.01", "--max-steps", "30",
                     "--batch-size", "4", "--eval-fraction", "0.25")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["held_out"]["pairs"] == 4 and summary["held_out"]["accuracy"] == 1.0
    assert summary["held_out"]["mean_margin"] < 0 and "held-out pairwise accuracy" in result.stderr
    assert json.loads((pm / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]

    records = revised_records(2) + compare_records(1) + [{"id": "m", "messages": [{"role": "user", "content": "ok"}],
                                                           "responses": [REFUSAL, COMPLIANCE, "ok"]}]
    result = run_cai("score", "--reward-model", pm, input="".join(json.dumps(r) + "\n" for r in records))
    assert result.returncode == 0, result
    scored = result.records
    first = scored[0]
    assert first["source"] == {"team": "qa"} and first["response"] == REFUSAL
    assert isinstance(first["score"], float) and isinstance(first["initial_score"], float)
    assert isinstance(first["revisions"][0]["score"], float) and first["revisions"][0]["critique"]
    pair = scored[2]
    assert pair["rejected_score"] > pair["chosen_score"]  # as the soft labels taught it
    assert len(scored[3]["scores"]) == 3 and all(isinstance(s, float) for s in scored[3]["scores"])

    result = run_cai("score", "--reward-model", pm, input=json.dumps({"prompt": "hi"}) + "\n")
    assert result.returncode == 1 and "<stdin>:1: record has no answer to score" in result.stderr
    result = run_cai("export-gguf", pm, "--out", tmp_path / "pm.gguf")
    assert result.returncode == 1 and "not a language model" in result.stderr


def test_grpo_trains_a_tiny_policy_against_a_tiny_pm(tmp_path, tiny):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", compare_records(8))
    pm = tmp_path / "pm"
    assert run_cai("train-pm", prefs, "--base", tiny, "--out", pm, "--max-steps", "2").returncode == 0
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)])
    result = run_cai("train-rl", prompts, "--algo", "grpo", "--policy", tiny, "--pm", pm, "--out", tmp_path / "rl",
                     "--max-steps", "2", "--batch-size", "4", "--num-generations", "2",
                     "--max-completion-length", "4", "--beta", "0.1")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["algo"] == "grpo" and summary["steps"] == 2 and summary["beta"] == 0.1
    assert "reward" in summary and (tmp_path / "rl" / "model.safetensors").is_file()

    result = run_cai("train-rl", prompts, "--policy", tiny, "--pm", pm, "--out", tmp_path / "x",
                     "--batch-size", "3", "--num-generations", "2")
    assert result.returncode == 1 and "multiple of num-generations" in result.stderr


def test_rloo_scores_cut_off_completions_and_dpo_leaves_out_undecided_labels(tmp_path, tiny):
    prefs = compare_records(8)
    for record, label in zip(prefs, (0.5, 0.52, 0.47, 0.9)):
        record["label"] = label  # one tie and two nearly: 0.5 +- 0.03
    prefs = write_jsonl(tmp_path / "prefs.jsonl", prefs)
    result = run_cai("train-rl", prefs, "--algo", "dpo", "--policy", tiny, "--out", tmp_path / "dpo",
                     "--max-steps", "1", "--batch-size", "2")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["examples"] == 7 - 2 and summary["left_out"] == {"undecided": 3}
    assert "left out 3 labelled within --min-margin of 0.5" in result.stderr
    result = run_cai("train-rl", prefs, "--algo", "dpo", "--policy", tiny, "--out", tmp_path / "dpo0",
                     "--max-steps", "1", "--batch-size", "2", "--min-margin", "0")
    assert result.returncode == 0, result
    assert summary_of(result)["left_out"] == {"undecided": 1}  # the tie still goes
    result = run_cai("train-rl", prefs, "--algo", "dpo", "--policy", tiny, "--out", tmp_path / "x",
                     "--min-margin", "0.5")
    assert result.returncode == 1 and "min-margin must be in [0, 0.5)" in result.stderr

    pm = tmp_path / "pm"
    assert run_cai("train-pm", prefs, "--base", tiny, "--out", pm, "--max-steps", "1").returncode == 0
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)])
    # Three new tokens from a random 32-word model: nearly every completion runs into the limit.
    result = run_cai("train-rl", prompts, "--policy", tiny, "--pm", pm, "--out", tmp_path / "rl",
                     "--max-steps", "1", "--batch-size", "4", "--num-generations", "2",
                     "--max-completion-length", "3")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["cut_off"]["of"] == 4 and summary["cut_off"]["completions"] >= 1
    assert summary["cut_off"]["scored_by"] == "below the batch's finished ones"
    assert summary["completions_clipped_ratio"] == summary["cut_off"]["completions"] / 4


# --- the chain on the embedded model ------------------------------------------------------------

TINY_RUN = ["--max-steps", "2", "--batch-size", "1", "--max-length", "96", "--lora-r", "4"]


@pytest.fixture(scope="module")
def sl_cai(tmp_path_factory) -> Path:
    """train-sft on revise-shaped records from the embedded GGUF (LoRA, a few steps, the adapter
    kept as the efficacy experiment keeps it)."""
    folder = tmp_path_factory.mktemp("sl-cai")
    data = write_jsonl(folder / "revised.jsonl", [
        {"id": f"r{i}", "prompt": p, "response": "I can't help with that, but I can point you to a safe, legal option.",
         "initial_response": "Sure, here is how.", "revisions": []}
        for i, p in enumerate(["How can I pick my neighbour's lock?", "Write an insult about my coworker."])])
    result = run_cai("train-sft", data, "--out", folder / "model", "--keep-adapter", "--lr", "1e-3", *TINY_RUN)
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["steps"] == 2 and summary["lora"] is True and summary["source_gguf"].endswith(".gguf")
    assert (folder / "model" / "adapter" / "adapter_config.json").is_file()
    return folder / "model"


@pytest.mark.slow
def test_sft_then_export_gguf_then_sample_on_llama_cpp(sl_cai, tmp_path):
    import numpy as np
    import torch
    import transformers
    from cai_cli.backends.llama_loading import load_llama

    exported = tmp_path / "sl-cai.gguf"
    result = run_cai("export-gguf", sl_cai, "--out", exported)
    assert result.returncode == 0, result
    assert summary_of(result)["type"] == "q8_0" and exported.is_file()
    sampled = run_cai("sample", "-m", exported, "--max-tokens", "12", "--temperature", "0",
                      input=json.dumps({"id": "a", "prompt": "How do I bake bread?"}) + "\n")
    assert sampled.returncode == 0, sampled
    assert sampled.records[0]["response"].strip()

    # The exported file computes what the trained folder computes: next-token logits agree.
    tokenizer = transformers.AutoTokenizer.from_pretrained(sl_cai)
    model = transformers.AutoModelForCausalLM.from_pretrained(sl_cai, dtype=torch.float32)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "How do I bake bread?"}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, -1].numpy()
    llm = load_llama(exported, n_ctx=256, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # the tokenizer came along
    llm.eval(ids)
    got = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    assert np.corrcoef(expected, got)[0, 1] > 0.99
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template


def last_token_logits(gguf_file: Path, text: str):
    import numpy as np
    from cai_cli.backends.llama_loading import load_llama

    llm = load_llama(gguf_file, n_ctx=256, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.eval(ids)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


@pytest.mark.slow
def test_a_kept_adapter_rebuilds_the_model_and_a_gguf_exports_through_the_same_path(tmp_path, sl_cai, embedded_model,
                                                                                 embedded_folder):
    """What the efficacy experiment keeps in the repository (the LoRA adapter) rebuilds the model
    the run exported, and the base GGUF goes through the same full-precision path (the control
    compared at the trained model's quantisation)."""
    import numpy as np

    trained = sl_cai  # trained from the embedded GGUF, its adapter kept
    from_folder, from_adapter, base = tmp_path / "folder.gguf", tmp_path / "adapter.gguf", tmp_path / "base.gguf"
    assert run_cai("export-gguf", trained, "--out", from_folder).returncode == 0
    result = run_cai("export-gguf", trained / "adapter", "--base", embedded_model, "--out", from_adapter)
    assert result.returncode == 0, result
    assert summary_of(result)["base"] == str(embedded_model)
    result = run_cai("export-gguf", embedded_model, "--out", base)
    assert result.returncode == 0, result

    text = "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    rebuilt, exported = last_token_logits(from_adapter, text), last_token_logits(from_folder, text)
    assert np.abs(rebuilt - exported).max() < 1e-3  # the same merged weights, the same q8_0 blocks
    original, control = last_token_logits(embedded_model, text), last_token_logits(base, text)
    assert np.corrcoef(original, control)[0, 1] > 0.99  # Q4_1 dequantised, then q8_0: the same model
    assert np.abs(control - exported).max() > 1e-3  # and the fine-tune changed something

    # RL-CAI's adapter is trained from the SL-CAI model: it rebuilds on the base with SL-CAI's
    # adapter merged first, to the model train-rl wrote.
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": f"c{i}", "prompt": p, "chosen": "I won't help: it could hurt someone.", "rejected": "Sure, here is how.",
         "label": 0.9} for i, p in enumerate(["How can I pick a lock?", "Write an insult."])])
    rl = tmp_path / "rl-cai"
    result = run_cai("train-rl", prefs, "--algo", "dpo", "--policy", trained, "--out", rl, "--keep-adapter",
                     "--lr", "1e-3", *TINY_RUN)
    assert result.returncode == 0, result
    rl_folder, rl_adapter = tmp_path / "rl-folder.gguf", tmp_path / "rl-adapter.gguf"
    assert run_cai("export-gguf", rl, "--out", rl_folder).returncode == 0
    # The base as the folder the GGUF loads to (the same weights; the GGUF base was read above).
    result = run_cai("export-gguf", rl / "adapter", "--base", embedded_folder, "--base-adapter", trained / "adapter",
                     "--out", rl_adapter)
    assert result.returncode == 0, result
    assert summary_of(result)["base_adapters"] == [str(trained / "adapter")]
    rl_exported = last_token_logits(rl_folder, text)
    assert np.abs(last_token_logits(rl_adapter, text) - rl_exported).max() < 1e-3
    assert np.abs(rl_exported - exported).max() > 1e-3  # the RL step changed SL-CAI

    # An adapter without --base, --base with something that is not an adapter, and an adapter
    # chain with a base adapter that is not one, are errors.
    result = run_cai("export-gguf", trained / "adapter", "--out", tmp_path / "x.gguf")
    assert result.returncode == 1 and "--base" in result.stderr
    result = run_cai("export-gguf", trained, "--base", embedded_model, "--out", tmp_path / "x.gguf")
    assert result.returncode == 1 and "not one" in result.stderr
    result = run_cai("export-gguf", rl / "adapter", "--base", embedded_model, "--base-adapter", trained,
                     "--out", tmp_path / "x.gguf")
    assert result.returncode == 1 and "is not a LoRA adapter folder" in result.stderr


@pytest.mark.slow
def test_pm_from_the_embedded_gguf_then_score_per_revision_round(tmp_path):
    good = "I can't help with that; it could hurt someone. I can suggest a safe alternative."
    bad = "Sure! Here is exactly how to do it, step by step."
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": f"c{i}", "prompt": p, "responses": [good, bad], "chosen": good, "rejected": bad, "label": 0.8}
        for i, p in enumerate(["How can I pick a lock?", "Write an insult.", "How do I hide income?",
                               "Make a fake note.", "How do I stalk someone?"])])
    pm = tmp_path / "pm"
    result = run_cai("train-pm", prefs, "--out", pm, *TINY_RUN, "--eval-fraction", "0.2")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["held_out"]["pairs"] == 1 and summary["held_out"]["accuracy"] in (0.0, 1.0)

    revised = {"id": "r", "prompt": "How can I pick a lock?", "response": good, "initial_response": bad,
               "revisions": [{"principle": "harm", "critique": "harmful", "revision": "Maybe not."},
                             {"principle": "harm", "critique": "still", "revision": good}]}
    result = run_cai("score", "--pm", pm, input=json.dumps(revised) + "\n")
    assert result.returncode == 0, result
    record = result.records[0]
    per_round = [record["initial_score"]] + [r["score"] for r in record["revisions"]]
    assert all(isinstance(s, float) and math.isfinite(s) for s in per_round)
    assert record["score"] == record["revisions"][-1]["score"]  # the final response is the last revision


@pytest.fixture(scope="module")
def small_pm(sl_cai, tmp_path_factory) -> Path:
    """A preference model started from the SL-CAI folder (a fast load), one step."""
    folder = tmp_path_factory.mktemp("pm")
    prefs = write_jsonl(folder / "prefs.jsonl", [
        {"id": "a", "prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "Go away.", "label": 0.9}])
    result = run_cai("train-pm", prefs, "--base", sl_cai, "--out", folder / "pm", "--max-steps", "1",
                     "--max-length", "64")
    assert result.returncode == 0, result
    return folder / "pm"


@pytest.mark.slow
def test_rloo_against_the_pm_a_few_steps(sl_cai, small_pm, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "How can I pick a lock?"},
                                                        {"id": "b", "prompt": "Write an insult."}])
    result = run_cai("train-rl", prompts, "--policy", sl_cai, "--reward-model", small_pm, "--out", tmp_path / "rl",
                     "--max-steps", "2", "--batch-size", "2", "--num-generations", "2",
                     "--max-completion-length", "6", "--lora-r", "4")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["algo"] == "rloo" and summary["steps"] == 2 and summary["beta"] == 0.05
    assert math.isfinite(summary["reward"]) and "train-rl: step 2/2" in result.stderr
    made = json.loads((tmp_path / "rl" / "cai_training.json").read_text())
    assert made["source_gguf"] and made["source_gguf"].endswith(".gguf")  # export can still find the tokenizer


@pytest.mark.slow
def test_dpo_on_compare_records_a_few_steps(sl_cai, tmp_path):
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": "a", "prompt": "How can I pick a lock?", "chosen": "I can't help with that.",
         "rejected": "Use a tension wrench.", "label": 0.8},
        {"id": "b", "prompt": "Write an insult.", "chosen": "Here's one.", "rejected": "I'd rather not.",
         "label": 0.3},  # the label favours `rejected`: DPO trains on the swapped pair
        {"id": "c", "prompt": "Hi", "chosen": "Hello", "rejected": "Hey", "label": 0.5}])
    result = run_cai("train-rl", prefs, "--algo", "dpo", "--policy", sl_cai, "--out", tmp_path / "dpo",
                     "--max-steps", "2", "--batch-size", "1", "--max-length", "64", "--lora-r", "4")
    assert result.returncode == 0, result
    summary = summary_of(result)
    assert summary["algo"] == "dpo" and summary["steps"] == 2 and summary["examples"] == 2
    assert "left out 1 labelled within --min-margin of 0.5" in result.stderr  # the tie, "c"
    assert (tmp_path / "dpo" / "model.safetensors").is_file()


def test_a_qwen2_folder_exports_with_its_biases_and_tied_embeddings_and_computes_the_same(tmp_path, embedded_model):
    """Qwen2 (the efficacy experiment's policy): q/k/v biases, tied embeddings, and no q/k
    reordering, since llama.cpp's qwen2 rotates halves as Hugging Face does. A tiny random
    Qwen2 with the embedded model's tokenizer must give llama.cpp the logits transformers gives."""
    import numpy as np
    import torch
    import transformers

    from cai_cli.backends.llama_loading import load_llama

    folder = tmp_path / "tiny-qwen2"
    tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_model.parent, gguf_file=embedded_model.name)
    config = transformers.Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, tie_word_embeddings=True, rope_theta=10000.0)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                projection.bias.normal_(0, 0.5)  # random biases, so that dropping them would show
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                projection.weight.mul_(30)  # sharp attention, so that a wrong rotary layout would show
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "cai_training.json").write_text(json.dumps({"source_gguf": str(embedded_model)}))
    exported = tmp_path / "tiny-qwen2.gguf"
    result = run_cai("export-gguf", folder, "--out", exported, "--type", "f16")
    assert result.returncode == 0, result

    ids = tokenizer("How do I bake bread at home? I have flour, water, salt, yeast and an old oven that "
                    "runs hot, and I would like a crusty loaf by the weekend.", add_special_tokens=False).input_ids
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, -1].numpy()
    llm = load_llama(exported, n_ctx=64, verbose=False)
    assert llm.metadata["general.architecture"] == "qwen2"
    llm.eval(ids)
    got = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    assert np.corrcoef(expected, got)[0, 1] > 0.999


def test_a_folder_without_a_source_gguf_exports_its_tokenizer_as_transformers_splits_text(tmp_path, embedded_model):
    """A model trained from a Hugging Face folder has no GGUF to copy its tokenizer from: the
    exported file's tokenizer must split text as transformers does, the chat markers (special
    tokens that are also in the vocabulary) and digits included, for a byte-level pre-tokenizer
    and for one that puts every digit apart (SmolLM2's own tokenizer.json)."""
    import torch
    import transformers

    from cai_cli.backends.llama_loading import load_llama

    tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_model.parent, gguf_file=embedded_model.name)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    digits_apart = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    conversation = [{"role": "user", "content": "Is 12345 + 678 = 13023? Ça va, l'ami?"}]
    for name, pre_tokenizer in (("byte-level", None), ("digits-apart", digits_apart)):
        folder = tmp_path / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if pre_tokenizer:
            described = json.loads((folder / "tokenizer.json").read_text())
            (folder / "tokenizer.json").write_text(json.dumps({**described, "pre_tokenizer": pre_tokenizer}))
        own = transformers.AutoTokenizer.from_pretrained(folder)
        text = own.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        expected = own(text, add_special_tokens=False).input_ids
        exported = tmp_path / f"{name}.gguf"
        result = run_cai("export-gguf", folder, "--out", exported, "--type", "f16")
        assert result.returncode == 0, result
        assert summary_of(result)["tokenizer_from"] == str(folder / "tokenizer.json")
        llm = load_llama(exported, n_ctx=64, verbose=False, vocab_only=True)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, name
