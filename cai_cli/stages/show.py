"""`show`: any stage's records as a before/after table a person reads at a glance.

For each record: the prompt, the first answer (`initial_response`, or `response` when no revision
has been made), what each critique/revision round did (the revision was used, or the answer was
kept because a check in `stages/checks.py` rejected the revision, named by its problems) and the
final answer. Records without rounds (`cai sample` output) show the prompt and the answer.

The summary line counts the answers a revision changed and the answers that decline with a
reason, before and after. "Declines with a reason" is the keyword refusal detector
(`cai_cli/refusals.py`) minus the bare refusals that `is_evasive` flags: a training filter's
count, a quick look and not a measure (blind labels or `cai classify` are that).

Example:

    shown = [describe(record) for record in records]
    print(plain_text(shown, width=100))
    print(summary_line(shown))
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

from cai_cli.prompts import prompt_messages
from cai_cli.records import InvalidRecord, Record, record_id, type_name, validate_conversation
from cai_cli.refusals import is_refusal
from cai_cli.stages.checks import is_evasive
from cai_cli.stages.critique import revision_history

CUT_MARK = "[cut off at --max-tokens]"


@dataclass
class Round:
    """One critique/revision round, as the table shows it."""

    number: int
    principle: str
    outcome: str  # "revised", "kept" (the revision was rejected) or "critiqued" (no revision yet)
    problems: list[str] = field(default_factory=list)  # the checks that rejected the revision
    critique_cut: bool = False

    def describe(self) -> str:
        """"1 revised", "2 kept: truncated, meta", "1 critiqued, no revision yet"."""
        text = {"revised": "revised", "critiqued": "critiqued, no revision yet"}.get(self.outcome, "kept")
        if self.problems:
            text += ": " + ", ".join(self.problems)
        if self.critique_cut:
            text += " (critique cut off)"
        return f"{self.number} {text}"


@dataclass
class Shown:
    """What the table shows of one record."""

    id: str
    prompt: str
    first: list[str]  # the first answer(s); several for `cai sample -n K` output
    final: str | None  # None: the record has had no critique/revision round
    rounds: list[Round]
    first_cut: bool = False
    final_cut: bool = False

    @property
    def changed(self) -> bool:
        return self.final is not None and self.final != self.first[0]

    @property
    def answers_now(self) -> list[str]:
        return [self.final] if self.final is not None else self.first


def validate_shown(record: Record) -> None:
    """A record `show` can display: a conversation with `response` (or `responses`) and, if
    it has any, well-formed `revisions`."""
    validate_conversation(record)
    if "response" in record:
        if not isinstance(record["response"], str):
            raise InvalidRecord(f"'response' must be a string, not {type_name(record['response'])}")
    elif "responses" in record:
        answers = record["responses"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise InvalidRecord("'responses' must be a non-empty list of strings")
    else:
        raise InvalidRecord("record has no 'response' or 'responses' to show (run `cai sample` first)")
    if "initial_response" in record and not isinstance(record["initial_response"], str):
        raise InvalidRecord(f"'initial_response' must be a string, not {type_name(record['initial_response'])}")
    for entry in revision_history(record):
        problems = entry.get("problems", [])
        if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
            raise InvalidRecord("a revision's 'problems' must be a list of strings")


def prompt_text(record: Record) -> str:
    """The request the answer responds to: the prompt, or the conversation's last user turn
    (with a note of the turns before it)."""
    if "prompt" in record:
        return record["prompt"]
    messages = [m for m in prompt_messages(record) if m["role"] != "system"]
    earlier = len(messages) - 1
    last = messages[-1]["content"] if messages else ""
    return f"({earlier} earlier turns) {last}" if earlier > 0 else last


def describe(record: Record) -> Shown:
    """The table's view of one record (checked with `validate_shown`)."""
    history = revision_history(record)
    rounds = []
    for number, entry in enumerate(history, 1):
        if "revision" not in entry:
            outcome = "critiqued"
        else:
            outcome = "kept" if entry.get("problems") else "revised"
        rounds.append(Round(number, str(entry.get("principle", "")), outcome, list(entry.get("problems", [])),
                            bool(entry.get("critique_truncated"))))
    now_cut = bool(record.get("response_truncated"))
    if "responses" in record and "response" not in record:
        cut = record.get("responses_truncated") or []
        return Shown(record_id(record), prompt_text(record), list(record["responses"]), None, rounds,
                     first_cut=any(cut) if isinstance(cut, list) else False)
    if not history:
        return Shown(record_id(record), prompt_text(record), [record["response"]], None, rounds, first_cut=now_cut)
    first = record.get("initial_response", record["response"])
    # `revise` clears response_truncated when a revision replaces the answer; while it has not,
    # the flag still belongs to the first answer.
    return Shown(record_id(record), prompt_text(record), [first], record["response"], rounds,
                 first_cut=now_cut and first == record["response"], final_cut=now_cut)


