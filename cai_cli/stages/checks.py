"""Is a revision an answer, is a generated prompt a request? Checks on what a model wrote
before it becomes training data.

Small models asked to revise often write something other than a reply to the user: nothing, a
text cut off at the token limit, talk *about* the response ("Here is the revised response",
"the assistant's last response"), their critique again, or sentences lifted from the few-shot
examples in front of them. They also write bare refusals ("I'm sorry, but I can't assist with
that."): harmless, but evasive, the opposite of what the paper trains for, and a fine-tune on them
learns to say that one sentence to anything that sounds risky. `revision_problems` names each
such problem; `revise` keeps the last good response when a revision has any, records the
problems in the history, and `train-sft` skips records that were never usably revised.

Asked for a new prompt in the vein of a few examples (`cai redteam`), models write the prompt
wrapped in other things ("Here is a new prompt:", quotes, list numbers), several prompts, an
answer or a refusal instead of a prompt, or one of the examples again. `extract_prompt` takes the
first prompt out of what was written, and `prompt_problem` names what makes it unusable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

from cai_cli.refusals import is_refusal

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
# A refusal gives a reason or a way forward when it has one of these words; a short refusal with
# none ("I'm sorry, but I can't assist with that.", "I can't help with that. Feel free to ask
# something else!") is evasive.
REASON = re.compile(
    r"\b(?:because|since|as (?:it|this|that|doing)|would|could|illegal|unlawful|law|crime|criminal|harm\w*|"
    r"hurt\w*|danger\w*|unsafe|risk\w*|unethical|wrong|abus\w*|privacy|consent|permission|instead|rather|suggest\w*|"
    r"recommend\w*|consider|try|contact|reach out|I (?:can|could) help|happy to)\b", re.IGNORECASE)
# A stock offer of help with *other* things ("Is there anything else I can help you with?") is
# no way forward for this request: the clauses that make one are left out before REASON is looked
# for, so "I'm sorry, but I can't assist with that. Is there anything else I can help you with?"
# stays bare.
GENERIC_OFFER = re.compile(r"\b(?:anything|something) else\b|\bother (?:questions?|requests?|topics?|tasks?)\b|"
                           r"\bany (?:more )?questions\b", re.IGNORECASE)
CLAUSE_BREAK = re.compile(r"[.!?;\n]+|,?\s+but\s+", re.IGNORECASE)
EVASIVE_WORDS = 30  # a refusal longer than this says something, whatever its words
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


def copies(text: str, source: str, similarity: float = COPY_SIMILARITY) -> bool:
    """Whether `text` is (nearly) `source` again, word for word."""
    a, b = words(text), words(source)
    if not a or not b:
        return False
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= similarity


def is_evasive(text: str) -> bool:
    """Whether `text` refuses without a reason or an alternative: a short refusal with none of
    the `REASON` words outside its stock offers of help with something else (`GENERIC_OFFER`)."""
    if not is_refusal(text) or len(words(text)) > EVASIVE_WORDS:
        return False
    return not any(REASON.search(clause) for clause in CLAUSE_BREAK.split(text) if not GENERIC_OFFER.search(clause))


def revision_problems(revision: str, truncated: bool, critique: str | None = None,
                      examples: Iterable[str] = (), own_text: str = "") -> list[str]:
    """What makes `revision` unusable as an answer, as short names (empty: usable):
    "empty", "truncated", "meta" (talks about the response instead of giving one),
    "copies-critique", "copies-example" (a run of words from a few-shot example that the
    record's own conversation, `own_text`, does not contain), "evasive" (a refusal that says
    neither why nor what the person could do instead)."""
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
    if is_evasive(revision):
        problems.append("evasive")
    return problems


# --- Generated prompts ---------------------------------------------------------------------------

# A line that announces what follows ("Here is a new prompt:", "Sure! Here's one:").
ANNOUNCEMENT = re.compile(r"^[^\n]{0,80}:\s*$")
# What a model puts in front of the prompt itself: list markers, "Prompt 3:", "New request:".
LEAD = re.compile(r"^\s*(?:[-*\u2022>]+\s*|\d+\s*(?:[.)]\s|:)\s*|#+\s*)?(?:\*\*)?"
                  r"(?:(?:my |a |the )?(?:new |another |next )?(?:prompt|request|question|example)"
                  r"(?:\s*(?:#\s*)?\d+)?\s*[:.-]\s*(?:\*\*)?\s*)?", re.IGNORECASE)
QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`", "*": "*"}
ECHO_SIMILARITY = 0.8  # this similar, word for word, to an example shown: a copy of it
INSTRUCTION_WORDS = 4  # a run of this many words from the request for a prompt: talk about the task

# An answer, refusal or comment instead of a request.
NOT_A_REQUEST = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|sorry|no|yes|note|here(?:'s| is| are)|"
    r"i(?:'m| am) (?:sorry|unable|not able|afraid)|i (?:can(?:no|')t|cannot|won'?t|will not)|"
    r"as an? (?:ai|language model|assistant)|this (?:prompt|request|question)|"
    r"the (?:ai|assistant|prompt|request))\b"
    r"|\b(?:new|another|more|similar|these|above|risky|dangerous|harmful|test) (?:prompts?|requests?)\b"
    r"|\b(?:an?|the) ai assistant\b",  # prompts speak to the assistant; this is talk about one
    re.IGNORECASE)
# Words that open a request: a question, or an instruction to the assistant.
REQUEST_OPENERS = frozenset("""
    write make give tell help explain show list find create generate draft compose describe suggest
    recommend teach plan design translate summarise summarize provide pretend act imagine convince
    build code solve calculate compute rewrite rephrase fix edit name compare outline say send share
    please let's can could would will should may might how what what's whats why where where's when
    which who who's whose is are do does did am was were have has
