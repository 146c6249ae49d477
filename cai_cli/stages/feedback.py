"""AI feedback: a feedback model answers a multiple-choice question, read from its next-token
log-probabilities (RL-CAI, METHOD.md phase 2). Shared by `compare` and `eval`.

A question is rendered with the model's chat template and followed by an answer prefix ending in
"(" ("The answer is: ("), so the next token is the option letter. The log-probabilities of the
option letters' tokens are normalised over the options alone: the soft answer. No text is
generated, except the step-by-step reasoning of the chain-of-thought variant (`cot`), which is
generated first and then put between the question and the answer prefix.

For a pair of responses, one *judgement* is one question: one comparison principle and one
ordering (which response is shown as (A)). By default each principle is asked in both orderings
and the probabilities are averaged, which cancels the strong letter bias of small models.

Judgements are streamed to the backend in the order in which consecutive prompts share the
longest token prefix, which llama.cpp keeps in its KV cache and transformers computes once per
batch. That order depends on the layout (`prompts.COMPARISON_LAYOUTS`):
- responses-first (the default): ordering by ordering, all principles of one ordering back to
  back; they share the conversation and both responses, and differ only in the question at the
  end, so K principles cost one read of the responses plus K short questions per ordering;
- paper: principle by principle, both orderings back to back (they share everything up to
  "(A) "); every question re-reads both responses.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, TypeVar

from cai_cli.backends import Backend, GenerationRequest, RequestFailed
from cai_cli.constitution import ComparisonPrinciple, Constitution
from cai_cli.errors import CaiError
from cai_cli.prompts import (ANSWER_PREFIX, COMPARISON_LAYOUTS, COT_ANSWER_SEPARATOR,
                             Message, build_comparison_messages, build_cot_comparison_messages, derive_seed,
                             prompt_messages)
from cai_cli.records import InvalidRecord, Record, content_key, record_id
from cai_cli.settings import FeedbackSettings

LETTERS = ("A", "B")

Job = TypeVar("Job")


def normalise_choice_logprobs(logprobs: Sequence[float | None]) -> list[float]:
    """Probabilities of the options, normalised over the options alone, from their next-token
    log-probabilities (log-sum-exp, so tiny probabilities do not underflow to 0/0).

    A missing option (None, -inf or NaN: absent from a backend's top candidates, say) counts as
    impossible; when no option has a finite log-probability they are equally likely. The result
    is always finite and sums to one.
    """
    finite = [x is not None and math.isfinite(x) for x in logprobs]
    if not any(finite):
        return [1.0 / len(logprobs)] * len(logprobs)
    top = max(x for x, ok in zip(logprobs, finite) if ok)
    weights = [math.exp(x - top) if ok else 0.0 for x, ok in zip(logprobs, finite)]
    total = math.fsum(weights)  # >= 1: the top option's weight is exp(0)
    return [w / total for w in weights]


def clamp_probability(p: float, bounds: tuple[float, float] | None) -> float:
    """`p` limited to [low, high]; None leaves it as it is."""
    return p if bounds is None else min(max(p, bounds[0]), bounds[1])


def check_feedback_settings(constitution: Constitution, settings: FeedbackSettings) -> None:
    """Raise `CaiError` when the principle settings do not fit the constitution."""
    constitution.require_comparisons()
    if settings.layout not in COMPARISON_LAYOUTS:
        raise CaiError(f"--layout {settings.layout}: choose one of {', '.join(COMPARISON_LAYOUTS)}")
    if settings.principle:
        constitution.comparison_principle(settings.principle)
        if settings.principles != 1:
            raise CaiError("--principle fixes one principle; it does not go with --principles")
    available = len(constitution.comparisons)
    if not 1 <= settings.principles <= available:
        raise CaiError(f"--principles {settings.principles}: constitution {constitution.name!r} has "
                       f"{available} comparison principle(s)")


@dataclass
class Question:
    """One multiple-choice question: the chat, the text that starts the answer, the options'
    continuations (their first tokens are scored), and after answering the options' probabilities."""

    messages: list[Message]
    answer_prefix: str = ANSWER_PREFIX
    options: tuple[str, ...] = LETTERS
    reasoning: str | None = None
    seed: int = 0  # chain of thought: the seed for this question's reasoning
    probs: list[float] = field(default_factory=list)


@dataclass
class Judgement:
    """One question about a pair of responses: a principle and the ordering shown, (A) first."""

    principle: str
    order: tuple[int, int]  # the response indices shown as (A) and (B)
    question: Question

    def probability_for(self, index: int) -> float:
        """The probability that the response at `index` is the better one, in this judgement."""
        return self.question.probs[self.order.index(index)]


def pair_probability(judgements: list[Judgement], index: int, clamp: tuple[float, float] | None) -> float:
    """P(response `index` of a pair is the better one): the mean over the judgements (principles
    and orderings) of the probability each gave it, each clamped first (so one overconfident
    judgement cannot outweigh the others)."""
    return sum(clamp_probability(j.probability_for(index), clamp) for j in judgements) / len(judgements)


class FeedbackModel:
    """A backend asked multiple-choice questions under a constitution's comparison principles."""

    def __init__(self, backend: Backend, constitution: Constitution, settings: FeedbackSettings):
        check_feedback_settings(constitution, settings)
        self.backend, self.settings = backend, settings
        self.fixed = [constitution.comparison_principle(settings.principle)] if settings.principle else None
        self.comparisons = constitution.comparisons

    def judge_key(self, *texts: Any) -> str:
        """The content key of a judgement of `texts` (the conversation and the answers judged):
        a hash of them and of everything else its probabilities depend on: the model and backend,
        the constitution's comparison principles and every setting (principle, K, swap, layout,
        cot, clamp, reasoning sampling, seed). A resume reuses a kept judgement only when its key
        is the same (`streams.KeptRecords`)."""
        return content_key({"texts": texts, "model": self.backend.model_path, "backend": self.backend.name,
                            "principles": [[p.name, p.text] for p in self.comparisons],
                            "settings": self.settings.key_fields()})

    def principles_for(self, pair_id: str) -> list[ComparisonPrinciple]:
        """The principles one pair is judged under: the fixed one, or a seeded draw without
        repeats, so reruns draw the same and the draw does not depend on other records."""
        if self.fixed:
            return self.fixed
        draw = random.Random(derive_seed(self.settings.seed, pair_id, "comparison"))
        return draw.sample(self.comparisons, self.settings.principles)

    def pair_judgements(self, pair_id: str, conversation: list[Message], responses: Sequence[str],
                        pair: tuple[int, int]) -> list[Judgement]:
        """The judgements for responses `pair` (indices into `responses`), in the order that
        shares the most KV cache between consecutive prompts (see the module docstring). Without
        `swap` each principle is asked in one ordering, drawn per pair (seeded): a fixed one would
        make a letter-biased model's accuracy on labeled pairs nothing but its bias."""
        i, j = pair
        if self.settings.swap:
            orders = [(i, j), (j, i)]
        else:  # one ordering, drawn per pair: never always the same response first
            flip = random.Random(derive_seed(self.settings.seed, pair_id, "order")).random() < 0.5
            orders = [(j, i) if flip else (i, j)]
        principles = self.principles_for(pair_id)
        if self.settings.layout == "paper":
            asked = [(principle, order) for principle in principles for order in orders]
        else:
            asked = [(principle, order) for order in orders for principle in principles]
        build = build_cot_comparison_messages if self.settings.cot else build_comparison_messages
        return [Judgement(principle.name, (a, b),
                          Question(build(conversation, responses[a], responses[b], principle, self.settings.layout),
                                   seed=derive_seed(self.settings.seed, pair_id, "reasoning", principle.name, a, b)))
                for principle, (a, b) in asked]

    def answer_text(self, question: Question) -> str:
        """The rendered prompt whose next token is the answer: chat, (reasoning,) answer prefix."""
        reasoning = question.reasoning.strip() + COT_ANSWER_SEPARATOR if question.reasoning else ""
        return self.backend.render(question.messages) + reasoning + question.answer_prefix

    def check_fits(self, questions: Iterable[Question]) -> None:
        """Raise `InvalidRecord` when a question (plus its reasoning) cannot fit the context."""
        n_ctx = self.backend.n_ctx
        reserve = self.settings.reasoning.max_tokens + 8 if self.settings.cot else 1  # reasoning, separator, letter
        for question in questions:
            needed = self.backend.count_tokens(self.answer_text(question)) + reserve
            if needed > n_ctx:
                what = f" with {self.settings.reasoning.max_tokens} tokens of reasoning" if self.settings.cot else ""
                raise InvalidRecord(f"the comparison prompt is about {needed} tokens{what}, more than the "
                                    f"model's context of {n_ctx} (use --n-ctx, or shorter responses)")

    def answer(self, jobs: Iterable[Job], questions_of: Callable[[Job], list[Question]]) -> Iterator[Job]:
        """Answer every question of every job, lazily and in order: each job comes back once its
        questions have their `probs` (and, with `cot`, their `reasoning`)."""
        if self.settings.cot:
            jobs = self.with_reasoning(jobs, questions_of)
        # One backend call per run of jobs whose questions read the same options after the same
        # prefix: the backend finds the options' tokens once per call.
        for (options, _prefix), group in groupby(jobs, key=lambda job: question_kind(questions_of(job))):
            def prompts_of(job: Job) -> list[str]:
                return [self.answer_text(q) for q in questions_of(job)]

            def score(prompts: Iterator[str], options: tuple[str, ...] = options) -> Iterator[list[float]]:
                return self.backend.next_token_logprobs(prompts, list(options))

            for job, logprobs in stream_through(group, prompts_of, score):
                for question, row in zip(questions_of(job), logprobs):
                    question.probs = normalise_choice_logprobs(row)
                yield job

    def with_reasoning(self, jobs: Iterable[Job], questions_of: Callable[[Job], list[Question]]) -> Iterator[Job]:
        """Chain of thought: generate each question's step-by-step reasoning (seeded)."""
        def requests_of(job: Job) -> list[GenerationRequest]:
            return [self.settings.reasoning.request(q.messages, q.seed) for q in questions_of(job)]

        for job, completions in stream_through(jobs, requests_of, self.backend.generate):
            for question, completion in zip(questions_of(job), completions):
                question.reasoning = completion.text
            yield job


def question_kind(questions: list[Question]) -> tuple[tuple[str, ...], str]:
    """What a backend call has in common: the options, and the prefix they follow."""
    return (questions[0].options, questions[0].answer_prefix) if questions else ((), "")


def stream_through(jobs: Iterable[Job], requests_of: Callable[[Job], Iterable[Any]],
                   run: Callable[[Iterator[Any]], Iterator[Any]]) -> Iterator[tuple[Job, list[Any]]]:
    """Feed the requests of all jobs to `run` as one lazy stream (so a batching backend sees
    many at once) and yield each job with its results, in order, as soon as they are all in."""
    pending: deque[tuple[Job, list[Any]]] = deque()

    def requests() -> Iterator[Any]:
        for job in jobs:
            batch = list(requests_of(job))
            pending.append((job, batch))
            yield from batch

    results: list[Any] = []
    try:
        for result in run(requests()):
            results.append(result)
            while pending and len(results) >= len(pending[0][1]):
                job, batch = pending.popleft()
                yield job, results[:len(batch)]
                results = results[len(batch):]
    except RequestFailed as exc:
        # Raised in the failed request's place: it belongs to the first job not yet finished.
        raise exc.naming(job_name(pending[0][0]) if pending else "a request") from None
    while pending:  # jobs with no requests after the last result
        job, batch = pending.popleft()
        yield job, []


def job_name(job: Any) -> str:
    """How an error names a job: its pair id (compare) or its record's id."""
    if getattr(job, "pair_id", None):
        return f"record {job.pair_id}"
    record = getattr(job, "record", None)
    return f"record {record_id(record)}" if isinstance(record, dict) else "a request"


def judged_conversation(record: Record) -> list[Message]:
    """The conversation responses answer (a trailing assistant turn is what they replace)."""
    return prompt_messages(record)
