"""SL-CAI data generation as a user runs it: sample | critique | revise on the embedded model."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, read_jsonl, run_cai, write_jsonl, write_prompts


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """`cai sample` on the three prompts of `conftest.prompts`, run once for the tests that check
    it and critique or revise what it wrote (seeded: the same records each time)."""
    return run_cai("sample", *TINY, write_prompts(tmp_path_factory.mktemp("sampled")))


def test_sample_adds_a_response_and_passes_everything_else_through(sampled, prompts):
    result = sampled
    assert result.returncode == 0, result
    inputs = read_jsonl(prompts)
    records = result.records
    assert [r["id"] for r in records] == [r["id"] for r in inputs]
    for before, after in zip(inputs, records):
        assert isinstance(after["response"], str) and after["response"]
        assert {k: after[k] for k in before} == before  # untouched, in the same order
        assert list(after)[: len(before)] == list(before)
    assert "sample: 3 records" in result.stderr


def test_sample_reads_stdin_gives_missing_ids_a_stable_hash_and_takes_messages():
    lines = json.dumps({"prompt": "Name a colour."}) + "\n" + json.dumps(
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]}) + "\n"
    first, second = run_cai("sample", *TINY, input=lines), run_cai("sample", *TINY, "-", input=lines)
    assert first.returncode == 0, first
    ids = [r["id"] for r in first.records]
    assert len(set(ids)) == 2 and ids == [r["id"] for r in second.records]


def test_sample_n_gives_a_list_of_responses(prompts):
    result = run_cai("sample", *TINY, "-n", "2", "--temperature", "1", prompts)
    assert result.returncode == 0, result
    assert all(len(r["responses"]) == 2 and "response" not in r for r in result.records)


def test_same_seed_same_output_other_seed_other_output(prompts):
    settings = ("sample", "--max-tokens", "16", "--temperature", "1.0", "-n", "2")
    a, b = run_cai(*settings, "--seed", "7", prompts), run_cai(*settings, "--seed", "7", prompts)
    c = run_cai(*settings, "--seed", "8", prompts)
    assert a.stdout == b.stdout and a.returncode == 0
    assert a.stdout != c.stdout


def test_two_rounds_of_critique_and_revision(sampled):
    # Round 1 with the constitution's few-shot examples (the default), round 2 without: the long
    # few-shot prompts are most of a round's time, and either way the records must come out whole.
    stages = [("critique",), ("revise",), ("critique", "--no-few-shot"), ("revise", "--no-few-shot")]
    text = sampled.stdout
    for stage in stages:
        result = run_cai(*stage, *TINY, input=text)
        assert result.returncode == 0, result
        text = result.stdout
    records = [json.loads(line) for line in text.splitlines()]
    initial = {r["id"]: r["response"] for r in sampled.records}
    for record in records:
        history = record["revisions"]
        assert len(history) == 2
        allowed = {"principle", "critique", "revision", "critique_truncated", "problems"}
        assert all({"principle", "critique", "revision"} <= set(entry) <= allowed for entry in history)
        assert record["initial_response"] == initial[record["id"]]
        # `response` is the last usable revision; with none, the first answer, marked unrevised.
        usable = [entry["revision"] for entry in history if not entry.get("problems")]
        assert record["response"] == (usable[-1] if usable else record["initial_response"])
        assert record["revised"] is bool(usable)
    assert records[0]["source"] == {"team": "qa", "tags": ["x"]}  # user keys survive every stage


def test_principle_draws_follow_the_seed_and_can_be_fixed(sampled):
    critique = ("critique", *TINY, "--no-few-shot")  # the draw does not depend on the examples
    drawn = [r["revisions"][0]["principle"] for r in run_cai(*critique, input=sampled.stdout).records]
    again = [r["revisions"][0]["principle"] for r in run_cai(*critique, input=sampled.stdout).records]
    assert drawn == again
    fixed = run_cai("critique", *TINY, "--principle", "honesty", "--no-few-shot", input=sampled.stdout)
    assert fixed.returncode == 0, fixed
    assert {r["revisions"][0]["principle"] for r in fixed.records} == {"honesty"}


def test_direct_revision_skips_the_critique(sampled):
    """Without the few-shot examples: how they go into a direct revision's messages is checked in
    test_prompts.py, and a few-shot round runs in `test_two_rounds_of_critique_and_revision`."""
    result = run_cai("revise", "--direct", "--no-few-shot", *TINY, input=sampled.stdout)
    assert result.returncode == 0, result
    for record in result.records:
        assert set(record["revisions"][0]) - {"problems"} == {"principle", "revision"}
        assert "initial_response" in record


def test_paper_and_hugging_face_constitutions_drive_a_round(sampled):
    from conftest import FIXTURES

    for spec in ("paper_critiques.json", "hf_constitution.json"):
        critiqued = run_cai("critique", *TINY, "-c", FIXTURES / spec, input=sampled.stdout)
        revised = run_cai("revise", *TINY, "-c", FIXTURES / spec, input=critiqued.stdout)
        assert revised.returncode == 0, revised
        assert all(len(r["revisions"]) == 1 for r in revised.records)


def test_transformers_backend_runs_the_same_pipeline(prompts, embedded_folder):
    """The embedded model on transformers, in-process through the library API (one load). Without
    the few-shot examples: torch reads their long prompts slowly on a CPU, and they are the same
    text for either backend (round 1 of `test_two_rounds_of_critique_and_revision` has them)."""
    from cai_cli.backends import BackendOptions, Sampling, load_backend
    from cai_cli.constitution import load_constitution
    from cai_cli.settings import CritiqueSettings
    from cai_cli.stages.critique import CritiqueStage
    from cai_cli.stages.revise import ReviseStage
    from cai_cli.stages.sample import SampleSettings, SampleStage
    from cai_cli.streams import read_records

    backend = load_backend(BackendOptions(model=str(embedded_folder), backend="transformers", batch_size=2))
    assert backend.name == "transformers"
    greedy = Sampling(max_tokens=6, temperature=0)
    rules, settings = load_constitution(), CritiqueSettings(sampling=greedy, few_shot=False)
    records = list(SampleStage(backend, SampleSettings(sampling=greedy))(read_records(prompts)))
    records = list(ReviseStage(backend, rules, settings)(CritiqueStage(backend, rules, settings)(records)))
    assert [r["id"] for r in records] == [r["id"] for r in read_records(prompts)]
    assert all(len(r["revisions"]) == 1 and r["initial_response"] for r in records)
    # Greedy decoding is reproducible on the same backend.
    again = list(SampleStage(backend, SampleSettings(sampling=greedy))(read_records(prompts)))
    assert [r["response"] for r in again] == [r["initial_response"] for r in records]


@pytest.mark.slow
def test_transformers_backend_from_the_command_line(prompts, embedded_folder):
    """The GGUF path itself (transformers converts the tokenizer and dequantizes the weights), and
    the check that `embedded_folder`, which the other transformers tests load, is the same model:
    the same seeded samples."""
    result = run_cai("sample", "--backend", "transformers", *TINY, prompts)
    assert result.returncode == 0, result
    assert len(result.records) == 3 and all(r["response"] for r in result.records)
    folder = run_cai("sample", "-m", embedded_folder, *TINY, prompts)
    assert [r["response"] for r in folder.records] == [r["response"] for r in result.records]


BAD_LINES = [
    ("{not json}", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got a list"),
    ('{"text": "no prompt"}', "record has neither 'prompt' nor 'messages'"),
    ('{"prompt": 42}', "'prompt' must be a string, not a number"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "messages[0].role must be"),
    ('{"messages": "hi"}', "'messages' must be a non-empty list"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES)
def test_bad_input_stops_with_the_line_and_keeps_earlier_records(tmp_path, bad, message):
    good = json.dumps({"id": "a", "prompt": "Say hi."})
    path = tmp_path / "in.jsonl"
    path.write_text(f"{good}\n\n{bad}\n{json.dumps({'id': 'b', 'prompt': 'Say bye.'})}\n")
    result = run_cai("sample", *TINY, path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {path}:3: {message}"), result
    assert "Traceback" not in result.stderr
    assert [r["id"] for r in result.records] == ["a"]  # complete records from before the bad line

    skipped = run_cai("sample", *TINY, "--skip-invalid", path)
    assert skipped.returncode == 0, skipped
    assert [r["id"] for r in skipped.records] == ["a", "b"]
    assert f"{path}:3" in skipped.stderr


def test_critique_and_revise_check_what_they_need(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    result = run_cai("critique", *TINY, path)
    assert result.returncode == 1 and "in.jsonl:1: record has no 'response'" in result.stderr
    answered = write_jsonl(tmp_path / "answered.jsonl", [{"id": "a", "prompt": "hi", "response": "hello"}])
    result = run_cai("revise", *TINY, answered)
    assert result.returncode == 1 and "no critique waiting for a revision" in result.stderr
    result = run_cai("critique", *TINY, "--principle", "no-such-principle", answered)
    assert result.returncode == 1 and "no critique principle named 'no-such-principle'" in result.stderr


def test_prompt_longer_than_the_context_is_a_record_error(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "long", "prompt": "word " * 400}])
    result = run_cai("sample", *TINY, "--n-ctx", "128", path)
    assert result.returncode == 1 and "in.jsonl:1: prompt is" in result.stderr, result


@pytest.mark.parametrize("model, message", [
    ("missing.gguf", "model not found: missing.gguf"),
    ("garbage.gguf", "cannot load"),
])
def test_model_problems_are_one_line_errors(tmp_path, prompts, model, message):
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF but not really" * 10)
    result = run_cai("sample", "-m", tmp_path / model if model == "garbage.gguf" else model, prompts)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr, result
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = run_cai("--debug", "sample", "-m", "missing.gguf", input="")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_every_command_has_help_with_examples():
    from cai_cli.cli import app

    listing = run_cai("--help")
    assert listing.returncode == 0
    commands = [command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands]
    assert {"sample", "critique", "revise", "compare", "eval", "train-sft", "train-pm", "score", "train-rl",
            "export-gguf"} <= set(commands)
    for command in [*commands, "constitution show", "constitution validate"]:
        assert command.split()[0] in listing.stdout
        help_text = run_cai(*command.split(), "--help")
        assert help_text.returncode == 0 and "Examples" in help_text.stdout, command
        # A flag takes no value, so its help shows no value type beside it (typer shows "<bool>").
        assert "<bool>" not in help_text.stdout, command
