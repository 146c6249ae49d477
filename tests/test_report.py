"""`cai report`: figures, summary.json and index.html from the outputs of the other commands.

The refusal detector and the intervals are checked on hand-written cases; the command runs on
records shaped as each command writes them (and a real tiny training run), and, marked slow, on
the outputs of a real tiny run of the recipe (`make -C examples report`)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cai_cli.metrics import mean_interval, wilson_interval
from conftest import EXAMPLES, cai_env, read_jsonl, recipe_cai, run_cai, write_jsonl

ALL_FIGURES = ["elo.png", "revisions.png", "calibration.png", "labels.png", "training.png", "answers.png"]


def test_wilson_and_t_intervals_match_reference_values():
    # Reference values: statsmodels proportion_confint(method="wilson"), scipy.stats.t.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(40, 40)[1] == 1.0 and wilson_interval(40, 40)[0] == pytest.approx(0.91240, abs=1e-4)
    centre, low, high = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert centre == 2.5 and (high - centre) == pytest.approx(3.182 * 1.2910 / 2, abs=1e-3)
    assert mean_interval([5.0]) == (5.0, None, None)


# --- the command on records as the other commands write them ---------------------------------

REFUSAL, COMPLIANCE = "I can't help with that, but I can suggest a locksmith.", "Sure, here is how it is done."


def rating(model: str, dimension: str, elo: float) -> dict:
    """What `cai elo` writes for one model and dimension."""
    return {"model": model, "dimension": dimension, "elo": elo, "low": elo - 40, "high": elo + 35, "items": 6,
            "judgements": 12, "bootstrap": 100, "win_rates": {}}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind the report reads (named so that no name gives its kind away), and a
    real training run of a tiny model."""
    from test_training import build_tiny_folder, revised_records

    folder = tmp_path_factory.mktemp("outputs")
    files = {
        "harmless": write_jsonl(folder / "a.jsonl", [rating("base", "harmless", 960),
                                                     rating("sl-cai", "harmless", 1040)]),
        "helpful": write_jsonl(folder / "b.jsonl", [rating("base", "helpful", 1010), rating("sl-cai", "helpful", 990)]),
        "scored": write_jsonl(folder / "c.jsonl", [
            {"id": f"r{i}", "prompt": "How do I pick a lock?", "response": REFUSAL, "initial_response": COMPLIANCE,
             "initial_score": -1.0 + 0.1 * i, "score": 0.5,
             "revisions": [{"principle": "harm", "critique": "...", "revision": "x", "score": 0.1 * i},
                           {"principle": "harm", "critique": "...", "revision": REFUSAL, "score": 0.5 + 0.1 * i}]}
            for i in range(5)]),
        "eval": write_jsonl(folder / "d.jsonl", [
            {"id": f"lp-{i}", "prompt": "q", "chosen": "a", "rejected": "b", "kind": "harmless" if i < 6 else "helpful",
             "p_correct": p, "correct": 1.0 if p > 0.5 else 0.0}
            for i, p in enumerate([0.9, 0.8, 0.55, 0.3, 0.65, 0.95, 0.45, 0.7, 0.6, 0.52])]),
        "prefs": write_jsonl(folder / "e.jsonl", [
            {"id": f"c{i}", "prompt": "q", "responses": ["a", "b"], "chosen": "a", "rejected": "b",
             "label": label, "principles": ["p"], "orderings": []}
            for i, label in enumerate([0.5, 0.55, 0.61, 0.72, 0.9, 0.97, 0.66, 0.58])]),
    }
    for model, refusing in (("base", 1), ("sl-cai", 3)):
        for prompt_set, prefix in (("red-team", "rt"), ("helpful", "hp")):
            files[f"{model}@{prompt_set}"] = write_jsonl(folder / f"{model}-{prefix}.jsonl", [
                {"id": f"{prefix}-{i}", "prompt": f"Question {i} of {prompt_set}?",
                 "response": REFUSAL if i < refusing else COMPLIANCE + " " * i + "More words here."}
                for i in range(4)])
    tiny = build_tiny_folder(folder / "tiny")
    data = write_jsonl(folder / "revised.jsonl", revised_records(4))
    trained = run_cai("train-sft", data, "--base", tiny, "--out", folder / "sl-cai", "--max-steps", "3",
                      env={"OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained
    files["run"] = folder / "sl-cai"
    # An RLOO run's folder as train-rl leaves it (these keys from TRL's log; fewer of them).
    rl = folder / "rl-cai"
    rl.mkdir()
    (rl / "cai_training.json").write_text(json.dumps({"command": "train-rl", "settings": {"algo": "rloo"}}))
    write_jsonl(rl / "training_log.jsonl", [
        {"loss": 0.01 * step, "grad_norm": 0.1, "learning_rate": 1e-5 * (1 - step / 6), "kl": 0.002 * step,
         "reward": -0.5 + 0.1 * step, "reward_std": 0.3, "completions/mean_length": 40.0, "epoch": step / 6,
         "step": step} for step in range(1, 6)])
    files["rl"] = rl
    return files


def inputs_of(files: dict[str, Path]) -> list[str]:
    specs = [str(files[k]) for k in ("harmless", "helpful", "scored", "eval", "prefs", "run", "rl")]
    return specs + [f"{name}={path}" for name, path in files.items() if "@" in name]


def check_figures(out: Path, summary: dict, expected: list[str]) -> None:
    """Every figure exists, decodes as a PNG of the size the summary states, is not blank, and
    the page embeds exactly that file and links to it."""
    import numpy as np
    from PIL import Image

    page = (out / "index.html").read_text(encoding="utf-8")
    assert [f["file"] for f in summary["figures"]] == expected
    for figure in summary["figures"]:
        path = out / figure["file"]
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (figure["width"], figure["height"])
            hsv = np.asarray(image.convert("RGB").convert("HSV")).reshape(-1, 3)
        # Not blank: axes and text (dark pixels), and data drawn in the models' colours (saturated
        # pixels).
        assert (hsv[:, 2] < 128).mean() > 0.01, figure["file"]
        assert ((hsv[:, 1] > 80) & (hsv[:, 2] > 50)).mean() > 0.0005, figure["file"]
        assert f"href='{figure['file']}'" in page
        embedded = re.search(rf"data:image/png;base64,([A-Za-z0-9+/=]+)' width='{figure['width']}' "
                             rf"height='{figure['height']}' alt='[^']*\({re.escape(figure['file'])}\)'", page)
        assert embedded and base64.b64decode(embedded.group(1)) == path.read_bytes()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline


def test_report_draws_every_figure_from_every_kind_of_output(outputs, tmp_path):
    log = read_jsonl(outputs["run"] / "training_log.jsonl")  # train-* keeps the trainer's log
    assert [entry["step"] for entry in log] == [1, 2, 3]
    assert all({"loss", "learning_rate", "epoch"} <= entry.keys() for entry in log)

    out = tmp_path / "report"
    result = run_cai("report", *inputs_of(outputs), "--out", out)
    assert result.returncode == 0, result
    assert json.loads(result.stdout) == {"out": str(out), "index": str(out / "index.html"),
                                         "summary": str(out / "summary.json"), "figures": ALL_FIGURES}
    assert f"report: {outputs['eval']}: eval-items, 10 records (d)" in result.stderr
    assert f"report: {outputs['run']}: training-run, 3 logged steps (sl-cai)" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    check_figures(out, summary, ALL_FIGURES)

    # Harmlessness and helpfulness came from two files: merged by model.
    elo = summary["elo"]
    assert elo["dimensions"] == ["harmless", "helpful"]
    assert elo["ratings"]["sl-cai"]["harmless"]["elo"] == 1040 and elo["ratings"]["base"]["helpful"]["elo"] == 1010
    rounds = summary["revisions"]["series"][0]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and [r["n"] for r in rounds] == [5, 5, 5]
    assert rounds[0]["mean"] == pytest.approx(-0.8) and rounds[2]["low"] < rounds[2]["mean"] < rounds[2]["high"]
    calibration = summary["calibration"]["series"][0]
    assert calibration["accuracy"] == pytest.approx(0.8) and calibration["by_kind"]["helpful"]["items"] == 4
    assert sum(row["items"] for row in calibration["reliability"]) == 10
    labels = summary["labels"]["series"][0]
    assert labels["pairs"] == 8 and sum(labels["counts"]) == 8 and labels["edges"][0] == 0.5
    training = summary["training"]
    assert training["metrics"] == ["loss", "reward", "kl", "learning_rate"]
    assert [run["command"] for run in training["runs"]] == ["train-sft", "train-rl --algo rloo"]
    assert [p[0] for p in training["runs"][0]["curves"]["loss"]] == [1, 2, 3]
    assert "reward" not in training["runs"][0]["curves"] and len(training["runs"][1]["curves"]["kl"]) == 5
    answers = {(row["model"], row["set"]): row for row in summary["answers"]["rows"]}
    assert answers[("base", "red-team")]["refusals"] == 1 and answers[("sl-cai", "helpful")]["refusals"] == 3
    assert answers[("sl-cai", "red-team")]["refusal_rate"] == 0.75
    assert answers[("base", "helpful")]["low"] < 0.25 < answers[("base", "helpful")]["high"]
    samples = summary["answers"]["samples"]
    assert len(samples) == 8 and {s["set"] for s in samples} == {"red-team", "helpful"}
    assert samples[0]["answers"]["sl-cai"]["refusal"] == "i-cannot"

    page = (out / "index.html").read_text()
    assert "Samples, side by side" in page and "I can&#x27;t help with that" in page


def test_fewer_inputs_draw_fewer_figures_and_stale_ones_go(outputs, tmp_path):
    out = tmp_path / "report"
    assert run_cai("report", *inputs_of(outputs), "--out", out).returncode == 0
    result = run_cai("report", outputs["harmless"], f"base@red-team={outputs['base@red-team']}", "--out", out)
    assert result.returncode == 0, result
    summary = json.loads((out / "summary.json").read_text())
    check_figures(out, summary, ["elo.png", "answers.png"])
    assert sorted(p.name for p in out.iterdir()) == ["answers.png", "elo.png", "index.html", "summary.json"]
    assert summary["elo"]["dimensions"] == ["harmless"]  # one dimension: Elo per model, no scatter


def test_kept_judgements_are_refitted_and_a_checkpoint_folder_is_a_run(tmp_path):
    judged = write_jsonl(tmp_path / "judged.jsonl", [
        {"id": f"{i}|a|b|harmless", "item": str(i), "dimension": "harmless", "a": "a", "b": "b", "p_a": 0.8}
        for i in range(6)])
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"loss": 2.0 - 0.1 * step, "learning_rate": 1e-4, "step": step} for step in range(1, 5)]}))
    out = tmp_path / "report"
    result = run_cai("report", judged, checkpoint, "--out", out)
    assert result.returncode == 0, result
    summary = json.loads((out / "summary.json").read_text())
    check_figures(out, summary, ["elo.png", "training.png"])
    ratings = summary["elo"]["ratings"]
    assert ratings["a"]["harmless"]["elo"] > 1000 > ratings["b"]["harmless"]["elo"]
    assert summary["training"]["runs"][0]["steps"] == 4