def declines_with_reason(text: str) -> bool:
    """A refusal (keyword detector) that is not a bare one (`is_evasive`)."""
    return is_refusal(text) and not is_evasive(text)


def summary_line(shown: list[Shown]) -> str:
    """One line: how many answers the rounds changed, and how many decline with a reason."""
    total = len(shown)
    explained_now = sum(all(declines_with_reason(a) for a in s.answers_now) for s in shown)
    bare_now = sum(any(is_evasive(a) for a in s.answers_now) for s in shown)
    keyword = "(keyword checks)"
    if not any(s.rounds for s in shown):
        return (f"{total} records; {explained_now} decline with a reason, {bare_now} decline bare "
                f"{keyword}")
    with_rounds = [s for s in shown if s.rounds]
    changed = sum(s.changed for s in with_rounds)
    explained_before = sum(declines_with_reason(s.first[0]) for s in with_rounds)
    explained_after = sum(declines_with_reason(s.final) for s in with_rounds)
    kept = sum(r.outcome == "kept" for s in with_rounds for r in s.rounds)
    made = sum(r.outcome != "critiqued" for s in with_rounds for r in s.rounds)
    return (f"{changed} of {len(with_rounds)} answers changed ({made - kept} of {made} revisions used); "
            f"declining with a reason: {explained_before} before, {explained_after} after {keyword}")


def clip(text: str, words: int) -> str:
    """`text` cut after its first `words` words (0: whole), saying how many were left out."""
    text = text.strip()
    spans = [m.end() for m in re.finditer(r"\S+", text)]
    if not words or len(spans) <= words:
        return text
    # Cut inside the text itself, so that its line breaks survive.
    return f"{text[:spans[words - 1]]} ... (+{len(spans) - words} words)"


def answer_text(texts: list[str], cut: bool, words: int) -> str:
    shown = [clip(t, words) for t in texts]
    body = shown[0] if len(shown) == 1 else "\n".join(f"({i}) {t}" for i, t in enumerate(shown, 1))
    return f"{body} {CUT_MARK}" if cut else body


def table(shown: list[Shown], words: int) -> Any:
    """A rich Table: prompt, first answer, rounds, final answer (or prompt and answer alone
    when no record has had a round)."""
    from rich.table import Table
    from rich.text import Text

    with_rounds = any(s.rounds for s in shown)
    grid = Table(show_lines=True, expand=True, header_style="bold")
    grid.add_column("prompt", ratio=2)
    grid.add_column("first answer" if with_rounds else "answer", ratio=3)
    if with_rounds:
        grid.add_column("rounds", min_width=12, max_width=20, overflow="fold")
        grid.add_column("final answer", ratio=3)
    for s in shown:
        prompt = Text()
        prompt.append(s.id, style="dim")
        prompt.append("\n" + s.prompt)
        first = Text(answer_text(s.first, s.first_cut, words))
        if not with_rounds:
            grid.add_row(prompt, first)
            continue
        rounds = Text()
        for r in s.rounds:
            style = {"revised": "green", "kept": "yellow"}.get(r.outcome, "dim")
            rounds.append(("\n" if rounds else "") + r.describe(), style=style)
        if s.final is None:
            final = Text("(no rounds)", style="dim")
        elif not s.changed:
            final = Text("(unchanged)", style="dim")
        else:
            final = Text(answer_text([s.final], s.final_cut, words), style="bold")
        grid.add_row(prompt, first, rounds or Text("-", style="dim"), final)
    return grid


def plain_text(shown: list[Shown], width: int, words: int) -> str:
    """The same content as `table`, as labelled blocks of plain text wrapped to `width`:
    for a pipe, a file or grep, with no colour codes."""
    label_width = max([len("answer"), *(len(f"round {len(s.rounds)}") for s in shown)]) + 2

    def field_lines(label: str, text: str) -> list[str]:
        indent = " " * (label_width + 2)
        lines = []
        for k, paragraph in enumerate(text.splitlines() or [""]):
            head = f"  {label + ':':<{label_width}}" if k == 0 else indent
            lines += textwrap.wrap(paragraph, width, initial_indent=head, subsequent_indent=indent,
                                   break_long_words=True) or [head.rstrip()]
        return lines

    blocks = []
    for s in shown:
        lines = [s.id, *field_lines("prompt", s.prompt)]
        if s.final is None and not s.rounds:
            lines += field_lines("answer", answer_text(s.first, s.first_cut, words))
        else:
            lines += field_lines("first", answer_text(s.first, s.first_cut, words))
            for r in s.rounds:
                text = r.describe().split(" ", 1)[1]
                lines += field_lines(f"round {r.number}", f"{text} [{r.principle}]" if r.principle else text)
            final = "(unchanged)" if not s.changed else answer_text([s.final], s.final_cut, words)
            lines += field_lines("final", final)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
