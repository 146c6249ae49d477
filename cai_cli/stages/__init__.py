"""Stages: plain functions over records (`Iterable[dict] -> Iterator[dict]`).

A generating stage says, per record, which completions it needs (`plan`) and what to do with
the texts that come back (`finish`); `run_generation` streams the requests of all records through
the backend, so a batching backend sees many at once while records still come out in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cai_cli.backends import Backend, Completion, GenerationRequest, RequestFailed, check_fits, prompt_text
from cai_cli.records import Record, record_id


@dataclass
class Plan:
    """The completions one record needs, plus whatever `finish` wants to remember."""

    requests: list[GenerationRequest]
    context: dict[str, Any] = field(default_factory=dict)


class GenerationStage(Protocol):
    backend: Backend

    def plan(self, record: Record) -> Plan: ...

    def finish(self, record: Record, plan: Plan, completions: list[Completion]) -> Record: ...


def run_generation(stage: GenerationStage, records: Iterable[Record]) -> Iterator[Record]:
    """Feed every record's requests to the backend lazily and yield finished records in order."""
    pending: deque[tuple[Record, Plan]] = deque()

    def requests() -> Iterator[GenerationRequest]:
        for record in records:
            plan = stage.plan(record)
            pending.append((record, plan))
            yield from plan.requests

    done: list[Completion] = []
    try:
        for completion in stage.backend.generate(requests()):
            done.append(completion)
            # A record is done once all of its completions are in; its plan is at the queue's head
            # because the backend answers in request order.
            while pending and len(done) >= len(pending[0][1].requests):
                record, plan = pending.popleft()
                count = len(plan.requests)
                yield stage.finish(record, plan, done[:count])
                done = done[count:]
    except RequestFailed as exc:
        # Raised in the failed request's place: it belongs to the first record not yet finished.
        raise exc.naming(f"record {record_id(pending[0][0])}" if pending else "a request") from None
    while pending and not pending[0][1].requests:
        record, plan = pending.popleft()
        yield stage.finish(record, plan, [])


def check_plan_fits(stage: GenerationStage, record: Record) -> None:
    """Validator part shared by generating stages: every prompt of the plan fits the context."""
    for request in stage.plan(record).requests:
        check_fits(stage.backend, prompt_text(stage.backend, request), request.max_tokens)
