"""The test harness itself: a `cai` forked from the fork server (`forkserver.py`) must be what a
fresh `python -m cai_cli` is, in its output, its errors and its exit status."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import conftest
from conftest import cai_env, recipe_cai, run_cai, write_jsonl


def without_timings(text: str) -> str:
    return re.sub(r"\d+(\.\d+)? s\b", "N s", text)


@pytest.fixture
def fresh(monkeypatch):
    """run_cai as a fresh process (CAI_TEST_FORK=0) for the duration of one call."""
    def run(*args, **kwargs):
        with monkeypatch.context() as scope:
            scope.setenv("CAI_TEST_FORK", "0")
            return run_cai(*args, **kwargs)
    return run


pytestmark = pytest.mark.skipif(os.environ.get("CAI_TEST_FORK") == "0", reason="CAI_TEST_FORK=0: no fork server")


def test_forked_and_fresh_commands_print_and_exit_alike(tmp_path, fresh, prompts):
    assert conftest.fork_server(["sample"], cai_env()) is not None  # the server takes plain commands
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x"}])
    runs = [
        (("sample", "--max-tokens", "4", "--seed", "3", prompts), None),  # records, progress on stderr
        (("sample", "--max-tokens", "4"), prompts.read_text()),  # stdin
        (("sample", "--no-such-flag"), None),  # usage error: exit 2, click's message
        (("sample", "-m", "missing.gguf"), ""),  # cai's error: exit 1, one line
        (("critique", bad), None),  # a bad record: the file and line
        (("train-sft", bad, "--out", tmp_path / "never"), None),  # the training side's imports
        (("--version",), None),
    ]
    for args, stdin in runs:
        forked, alone = run_cai(*args, input=stdin), fresh(*args, input=stdin)
        assert forked.returncode == alone.returncode, (args, forked, alone)
        assert forked.stdout == alone.stdout, args
        assert without_timings(forked.stderr) == without_timings(alone.stderr), args


def test_an_environment_the_libraries_read_at_import_gets_a_fresh_process():
    assert conftest.fork_server(["sample"], cai_env({"OMP_NUM_THREADS": "7"})) is None
    assert conftest.fork_server(["train-sft", "--verbose"], cai_env()) is None  # progress bars on
    assert conftest.fork_server(["sample"], cai_env({"CAI_THREADS": "1"})) is not None  # read per command


def test_the_recipes_cai_forks_its_commands_on_its_own_pipes_and_exits_as_they_do(tmp_path, prompts, fresh):
    cai, env = recipe_cai(cai_env())
    assert "CAI_TEST_FORK_SERVER" in env
    alone = fresh("sample", "--max-tokens", "4", "--seed", "3", prompts)
    for environment in (env, cai_env()):  # forked, and without a server: python -m cai_cli
        piped = subprocess.run(f"{cai} sample --max-tokens 4 --seed 3 < {prompts} | {cai} show > {tmp_path / 'shown'}",
                               shell=True, env=environment, capture_output=True, text=True, timeout=300)
        assert piped.returncode == 0, piped.stderr
        assert "rt-001" in (tmp_path / "shown").read_text()
        made = subprocess.run(f"{cai} sample --max-tokens 4 --seed 3 {prompts}", shell=True, env=environment,
                              capture_output=True, text=True, timeout=300)
        assert made.stdout == alone.stdout
        failed = subprocess.run(f"{cai} sample -m missing.gguf", shell=True, env=environment,
                                capture_output=True, text=True, timeout=300)
        assert failed.returncode == 1 and failed.stderr.startswith("Error: model not found")
    # The reader asks the server first and waits for the writer, which asks a second later: the
    # server runs both at once (one after the other, `show` would wait for ever).
    late = subprocess.run(f"{{ sleep 1; {cai} sample --max-tokens 4 --seed 3; }} < {prompts} | {cai} show",
                          shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert late.returncode == 0 and late.stdout == (tmp_path / "shown").read_text(), late.stderr
