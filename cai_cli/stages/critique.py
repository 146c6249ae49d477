"""`critique`: the model critiques its current response under one principle drawn at random.

Each round appends `{"principle", "critique"}` to the record's `revisions` history; `revise`
completes the entry with the revision. The principle is drawn per record and round from the
run's seed, so reruns draw the same ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from cai_cli.backends import Backend, Completion
from cai_cli.constitution import Constitution, CritiquePrinciple
from cai_cli.prompts import build_critique_messages, clean_generation, derive_seed, draw_principle
from cai_cli.records import InvalidRecord, Record, record_id, type_name, validate_response
from cai_cli.settings import CritiqueSettings
from cai_cli.stages import Plan, check_plan_fits, run_generation


def revision_history(record: Record) -> list[dict[str, Any]]:
    """The record's `revisions` list (empty when it has none), checked for shape."""
    history = record.get("revisions", [])
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise InvalidRecord(f"'revisions' must be a list of objects, not {type_name(history)}")
    return history


def choose_principle(constitution: Constitution, settings: CritiqueSettings, record: Record,
                     round_index: int) -> CritiquePrinciple:
    if settings.principle:
        return constitution.critique_principle(settings.principle)
    return draw_principle(constitution.critiques, settings.sampling.seed, record_id(record), round_index)


class CritiqueStage:
    def __init__(self, backend: Backend, constitution: Constitution, settings: CritiqueSettings):
        constitution.require_critiques()
        if settings.principle:
            constitution.critique_principle(settings.principle)  # fail before reading any input
        self.backend, self.constitution, self.settings = backend, constitution, settings
        self.few_shot = constitution.few_shot if settings.few_shot else []
        self.counts: Counter[str] = Counter()

    def plan(self, record: Record) -> Plan:
        s = self.settings
        round_index = len(revision_history(record))
        principle = choose_principle(self.constitution, s, record, round_index)
        messages = build_critique_messages(record, principle, self.few_shot)
        seed = derive_seed(s.sampling.seed, record_id(record), "critique", round_index)
        return Plan([s.sampling.request(messages, seed)],
                    {"principle": principle.name})

    def finish(self, record: Record, plan: Plan, completions: list[Completion]) -> Record:
        history = record.setdefault("revisions", [])
        entry = {"principle": plan.context["principle"], "critique": clean_generation(completions[0].text, "Critique")}
        if completions[0].truncated:
            entry["critique_truncated"] = True
        history.append(entry)
        self.counts.update(texts=1, truncated=completions[0].truncated)
        return record

    def summary(self) -> str:
        from cai_cli.stages.sample import truncation_summary

        return truncation_summary(self.counts["truncated"], self.counts["texts"], self.settings.sampling.max_tokens)

    def validate(self, record: Record) -> None:
        validate_response(record)
        history = revision_history(record)
        if history and "critique" in history[-1] and "revision" not in history[-1]:
            raise InvalidRecord("the last critique has no revision yet (run `cai revise` before critiquing again)")
        check_plan_fits(self, record)

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        return run_generation(self, records)
