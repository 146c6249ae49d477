"""`compare`: soft preference labels from AI feedback, in the format preference trainers read.

Input: a record with a conversation (`prompt` or `messages`) and two or more answers to it:
`responses` (what `cai sample -n 2` writes), or an explicit pair `chosen`/`rejected` to be judged
again. Each pair of responses is judged by the feedback model (see `stages/feedback.py`): one
multiple-choice question per principle and ordering, read from next-token log-probabilities.

Output, one record per pair: the input record, every key kept, plus

- `chosen`, `rejected`: the texts of the preferred and the other response (the names TRL's
  preference trainers read, next to the record's own `prompt`; a `messages` record keeps
  `messages`);
- `label`: the soft label, P(`chosen` is better), in [0.5, 1]: the mean over the judgements of
  the probability each gave to `chosen` (each clamped first when clamping is on: `--cot` clamps
  to [0.4, 0.6] by default). Exactly 0.5 (a tie, e.g. identical responses) keeps the input order;
- `chosen_index`, `rejected_index`: the two responses' positions in `responses` (an input pair
  gets `responses: [its chosen, its rejected]` added, so the input order is never lost);
- `principles`: the names of the comparison principles used;
- `orderings`: the raw judgements, one per principle and ordering, in the order they were asked:
  `{"principle", "a", "b", "p_a", "p_b"}` where `a`/`b` are the indices of the responses shown
  as (A)/(B) and `p_a + p_b = 1`; with `--cot` also the `reasoning` text.

More than two responses: every pair (i, j) with i < j is compared, in that order (K responses
give K(K-1)/2 records, so none is dropped). Those records get the id `<id>:<i>-<j>` (0-based
indices into `responses`) and keep the input's id in `source_id`; with two responses the id is
unchanged. Resume (`-o FILE --resume`) reuses a kept record only for the same pair id with the
same `judge_key`, a hash of the texts judged and the settings (`FeedbackModel.judge_key`); kept
records of pairs whose texts or settings changed, or that are no longer in the input, are
dropped from the file at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations

from cai_cli.backends import Backend
from cai_cli.constitution import Constitution
from cai_cli.records import JUDGE_KEY, InvalidRecord, Record, record_id, set_flag, type_name, validate_conversation
from cai_cli.settings import FeedbackSettings
from cai_cli.stages.feedback import (FeedbackModel, Judgement, judged_conversation,
                                    pair_probability)
from cai_cli.streams import KeptRecords

# Probabilities are written rounded: the last digits are numerical noise that differs between
# backends and machines.
DIGITS = 6


def record_responses(record: Record) -> list[str]:
    """The responses a record offers for comparison: `responses`, else the pair `chosen`,
    `rejected`. Raises `InvalidRecord` when there are fewer than two non-empty strings."""
    if "responses" in record:
        responses = record["responses"]
        if not isinstance(responses, list):
            raise InvalidRecord(f"'responses' must be a list of strings, not {type_name(responses)}")
        if len(responses) < 2:
            raise InvalidRecord(f"'responses' holds {len(responses)} response(s); compare needs at least two")
        for i, response in enumerate(responses):
            check_response(response, f"responses[{i}]")
        return responses
    if "chosen" in record or "rejected" in record:
        for key in ("chosen", "rejected"):
            if key not in record:
                raise InvalidRecord(f"record has no '{key}': a pair needs both 'chosen' and 'rejected'")
            check_response(record[key], key)
        return [record["chosen"], record["rejected"]]
    if "response" in record:
        raise InvalidRecord("record has one 'response'; compare needs two or more "
                            "(run `cai sample -n 2`, which writes 'responses')")
    raise InvalidRecord("record has no 'responses' list (from `cai sample -n 2`) and no 'chosen'/'rejected' pair")


def check_response(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise InvalidRecord(f"'{where}' must be a string, not {type_name(value)}")
    if not value.strip():
        raise InvalidRecord(f"'{where}' is empty")


def response_pairs(count: int) -> list[tuple[int, int]]:
    """The pairs compared among `count` responses: all of them, (0, 1), (0, 2), ..., (1, 2), ..."""
    return list(combinations(range(count), 2))


def pair_record_id(source_id: str, pair: tuple[int, int], count: int) -> str:
    """The output id of one pair: the record's own with two responses, `<id>:<i>-<j>` with more."""
    return source_id if count == 2 else f"{source_id}:{pair[0]}-{pair[1]}"


