"""`eval`: a feedback model asked comparisons whose right answer is known, and scored.

Two input shapes:

- a labeled pair (`prompt` or `messages`, `chosen` = the better one, `rejected`), asked exactly as
  `compare` asks (see `stages/feedback.py`: principles, orderings, layout);
- the paper's evaluation format (`prompt` holding the question and its options, `corrects`,
  `incorrects` such as " (A)"), asked as one chat turn whose answer starts with the prompt's own
  "The answer is:" cue. With `swap` (the default) the option texts are found in the prompt
  ("(A) ...", "(B) ..." at the start of a line, optionally wrapped in [[[...]]]) and the item is
  asked a second time with them in reverse order, so that a model's letter bias cancels as it
  does for labeled pairs. A prompt whose options cannot be found is asked as written, once, and
  counted (`options_unparsed` in the summary).

The arithmetic over the scored items (accuracy, intervals, calibration) is in `cai_cli.metrics`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from cai_cli.backends import Backend
from cai_cli.constitution import Constitution
from cai_cli.metrics import EvalOutcome, mean
from cai_cli.prompts import COT_REQUEST, derive_seed
from cai_cli.records import JUDGE_KEY, InvalidRecord, Record, record_id, validate_conversation
from cai_cli.settings import FeedbackSettings
from cai_cli.stages.feedback import (LETTERS, FeedbackModel, Judgement, Question, clamp_probability,
                                     judged_conversation, pair_probability)
from cai_cli.streams import KeptRecords

# The paper's evaluation prompts end in this cue; in a chat it starts the assistant's answer.
ANSWER_CUE = re.compile(r"(The answer is:?)\s*$", re.IGNORECASE)
# An option in a paper-format prompt: "(A) " at the start of a line (the published files indent
# it by a space: " (A) [[[...]]]").
OPTION_MARKER = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]*", re.MULTILINE)


@dataclass
class EvalItem:
    """One labeled comparison and the questions asked about it.

    A labeled pair (`chosen` is right) is asked like `compare` asks; the paper's format is one or
    two questions (the options as written, then reversed) whose options are the answers'
    continuations after the text they all start with (" (A)", " (B)" -> "A)", "B)").
    """

    record: Record
    questions: list[Question]
    judgements: list[Judgement] = field(default_factory=list)  # labeled pair only
    correct: frozenset[int] = frozenset()  # paper's format: which options are right
    letters: tuple[str, ...] = LETTERS  # how the options are named, for the position-bias count
    # Paper's format, per question: the answer option each continuation stands for there (the
    # option whose text is shown under that letter); the identity for the prompt as written.
    shows: list[tuple[int, ...]] = field(default_factory=list)
    options_unparsed: bool = False  # paper's format: swapping asked for, options not found


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


def paper_item(feedback: FeedbackModel, record: Record) -> EvalItem:
    """A question in the paper's evaluation format, asked in a chat: the prompt (without its
    closing "The answer is:") is the user's turn; the assistant's answer starts with that cue and
    the text every option starts with, so the next token tells the options apart. With `swap`,
    asked again with the option texts in reverse order."""
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
    letters = tuple(rest.strip(" ()[]:.") or rest for rest in rests)
    asked = [(question, tuple(range(len(options))))]
    pieces = split_options(question, letters) if feedback.settings.swap else None
    if pieces is not None:
        asked.append(reversed_options(pieces, letters))
    cot = "\n\n" + COT_REQUEST if feedback.settings.cot else ""
    questions = [Question([{"role": "user", "content": text + cot}], answer_prefix, tuple(rests),
                          seed=derive_seed(feedback.settings.seed, record_id(record), "reasoning", *when))
                 for (text, _), when in zip(asked, [(), ("reversed",)])]
    return EvalItem(record, questions, correct=frozenset(range(len(record["corrects"]))), letters=letters,
                    shows=[shows for _, shows in asked],
                    options_unparsed=feedback.settings.swap and pieces is None)


def split_options(question: str, letters: Sequence[str]) -> list[str] | None:
    """A paper-format question cut around its option texts: [text up to the first option's text,
    text of the first option, text between, ..., text of the last option, the rest], so that
    joining the pieces gives the question back. The options are the lines starting with "(A)",
    "(B)", ... for `letters`, each exactly once and in alphabetical order; an option's text ends
    at its closing "]]]" when it is wrapped in [[[...]]], else where the next option starts (the
    last: at the end of the question, and it may not hold a blank line, which could as well
    start more of the question). None when the options cannot be found that way."""
    marks = [m for m in OPTION_MARKER.finditer(question) if m.group(1) in letters]
    if len(marks) < 2 or [m.group(1) for m in marks] != sorted(letters):
        return None
    pieces = [question[:marks[0].end()]]
    for k, mark in enumerate(marks):
        end = marks[k + 1].end() if k + 1 < len(marks) else len(question)
        segment = question[mark.end():marks[k + 1].start() if k + 1 < len(marks) else len(question)]
        if segment.startswith("[[[") and "]]]" in segment:
            length = segment.index("]]]") + 3
        else:
            length = len(segment.rstrip())
            if k + 1 == len(marks) and "\n\n" in segment[:length]:
                return None  # the last text, or the last text and then more of the question?
        if not length:
            return None
        pieces += [segment[:length], question[mark.end() + length:end]]
    return pieces


def reversed_options(pieces: list[str], letters: Sequence[str]) -> tuple[str, tuple[int, ...]]:
    """The question with its option texts in reverse order, and which answer option each
    continuation now stands for: the text shown under the k-th letter is the one the prompt
    showed under the k-th letter from the end."""
    bodies = pieces[1::2]
    text = "".join(piece if i % 2 == 0 else bodies[len(bodies) - 1 - i // 2] for i, piece in enumerate(pieces))
    order = sorted(letters)
    shows = tuple(letters.index(order[len(order) - 1 - order.index(letter)]) for letter in letters)
    return text, shows


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
    # The paper's format: each question's probabilities, per answer option (not per letter),
    # each clamped like a pair's label when the answer is binary, then averaged over questions.
    per_question = [option_probabilities(q.probs, shows) for q, shows in zip(item.questions, item.shows)]
    averaged = [mean(column) for column in zip(*(clamped(probs, item.correct, clamp) for probs in per_question))]
    p, score, best = scored(averaged, item.correct)
    first = min(range(len(item.letters)), key=lambda i: item.letters[i])  # the option shown first, (A)
    right_letters = []
    for shows in item.shows:
        right = [item.letters[i] for i, option in enumerate(shows) if option in item.correct]
        right_letters.append(right[0] if len(right) == 1 else "")
    return EvalOutcome(item.record, p, best, score,
                       winners=[winner(q.probs, item.letters) for q in item.questions],
                       p_first=[q.probs[first] for q in item.questions],
                       right_letters=right_letters,
                       question_scores=[scored(probs, item.correct)[1] for probs in per_question],
                       options_unparsed=item.options_unparsed)


def option_probabilities(probs: Sequence[float], shows: Sequence[int]) -> list[float]:
    """A question's probabilities per continuation, rearranged per answer option."""
    by_option = [0.0] * len(probs)
    for continuation, option in enumerate(shows):
        by_option[option] = probs[continuation]
    return by_option


