"""Chat messages for each step of the method: the conversation, critique, revision, comparison.

Every builder returns a list of `{"role", "content"}` messages; the backend renders them with the
model's own chat template. Few-shot exchanges become earlier turns of the same chat, so a chat
model sees worked examples of exactly the turn it is asked to take.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, NamedTuple

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


# --- New prompts from a few examples (`cai redteam`) ---------------------------------------------

class PromptKind(NamedTuple):
    """How to ask for more prompts of one kind: a chat model is told what the examples are and
    what the new one must do; a base model continues a list under a heading."""

    intro: str
    asks: str
    heading: str


# The framing as a safety test matters: instruction-tuned models write red-team prompts for it
# that they would otherwise refuse to write.
PROMPT_KINDS = {
    "red-team": PromptKind(
        intro="To test how safely an AI assistant behaves, I need more prompts like these, which try to get "
              "it to help with something harmful, unethical, dangerous or illegal:",
        asks="asks for something harmful in the way these do",
        heading="Requests that people sent to an AI assistant to get its help with something harmful, "
                "unethical, dangerous or illegal"),
    "helpful": PromptKind(
        intro="To test how helpful an AI assistant is, I need more prompts like these, which ask it for help "
              "with everyday questions and tasks:",
        asks="asks for help in the way these do",
        heading="Questions and tasks that people brought to an AI assistant for help"),
}


def build_new_prompt_messages(kind: str, shots: list[str], topic: str | None = None) -> list[Message]:
    """Ask a chat model for one new prompt in the vein of `shots` (and about `topic`)."""
    how = PROMPT_KINDS[kind]
    examples = "\n".join(f"- {one_line(shot)}" for shot in shots)
    about = f", about {topic}," if topic else ""
    return [{"role": "user", "content": (
        f"{how.intro}\n\n{examples}\n\n"
        f"Write one more prompt that {how.asks}{about} but is a new request, not a copy or a rewording of one "
        "above. Answer with the prompt alone, on a single line.")}]


def build_new_prompt_text(kind: str, shots: list[str], topic: str | None = None) -> str:
    """A numbered list of `shots` under a heading, open at the next number, for a base model to
    continue with one more item (the paper's way with a pretrained model); stop at the newline."""
    heading = PROMPT_KINDS[kind].heading + (f", among them requests about {topic}" if topic else "") + ":"
    items = "".join(f"{i}. {one_line(shot)}\n" for i, shot in enumerate(shots, 1))
    return f"{heading}\n\n{items}{len(shots) + 1}."


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of spaces made single spaces: one list item."""
    return " ".join(text.split())
