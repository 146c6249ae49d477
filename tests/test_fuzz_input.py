"""Bad input never corrupts output: fuzzed JSONL through the reader and the real commands.

The pure reader (`read_records` with the stages' validators) takes many generated files
in-process; the real `cai` commands take a handful of generated files and a fixed list of nasty
lines. Either way: no traceback, the first bad line is named as `<source>:<line>:`, the records
before it come out whole, and `--skip-invalid` reports the bad lines and keeps the good ones.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from conftest import run_cai
from cai_cli.records import RecordError, validate_conversation, validate_response
from cai_cli.stages.critique import revision_history
from cai_cli.streams import read_records

FIELDS = ("prompt", "messages", "system", "id", "response", "revisions")
BOM = b"\xef\xbb\xbf"
FAST = ["--max-tokens", "2", "--threads", "1", "--parallel", "2"]


def validate_critique_input(record: dict) -> None:
    """What `cai critique` checks of a record before the model sees it, minus the context check."""
    validate_response(record)
    revision_history(record)


# --- generators -----------------------------------------------------------------------------

non_blank_text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())
json_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
passthrough = st.dictionaries(st.text(max_size=10).filter(lambda k: k not in FIELDS), json_values, max_size=3)
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=30)})


@st.composite
def good_records(draw) -> dict:
    """A record `cai critique` accepts: a conversation, a response, maybe an id and extra keys."""
    record = draw(passthrough)
    if draw(st.booleans()):
        record["prompt"] = draw(non_blank_text)
    else:
        record["messages"] = draw(st.lists(message, min_size=1, max_size=3))
    if draw(st.booleans()):
        record["id"] = draw(st.text(max_size=12) | st.integers(-10**6, 10**6))
    if draw(st.booleans()):
        record["system"] = draw(st.text(max_size=20))
    record["response"] = draw(st.text(max_size=30))
    if draw(st.booleans()):
        record["revisions"] = draw(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=2), max_size=2))
    return record


def wrong_for(field: str) -> st.SearchStrategy:
    """Values of the wrong type (or shape) for one field."""
    anything = json_values
    return {
        "prompt": anything.filter(lambda v: not isinstance(v, str)) | st.sampled_from(["", "  ", "\n\t"]),
        "messages": anything.filter(lambda v: not isinstance(v, list)) | st.just([])
        | st.lists(json_scalars | st.lists(json_scalars), min_size=1, max_size=3),
        "role": anything.filter(lambda v: v not in ("system", "user", "assistant")),
        "content": anything.filter(lambda v: not isinstance(v, str)),
        "system": anything.filter(lambda v: not isinstance(v, str)),
        "id": anything.filter(lambda v: not isinstance(v, (str, int)) or isinstance(v, bool)),
        "response": anything.filter(lambda v: not isinstance(v, str)),
        "revisions": anything.filter(lambda v: not isinstance(v, list))
        | st.lists(json_scalars | st.lists(json_scalars), min_size=1, max_size=3),
    }[field]


@st.composite
def wrongly_typed_lines(draw) -> bytes:
    """A good record with one field broken."""
    record = draw(good_records())
    field = draw(st.sampled_from(("prompt", "messages", "role", "content", "system", "id", "response", "revisions")))
    if field in ("role", "content"):
        record.pop("prompt", None)
        messages = draw(st.lists(message, min_size=1, max_size=3))
        messages[draw(st.integers(0, len(messages) - 1))][field] = draw(wrong_for(field))
        record["messages"] = messages
    elif field == "messages":
        record.pop("prompt", None)
        record["messages"] = draw(wrong_for(field))
    else:
        record[field] = draw(wrong_for(field))
    return json.dumps(record).encode("utf-8")


def encoded(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


# Lines no reader may accept, in every way a file goes bad.
bad_lines = st.one_of(
    wrongly_typed_lines(),
    st.binary(max_size=60).map(lambda b: b"#" + b.replace(b"\n", b"")),  # junk, not JSON
    good_records().map(lambda r: encoded(r)[:-1]),  # a record cut short
    good_records().map(lambda r: encoded(r).replace(b"{", b"{\xff", 1)),  # invalid UTF-8
    (json_scalars | st.lists(json_values)).map(lambda v: json.dumps(v).encode()),  # not an object
    st.integers(1100, 20000).map(lambda depth: b'{"prompt": "x", "junk": ' + b"[" * depth + b"]" * depth + b"}"),
    st.sampled_from([b'{"prompt": "a\\ud800b", "response": "r"}', b'{"prompt": "x", "response": "r", "p": NaN}',
                     b'{"prompt": "x", "response": "r", "big": 1e400}', b'{"prompt": "x", "response": "r", "p": -Infinity}',
                     b"{" * 200000, b'{"prompt": "x", "response": "r"} {"prompt": "y"}', b"\x00" * 10]),
)
blank_lines = st.sampled_from([b"", b"   ", b"\t", b"\r", b"\x0c"])


@st.composite
def jsonl_files(draw) -> tuple[bytes, list[dict], list[int], int | None]:
    """A JSONL file of good, bad and blank lines, with what a reader must make of it:
    (data, the good records, the line numbers of the bad lines, the number of the first)."""
    items = draw(st.lists(st.one_of(good_records().map(lambda r: ("good", r)), bad_lines.map(lambda b: ("bad", b)),
                                    blank_lines.map(lambda b: ("blank", b))), max_size=8))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines, good, bad = [], [], []
    for number, (kind, item) in enumerate(items, 1):
        if kind == "good":
            lines.append(encoded(item))
            good.append(item)
        else:
            lines.append(item)
            if kind == "bad":
                bad.append(number)
    data = newline.join(lines) + (newline if lines and draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data = BOM + data
    return data, good, bad, bad[0] if bad else None


# --- the reader, in-process -----------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "input.jsonl"


def read_all(path: Path, skip_invalid: bool = False) -> tuple[list[dict], RecordError | None]:
    records: list[dict] = []
    try:
        for record in read_records(path, validate_critique_input, skip_invalid):
            records.append(record)
    except RecordError as error:
        return records, error
    return records, None


def without_added_id(record: dict, original: dict) -> dict:
    return record if "id" in original else {k: v for k, v in record.items() if k != "id"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(jsonl_files())
def test_reader_stops_at_the_first_bad_line_with_its_number(scratch, file):
    data, good, bad, first_bad = file
    scratch.write_bytes(data)
    records, error = read_all(scratch)
    if first_bad is None:
        assert error is None
        assert [without_added_id(r, g) for r, g in zip(records, good)] == good and len(records) == len(good)
    else:
        assert error is not None and error.line == first_bad, (error, first_bad)
        assert str(error).startswith(f"{scratch}:{first_bad}: ")
        good_before = len(records)
        assert [without_added_id(r, g) for r, g in zip(records, good)] == good[:good_before]
    assert all("id" in r for r in records)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(file=jsonl_files())
def test_reader_skipping_invalid_lines_keeps_exactly_the_good_records(scratch, capsys, file):
    data, good, bad, _ = file
    scratch.write_bytes(data)
    records, error = read_all(scratch, skip_invalid=True)
    assert error is None
    assert [without_added_id(r, g) for r, g in zip(records, good)] == good and len(records) == len(good)
    reported = [int(n) for n in re.findall(rf"Skipped {re.escape(str(scratch))}:(\d+):", capsys.readouterr().err)]
    assert reported == bad


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
@example(BOM + b'\r\n{"prompt": "x"}\r\n\xff\xfe')
@example(b'{"prompt": "x"}\n' * 3 + b"[" * 50000)
def test_reader_takes_any_bytes_without_a_traceback(scratch, data):
    scratch.write_bytes(data)
    lines = data.split(b"\n")
    records, error = read_all(scratch)
    if error is not None:
        assert 1 <= error.line <= len(lines)
        assert lines[error.line - 1].strip()  # the line named is not a blank one
    for record in records:
        validate_conversation(record)
        json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


def test_reader_names_the_right_line_in_a_huge_file_with_a_huge_line(scratch):
    good = {"id": "g", "prompt": "hello", "response": "hi"}
    huge = {"id": "h", "prompt": "word " * 2_000_000, "response": "x"}  # a 10 MB line is fine
    data = BOM + b"\r\n".join([encoded(good), b"", encoded(huge), b"x" * 5_000_000, encoded(good)]) + b"\r\n"
    scratch.write_bytes(data)
    records, error = read_all(scratch)
    assert [r["id"] for r in records] == ["g", "h"]
    assert error is not None and error.line == 4 and "not valid JSON" in str(error)


# --- the real commands ----------------------------------------------------------------------

GOOD = [{"id": "g1", "prompt": "Say hello."}, {"id": "g2", "prompt": "Name a colour."}]
# For `cai sample`: (the bad line, what its error must say).
NASTY_FOR_SAMPLE = [
    (b"\xff\xfe\x00junk", "not valid UTF-8"),
    (b'{"prompt": "unterminated', "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"prompt": "x", "junk": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b'{"prompt": "a\\udc80b"}', "lone UTF-16 surrogate"),
    (b'{"prompt": "x", "score": NaN}', "NaN"),
    (b'{"prompt": "x", "id": 1e400}', "NaN, Infinity"),
    (b"null", "expected a JSON object, got null"),
    (b'["prompt", "x"]', "expected a JSON object, got a list"),
    (b'{"prompt": ["x"]}', "'prompt' must be a string, not a list"),
    (b'{"prompt": "   "}', "'prompt' is empty"),
    (b'{"messages": {"role": "user"}}', "'messages' must be a non-empty list"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"messages": [{"role": "user", "content": {"text": "x"}}]}', "messages[0].content must be a string"),
    (b'{"prompt": "x", "system": 7}', "'system' must be a string, not a number"),
    (b'{"prompt": "x", "id": {"n": 1}}', "'id' must be a string or an integer, not an object"),
    (b'{"prompt": "x", "id": 1.5}', "'id' must be a string or an integer, not a decimal number"),
    (b'{"prompt": "' + b"long " * 20000 + b'"}', "exceeds the model's context"),
    (b'{"prompt": "[/x] [bold]markup[/bold]", "id": [1, "[/y]"]}', "'id' must be a string or an integer"),
]


def jsonl_bytes(*lines: bytes, newline: bytes = b"\n") -> bytes:
    return newline.join(lines) + newline


def assert_clean_error(result, source: str, line: int, says: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: {source}:{line}: "), result
    assert says in result.stderr.splitlines()[0], result
    assert len(result.stderr.splitlines()) == 1, result


# Three of them stop a run (the skip test below names every one of them at its line).
@pytest.mark.parametrize("bad, says", NASTY_FOR_SAMPLE[:5:2], ids=[s for _, s in NASTY_FOR_SAMPLE[:5:2]])
def test_sample_stops_at_a_nasty_line_after_writing_the_records_before_it(bad, says, tmp_path):
    # A BOM, CRLF line ends and a blank line in front: the bad line is line 4.
    data = BOM + jsonl_bytes(encoded(GOOD[0]), b"", encoded(GOOD[1]), bad, encoded(GOOD[0]), newline=b"\r\n")
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    result = run_cai("sample", *FAST, path)
    assert_clean_error(result, str(path), 4, says)
    assert [r["id"] for r in result.records] == ["g1", "g2"]
    assert result.stdout.endswith("\n")


def test_sample_skips_every_nasty_line_and_answers_the_rest():
    lines = [encoded(GOOD[0])]
    for bad, _ in NASTY_FOR_SAMPLE:
        lines += [bad, encoded(GOOD[1])]
    result = run_cai("sample", *FAST, "--skip-invalid", input=jsonl_bytes(*lines))
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr
    assert [r["id"] for r in result.records] == ["g1"] + ["g2"] * len(NASTY_FOR_SAMPLE)
    skipped = [line for line in result.stderr.splitlines() if line.startswith("Skipped ")]
    assert len(skipped) == len(NASTY_FOR_SAMPLE), result.stderr
    for number, (line, (_, says)) in enumerate(zip(skipped, NASTY_FOR_SAMPLE)):
        assert line.startswith(f"Skipped <stdin>:{2 + 2 * number}: ") and says in line, line


NASTY_FOR_CRITIQUE = [
    (b'{"prompt": "x"}', "record has no 'response'"),
    (b'{"prompt": "x", "response": 3}', "'response' must be a string, not a number"),
    (b'{"prompt": "x", "response": "r", "revisions": "none"}', "'revisions' must be a list of objects"),
    (b'{"prompt": "x", "response": "r", "revisions": [1, 2]}', "'revisions' must be a list of objects"),
    (b'{"prompt": "x", "response": "r", "revisions": [{"principle": "[/x]", "critique": "c"}]}',
     "the last critique has no revision yet"),
]
NASTY_FOR_REVISE = [
    (b'{"prompt": "x", "response": "r"}', "no critique waiting for a revision"),
    (b'{"prompt": "x", "response": "r", "revisions": [{"principle": "honesty", "critique": ["c"]}]}',
     "the last critique in 'revisions' is not a string"),
    (b'{"prompt": "x", "response": "r", "revisions": [{"principle": "[/x]", "critique": "c"}]}',
     "no critique principle named '[/x]'"),
    (b'{"prompt": "x", "response": "r", "revisions": [{"principle": {"a": 1}, "critique": "c"}]}',
     "no critique principle named"),
]


@pytest.mark.parametrize("stage, nasty, good", [
    ("critique", NASTY_FOR_CRITIQUE, {"id": "g", "prompt": "Hi.", "response": "Hello."}),
    ("revise", NASTY_FOR_REVISE, {"id": "g", "prompt": "Hi.", "response": "Hello.",
                                  "revisions": [{"principle": "honesty", "critique": "Fine."}]}),
])
def test_critique_and_revise_name_bad_histories_and_skip_them(stage, nasty, good, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl_bytes(encoded(good), nasty[0][0], encoded(good)))
    stopped = run_cai(stage, *FAST, "--no-few-shot", path)
    assert_clean_error(stopped, str(path), 2, nasty[0][1])
    assert [r["id"] for r in stopped.records] == ["g"]

    # Good, all the bad ones (lines 2, 3, ...), good: the model only answers the two good ones.
    lines = [encoded(good), *(bad for bad, _ in nasty), encoded(good)]
    skipped = run_cai(stage, *FAST, "--no-few-shot", "--skip-invalid", input=jsonl_bytes(*lines))
    assert skipped.returncode == 0, skipped
    assert len(skipped.records) == 2
    reports = [line for line in skipped.stderr.splitlines() if line.startswith("Skipped ")]
    for number, (line, (_, says)) in enumerate(zip(reports, nasty), 2):
        assert line.startswith(f"Skipped <stdin>:{number}: ") and says in line, line
    assert len(reports) == len(nasty)


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(jsonl_files())
def test_the_real_command_on_generated_files(file):
    """A few generated files through `cai critique` itself: the model, its tokenizer and the
    chat template see arbitrary text too."""
    data, good, bad, first_bad = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_bytes(data)
        result = run_cai("critique", *FAST, "--no-few-shot", path)
    assert "Traceback" not in result.stderr
    records = result.records  # every stdout line parses
    if result.returncode == 1:
        line = int(re.match(rf"Error: {re.escape(str(path))}:(\d+): ", result.stderr).group(1))
        # The reader's first bad line, or an earlier good record the stage refuses (a
        # critique waiting for its revision, a prompt too long for the context).
        assert first_bad is None or line <= first_bad
        assert len(records) < line
    else:
        assert result.returncode == 0 and first_bad is None, result
