"""`revise`: the revision that goes with the last critique's principle (or, `--direct`, a
revision under a freshly drawn principle with no critique: the paper's ablation).

The revision is recorded in the `revisions` history and replaces `response`; the first
response is kept as `initial_response`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cai_cli.backends import Backend, GenerationRequest
from cai_cli.constitution import Constitution
from cai_cli.prompts import build_revision_messages, clean_generation, derive_seed
from cai_cli.records import InvalidRecord, Record, record_id, validate_response
from cai_cli.stages import Plan, check_plan_fits, run_generation
from cai_cli.stages.critique import CritiqueSettings, choose_principle, revision_history


class ReviseStage:
    def __init__(self, backend: Backend, constitution: Constitution, settings: CritiqueSettings,
                 direct: bool = False):
        constitution.require_critiques()
        if settings.principle:
            constitution.critique_principle(settings.principle)
        self.backend, self.constitution, self.settings, self.direct = backend, constitution, settings, direct
        self.few_shot = constitution.few_shot if settings.few_shot else []

    def plan(self, record: Record) -> Plan:
        s = self.settings
        history = revision_history(record)
        if self.direct:
            principle = choose_principle(self.constitution, s, record, len(history))
            critique = None
        else:
            principle = self.constitution.critique_principle(str(history[-1]["principle"]))
            critique = str(history[-1]["critique"])
        messages = build_revision_messages(record, principle, critique, self.few_shot)
        seed = derive_seed(s.seed, record_id(record), "revision", len(history))
        return Plan([GenerationRequest(messages, s.max_tokens, s.temperature, s.top_p, seed)],
                    {"principle": principle.name})

    def finish(self, record: Record, plan: Plan, texts: list[str]) -> Record:
        revision = clean_generation(texts[0], "Revision")
        history = record.setdefault("revisions", [])
        if self.direct:
            history.append({"principle": plan.context["principle"], "revision": revision})
        else:
            history[-1]["revision"] = revision
        record.setdefault("initial_response", record["response"])
        if revision:  # an empty generation is recorded, but the last good response stays
            record["response"] = revision
        return record

    def validate(self, record: Record) -> None:
        validate_response(record)
        history = revision_history(record)
        if not self.direct:
            if not history or "critique" not in history[-1] or "revision" in history[-1]:
                raise InvalidRecord("record has no critique waiting for a revision "
                                    "(run `cai critique` first, or use --direct)")
            if not isinstance(history[-1].get("critique"), str):
                raise InvalidRecord("the last critique in 'revisions' is not a string")
            try:
                self.constitution.critique_principle(str(history[-1].get("principle")))
            except Exception as exc:
                raise InvalidRecord(str(exc)) from None
        check_plan_fits(self, record)

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        return run_generation(self, records)