@dataclass
class PairJob:
    """One pair of one record, with the judgements that will label it."""

    record: Record
    responses: list[str]
    pair: tuple[int, int]
    pair_id: str
    judgements: list[Judgement] = field(default_factory=list)
    key: str = ""  # the content key (`FeedbackModel.judge_key`)


def orderings_field(judgements: list[Judgement]) -> list[dict]:
    entries = []
    for judgement in judgements:
        (a, b), (p_a, p_b) = judgement.order, judgement.question.probs
        entry = {"principle": judgement.principle, "a": a, "b": b,
                 "p_a": round(p_a, DIGITS), "p_b": round(p_b, DIGITS)}
        if judgement.question.reasoning is not None:
            entry["reasoning"] = judgement.question.reasoning.strip()
        entries.append(entry)
    return entries


class CompareStage:
    """Records with responses in, one preference record per pair out (see the module docstring).
    `kept` holds the records of an earlier run (resume): a pair with the same id and content key
    is not judged again."""

    def __init__(self, backend: Backend, constitution: Constitution, settings: FeedbackSettings,
                 kept: KeptRecords | None = None):
        self.feedback = FeedbackModel(backend, constitution, settings)
        self.settings = settings
        self.kept = kept
        self.pairs = self.truncated_pairs = 0

    def jobs(self, record: Record) -> list[PairJob]:
        """Every pair of the record, with its questions and content key."""
        responses = record_responses(record)
        conversation = judged_conversation(record)
        source_id = record_id(record)
        jobs = []
        for pair in response_pairs(len(responses)):
            pair_id = pair_record_id(source_id, pair, len(responses))
            judgements = self.feedback.pair_judgements(pair_id, conversation, responses, pair)
            key = self.feedback.judge_key(conversation, responses[pair[0]], responses[pair[1]])
            jobs.append(PairJob(record, responses, pair, pair_id, judgements, key))
        return jobs

    def validate(self, record: Record) -> None:
        validate_conversation(record)
        for job in self.jobs(record):
            if not (self.kept and self.kept.holds(job.pair_id, job.key)):
                self.feedback.check_fits(j.question for j in job.judgements)

    def to_judge(self, record: Record) -> list[PairJob]:
        """The record's pairs that no kept record answers already."""
        return [job for job in self.jobs(record) if not (self.kept and self.kept.claim(job.pair_id, job.key))]

    def finish(self, job: PairJob) -> Record:
        first, second = job.pair
        p_first = pair_probability(job.judgements, first, self.settings.clamp)
        chosen, rejected, label = (first, second, p_first) if p_first >= 0.5 else (second, first, 1.0 - p_first)
        out = dict(job.record)
        if len(job.responses) > 2:
            out["id"], out["source_id"] = job.pair_id, record_id(job.record)
        if "responses" not in out:
            out["responses"] = list(job.responses)
        out["chosen"], out["rejected"] = job.responses[chosen], job.responses[rejected]
        out["label"] = round(label, DIGITS)
        out["chosen_index"], out["rejected_index"] = chosen, rejected
        out["principles"] = list(dict.fromkeys(j.principle for j in job.judgements))
        out["orderings"] = orderings_field(job.judgements)
        out[JUDGE_KEY] = job.key
        # `sample` marks answers cut off at --max-tokens; the pair says which side was, so that
        # training can leave it out (a finished answer should not be ranked against a fragment).
        cut = job.record.get("responses_truncated")
        cut = cut if isinstance(cut, list) and len(cut) == len(job.responses) else [False] * len(job.responses)
        set_flag(out, "chosen_truncated", cut[chosen] is True)
        set_flag(out, "rejected_truncated", cut[rejected] is True)
        self.pairs += 1
        self.truncated_pairs += cut[chosen] is True or cut[rejected] is True
        return out

    def summary(self) -> str:
        if not self.truncated_pairs:
            return ""
        return (f"{self.truncated_pairs} of {self.pairs} pairs hold an answer cut off at --max-tokens (marked "
                "chosen_truncated/rejected_truncated; train-pm and DPO leave them out)")

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        jobs = (job for record in records for job in self.to_judge(record))
        for job in self.feedback.answer(jobs, lambda job: [j.question for j in job.judgements]):
            yield self.finish(job)
