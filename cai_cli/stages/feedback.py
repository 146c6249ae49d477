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
Judgements are streamed to the backend in the order that lets llama.cpp reuse its KV cache: for
each pair, principle by principle, both orderings back to back (they share everything up to
"(A) "), and the principles of one pair after each other (they share the conversation).
"""

from __future__ import annotations

import math
import os
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, TypeVar

from cai_cli.backends import Backend, GenerationRequest, RequestFailed
from cai_cli.constitution import ComparisonPrinciple, Constitution
from cai_cli.errors import CaiError
from cai_cli.prompts import (ANSWER_PREFIX, COT_ANSWER_SEPARATOR, COT_REQUEST, Message, build_comparison_messages,
                             build_cot_comparison_messages, conversation_messages, derive_seed)
from cai_cli.records import InvalidRecord, Record, record_id, validate_conversation

LETTERS = ("A", "B")
# The paper clamps chain-of-thought labels to 40-60%: they come out near 0 or 1.
DEFAULT_COT_CLAMP = (0.4, 0.6)
# The paper's evaluation prompts end in this cue; in a chat it starts the assistant's answer.
ANSWER_CUE = re.compile(r"(The answer is:?)\s*$", re.IGNORECASE)

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


def parse_clamp(text: str | None, cot: bool) -> tuple[float, float] | None:
    """`--clamp LO,HI` as numbers; 'none' turns clamping off. The default clamps only
    chain-of-thought labels (to 0.4-0.6, as the paper did)."""
    if text is None:
        return DEFAULT_COT_CLAMP if cot else None
    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CaiError(f"--clamp takes two numbers LO,HI such as 0.4,0.6 (or 'none'), not {text!r}") from None
    if not 0.0 <= low <= 0.5 <= high <= 1.0 or low == high:
        raise CaiError(f"--clamp {text}: need 0 <= LO <= 0.5 <= HI <= 1 and LO < HI")
    return low, high


@dataclass(frozen=True)
class FeedbackSettings:
    """How the feedback model is asked (shared by `compare` and `eval`)."""

    principle: str | None = None  # fixed comparison principle; None draws `principles` per pair
    principles: int = 1  # how many principles to draw (without repeats) and average: the ensemble
    swap: bool = True  # ask each principle in both orderings and average
    cot: bool = False  # chain of thought: generate reasoning before reading the answer letter
    clamp: tuple[float, float] | None = None  # bounds for each judgement's probability
    max_tokens: int = 128  # chain of thought: most tokens of reasoning
    temperature: float = 0.0  # chain of thought: 0 is greedy reasoning
    top_p: float = 0.95
    seed: int = 0  # drives the principle draws and sampled reasoning


def check_feedback_settings(constitution: Constitution, settings: FeedbackSettings) -> None:
    """Raise `CaiError` when the principle settings do not fit the constitution."""
    constitution.require_comparisons()
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
        shares the most KV cache between consecutive prompts."""
        i, j = pair
        orders = [(i, j), (j, i)] if self.settings.swap else [(i, j)]
        build = build_cot_comparison_messages if self.settings.cot else build_comparison_messages
        return [Judgement(principle.name, (a, b),
                          Question(build(conversation, responses[a], responses[b], principle),
                                   seed=derive_seed(self.settings.seed, pair_id, "reasoning", principle.name, a, b)))
                for principle in self.principles_for(pair_id) for a, b in orders]

    def answer_text(self, question: Question) -> str:
        """The rendered prompt whose next token is the answer: chat, (reasoning,) answer prefix."""
        reasoning = question.reasoning.strip() + COT_ANSWER_SEPARATOR if question.reasoning else ""
        return self.backend.render(question.messages) + reasoning + question.answer_prefix

    def check_fits(self, questions: Iterable[Question]) -> None:
        """Raise `InvalidRecord` when a question (plus its reasoning) cannot fit the context."""
        n_ctx = self.backend.n_ctx
        reserve = self.settings.max_tokens + 8 if self.settings.cot else 1  # reasoning, separator, letter
        for question in questions:
            needed = self.backend.count_tokens(self.answer_text(question)) + reserve
            if needed > n_ctx:
                what = f" with {self.settings.max_tokens} tokens of reasoning" if self.settings.cot else ""
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
        s = self.settings

        def requests_of(job: Job) -> list[GenerationRequest]:
            return [GenerationRequest(q.messages, s.max_tokens, s.temperature, s.top_p, q.seed)
                    for q in questions_of(job)]

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


# --- Evaluating a feedback model on comparisons whose answer is known -------------------------