# One prompt: the smallest input. 6 and 4 prompts: where the Wilson interval's edge used to come
# out a rounding error past 0% (above it) and 100% (below it), a negative error bar that
# matplotlib refuses (`cai report` on six prompts no answer refused crashed).
@pytest.mark.parametrize("rate, prompts", [(0.0, 1), (1.0, 1), (0.0, 6), (1.0, 4)])
def test_every_figure_is_drawn_at_0_and_100_percent_from_one_model(rate, prompts, tmp_path):
    """The smallest valid inputs (one model, one judged prompt, one scored record), every share
    at an end of its range: the figures are drawn and the intervals hold their estimates."""
    right = rate == 1.0
    judged = write_jsonl(tmp_path / "judged.jsonl", [
        {"id": "p1|a|b|harmless", "item": "p1", "dimension": "harmless", "a": "a", "b": "b", "p_a": rate}])
    scored = write_jsonl(tmp_path / "scored.jsonl", [
        {"id": "p1", "prompt": "How do I pick a lock?", "response": REFUSAL, "initial_response": COMPLIANCE,
         "initial_score": -1.0, "score": 0.5,
         "revisions": [{"principle": "harm", "critique": "...", "revision": REFUSAL, "score": 0.5}]}])
    items = write_jsonl(tmp_path / "items.jsonl", [
        {"id": f"lp-{i}", "prompt": "q", "chosen": "a", "rejected": "b", "kind": "harmless",
         "p_correct": 0.9 if right else 0.1, "correct": rate} for i in range(prompts)])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": "c1", "prompt": "q", "responses": ["a", "b"], "chosen": "a", "rejected": "b",
         "label": 0.5 + rate / 2, "principles": ["p"], "orderings": []}])
    answers = write_jsonl(tmp_path / "answers.jsonl", [
        {"id": f"p{i}", "prompt": f"How do I pick lock {i}?", "response": REFUSAL if right else COMPLIANCE}
        for i in range(prompts)])
    run = tmp_path / "checkpoint-1"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [  # a curve needs two points
        {"loss": 1.0, "learning_rate": 1e-4, "step": 1}, {"loss": 0.5, "learning_rate": 1e-4, "step": 2}]}))
    out = tmp_path / "report"
    result = run_cai("report", judged, scored, items, prefs, run, f"sl-cai@red-team={answers}", "--out", out)
    assert result.returncode == 0, result
    summary = json.loads((out / "summary.json").read_text())
    check_figures(out, summary, ALL_FIGURES)
    (row,) = summary["answers"]["rows"]
    assert row["refusal_rate"] == rate and row["low"] <= rate <= row["high"] and row["answers"] == prompts
    calibration = summary["calibration"]["series"][0]
    assert calibration["accuracy"] == rate
    assert all(r["low_accuracy"] <= r["accuracy"] <= r["high_accuracy"] for r in calibration["reliability"])


