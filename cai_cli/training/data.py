"""Training examples from the records the other stages write, with no conversion step.

- SFT: `prompt` (or `messages`) + `response` (what `sample` and `revise` write; `revise` keeps the
  final revision in `response`). A `messages` record with no `response` whose last turn is the
  assistant's trains on that turn. Records whose `response` is cut off (`response_truncated`)
  was never usably revised (`revised: false`) or still refuses after `sample --redraw-refusals`
  (`refused: true`, in a helpful mix) are left out and counted, unless `--keep-flagged`.
- Preference pairs: `prompt` (or `messages`) + `chosen` + `rejected`, with an optional soft
  `label` = probability that `chosen` is better (what `compare` writes); no label means 1.0.
  Pairs with a cut-off side (`chosen_truncated`/`rejected_truncated`) are left out likewise.
- RL prompts: `prompt` (or `messages`).

Every file is read and checked in full before any model is loaded, so bad data stops a run with
`Error: FILE:LINE: ...` before it spends time on training.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cai_cli.errors import CaiError
from cai_cli.prompts import prompt_messages
from cai_cli.records import InvalidRecord, Record, content_id, type_name, validate_conversation
from cai_cli.streams import read_records

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


class Flagged(Exception):
    """A well-formed record that is left out of training unless asked (`--keep-flagged`): its
    answer was cut off at the token limit, it was never usably revised, or it refuses where an
    answer was wanted (`refused`, from `sample --redraw-refusals`). The message is the
    reason's short name, for the count in the summary."""


def check_flags(record: Record, keys: tuple[str, ...], keep_flagged: bool) -> None:
    """Raise `Flagged` when the record marks one of its answers as not fit to train on."""
    if keep_flagged:
        return
    if any(record.get(key) is True for key in keys):
        raise Flagged("truncated")
    if record.get("revised") is False:
        raise Flagged("unrevised")
    if record.get("refused") is True:
        raise Flagged("refused")


def sft_example(record: Record, keep_flagged: bool = False) -> dict[str, Messages]:
    """A prompt-completion pair in TRL's conversational form, from a sample/revise record."""
    validate_conversation(record)
    if "response" in record:
        response = record["response"]
        if not isinstance(response, str):
            raise InvalidRecord(f"'response' must be a string, not {type_name(response)}")
        if not response.strip():
            raise InvalidRecord("'response' is empty")
        check_flags(record, ("response_truncated",), keep_flagged)
        prompt = prompt_messages(record)  # `response` replaces the conversation's own last answer
    elif "messages" in record and record["messages"][-1]["role"] == "assistant":
        prompt, response = prompt_messages(record), record["messages"][-1]["content"]
        if not response.strip():
            raise InvalidRecord("the last assistant message is empty")
    else:
        raise InvalidRecord("record has no 'response' to train on (run `cai sample` or `cai revise` first)")
    if not any(m["role"] == "user" for m in prompt):
        raise InvalidRecord("the conversation has no user turn before the response")
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": response}]}


def preference_example(record: Record, keep_flagged: bool = False) -> dict[str, Any]:
    """Conversation, chosen and rejected responses, and the soft label, from a compare record.
    `group` names the conversation, so that pairs of one prompt stay on one side of a split."""
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
    check_flags(record, ("chosen_truncated", "rejected_truncated"), keep_flagged)
    return {"prompt": prompt_messages(record), "chosen": record["chosen"], "rejected": record["rejected"],
            "label": float(label), "group": content_id(record)}


def prompt_example(record: Record, keep_flagged: bool = False) -> dict[str, Messages]:
    """The conversation a policy answers during on-policy RL."""
    validate_conversation(record)
    prompt = prompt_messages(record)
    if not prompt or prompt[-1]["role"] != "user":
        raise InvalidRecord("the conversation must end with a user turn for the policy to answer")
    return {"prompt": prompt}


@dataclass
class SourceExamples:
    """The usable examples of one data file, and how much of it to use."""

    source: DataSource
    examples: list[dict]


@dataclass
class TrainingData:
    """What the training files hold: usable examples per file, and what was left out, by reason
    (flagged records, and later examples over --max-length)."""

    sources: list[SourceExamples]
    left_out: Counter = field(default_factory=Counter)

    def resampled(self, seed: int) -> list[dict]:
        """Every file's examples, resampled by its weight (seeded per file)."""
        return [example for number, part in enumerate(self.sources)
                for example in resample(part.examples, part.source.weight, random.Random(seed + number))]

    def keep(self, fits: Callable[[dict], bool], reason: str) -> None:
        """Leave out the examples `fits` refuses, counted under `reason`."""
        for part in self.sources:
            kept = [example for example in part.examples if fits(example)]
            if len(kept) < len(part.examples):
                self.left_out[reason] += len(part.examples) - len(kept)
            part.examples = kept
        if not any(part.examples for part in self.sources):
            raise CaiError(f"no training examples left: every one is {LEFT_OUT_REASONS.get(reason, reason)}")