def clamped(probs: list[float], correct: frozenset[int], clamp: tuple[float, float] | None) -> list[float]:
    """A binary answer clamped like a pair's label; more options are left as they are."""
    if len(probs) != 2:
        return probs
    p = clamp_probability(sum(probs[i] for i in correct), clamp)
    return [p, 1.0 - p] if 0 in correct else [1.0 - p, p]


def scored(probs: Sequence[float], correct: frozenset[int]) -> tuple[float, float, float]:
    """The probability of the right answer, the score (a share of it on a tie for the top) and
    the top probability."""
    best = max(probs)
    top = [i for i, q in enumerate(probs) if q == best]
    return sum(probs[i] for i in correct), sum(i in correct for i in top) / len(top), best


def tie_score(right: float, wrong: float) -> float:
    return 1.0 if right > wrong else 0.5 if right == wrong else 0.0


def winner(probs: Sequence[float], letters: Sequence[str]) -> str:
    """The letter of the most probable option; '' on a tie."""
    best = max(probs)
    top = [letter for letter, p in zip(letters, probs) if p == best]
    return top[0] if len(top) == 1 else ""


# What an `--items` line keeps of an outcome beyond `p_correct` and `correct`, under "scored":
# everything the summary counts, so that `eval --resume` can count it again without asking.
SCORED_FIELDS = ("confidence", "winners", "p_first", "right_letters", "question_scores", "options_unparsed")


# What an item's judgement depends on in its record (the rest, such as 'kind', only labels it).
JUDGED_FIELDS = ("system", "prompt", "messages", "chosen", "rejected", "corrects", "incorrects")


def item_key(feedback: FeedbackModel, record: Record) -> str:
    """The content key of an item: its judged texts and the feedback model's settings."""
    return feedback.judge_key({name: record[name] for name in JUDGED_FIELDS if name in record})


def item_record(outcome: EvalOutcome, key: str) -> Record:
    """The `--items` line of an outcome: the input record with 'p_correct', 'correct', 'scored'
    and its content key (`item_key`), which `eval --resume` matches."""
    return {**outcome.record, "p_correct": round(outcome.p_correct, 6), "correct": outcome.score,
            "scored": {name: getattr(outcome, name) for name in SCORED_FIELDS}, JUDGE_KEY: key}


def validate_item_record(record: Record) -> None:
    scored = record.get("scored")
    if not isinstance(scored, dict) or not set(SCORED_FIELDS) <= set(scored) or "p_correct" not in record:
        raise InvalidRecord("not an item of cai eval --items with its 'scored' part (written by an older cai "
                            "eval?); run again without --resume to start the file afresh")


def kept_outcome(line: Record) -> EvalOutcome:
    """The outcome an `--items` line keeps, for `eval --resume`."""
    record = {key: value for key, value in line.items() if key not in ("p_correct", "correct", "scored", JUDGE_KEY)}
    return EvalOutcome(record, float(line["p_correct"]), score=float(line["correct"]),
                       **{name: line["scored"][name] for name in SCORED_FIELDS})


class EvalRun:
    """`eval` as a library: validate labeled records, answer their questions, score them.
    `kept` holds the `--items` lines of an earlier run (resume): an item with the same id and
    content key is not asked again (its outcome is among `kept.reused()`)."""

    def __init__(self, backend: Backend, constitution: Constitution, settings: FeedbackSettings,
                 kept: KeptRecords | None = None):
        self.feedback = FeedbackModel(backend, constitution, settings)
        self.kept = kept

    def key(self, record: Record) -> str:
        return item_key(self.feedback, record)

    def validate(self, record: Record) -> None:
        item = eval_item(self.feedback, record)
        if not (self.kept and self.kept.holds(record_id(record), self.key(record))):
            self.feedback.check_fits(item.questions)

    def __call__(self, records: Iterable[Record]) -> Iterator[EvalOutcome]:
        items = (eval_item(self.feedback, record) for record in records
                 if not (self.kept and self.kept.claim(record_id(record), self.key(record))))
        for item in self.feedback.answer(items, lambda item: item.questions):
            yield eval_outcome(item, self.feedback.settings.clamp)
