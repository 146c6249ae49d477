"""`score`: a preference-model score for every response a record holds.

Each answer is scored as the record's conversation followed by that answer. What gets a score:

| answer in the record            | its score goes to          |
|---------------------------------|----------------------------|
| `response`                      | `score`                    |
| `responses[i]`                  | `scores[i]`                |
| `initial_response`              | `initial_score`            |
| `revisions[i]["revision"]`      | `revisions[i]["score"]`    |
| `chosen`, `rejected`            | `chosen_score`, `rejected_score` |

so a `revise` record shows the score after each revision round (the paper's Figure 5). Every
other key passes through untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from cai_cli.prompts import prompt_messages
from cai_cli.records import InvalidRecord, Record, type_name, validate_conversation

# Records read ahead so that the PM's batches fill up even when records hold one answer each.
WINDOW_RECORDS = 16

Setter = Callable[[float], None]


def answers_to_score(record: Record) -> list[tuple[str, Setter]]:
    """(answer text, where its score goes) for every answer in the record, in a fixed order."""
    found: list[tuple[str, Setter]] = []

    def put(key: str) -> Setter:
        return lambda value: record.__setitem__(key, value)

    if isinstance(record.get("initial_response"), str):
        found.append((record["initial_response"], put("initial_score")))
    for entry in record.get("revisions") or []:
        if isinstance(entry, dict) and isinstance(entry.get("revision"), str):
            found.append((entry["revision"], lambda value, entry=entry: entry.__setitem__("score", value)))
    if isinstance(record.get("response"), str):
        found.append((record["response"], put("score")))
    responses = record.get("responses")
    if isinstance(responses, list):
        scores: list[Any] = [None] * len(responses)
        record["scores"] = scores
        for i, text in enumerate(responses):
            found.append((text, lambda value, i=i: scores.__setitem__(i, value)))
    for key in ("chosen", "rejected"):
        if isinstance(record.get(key), str):
            found.append((record[key], put(f"{key}_score")))
    return found


def validate_scorable(record: Record) -> None:
    """A conversation with at least one answer of the kinds `score` knows."""
    validate_conversation(record)
    for key in ("response", "initial_response", "chosen", "rejected"):
        if key in record and not isinstance(record[key], str):
            raise InvalidRecord(f"'{key}' must be a string, not {type_name(record[key])}")
    if "responses" in record:
        responses = record["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise InvalidRecord("'responses' must be a list of strings")
    if "revisions" in record and not isinstance(record["revisions"], list):
        raise InvalidRecord(f"'revisions' must be a list, not {type_name(record['revisions'])}")
    has_answer = any(isinstance(record.get(k), str) for k in ("response", "initial_response", "chosen", "rejected")) \
        or bool(record.get("responses")) \
        or any(isinstance(e, dict) and isinstance(e.get("revision"), str) for e in record.get("revisions") or [])
    if not has_answer:
        raise InvalidRecord("record has no answer to score (response, responses, initial_response, "
                            "revisions[].revision, chosen or rejected)")


class ScoreStage:
    """Records in, the same records with PM scores added out (in input order)."""

    def __init__(self, preference_model):
        self.preference_model = preference_model

    def validate(self, record: Record) -> None:
        validate_scorable(record)

    def summary(self) -> str:
        cut = self.preference_model.cut
        return (f"{cut} conversations longer than --max-length {self.preference_model.max_length} tokens were "
                "scored without their start") if cut else ""

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        records = iter(records)
        while window := list(itertools.islice(records, WINDOW_RECORDS)):
            jobs = []
            for record in window:
                conversation = prompt_messages(record)  # the answers below replace the conversation's own
                for text, setter in answers_to_score(record):
                    jobs.append((conversation + [{"role": "assistant", "content": text}], setter))
            scores = self.preference_model.score(conversation for conversation, _ in jobs)
            for (_, setter), value in zip(jobs, scores):
                setter(round(value, 6))
            yield from window
