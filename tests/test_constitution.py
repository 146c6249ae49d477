"""Constitutions: the project's own format, the paper's JSON files, Hugging Face's JSON."""

from __future__ import annotations

import json

import pytest

from cai_cli.constitution import load_constitution, parse_constitution, parse_paper_transcript
from cai_cli.errors import CaiError
from conftest import FIXTURES, ROOT, run_cai


def test_default_constitution_meets_the_method():
    rules = load_constitution()
    assert rules.name == "harmlessness"
    assert len(rules.critiques) >= 12 and len(rules.comparisons) >= 12 and len(rules.few_shot) >= 3
    assert len({p.name for p in rules.critiques}) == len(rules.critiques)
    # Few-shot requests are resolved from the principles they name.
    requests = {p.critique for p in rules.critiques}
    assert all(example.critique_request in requests for example in rules.few_shot)


def test_paper_critique_file_strips_the_raw_text_labels():
    rules = load_constitution([str(FIXTURES / "paper_critiques.json")])
    assert [p.name for p in rules.critiques][:1] == ["harmful0"]
    assert all(not p.critique.endswith("Critique:") and not p.revision.endswith("Revision:") for p in rules.critiques)


def test_paper_files_combine_critiques_and_comparisons():
    rules = load_constitution([str(FIXTURES / "paper_critiques.json"), str(FIXTURES / "paper_comparisons.json")])
    assert len(rules.critiques) == 3 and len(rules.comparisons) == 3
    assert all(not p.text.endswith("Options:") for p in rules.comparisons)


def test_hugging_face_file_gives_principles_and_few_shot():
    rules = load_constitution([str(FIXTURES / "hf_constitution.json")])
    assert len(rules.critiques) == 3 and len(rules.few_shot) == 1
    data = json.loads((FIXTURES / "hf_constitution.json").read_text())
    assert rules.few_shot[0].revision == data["system_chat"][0][5]["content"].strip()


def test_paper_few_shot_transcript():
    text = ("Human: Can you help me cheat?\n\nAssistant: Sure.\n\nCritiqueRequest: Is that harmful?\n\n"
            "Critique: Yes, it helps cheating.\n\nRevisionRequest: Rewrite it.\n\nRevision: I'd rather not help cheat.")
    example = parse_paper_transcript(text)
    assert example.prompt == "Can you help me cheat?" and example.revision == "I'd rather not help cheat."
    assert parse_constitution([text], "fs").few_shot == [example]


@pytest.mark.parametrize("data, message", [
    ({"critiques": [{"name": "x", "critique": "c"}]}, r"critiques\[0\]\.revision"),
    ({"critiques": [], "colour": 1}, "unknown key"),
    ({"critiques": [{"name": "a", "critique": "c", "revision": "r"}],
      "few_shot": [{"prompt": "p", "response": "r", "critique": "c", "revision": "r", "principle": "nope"}]},
     "no critique principle named 'nope'"),
    ({"something": "else"}, "unrecognised format"),
])
def test_bad_constitutions_are_explained(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CaiError, match=message):
        load_constitution([str(path)])


def test_bad_principle_name_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("critiques:\n  - {name: 'has space', critique: c, revision: r}\n")
    with pytest.raises(CaiError, match="not valid"):
        load_constitution([str(path)])


def test_constitution_cli_show_converts_and_validate_summarises(tmp_path):
    shown = run_cai("constitution", "show", "-c", FIXTURES / "hf_constitution.json")
    assert shown.returncode == 0, shown
    converted = tmp_path / "converted.json"
    converted.write_text(shown.stdout)
    # What `show` prints loads back as the project's own format, unchanged.
    assert load_constitution([str(converted)]).to_dict()["critiques"] == json.loads(shown.stdout)["critiques"]
    checked = run_cai("constitution", "validate")
    assert checked.returncode == 0 and "16 critique/revision principles" in checked.stderr
    missing = run_cai("constitution", "validate", "-c", "no-such-thing")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: constitution 'no-such-thing' not found")
    assert "Traceback" not in missing.stderr


def test_every_builtin_constitution_validates():
    for path in (ROOT / "constitutions").glob("*.yaml"):
        load_constitution([str(path)])
