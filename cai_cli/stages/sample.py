"""`sample`: the model's answer to each record's conversation (`response`, or K `responses`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from collections import Counter

from cai_cli.backends import Backend, Completion, GenerationRequest
from cai_cli.prompts import conversation_messages, derive_seed, prompt_messages
from cai_cli.records import Record, record_id, set_flag, validate_conversation
from cai_cli.stages import Plan, check_plan_fits, run_generation


@dataclass(frozen=True)
class SampleSettings:
    """Sampling settings; `n=None` writes one `response`, `n=K` writes K `responses`."""

    n: int | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    system: str | None = None


class SampleStage:
    def __init__(self, backend: Backend, settings: SampleSettings):
        self.backend, self.settings = backend, settings
        self.counts: Counter[str] = Counter()

    def plan(self, record: Record) -> Plan:
        s = self.settings
        messages = prompt_messages(record, s.system)  # a trailing answer is answered afresh
        return Plan([GenerationRequest(messages, s.max_tokens, s.temperature, s.top_p,
                                       derive_seed(s.seed, record_id(record), "sample", k))
                     for k in range(s.n or 1)])

    def finish(self, record: Record, plan: Plan, completions: list[Completion]) -> Record:
        texts = [c.text.strip() for c in completions]
        cut = [c.truncated for c in completions]
        self.counts.update(texts=len(texts), truncated=sum(cut))
        if self.settings.n is None:
            record["response"] = texts[0]
            set_flag(record, "response_truncated", cut[0])
        else:
            record["responses"] = texts
            if any(cut):
                record["responses_truncated"] = cut
            else:
                record.pop("responses_truncated", None)
        system = self.settings.system
        if system and "system" not in record and conversation_messages(record)[0]["role"] != "system":
            # The answer was given under this system message: later stages must see it too.
            record["system"] = system
        return record

    def summary(self) -> str:
        return truncation_summary(self.counts["truncated"], self.counts["texts"], self.settings.max_tokens)

    def validate(self, record: Record) -> None:
        validate_conversation(record)
        check_plan_fits(self, record)

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        return run_generation(self, records)


def truncation_summary(truncated: int, total: int, max_tokens: int) -> str:
    """The summary line's part about texts cut off at --max-tokens."""
    if not truncated:
        return ""
    return (f"{truncated} of {total} texts cut off at --max-tokens {max_tokens} (marked *_truncated; "
            "raise --max-tokens so that training data is finished text)")
