"""`revise`: the revision that goes with the last critique's principle (or, `--direct`, a
revision under a freshly drawn principle with no critique: the paper's ablation).

The revision is recorded in the `revisions` history and replaces `response`; the first
response is kept as `initial_response`. A revision that is not an answer (empty, cut off at
--max-tokens, talk about the response, the critique again, text from the few-shot examples: see
`stages/checks.py`) is recorded with its `problems` and does *not* replace `response`, so the
next round works on the last good answer. `revised` says whether `response` holds a usable
revision at all; `train-sft` skips records where it is false.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from cai_cli.backends import Backend, Completion
from cai_cli.constitution import Constitution
from cai_cli.prompts import build_revision_messages, clean_generation, conversation_messages, derive_seed
from cai_cli.records import InvalidRecord, Record, record_id, set_flag, validate_response
from cai_cli.stages import Plan, check_plan_fits, run_generation
from cai_cli.stages.checks import revision_problems, strip_preamble
from cai_cli.settings import CritiqueSettings
from cai_cli.stages.critique import choose_principle, revision_history


class ReviseStage:
    def __init__(self, backend: Backend, constitution: Constitution, settings: CritiqueSettings,
                 direct: bool = False):
        constitution.require_critiques()
        if settings.principle:
            constitution.critique_principle(settings.principle)
        self.backend, self.constitution, self.settings, self.direct = backend, constitution, settings, direct
        self.few_shot = constitution.few_shot if settings.few_shot else []
        self.example_texts = [text for e in self.few_shot for text in (e.response, e.critique, e.revision)]
        self.counts: Counter[str] = Counter()
        self.problems: Counter[str] = Counter()

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
        seed = derive_seed(s.sampling.seed, record_id(record), "revision", len(history))
        return Plan([s.sampling.request(messages, seed)],
                    {"principle": principle.name})

    def finish(self, record: Record, plan: Plan, completions: list[Completion]) -> Record:
        revision = strip_preamble(clean_generation(completions[0].text, "Revision"))
        history = record.setdefault("revisions", [])
        if self.direct:
            history.append({"principle": plan.context["principle"]})
        entry = history[-1]
        entry["revision"] = revision
        own_text = " ".join(m["content"] for m in conversation_messages(record)) + " " + record["response"]
        problems = revision_problems(revision, completions[0].truncated, entry.get("critique"),
                                     self.example_texts, own_text)
        record.setdefault("initial_response", record["response"])
        self.counts.update(revisions=1, usable=not problems)
        self.problems.update(problems)
        if problems:
            entry["problems"] = problems  # recorded, but the last good response stays
            record.setdefault("revised", False)
        else:
            record["response"] = revision
            record["revised"] = True
            set_flag(record, "response_truncated", False)
        return record

    def summary(self) -> str:
        total, unused = self.counts["revisions"], self.counts["revisions"] - self.counts["usable"]
        if not unused:
            return f"all {total} revisions usable"
        reasons = ", ".join(f"{name} {count}" for name, count in self.problems.most_common())
        return (f"{unused} of {total} revisions not used ({reasons}): the previous response stays, "
                "and the problems are listed in the revision's entry")

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
