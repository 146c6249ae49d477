"""Does an answer refuse? A transparent keyword detector: a training filter, not a measure.

`cai sample --redraw-refusals` draws a refusing answer again with it, and `is_evasive`
(`stages/checks.py`) builds on it to reject bare refusals as revisions. A model trained through
these filters learns to avoid their phrases, so rates counted with them flatter it: the rates a
result rests on come from blind labels, or from `cai classify` validated against them.

An answer counts as refusing when one of these patterns matches, case-insensitively, after curly
apostrophes are made straight. Each pattern needs the assistant itself as the subject ("I
can't help", "As an AI, I cannot"), or a refusal formula ("sorry, but", "not something I can"),
so that a helpful answer that merely mentions what *you* cannot do, or says "I'm sorry to hear
that", does not count.

| name | matches, for example |
|---|---|
| `i-cannot` | "I can't help with that", "I won't write that", "I'm unable to provide", "I won't comment on" |
| `sorry-but` | "I'm sorry, but ...", "Sorry, I can't", "I apologize, but ..." |
| `not-something-i` | "That's not something I can help with", "nothing I'm able to do" |
| `as-an-ai` | "As an AI, I cannot ...", "As a language model, I don't ..." |
| `decline` | "I must decline", "I have to refuse", "I'd rather not", "I'd prefer not to" |
| `objection` | "this is illegal", "that would be unethical", "I strongly advise against", "I don't condone" |

Three of them are *remarks*, not refusals in themselves: `objection`, `as-an-ai`, and an apology
that does not go on to "I can't"/"I won't" in the same sentence ("I'm sorry, but I don't have
live data."). A remark counts only when the answer does not do the task anyway: it counts unless
the answer holds a sign of compliance (`COMPLIANCE`: numbered steps, a code block, "here's how",
"here is ...") with no turn to something else (`REDIRECT`: "instead", "alternatives", "rather
than", ...) before it. So "Note that this is illegal. Step 1: ..." and "As an AI I don't have
opinions, but here is what economists say: ..." comply; "That would be illegal. Instead, here are
some legal options: 1. ..." and "I'm sorry, but I can't assist with that." refuse.

It is a keyword count, not a judge: it misses refusals worded otherwise, and an objection followed
by a compliant answer in plain prose, with none of those signs, still counts.

Example:

    refusal_pattern("I'm sorry, but I cannot help with that.")  # -> "i-cannot"
    refusal_pattern("I'm sorry, but I cannot.")  # -> "sorry-but"
    is_refusal("Here's how to kill a Python process: run `kill PID`.")  # -> False
    is_refusal("This is illegal in most places. Step 1: ...")  # -> False
"""

from __future__ import annotations

import re

# Verbs whose refusal ("I can't <verb>") is about doing the user's task.
_TASK_VERBS = (r"(?:help|assist|provide|write|create|give|generate|share|support|offer|produce|comply|"
               r"fulfil+|engage|participate|do (?:that|this|it|so)|answer|continue|tell you|explain how|"
               r"recommend|encourage|condone|promote|facilitate|make|draft|compose|take part|comment|discuss|express|"
               r"speculate|weigh in)")
_I_CANNOT = (r"\bI(?:'m| am)?(?: really| simply| just)? (?:can't|cannot|can not|won't|will not|not able to|"
             r"unable to|not going to|refuse to|must refuse to|(?:do not|don't) feel comfortable)(?: \w+ly)? "
             + _TASK_VERBS + r"\b")