@dataclass
class EvalItem:
    """One labeled comparison and the questions asked about it.

    A labeled pair (`chosen` is right) is asked like `compare` asks (principles, orderings); the
    paper's format (`prompt`, `corrects`, `incorrects`) is one fixed question whose options are
    the answers' continuations after the text they all start with (" (A)", " (B)" -> "A)", "B)").
    """

    record: Record
    questions: list[Question]
    judgements: list[Judgement] = field(default_factory=list)  # labeled pair only
    correct: frozenset[int] = frozenset()  # paper's format: which options are right
    letters: tuple[str, ...] = LETTERS  # how the options are named, for the position-bias count


@dataclass
class EvalOutcome:
    """How the feedback model did on one item."""

    record: Record
    p_correct: float  # probability given to the right answer (clamped like a label)
    confidence: float  # probability of the answer the model prefers
    score: float  # 1 right, 0 wrong, a share when it is a tie
    winners: list[str]  # the letter that won each question ('' on a tie)
    p_first: list[float]  # each question's probability of its first option, (A)
    right_letters: list[str]  # each question: the letter the right answer was shown as ('' if several)
    question_scores: list[float]  # each question on its own: right, wrong or tie


def eval_item(feedback: FeedbackModel, record: Record) -> EvalItem:
    """The item a labeled record describes; raises `InvalidRecord` for any other shape."""
    if "corrects" in record or "incorrects" in record:
        return paper_item(feedback, record)
    if "chosen" in record and "rejected" in record:
        validate_conversation(record)
        responses = []
        for key in ("chosen", "rejected"):
            if not isinstance(record[key], str) or not record[key].strip():
                raise InvalidRecord(f"'{key}' must be a non-empty string")
            responses.append(record[key])
        judgements = feedback.pair_judgements(record_id(record), judged_conversation(record), responses, (0, 1))
        return EvalItem(record, [j.question for j in judgements], judgements)
    raise InvalidRecord("expected a labeled pair ('prompt' or 'messages', 'chosen', 'rejected') or the "
                        "paper's format ('prompt', 'corrects', 'incorrects')")


def judged_conversation(record: Record) -> list[Message]:
    """The conversation responses answer (a trailing assistant turn is what they replace)."""
    messages = conversation_messages(record)
    return messages[:-1] if len(messages) > 1 and messages[-1]["role"] == "assistant" else messages


def paper_item(feedback: FeedbackModel, record: Record) -> EvalItem:
    """A question in the paper's evaluation format, asked in a chat: the prompt (without its
    closing "The answer is:") is the user's turn; the assistant's answer starts with that cue and
    the text every option starts with, so the next token tells the options apart."""
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRecord("'prompt' must be a non-empty string (the question, with its options)")
    options: list[str] = []
    for key in ("corrects", "incorrects"):
        value = record.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise InvalidRecord(f"'{key}' must be a non-empty list of non-empty strings")
        options += value
    start = os.path.commonprefix(options)
    rests = [option[len(start):] for option in options]
    if not all(rests) or len({rest[0] for rest in rests}) < len(rests):
        raise InvalidRecord(f"the answers {options} must differ right after the text they share ({start!r})")
    cue = ANSWER_CUE.search(prompt)
    question = prompt[:cue.start()].rstrip() if cue else prompt.strip()
    answer_prefix = cue.group(1) + start if cue else start.lstrip()
    content = question + ("\n\n" + COT_REQUEST if feedback.settings.cot else "")
    asked = Question([{"role": "user", "content": content}], answer_prefix, tuple(rests),
                     seed=derive_seed(feedback.settings.seed, record_id(record), "reasoning"))
    letters = tuple(rest.strip(" ()[]:.") or rest for rest in rests)
    return EvalItem(record, [asked], correct=frozenset(range(len(record["corrects"]))), letters=letters)


def eval_outcome(item: EvalItem, clamp: tuple[float, float] | None) -> EvalOutcome:
    """Score one answered item."""
    if item.judgements:
        p = pair_probability(item.judgements, 0, clamp)
        return EvalOutcome(
            item.record, p, max(p, 1.0 - p), tie_score(p, 1.0 - p),
            winners=[winner(j.question.probs, LETTERS) for j in item.judgements],
            p_first=[j.question.probs[0] for j in item.judgements],
            right_letters=["A" if j.order[0] == 0 else "B" for j in item.judgements],
            question_scores=[tie_score(j.probability_for(0), j.probability_for(1)) for j in item.judgements])
    probs = item.questions[0].probs
    if len(probs) == 2:  # a binary answer is clamped like a pair's label
        p = clamp_probability(sum(probs[i] for i in item.correct), clamp)
        probs = [p, 1.0 - p] if 0 in item.correct else [1.0 - p, p]
    p = sum(probs[i] for i in item.correct)
    best = max(probs)
    top = [i for i, q in enumerate(probs) if q == best]
    score = sum(i in item.correct for i in top) / len(top)
    right = [item.letters[i] for i in item.correct]
    first = min(range(len(item.letters)), key=lambda i: item.letters[i])  # the option shown first, (A)
    return EvalOutcome(item.record, p, best, score, [winner(probs, item.letters)], [probs[first]],
                       [right[0] if len(right) == 1 else ""], [score])


