"""Training examples from the records the other stages write, with no conversion step.

- SFT: `prompt` (or `messages`) + `response` (what `sample` and `revise` write; `revise` keeps the
  final revision in `response`). A `messages` record with no `response` whose last turn is the
  assistant's trains on that turn.
- Preference pairs: `prompt` (or `messages`) + `chosen` + `rejected`, with an optional soft
  `label` = probability that `chosen` is better (what `compare` writes); no label means 1.0.
- RL prompts: `prompt` (or `messages`).

Every file is read and checked in full before any model is loaded, so bad data stops a run with
`Error: FILE:LINE: ...` before it spends time on training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cai_cli.errors import CaiError
from cai_cli.prompts import conversation_messages
from cai_cli.records import InvalidRecord, Record, read_records, type_name, validate_conversation

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class DataSource:
    """A JSONL file and how much of it to use: weight 1 once, 0.5 a seeded half, 2 twice."""

    path: Path
    weight: float = 1.0


def parse_source(spec: str) -> DataSource:
    """`FILE` or `FILE:WEIGHT`; a colon that is part of the file name stays part of it."""
    path, _, tail = spec.rpartition(":")
    if path:
        try:
            weight = float(tail)
        except ValueError:
            return DataSource(Path(spec))
        if weight <= 0:
            raise CaiError(f"--mix {spec}: the weight must be positive")
        return DataSource(Path(path), weight)
    return DataSource(Path(spec))


def sft_example(record: Record) -> dict[str, Messages]:
    """A prompt-completion pair in TRL's conversational form, from a sample/revise record."""
    validate_conversation(record)
    if "response" in record:
        response = record["response"]
        if not isinstance(response, str):
            raise InvalidRecord(f"'response' must be a string, not {type_name(response)}")
        if not response.strip():
            raise InvalidRecord("'response' is empty")
        prompt = conversation_messages(record)
        if prompt[-1]["role"] == "assistant":
            prompt = prompt[:-1]  # `response` replaces the conversation's own last answer, as `sample` does
    elif "messages" in record and record["messages"][-1]["role"] == "assistant":
        prompt, response = conversation_messages(record)[:-1], record["messages"][-1]["content"]
        if not response.strip():
            raise InvalidRecord("the last assistant message is empty")
    else:
        raise InvalidRecord("record has no 'response' to train on (run `cai sample` or `cai revise` first)")
    if not any(m["role"] == "user" for m in prompt):
        raise InvalidRecord("the conversation has no user turn before the response")
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": response}]}


def preference_example(record: Record) -> dict[str, Any]:
    """Conversation, chosen and rejected responses, and the soft label, from a compare record."""
    validate_conversation(record)
    for key in ("chosen", "rejected"):
        if key not in record:
            raise InvalidRecord(f"record has no '{key}' (preference records come from `cai compare`)")
        if not isinstance(record[key], str):
            raise InvalidRecord(f"'{key}' must be a string, not {type_name(record[key])}")
        if not record[key].strip():
            raise InvalidRecord(f"'{key}' is empty")
    label = record.get("label", 1.0)
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        raise InvalidRecord(f"'label' must be a number in [0, 1], not {type_name(label)}")
    if not 0.0 <= label <= 1.0:  # also false for NaN
        raise InvalidRecord(f"'label' must be a probability in [0, 1], not {label}")
    prompt = conversation_messages(record)
    if prompt[-1]["role"] == "assistant":
        prompt = prompt[:-1]
    return {"prompt": prompt, "chosen": record["chosen"], "rejected": record["rejected"], "label": float(label)}


def prompt_example(record: Record) -> dict[str, Messages]:
    """The conversation a policy answers during on-policy RL."""
    validate_conversation(record)
    prompt = conversation_messages(record)
    if prompt[-1]["role"] == "assistant":
        prompt = prompt[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise InvalidRecord("the conversation must end with a user turn for the policy to answer")
    return {"prompt": prompt}


def load_examples(sources: list[DataSource], make_example: Callable[[Record], dict], seed: int,
                  skip_invalid: bool = False) -> list[dict]:
    """Every source's examples, checked (bad lines stop with FILE:LINE, or are skipped), then
    resampled by weight. Raises when nothing usable is left."""
    examples: list[dict] = []
    for number, source in enumerate(sources):
        if not source.path.is_file():
            raise CaiError(f"training data not found: {source.path}")
        # The validator builds the example, so a bad record is reported with its line number;
        # the reader yields only records whose validation (and so whose example) succeeded.
        built: list[dict] = []
        from_file = []
        for _record in read_records(source.path, lambda r: built.append(make_example(r)), skip_invalid):
            from_file.append(built.pop())
        if not from_file:
            raise CaiError(f"{source.path} holds no usable records")
        examples += resample(from_file, source.weight, random.Random(seed + number))
    if not examples:
        raise CaiError("no training examples")
    return examples


def resample(examples: list[dict], weight: float, rng: random.Random) -> list[dict]:
    """Whole copies for the integer part of `weight`, a seeded random subset for the rest."""
    whole, fraction = int(weight), weight - int(weight)
    picked = examples * whole
    if fraction:
        picked += rng.sample(examples, max(1, round(fraction * len(examples))))
    return picked


def split_held_out(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded train / held-out split; the held-out part is empty when there is too little data
    to spare any (fewer than 4 examples) or `fraction` is 0."""
    if fraction <= 0 or len(examples) < 4:
        return examples, []
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    count = min(len(shuffled) - 1, max(1, round(fraction * len(shuffled))))
    return shuffled[count:], shuffled[:count]


def oriented_pairs(examples: list[dict]) -> list[dict]:
    """Pairs for trainers that only take hard preferences (DPO): the likelier-better response
    becomes `chosen`; a tie (label 0.5) says nothing and is left out."""
    pairs = []
    ties = 0
    for example in examples:
        label = example["label"]
        if label == 0.5:
            ties += 1
            continue
        chosen, rejected = example["chosen"], example["rejected"]
        if label < 0.5:
            chosen, rejected = rejected, chosen
        pairs.append({"prompt": example["prompt"],
                      "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]})
    if ties:
        from cai_cli.training.runs import say

        say(f"Left out {ties} pair(s) labelled 0.5: a tie gives DPO nothing to learn")
    if not pairs:
        raise CaiError("every preference pair is a tie (label 0.5): nothing for DPO to learn")
    return pairs