def read_training_data(sources: list[DataSource], make_example: Callable[..., dict], skip_invalid: bool = False,
                       keep_flagged: bool = False) -> TrainingData:
    """Every file's examples, checked (bad lines stop with FILE:LINE, or are skipped), with
    flagged records left out and counted unless `keep_flagged`. Raises when nothing is usable."""
    data = TrainingData([])
    for source in sources:
        if not source.path.is_file():
            raise CaiError(f"training data not found: {source.path}")
        # The validator builds the example, so a bad record is reported with its line number;
        # the reader yields only records whose validation (and so whose example) succeeded.
        built: list[dict | None] = []

        def build(record: Record) -> None:
            try:
                built.append(make_example(record, keep_flagged))
            except Flagged as reason:
                data.left_out[str(reason)] += 1
                built.append(None)

        from_file, flagged_before = [], data.left_out.total()
        for _record in read_records(source.path, build, skip_invalid):
            example = built.pop()
            if example is not None:
                from_file.append(example)
        if not from_file and data.left_out.total() == flagged_before:
            raise CaiError(f"{source.path} holds no usable records")
        data.sources.append(SourceExamples(source, from_file))
    if not any(part.examples for part in data.sources):
        raise CaiError("no usable training examples" + (f" ({describe_left_out(data.left_out)})" if data.left_out else ""))
    return data


LEFT_OUT_REASONS = {
    "truncated": "with an answer cut off at --max-tokens",
    "unrevised": "never usably revised (revised: false)",
    "refused": "still refusing after --redraw-refusals (refused: true)",
    "too_long": "longer than --max-length tokens",
    "undecided": "labelled within --min-margin of 0.5 (a tie, or nearly: DPO would train on it as certain)",
}


def describe_left_out(left_out: Counter) -> str:
    return ", ".join(f"{count} {LEFT_OUT_REASONS.get(reason, reason)}" for reason, count in left_out.items() if count)


def report_left_out(command: str, data: TrainingData) -> None:
    """Say on stderr what was not trained on, and how to keep it."""
    if any(data.left_out.values()):
        from cai_cli.training.runs import say

        flagged = data.left_out["truncated"] + data.left_out["unrevised"] + data.left_out["refused"]
        say(f"{command}: left out {describe_left_out(data.left_out)}"
            + (" (--keep-flagged trains on flagged records)" if flagged else "")
            + (" (lower --min-margin to keep undecided ones)" if data.left_out["undecided"] else "")
            + (" (raise --max-length to keep long ones)" if data.left_out["too_long"] else ""))


def token_length(tokenizer, messages: Messages, add_generation_prompt: bool = False) -> int:
    """Tokens in a conversation rendered with the model's chat template."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def resample(examples: list[dict], weight: float, rng: random.Random) -> list[dict]:
    """Whole copies for the integer part of `weight`, a seeded random subset for the rest."""
    whole, fraction = int(weight), weight - int(weight)
    picked = examples * whole
    if fraction and examples:
        picked += rng.sample(examples, max(1, round(fraction * len(examples))))
    return picked


def split_held_out(data: TrainingData, fraction: float, seed: int) -> tuple[TrainingData, list[dict]]:
    """A seeded train / held-out split *by conversation* (`group`), made before any resampling:
    the pairs of one prompt, and the copies that a weight above 1 makes, all land on one side,
    so the held-out accuracy measures pairs the model never saw. Held-out pairs come from every
    file, each once. Nothing is held out when `fraction` is 0 or there are fewer than 4 groups."""
    groups = sorted({example["group"] for part in data.sources for example in part.examples})
    if fraction <= 0 or len(groups) < 4:
        return data, []
    random.Random(seed).shuffle(groups)
    held = set(groups[:min(len(groups) - 1, max(1, round(fraction * len(groups))))])
    train = TrainingData([SourceExamples(part.source, [e for e in part.examples if e["group"] not in held])
                          for part in data.sources], data.left_out)
    held_out = [e for part in data.sources for e in part.examples if e["group"] in held]
    return train, held_out


def decisive(label: float, min_margin: float) -> bool:
    """Whether a soft label says enough for a trainer that only takes hard pairs (DPO): at least
    `min_margin` away from 0.5. A tie (0.5) never is, whatever the margin. (Rounded, so that a
    label of 0.6 is 0.1 from 0.5, as written.)"""
    distance = round(abs(label - 0.5), 9)
    return distance > 0 and distance >= min_margin


def oriented_pairs(examples: list[dict]) -> list[dict]:
    """Pairs for trainers that only take hard preferences (DPO): the likelier-better response
    becomes `chosen`. Leave out undecided labels first (`decisive`): here 0.51 and 0.99 weigh
    the same."""
    pairs = []
    for example in examples:
        if example["label"] == 0.5:
            raise ValueError("a tie (label 0.5) has no chosen side; leave it out first")
        chosen, rejected = example["chosen"], example["rejected"]
        if example["label"] < 0.5:
            chosen, rejected = rejected, chosen
        pairs.append({"prompt": example["prompt"],
                      "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]})
    return pairs
