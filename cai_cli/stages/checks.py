"""Is a revision an answer? Checks on what a model wrote before it becomes training data.

Small models asked to revise often write something other than a reply to the user: nothing, a
text cut off at the token limit, talk *about* the response ("Here is the revised response",
"the assistant's last response"), their critique again, or sentences lifted from the few-shot
examples in front of them. `revision_problems` names each such problem; `revise` keeps the last
good response when a revision has any, records the problems in the history, and `train-sft`
skips records that were never usably revised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

# Text *about* the conversation instead of a reply in it. Kept narrow: a refusal that explains
# itself ("I can't help with that, because ...") must not match.
META_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(?:the|my|your|this|that) (?:previous|last|original|earlier|above|initial|prior) "
    r"(?:response|answer|reply|message)\b",
    r"\bthe (?:ai )?assistant(?:'s)? (?:\w+ )?(?:response|answer|reply|message)s?\b",
    r"\b(?:critique|revision) ?request\b",
    r"^\s*(?:critique|revision|revised response|rewritten response)\s*:",
    r"\bthe (?:human|user)'s (?:request|question|prompt)\b",
    r"\brewrit\w* (?:your|my|the|this) (?:last |previous )?(?:reply|response|answer)\b",
    r"\b(?:your|my) (?:last |previous |original |earlier )?reply\b",
    r"^\s*(?:my|the|this) (?:last |previous )?(?:reply|response|answer) (?:is|was|does|did|encourages|contains|"
    r"helps|gives|provides)\b",
    r"\bhere(?:'s| is) (?:a|the|my) (?:revised|rewritten|updated|new|improved) "
    r"(?:version|response|answer|reply)\b",
)]
# A leading line that only announces the answer ("Revised response:", "Here's a rewritten
# version:") is cut off rather than counted against the revision.
PREAMBLE = re.compile(
    r"^\s*(?:(?:here(?:'s| is) )?(?:a |the |my )?(?:revised|rewritten|updated|improved|new)"
    r"(?: version of the| version)?(?: response| answer| reply)?|revision|response)\s*:\s*\n*",
    re.IGNORECASE)
COPY_SIMILARITY = 0.6  # a revision this similar to its critique is the critique again
SHARED_WORDS = 8  # a run of this many words from a few-shot example, not from the record: copied


def strip_preamble(text: str) -> str:
    """`text` without a leading "Revised response:"-style announcement and wrapping quotes."""
    text = PREAMBLE.sub("", text.strip(), count=1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def shingles(text: str, size: int = SHARED_WORDS) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}


def is_meta(text: str) -> bool:
    return any(pattern.search(text) for pattern in META_PATTERNS)


def copies(text: str, source: str) -> bool:
    """Whether `text` is (nearly) `source` again, word for word."""
    a, b = words(text), words(source)
    if not a or not b:
        return False
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= COPY_SIMILARITY


def revision_problems(revision: str, truncated: bool, critique: str | None = None,
                      examples: Iterable[str] = (), own_text: str = "") -> list[str]:
    """What makes `revision` unusable as an answer, as short names (empty: usable):
    "empty", "truncated", "meta" (talks about the response instead of giving one),
    "copies-critique", "copies-example" (a run of words from a few-shot example that the
    record's own conversation, `own_text`, does not contain)."""
    if not revision.strip():
        return ["empty"]
    problems = []
    if truncated:
        problems.append("truncated")
    if is_meta(revision):
        problems.append("meta")
    if critique and copies(revision, critique):
        problems.append("copies-critique")
    borrowed = shingles(revision) - shingles(own_text)
    if borrowed and any(borrowed & shingles(example) for example in examples):
        problems.append("copies-example")
    return problems