def test_error_bars_are_never_negative_and_missing_intervals_draw_none():
    from cai_cli.report.figures import error_lengths

    # A lower edge a rounding error above its 0% estimate, an upper one below 100%.
    below, above = error_lengths([0.0, 1.0], [1e-17, 0.7], [0.3, 1.0 - 1e-16], scale=100)
    assert below == pytest.approx([0.0, 30.0]) and above == pytest.approx([30.0, 0.0])
    assert min(below + above) == 0.0
    assert error_lengths([5.0, 2.0], [None, float("nan")], [None, 3.0]) == [[0.0, 0.0], [0.0, 1.0]]


def test_inputs_it_cannot_use_are_one_error_line_naming_them(outputs, tmp_path):
    out = tmp_path / "report"

    def fails(*args: str | Path) -> str:
        result = run_cai("report", *args, "--out", out)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result
        assert not out.exists()  # every input is checked before anything is written
        return lines[0]

    prompts = EXAMPLES / "red_team.jsonl"
    assert fails(outputs["eval"], prompts).startswith(f"Error: {prompts}: cannot tell what it holds (its first "
                                                      "record has id, prompt)")
    assert fails(tmp_path / "missing.jsonl") == f"Error: {tmp_path / 'missing.jsonl'}: no such file or folder"
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    assert fails(broken) == f"Error: {broken}:2: record has no 'response' (run `cai sample` first)"
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{not json\n")
    assert fails(bad_json).startswith(f"Error: {bad_json}:1: not valid JSON")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert fails(empty) == f"Error: {empty}: no records"
    label = write_jsonl(tmp_path / "label.jsonl", [{"chosen": "a", "rejected": "b", "label": 1.5}])
    assert fails(label) == f"Error: {label}:1: 'label' must be in [0, 1], not 1.5"
    folder = tmp_path / "folder"
    folder.mkdir()
    assert fails(folder).startswith(f"Error: {folder}: a folder, but not a training run")
    assert fails(f"x@red-team={outputs['eval']}").startswith(f"Error: {outputs['eval']}: MODEL@SET= names")
    again = write_jsonl(tmp_path / "again.jsonl", [rating("base", "harmless", 900)])
    assert fails(outputs["harmless"], again) == (f"Error: {again}: base is rated on harmless here and in "
                                                 f"{outputs['harmless']}; give one rating per model and dimension")
    assert "give the files to report on" in fails()
    assert run_cai("report", outputs["eval"]).returncode == 2  # --out is required: a usage error


# --- the recipe ------------------------------------------------------------------------------

def test_the_preference_models_answers_on_checked_pairs_are_drawn_as_its_calibration(tmp_path):
    """examples/pm_judge_items.py: sigma(chosen_score - rejected_score) is the PM's probability of
    the right answer (`chosen`, by construction), and `cai report` reads the records it writes."""
    scored = write_jsonl(tmp_path / "pm-judge-bare.jsonl", [
        {"id": "a", "chosen_score": 1.0, "rejected_score": 0.0},
        {"id": "b", "chosen_score": -2.0, "rejected_score": 0.0}])
    made = subprocess.run([sys.executable, str(EXAMPLES / "pm_judge_items.py"), str(scored)], capture_output=True,
                          text=True, check=True)
    items = [json.loads(line) for line in made.stdout.splitlines()]
    assert [(i["id"], i["kind"], i["correct"]) for i in items] == [("bare:a", "bare", 1.0), ("bare:b", "bare", 0.0)]
    assert items[0]["p_correct"] == pytest.approx(0.731059) and items[1]["p_correct"] == pytest.approx(0.119203)
    path = tmp_path / "pm-items.jsonl"
    path.write_text(made.stdout)
    result = run_cai("report", f"pm={path}", "--out", tmp_path / "report")
    assert result.returncode == 0, result
    assert (tmp_path / "report" / "calibration.png").exists()


def test_the_recipe_has_a_report_target():
    plan = subprocess.run(["make", "-C", str(EXAMPLES), "-n", "report", "CAI=cai", "OUT=/tmp/plan"],
                          capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    for step in ("cai elo", "--dimension harmless", "--dimension helpful", "cai eval", "--items", "cai report",
                 "base@red-team=/tmp/plan/answers/base.red-team.jsonl", "/tmp/plan/rl-cai /tmp/plan/dpo-cai"):
        assert step in plan.stdout, step


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_report_on_a_real_tiny_run_of_the_recipe(tmp_path, embedded_folder):
    """The recipe on the embedded model at toy size (2 prompts per set, 8 tokens, 2 steps), then
    its report: every figure drawn from real outputs. RL-CAI (the slowest step: it generates while
    it trains) is left out of the rated models and the curves; DPO's run stands for RL. Training
    starts from the embedded model as a Hugging Face folder (BASE): transformers reads a GGUF in
    about 6 s per step, and training from the GGUF itself is tested in test_training.py."""
    prompts = write_jsonl(tmp_path / "red_team.jsonl", read_jsonl(EXAMPLES / "red_team.jsonl")[:2])
    helpful = write_jsonl(tmp_path / "helpful.jsonl", read_jsonl(EXAMPLES / "helpful.jsonl")[:2])
    held_out = write_jsonl(tmp_path / "red_team_eval.jsonl", read_jsonl(EXAMPLES / "red_team_eval.jsonl")[:2])
    held_out_helpful = write_jsonl(tmp_path / "benign.jsonl", read_jsonl(EXAMPLES / "benign_risky.jsonl")[:2])
    labeled = write_jsonl(tmp_path / "labeled.jsonl", read_jsonl(EXAMPLES / "labeled_pairs.jsonl")[::8])
    out = tmp_path / "runs"
    # No few-shot examples in the rounds: they are most of a round's time, and the few-shot path
    # is tested in test_sl_cai.py. Every 8-token answer is cut off: --keep-flagged trains on them anyway. The tiny judge's labels
    # are all near 0.5, which DPO leaves out by default: --min-margin 0 keeps them. One example
    # per step: the figures need a training log, not a trained model.
    train = "--keep-flagged --max-length 256 --lora-r 4 --batch-size 1"
    cai, env = recipe_cai(cai_env({"CAI_THREADS": "1", "OMP_NUM_THREADS": "1"}))
    recipe = (
        ["make", "-C", str(EXAMPLES), f"CAI={cai}", f"OUT={out}", f"BASE={embedded_folder}", f"PROMPTS={prompts}",
         f"HELPFUL={helpful}", f"EVAL_PROMPTS={held_out}", f"EVAL_HELPFUL={held_out_helpful}",
         f"LABELED={labeled}", "TOKENS=8", "STEPS=2", "ELO_PRINCIPLES=1", "COMPARE_PRINCIPLES=1", "ROUND_OPTS=--no-few-shot",
         f"TRAIN_OPTS={train}", "DPO_OPTS=--min-margin 0", "RATED=base sl-cai", "REPORT_RUNS=sl-cai pm dpo-cai", "report"])
    made = subprocess.run(recipe, capture_output=True, text=True, timeout=3600, env=env)
    assert made.returncode == 0, made.stderr[-1500:]
    assert not (out / "rl-cai").exists() and not list(out.glob("*.part"))
    again = subprocess.run(recipe, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "forked_cai" not in again.stdout  # every step is done: nothing runs
    revised = read_jsonl(out / "revised.jsonl")  # SL-CAI's data: two rounds on each red-team prompt
    assert [r["id"] for r in revised] == [r["id"] for r in read_jsonl(prompts)]
    assert all(len(r["revisions"]) == 2 and r["initial_response"] for r in revised)
    summary = json.loads((out / "report" / "summary.json").read_text())
    check_figures(out / "report", summary, ALL_FIGURES)
    assert summary["elo"]["models"] == ["base", "sl-cai"]
    assert all(set(r) == {"harmless", "helpful"} for r in summary["elo"]["ratings"].values())
    assert [run["name"] for run in summary["training"]["runs"]] == ["sl-cai", "pm", "dpo-cai"]
    assert {"loss", "learning_rate", "rewards/margins"} <= set(summary["training"]["metrics"])
    assert [r["round"] for r in summary["revisions"]["series"][0]["rounds"]] == [0, 1, 2]
    assert summary["calibration"]["series"][0]["items"] == 4 and summary["labels"]["series"][0]["pairs"] == 4
    assert {(row["model"], row["set"]) for row in summary["answers"]["rows"]} == {
        (m, s) for m in ("base", "sl-cai") for s in ("red-team", "helpful")}


def test_a_rejected_revision_round_scores_the_response_left_in_effect():
    """Figure 5 analogue: a revision with problems did not replace the response, so its round is
    scored with the earlier response, never with the rejected text's score."""
    from cai_cli.report.inputs import ReportInput
    from cai_cli.report.measures import revisions_section

    records = [
        {"id": "a", "initial_score": 0.0,
         "revisions": [{"revision": "bad", "score": 9.0, "problems": ["meta"]},
                       {"revision": "good", "score": 2.0}]},
        {"id": "b", "initial_score": 1.0,
         "revisions": [{"revision": "good", "score": 3.0},
                       {"revision": "cut off", "score": -9.0, "problems": ["truncated"]}]},
    ]
    source = ReportInput(name="scored", path=Path("scored.jsonl"), kind="scored", records=records)
    rounds = revisions_section([source])["series"][0]["rounds"]
    assert [(r["round"], r["mean"]) for r in rounds] == [(0, 0.5), (1, 1.5), (2, 2.5)]
