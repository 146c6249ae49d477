"""`sample`: the model's answer to each record's conversation (`response`, or K `responses`).

With `redraw_refusals=N`, an answer that the refusal detector (`cai_cli/refusals.py`) flags is
drawn again, up to N times, with fresh seeds: the helpful part of an SFT mix should show the
model helping, and a policy that refuses "How do I poach an egg?" one time in five would
otherwise teach its fine-tune to refuse everyday requests. The record says how many extra
draws it took (`redraws`), and an answer that still refuses after N is kept, counted, and
marked `refused`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cai_cli.backends import Backend, Completion, Sampling
from cai_cli.prompts import conversation_messages, derive_seed, prompt_messages
from cai_cli.records import Record, record_id, set_flag, validate_conversation
from cai_cli.refusals import is_refusal
from cai_cli.stages import Plan, check_plan_fits, run_generation


@dataclass(frozen=True)
class SampleSettings:
    """Sampling settings; `n=None` writes one `response`, `n=K` writes K `responses`."""

    n: int | None = None
    sampling: Sampling = Sampling()
    system: str | None = None
    redraw_refusals: int = 0


class SampleStage:
    def __init__(self, backend: Backend, settings: SampleSettings):
        if settings.redraw_refusals and settings.sampling.temperature == 0:
            raise ValueError("redrawing refusals needs sampling: greedy decoding (--temperature 0) "
                             "would draw the same answer again")
        self.backend, self.settings = backend, settings
        self.counts: Counter[str] = Counter()

    def plan(self, record: Record) -> Plan:
        return self.draws(record, range(self.settings.n or 1), attempt=0)

    def draws(self, record: Record, indices: Iterable[int], attempt: int) -> Plan:
        """Requests for the answers at `indices` (0..n-1); attempt 0 is the first draw, a later
        one a redraw with seeds of its own."""
        s, indices = self.settings, list(indices)
        messages = prompt_messages(record, s.system)  # a trailing answer is answered afresh
        redraw = ("redraw", attempt) if attempt else ()
        return Plan([s.sampling.request(messages, derive_seed(s.sampling.seed, record_id(record), "sample", k, *redraw))
                     for k in indices], {"indices": indices})

    def finish(self, record: Record, plan: Plan, completions: list[Completion]) -> Record:
        count = self.settings.n or 1
        if plan.context["indices"] == list(range(count)):
            texts, cut = [""] * count, [False] * count
        else:  # a redraw of some: the others stay
            texts, cut = self.texts(record), self.truncation(record)
        for k, completion in zip(plan.context["indices"], completions):
            texts[k], cut[k] = completion.text.strip(), completion.truncated
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

    def texts(self, record: Record) -> list[str]:
        return list(record["responses"]) if self.settings.n else [record["response"]]

    def truncation(self, record: Record) -> list[bool]:
        if self.settings.n is None:
            return [bool(record.get("response_truncated"))]
        return list(record.get("responses_truncated") or [False] * self.settings.n)

    def refusing(self, record: Record) -> list[int]:
        return [k for k, text in enumerate(self.texts(record)) if is_refusal(text)]

    def summary(self) -> str:
        parts = [truncation_summary(self.counts["truncated"], self.counts["texts"], self.settings.sampling.max_tokens)]
        if self.settings.redraw_refusals:
            parts.append(f"{self.counts['redraws']} refusals drawn again in {self.counts['redrawn']} records, "
                         f"{self.counts['refused']} answers still refusing (marked 'refused')")
        return "; ".join(part for part in parts if part)

    def validate(self, record: Record) -> None:
        validate_conversation(record)
        check_plan_fits(self, record)

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        if not self.settings.redraw_refusals:
            return self.counted(run_generation(self, records))
        return self.with_redraws(records)

    def with_redraws(self, records: Iterable[Record]) -> Iterator[Record]:
        """A block of records at a time: their first draws, then the refusals among them drawn
        again (a backend generates one stream at a time, so redraws wait for the block's end)."""
        for block in blocks(records, REDRAW_BLOCK):
            done, redraws = list(run_generation(self, block)), Counter()
            for attempt in range(1, self.settings.redraw_refusals + 1):
                todo = [record for record in done if self.refusing(record)]
                if not todo:
                    break
                for record in todo:
                    redraws[id(record)] += len(self.refusing(record))
                for _ in run_generation(Redraws(self, attempt), todo):
                    pass
            yield from self.counted(self.mark(record, redraws[id(record)]) for record in done)

    def mark(self, record: Record, redraws: int) -> Record:
        refused = bool(self.refusing(record))
        self.counts.update(redraws=redraws, redrawn=bool(redraws), refused=refused)
        for key, value in (("redraws", redraws), ("refused", refused)):
            if value:
                record[key] = value
            else:
                record.pop(key, None)
        return record

    def counted(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            cut = self.truncation(record)
            self.counts.update(texts=len(cut), truncated=sum(cut))
            yield record


class Redraws:
    """The redraw round `attempt` of a `SampleStage`: new draws for the answers that refuse."""

    def __init__(self, stage: SampleStage, attempt: int):
        self.stage, self.attempt, self.backend = stage, attempt, stage.backend

    def plan(self, record: Record) -> Plan:
        return self.stage.draws(record, self.stage.refusing(record), self.attempt)

    def finish(self, record: Record, plan: Plan, completions: list[Completion]) -> Record:
        return self.stage.finish(record, plan, completions)


REDRAW_BLOCK = 16  # records whose first draws are made before their refusals are drawn again


def blocks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    block: list[Record] = []
    for record in records:
        block.append(record)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def truncation_summary(truncated: int, total: int, max_tokens: int) -> str:
    """The summary line's part about texts cut off at --max-tokens."""
    if not truncated:
        return ""
    return (f"{truncated} of {total} texts cut off at --max-tokens {max_tokens} (marked *_truncated; "
            "raise --max-tokens so that training data is finished text)")