def tie_score(right: float, wrong: float) -> float:
    return 1.0 if right > wrong else 0.5 if right == wrong else 0.0


def winner(probs: Sequence[float], letters: Sequence[str]) -> str:
    """The letter of the most probable option; '' on a tie."""
    best = max(probs)
    top = [letter for letter, p in zip(letters, probs) if p == best]
    return top[0] if len(top) == 1 else ""


class EvalRun:
    """`eval` as a library: validate labeled records, answer their questions, score them."""

    def __init__(self, backend: Backend, constitution: Constitution, settings: FeedbackSettings):
        self.feedback = FeedbackModel(backend, constitution, settings)

    def validate(self, record: Record) -> None:
        self.feedback.check_fits(eval_item(self.feedback, record).questions)

    def __call__(self, records: Iterable[Record]) -> Iterator[EvalOutcome]:
        items = (eval_item(self.feedback, record) for record in records)
        for item in self.feedback.answer(items, lambda item: item.questions):
            yield eval_outcome(item, self.feedback.settings.clamp)


CALIBRATION_BINS = 10


def summarise(outcomes: list[EvalOutcome]) -> dict[str, Any]:
    """Accuracy, position bias and calibration over scored items, as JSON-ready data."""
    if not outcomes:
        return {"items": 0}
    questions = [(letter, p, s) for o in outcomes
                 for letter, p, s in zip(o.right_letters, o.p_first, o.question_scores)]
    winners = [w for o in outcomes for w in o.winners]
    letters = sorted({w for w in winners if w} | {letter for letter, _, _ in questions if letter})
    summary: dict[str, Any] = {
        "items": len(outcomes),
        "questions": len(questions),
        "accuracy": mean(o.score for o in outcomes),
        # Position bias: a model without it wins under each letter about as often as the right
        # answer is shown under it (half and half with --swap), and is as accurate under each.
        "letter_wins": {letter: mean(w == letter for w in winners) for letter in letters},
        "accuracy_by_right_letter": {letter: mean(s for right, _, s in questions if right == letter)
                                     for letter in letters if any(right == letter for right, _, _ in questions)},
        "mean_p_first": mean(p for _, p, _ in questions),
        "calibration": calibration(outcomes),
    }
    if ties := mean(w == "" for w in winners):
        summary["letter_wins"]["tie"] = ties
    kinds = sorted({str(o.record["kind"]) for o in outcomes if "kind" in o.record})
    if kinds:
        groups = {kind: [o for o in outcomes if str(o.record.get("kind")) == kind] for kind in kinds}
        summary["by_kind"] = {kind: {"items": len(group), "accuracy": mean(o.score for o in group)}
                              for kind, group in groups.items()}
    return rounded(summary)


def calibration(outcomes: list[EvalOutcome]) -> dict[str, Any]:
    """How well confidence matches accuracy: confidence bins of width 0.1, the expected
    calibration error (their accuracy gaps weighted by size), the Brier score and the log loss
    of the probability given to the right answer."""
    bins: dict[int, list[EvalOutcome]] = {}
    for outcome in outcomes:
        bins.setdefault(min(int(outcome.confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1), []).append(outcome)
    rows, gap = [], 0.0
    for index in sorted(bins):
        group = bins[index]
        confidence, accuracy = mean(o.confidence for o in group), mean(o.score for o in group)
        gap += len(group) * abs(confidence - accuracy)
        rows.append({"low": index / CALIBRATION_BINS, "high": (index + 1) / CALIBRATION_BINS,
                     "items": len(group), "confidence": confidence, "accuracy": accuracy})
    return {
        "ece": gap / len(outcomes),
        "brier": mean((1.0 - o.p_correct) ** 2 for o in outcomes),
        "log_loss": mean(-math.log(max(o.p_correct, 1e-12)) for o in outcomes),
        "bins": rows,
    }


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else 0.0


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded for a summary a person reads; the rest as it is."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
