"""Interrupted runs resume without loss: SIGKILL a real run many times, resume it each time, and
every input record comes out exactly once, on complete, parseable lines.

The kill moments are random but seeded (KILL_SEED), so a failure can be replayed. Set
CAI_KILL_REPORT=1 and run pytest with -s to print the figures of each kill test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT, cai_env, read_jsonl, run_cai, start_cai, write_jsonl

KILL_SEED = 5
KILLS = 10
# Tiny, single-threaded generation: records finish every few tenths of a second, so a kill
# usually lands between (or during) the writes of a live stream. One thread keeps the test
# fast on a shared 2-core machine, where llama.cpp threads would otherwise wait on each other.
# Two sequences at a time: records are read ahead and generated together (so a kill loses
# work in flight that the resume must redo), in waves small enough for many kills per file.
FAST = ["--max-tokens", "3", "--threads", "1", "--parallel", "2"]
CHAIN = [*FAST, "--no-few-shot"]
# Short critique and revision requests keep each critique/revise prompt to a few dozen tokens:
# the kill test is about the output file, not about the quality of the prompts.
TERSE_CONSTITUTION = {"name": "terse", "critiques": [
    {"name": "harm", "critique": "Any harm?", "revision": "Fix it."},
    {"name": "honesty", "critique": "Any lies?", "revision": "Fix it."},
]}


@dataclass
class KillFigures:
    command: str
    records: int
    kills: int = 0
    runs: int = 0
    repaired: int = 0
    lines_after_kill: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.command}: {self.records} records, {self.kills} SIGKILLs survived in {self.runs} runs, "
                f"torn lines repaired {self.repaired}, lines after each kill {self.lines_after_kill}")


def complete_lines(path: Path) -> list[dict]:
    """Every complete line of an output file, parsed; a torn last line (no newline) is allowed
    after a kill, since the next --resume cuts it off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def cai_process(args: list[str], stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """A fresh `python -m cai_cli ARGS`, for the Ctrl-C test: Python sets up its Ctrl-C handling
    as it starts, which a forked command (`start_cai`) inherits from the fork server instead."""
    env = cai_env()
    # Ctrl-C reaches the child as it reaches a command in a terminal, even when the test runner
    # was started with SIGINT ignored (a child inherits that, and the Ctrl-C test then failed in
    # full-suite runs only).
    return subprocess.Popen([sys.executable, "-m", "cai_cli", *args], cwd=ROOT, env=env,
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_with_kills(stage_args: list[str], output: Path, expected_ids: list[str], rng: random.Random,
                   kills: int = KILLS) -> KillFigures:
    """Start `cai STAGE_ARGS -o OUTPUT --resume`, SIGKILL it at a random moment, check the file,
    and start it again, until it has been killed `kills` times; then let it finish."""
    figures = KillFigures(" ".join(["cai", *stage_args, "-o", output.name, "--resume"]), len(expected_ids))
    args = [*stage_args, "-o", str(output), "--resume"]
    while figures.kills < kills:
        before = len(complete_lines(output))
        assert before < len(expected_ids), f"the run finished before {kills} kills: {figures.summary()}"
        proc = start_cai(*args)
        figures.runs += 1
        started = time.monotonic()
        if rng.random() < 0.25:
            # Any moment at all: while the command starts, the model loads or the input is read.
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            # Mid-stream: once this run has written a record, somewhere within the next ones.
            while len(complete_lines(output)) == before and proc.poll() is None:
                assert time.monotonic() - started < 120, "no progress in two minutes"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            figures.kills += 1
        _, stderr = proc.communicate()
        assert b"Traceback" not in stderr, stderr.decode()
        figures.repaired += b"dropped an incomplete last line" in stderr
        lines = complete_lines(output)  # every complete line parses (json.loads would raise)
        ids = [str(r["id"]) for r in lines]
        assert len(ids) == len(set(ids)), f"duplicated ids after kill {figures.kills}: {ids}"
        assert set(ids) <= set(expected_ids)
        figures.lines_after_kill.append(len(lines))
    last = run_cai(*args, timeout=300)
    assert last.returncode == 0, last
    figures.runs += 1
    return figures


def assert_each_id_exactly_once(output: Path, expected_ids: list[str]) -> list[dict]:
    data = output.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]
    assert sorted(str(r["id"]) for r in records) == sorted(expected_ids)
    return records


def assert_finished_rerun_does_nothing(stage_args: list[str], output: Path) -> None:
    before = output.read_bytes()
    again = run_cai(*stage_args, "-o", output, "--resume")
    assert again.returncode == 0, again
    assert "nothing to do" in again.stderr and again.stdout == ""
    assert output.read_bytes() == before


def report(figures: KillFigures) -> None:
    if os.environ.get("CAI_KILL_REPORT"):
        print("\n" + figures.summary() + ", records lost 0, duplicated 0")


@pytest.fixture(scope="module")
def red_team() -> list[dict]:
    return [json.loads(line) for line in (EXAMPLES / "red_team.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def killed_sample(tmp_path_factory, red_team) -> tuple[Path, KillFigures]:
    """`cai sample` over the 40 example red-team prompts, killed KILLS times and resumed."""
    folder = tmp_path_factory.mktemp("kill-sample")
    prompts = write_jsonl(folder / "prompts.jsonl", red_team)
    output = folder / "sampled.jsonl"
    stage_args = ["sample", *FAST, "--temperature", "0.8", str(prompts)]
    figures = run_with_kills(stage_args, output, [r["id"] for r in red_team], random.Random(KILL_SEED))
    return output, figures


def test_sample_survives_repeated_sigkill_without_losing_or_duplicating_records(killed_sample, red_team):
    output, figures = killed_sample
    records = assert_each_id_exactly_once(output, [r["id"] for r in red_team])
    assert all(isinstance(r["response"], str) for r in records)
    prompts = {r["id"]: r["prompt"] for r in red_team}
    assert all(r["prompt"] == prompts[r["id"]] for r in records)
    assert figures.kills >= KILLS
    report(figures)
    stage_args = ["sample", *FAST, "--temperature", "0.8", str(output.parent / "prompts.jsonl")]
    assert_finished_rerun_does_nothing(stage_args, output)


def test_critique_then_revise_survive_repeated_sigkill(killed_sample, tmp_path):
    sampled, _ = killed_sample
    # Some of the records keep the chain's two stages to a few seconds of generation each.
    records = read_jsonl(sampled)[:24]
    ids = [str(r["id"]) for r in records]
    sampled_part = write_jsonl(tmp_path / "sampled.jsonl", records)
    constitution = tmp_path / "terse.json"
    constitution.write_text(json.dumps(TERSE_CONSTITUTION))
    critiqued, revised = tmp_path / "critiqued.jsonl", tmp_path / "revised.jsonl"
    rng = random.Random(KILL_SEED + 1)

    critique_args = ["critique", *CHAIN, "-c", str(constitution), str(sampled_part)]
    report(run_with_kills(critique_args, critiqued, ids, rng))
    for record in assert_each_id_exactly_once(critiqued, ids):
        assert len(record["revisions"]) == 1 and "critique" in record["revisions"][0]
    assert_finished_rerun_does_nothing(critique_args, critiqued)

    revise_args = ["revise", *CHAIN, "-c", str(constitution), str(critiqued)]
    report(run_with_kills(revise_args, revised, ids, rng))
    for record in assert_each_id_exactly_once(revised, ids):
        assert len(record["revisions"]) == 1 and "revision" in record["revisions"][0]
        assert "initial_response" in record
    assert_finished_rerun_does_nothing(revise_args, revised)


def test_resume_cuts_a_torn_last_line_and_keeps_the_complete_ones(tmp_path):
    from cai_cli.streams import RecordWriter

    output = tmp_path / "out.jsonl"
    output.write_bytes(b'{"id": "a", "response": "x"}\n{"id": 2}\n{"id": "c", "resp')
    with RecordWriter(output, resume=True) as writer:
        assert writer.done == {"a": 1, "2": 1}
        assert output.read_bytes() == b'{"id": "a", "response": "x"}\n{"id": 2}\n'
        writer.write({"id": "c", "response": "é"})
    assert output.read_bytes().decode("utf-8").splitlines()[2] == '{"id": "c", "response": "é"}'
    assert [r["id"] for r in read_jsonl(output)] == ["a", 2, "c"]


def test_resume_refuses_an_output_file_that_is_not_jsonl(tmp_path):
    from cai_cli.errors import CaiError
    from cai_cli.streams import RecordWriter

    output = tmp_path / "out.jsonl"
    output.write_bytes(b'{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(CaiError, match=r"out.jsonl:2: not valid JSON"):
        RecordWriter(output, resume=True)
    assert output.read_bytes() == b'{"id": "a"}\nnot json\n{"id": "b"}\n'  # left as it was


def test_sample_resume_repairs_a_torn_line_and_finishes_the_rest(tmp_path, red_team):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:4])
    output = tmp_path / "out.jsonl"
    first = run_cai("sample", *FAST, prompts, "-o", output)
    assert first.returncode == 0, first
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(lines[0] + lines[1] + lines[2][:17])  # as if killed while writing line 3

    resumed = run_cai("sample", *FAST, prompts, "-o", output, "--resume")
    assert resumed.returncode == 0, resumed
    assert "dropped an incomplete last line" in resumed.stderr
    assert "2 records already in" in resumed.stderr and "sample: 2 records" in resumed.stderr
    assert [r["id"] for r in read_jsonl(output)] == [r["id"] for r in red_team[:4]]


def test_resume_redoes_only_the_missing_copies_of_duplicated_records(tmp_path, red_team):
    # The same prompt twice without ids: both copies get the same content-hash id. After a kill
    # that wrote only the first copy, the resume must still answer the second.
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": "Say hi."},
                                                       {"prompt": "Say bye."}])
    output = tmp_path / "out.jsonl"
    assert run_cai("sample", *FAST, prompts, "-o", output).returncode == 0
    first_line = output.read_bytes().splitlines(keepends=True)[0]
    output.write_bytes(first_line)
    resumed = run_cai("sample", *FAST, prompts, "-o", output, "--resume")
    assert resumed.returncode == 0, resumed
    records = read_jsonl(output)
    assert [r["prompt"] for r in records] == ["Say hi.", "Say hi.", "Say bye."]
    assert records[0]["id"] == records[1]["id"]


