"""Chat messages for each step of the method: the conversation, critique, revision, comparison.

Every builder returns a list of `{"role", "content"}` messages; the backend renders them with the
model's own chat template. Few-shot exchanges become earlier turns of the same chat, so a chat
model sees worked examples of exactly the turn it is asked to take.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from cai_cli.constitution import ComparisonPrinciple, CritiquePrinciple, FewShotExample

Message = dict[str, str]


def conversation_messages(record: dict[str, Any], system: str | None = None) -> list[Message]:
    """The conversation a record asks the model to continue: `messages`, or `prompt` as one
    user turn, with an optional system message in front (the record's own `system` wins)."""
    if "messages" in record:
        messages = [dict(m) for m in record["messages"]]
    else:
        messages = [{"role": "user", "content": record["prompt"]}]
    system = record.get("system", system)
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def prompt_messages(record: dict[str, Any], system: str | None = None) -> list[Message]:
    """The conversation an answer responds to: `conversation_messages` without a trailing
    assistant turn, which is the answer that `response`/`responses`/`chosen` replace. Every
    stage that puts an answer after a record's conversation starts from this."""
    messages = conversation_messages(record, system)
    if len(messages) > 1 and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def answered_conversation(record: dict[str, Any], response: str) -> list[Message]:
    """The record's conversation with `response` as the assistant's answer to it (in place of
    the conversation's own last answer, if it ends with one)."""
    return prompt_messages(record) + [{"role": "assistant", "content": response}]


def few_shot_turns(examples: list[FewShotExample], with_critique: bool = True) -> list[Message]:
    """Worked examples as earlier chat turns: prompt, response, (critique request, critique,)
    revision request, revision."""
    turns: list[Message] = []
    for example in examples:
        turns += [{"role": "user", "content": example.prompt},
                  {"role": "assistant", "content": example.response}]
        if with_critique:
            turns += [{"role": "user", "content": example.critique_request},
                      {"role": "assistant", "content": example.critique}]
        turns += [{"role": "user", "content": example.revision_request},
                  {"role": "assistant", "content": example.revision}]
    return turns


def build_critique_messages(record: dict[str, Any], principle: CritiquePrinciple,
                            few_shot: list[FewShotExample]) -> list[Message]:
    """Ask the model to critique the record's current `response` under one principle."""
    conversation = answered_conversation(record, record["response"])
    return (lead_system(conversation) + few_shot_turns(few_shot) + without_system(conversation)
            + [{"role": "user", "content": principle.critique}])


def build_revision_messages(record: dict[str, Any], principle: CritiquePrinciple, critique: str | None,
                            few_shot: list[FewShotExample]) -> list[Message]:
    """Ask for the revision that goes with `principle`; `critique=None` revises directly,
    without a critique turn (the paper's ablation)."""
    conversation = answered_conversation(record, record["response"])
    turns = lead_system(conversation) + few_shot_turns(few_shot, with_critique=critique is not None)
    turns += without_system(conversation)
    if critique is not None:
        turns += [{"role": "user", "content": principle.critique},
                  {"role": "assistant", "content": critique}]
    return turns + [{"role": "user", "content": principle.revision}]


def lead_system(messages: list[Message]) -> list[Message]:
    return messages[:1] if messages and messages[0]["role"] == "system" else []


def without_system(messages: list[Message]) -> list[Message]:
    return messages[1:] if lead_system(messages) else messages


def format_transcript(messages: list[Message]) -> str:
    """A conversation as plain `Human: ... / Assistant: ...` text, for quoting it inside a question."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m['role']]}: {m['content'].strip()}" for m in messages)


# How a comparison question is laid out (`--layout`):
# - "responses-first": the conversation, the two responses, then the principle's question. All
#   the questions about one ordering of a pair share everything up to the question, so a
#   backend reads the responses once for the whole principle ensemble (llama.cpp reuses its KV
#   cache, transformers computes the shared prefix once per batch).
# - "paper": the paper's order, the principle's question before the options; every principle
#   re-reads both responses.
COMPARISON_LAYOUTS = ("responses-first", "paper")
DEFAULT_COMPARISON_LAYOUT = "responses-first"


def build_comparison_messages(conversation: list[Message], first: str, second: str,
                              principle: ComparisonPrinciple, layout: str = DEFAULT_COMPARISON_LAYOUT) -> list[Message]:
    """The multiple-choice question of RL-CAI: the conversation, one principle, options (A)/(B),
    laid out as `layout` says (see COMPARISON_LAYOUTS). The backend appends the answer prefix
    (`ANSWER_PREFIX`) to the assistant's turn."""
    transcript = f"Consider this conversation between a human and an assistant:\n\n{format_transcript(conversation)}\n\n"
    options = f"(A) {first.strip()}\n(B) {second.strip()}"
    if layout == "paper":
        question = f"{transcript}{principle.text}\nOptions:\n{options}"
    elif layout == "responses-first":
        # Whatever differs between the principles comes last: the question alone (the chat
        # template's end of turn and the answer prefix follow). A reminder of the letters after
        # it ("Answer (A) or (B).") cost 7 tokens per question and, ending in "(B)", pushed the
        # embedded model to answer (B) every time.
        question = f"{transcript}Two possible replies of the assistant:\n{options}\n\n{principle.text}"
    else:
        raise ValueError(f"unknown comparison layout {layout!r}: choose one of {', '.join(COMPARISON_LAYOUTS)}")
    return [{"role": "user", "content": question}]


ANSWER_PREFIX = "The answer is: ("

# Chain of thought: the question asks for reasoning first; the model's reasoning becomes the
# start of its answer, followed by this separator and ANSWER_PREFIX.
COT_REQUEST = "Think it through step by step first, then say which option is better."
COT_ANSWER_SEPARATOR = "\n\n"


def build_cot_comparison_messages(conversation: list[Message], first: str, second: str,
                                  principle: ComparisonPrinciple, layout: str = DEFAULT_COMPARISON_LAYOUT) -> list[Message]:
    """The comparison question, asking for step-by-step reasoning before the answer."""
    messages = build_comparison_messages(conversation, first, second, principle, layout)
    messages[-1]["content"] += "\n\n" + COT_REQUEST
    return messages


def clean_generation(text: str, label: str | None = None) -> str:
    """Strip whitespace and a leading 'Critique:'/'Revision:' label a model may echo."""
    text = text.strip()
    if label and text.lower().startswith(label.lower() + ":"):
        text = text[len(label) + 1:].lstrip()
    return text


def derive_seed(seed: int, *parts: object) -> int:
    """A per-record seed from the run's seed and what identifies the draw (record id, round,
    sample index), so results do not depend on batching or on which records came before."""
    digest = hashlib.sha256(repr((seed, *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def draw_principle(principles: list[Any], seed: int, record_id: str, round_index: int) -> Any:
    """Draw one principle at random for this record and round, reproducibly."""
    return random.Random(derive_seed(seed, record_id, "principle", round_index)).choice(principles)