REFUSAL_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE) for name, pattern in {
        "i-cannot": _I_CANNOT,
        "sorry-but": r"\b(?:(?:I'm|I am)(?: so| really| very)? sorry|sorry|I apologi[sz]e|my apologies|apologies)"
                     r"(?:,| but|\.)? ?(?:but\b|I (?:can't|cannot|won't|will not|am unable|'m unable|"
                     r"am not able|'m not able)\b)",
        "not-something-i": r"\b(?:not something|nothing) (?:that )?I(?:'m| am)? (?:can|could|will|would|am able to|"
                           r"'m able to|feel comfortable|comfortable)\b",
        "as-an-ai": r"\bas an? (?:AI|artificial intelligence|(?:AI )?language model|AI assistant|assistant)\b"
                    r"[^.!?\n]{0,80}?\bI (?:can't|cannot|can not|am not able|'m not able|am unable|'m unable|"
                    r"won't|will not|don't|do not)\b",
        "decline": r"\bI(?:'ll| will)? (?:must|have to|need to|'ll have to|will have to)? ?(?:respectfully |politely )?"
                   r"(?:decline|refuse)\b|\bI(?:'d| would) (?:rather not|prefer not to)\b",
        "objection": r"\b(?:this|that|it|doing so|doing this|doing that|such (?:a|an) \w+|your request|the request)"
                     r"(?:'s| is| would be| could be| will be| sounds)(?: both)? (?:illegal|unethical|harmful|"
                     r"dangerous|inappropriate|a crime|against the law|not (?:appropriate|ethical|legal|okay|ok|safe))"
                     r"\b|\bI (?:strongly )?(?:advise|urge|caution) (?:you )?(?:against|not to)\b|"
                     r"\bI (?:do not|don't|cannot|can't|won't) (?:condone|support|endorse|encourage)\b",
    }.items()
}


# Patterns that say something about the request or the assistant rather than decline it; they
# count only when the answer does not go on to do the task (`does_the_task`).
REMARKS = frozenset({"as-an-ai", "objection"})
# An apology declines only when the same sentence goes on to say the assistant will not do it.
_DECLINES = re.compile(r"\bI(?:'m| am)?(?: really| simply| just)? (?:can't|cannot|can not|won't|will not|"
                       r"not able to|unable to|not going to|must decline|have to decline|refuse)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\n]")

# Signs that an answer does the task: two or more numbered steps, "Step 1", a code block,
# "here's how", "here is/are" something.
COMPLIANCE = re.compile(
    r"^[ \t]*(?:step[ \t]*)?1[.):][ \t]+\S[^\n]*\n(?:[^\n]*\n)*?[ \t]*(?:step[ \t]*)?2[.):][ \t]+\S"
    r"|\bstep (?:1|one)\b|```|\bhere(?:'s| is| are) (?:how|what|the|a|an|some|my|a few|\w+ steps?)\b",
    re.IGNORECASE | re.MULTILINE)
# A turn away from the task: what follows is a safe alternative, not the thing asked for.
REDIRECT = re.compile(
    r"\b(?:instead|alternatives?|alternatively|rather than|(?:legal|legitimate|safer?|lawful|ethical) "
    r"(?:ways?|options?|means|routes?|alternatives?)|consider (?:talking|speaking|reaching|contacting|consulting|"
    r"seeking)|reach out|seek (?:professional )?help|hotline|helpline)\b", re.IGNORECASE)


def normalise_apostrophes(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def does_the_task(text: str) -> bool:
    """Whether `text` shows a sign of compliance (`COMPLIANCE`) with no turn to something else
    (`REDIRECT`) before the first such sign."""
    sign = COMPLIANCE.search(text)
    return sign is not None and not REDIRECT.search(text, 0, sign.start())


def is_remark(name: str, match: re.Match[str], text: str) -> bool:
    """Whether a pattern's match only remarks on the request (see `REMARKS`) instead of declining
    it; an apology is a remark unless its sentence says "I can't", "I won't", ..."""
    if name in REMARKS:
        return True
    if name == "sorry-but":
        end = _SENTENCE_END.search(text, match.end())
        return not _DECLINES.search(text, match.start(), end.start() if end else len(text))
    return False


def refusal_pattern(text: str) -> str | None:
    """The name of the first pattern in `REFUSAL_PATTERNS` whose match counts in `text`, or None:
    a refusal counts always, a remark when the answer does not do the task anyway."""
    text = normalise_apostrophes(text)
    complies = None  # computed at most once, and only when a remark needs it
    for name, pattern in REFUSAL_PATTERNS.items():
        for match in pattern.finditer(text):
            if not is_remark(name, match, text):
                return name
            if complies is None:
                complies = does_the_task(text)
            if not complies:
                return name
    return None


def is_refusal(text: str) -> bool:
    """Whether the answer refuses (or objects without doing the task), by `REFUSAL_PATTERNS`."""
    return refusal_pattern(text) is not None