def test_resume_needs_an_output_file(tmp_path, red_team):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:1])
    result = run_cai("sample", *FAST, prompts, "--resume")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: --resume needs -o/--output FILE")


def test_output_onto_the_input_file_is_refused_and_the_input_kept(tmp_path, red_team):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:2])
    before = prompts.read_bytes()
    for extra in ([], ["--resume"]):
        result = run_cai("sample", *FAST, prompts, "-o", prompts, *extra)
        assert result.returncode == 1, result
        assert result.stderr.startswith("Error: ") and "input" in result.stderr
        assert prompts.read_bytes() == before


def test_same_seed_same_output_through_the_whole_chain_run_after_run(tmp_path, red_team):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:3])
    cai = f"{sys.executable} -m cai_cli"
    seeded = "--temperature 1.0 --seed 11"
    outputs = []
    for run in ("a", "b"):
        revised = tmp_path / f"{run}.jsonl"
        pipeline = (f"{cai} sample {' '.join(FAST)} {seeded} {prompts} | {cai} critique {' '.join(CHAIN)} {seeded} "
                    f"| {cai} revise {' '.join(CHAIN)} {seeded} -o {revised}")
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=cai_env())
        assert proc.returncode == 0, proc.stderr
        outputs.append(revised.read_bytes())
    assert outputs[0] == outputs[1]
    records = [json.loads(line) for line in outputs[0].splitlines()]
    assert len(records) == 3 and all(r["initial_response"] and r["revisions"][0]["critique"] for r in records)


def test_broken_pipe_exits_quietly(tmp_path, red_team):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:6])
    command = f"{sys.executable} -m cai_cli sample {' '.join(FAST)} {prompts} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=cai_env())
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 0, proc
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["id"] == red_team[0]["id"]


def test_ctrl_c_says_what_is_written_and_how_to_go_on(tmp_path, red_team):
    # The prompts come through a pipe that stays open, so the run cannot finish before the
    # signal however loaded the machine is (with a file, a starved test once saw it end first).
    output = tmp_path / "out.jsonl"
    proc = cai_process(["sample", *FAST, "--max-tokens", "16", "-o", str(output), "--resume"], stdin=subprocess.PIPE)
    proc.stdin.write("".join(json.dumps(record) + "\n" for record in red_team[:3]).encode())
    proc.stdin.flush()
    started = time.monotonic()
    while len(complete_lines(output)) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() - started < 600  # a loaded machine can take minutes to load the model
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert "Interrupted: sample wrote ".encode() in stderr
    assert f"rerun with -o {output} --resume to go on".encode() in stderr
    assert 2 <= len(read_jsonl(output)) <= 3