""".split())
REQUEST_PHRASES = ("i want ", "i need ", "i'd like ", "i would like ", "i wish ")


def extract_prompt(text: str) -> tuple[str, bool]:
    """The first prompt in what a model wrote, without announcements, list markers, labels and
    quotes; and whether it runs to the text's end (so a text cut off at --max-tokens cut it)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    while len(lines) > 1 and ANNOUNCEMENT.match(lines[0]):
        lines.pop(0)
    if not lines:
        return "", True
    prompt = LEAD.sub("", lines[0], count=1).strip()
    while len(prompt) > 1 and QUOTES.get(prompt[0]) == prompt[-1]:
        prompt = prompt[1:-1].strip()
    if prompt[:1] in QUOTES and prompt.count(prompt[0]) == 1 and prompt[0] != "'":
        prompt = prompt[1:].strip()  # an opening quote whose closing one was cut off
    return prompt, len(lines) == 1


def looks_like_request(text: str) -> bool:
    """Whether `text` asks something of an assistant: a question, or a sentence opening as an
    instruction or a wish does; an answer, a refusal or talk about prompts does not."""
    text = text.strip().replace("\u2019", "'")  # a curly apostrophe ("I’m sorry") is a straight one
    if len(words(text)) < 3 or NOT_A_REQUEST.search(text):
        return False
    sentences = [s.strip() for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s.strip()]
    for sentence in sentences:
        first = words(sentence)[:1]
        if sentence.endswith("?") or (first and first[0] in REQUEST_OPENERS):
            return True
        if sentence.lower().startswith(REQUEST_PHRASES):
            return True
    return "?" in text


def prompt_problem(prompt: str, truncated: bool, shots: Iterable[str], max_words: int,
                   instruction: str = "") -> str | None:
    """What makes a generated prompt unusable, as a short name (None: usable): "empty",
    "truncated" (cut off at --max-tokens), "too long" (more than `max_words` words),
    "not a request", "echo" (one of the `shots` it was shown again, nearly word for word or
    inside more text, or a run of words from the `instruction` that asked for it)."""
    if not prompt.strip():
        return "empty"
    if truncated:
        return "truncated"
    if len(words(prompt)) > max_words:
        return "too long"
    if not looks_like_request(prompt):
        return "not a request"
    if any(copies(prompt, shot, ECHO_SIMILARITY) or is_inside(shot, prompt) for shot in shots):
        return "echo"
    if shingles(prompt, INSTRUCTION_WORDS) & shingles(instruction, INSTRUCTION_WORDS):
        return "echo"
    return None


def is_inside(part: str, text: str) -> bool:
    """Whether all of `part`'s words appear, in a row, in `text`."""
    inner, outer = " ".join(words(part)), " ".join(words(text))
    return bool(inner) and f" {inner} " in f" {outer} "
