"""What a record is: its type, its stable ids and content keys, the checks a stage's input must
pass, and the errors that point at a bad one.

How records travel (JSONL read with line-numbered errors, written one flushed line at a time,
resumed from an earlier run's output) is in `cai_cli/streams.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from cai_cli.errors import CaiError

Record = dict[str, Any]
Validator = Callable[[Record], None]


class RecordError(CaiError):
    """A bad input record: the message carries `source:line:` so the user can find it."""

    def __init__(self, source: str, line: int | None, message: str):
        self.source, self.line, self.detail = source, line, message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class InvalidRecord(ValueError):
    """Raised by validators and stages; the reader or runner adds the source and line."""


def content_id(record: Record) -> str:
    """A stable id from what a record's conversation is: the same prompt gets the same id."""
    keys = ("system", "prompt", "messages")
    canonical = json.dumps({k: record[k] for k in keys if k in record}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def record_id(record: Record) -> str:
    """The record's own `id` (as a string) when it has one, else its content hash."""
    value = record.get("id")
    return str(value) if value is not None else content_id(record)


def validate_conversation(record: Record) -> None:
    """A record a model can answer: a non-empty `prompt` string or a `messages` list."""
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise InvalidRecord(f"'prompt' must be a string, not {type_name(record['prompt'])}")
        if not record["prompt"].strip():
            raise InvalidRecord("'prompt' is empty")
    elif "messages" in record:
        validate_messages(record["messages"])
    else:
        raise InvalidRecord("record has neither 'prompt' nor 'messages'")
    if "system" in record and not isinstance(record["system"], str):
        raise InvalidRecord(f"'system' must be a string, not {type_name(record['system'])}")
    if "id" in record and not isinstance(record["id"], (str, int)) or isinstance(record.get("id"), bool):
        raise InvalidRecord(f"'id' must be a string or an integer, not {type_name(record['id'])}")


def validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRecord("'messages' must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRecord(f"messages[{i}] must be an object, not {type_name(message)}")
        if message.get("role") not in ("system", "user", "assistant"):
            raise InvalidRecord(f"messages[{i}].role must be 'system', 'user' or 'assistant'")
        if not isinstance(message.get("content"), str):
            raise InvalidRecord(f"messages[{i}].content must be a string")


def validate_response(record: Record) -> None:
    """A record that already has an assistant answer to work on (critique, revise)."""
    validate_conversation(record)
    response = record.get("response")
    if response is None:
        raise InvalidRecord("record has no 'response' (run `cai sample` first)")
    if not isinstance(response, str):
        raise InvalidRecord(f"'response' must be a string, not {type_name(response)}")


def set_flag(record: Record, key: str, value: bool) -> None:
    """Mark a record with `key: true`, or remove a stale mark: flags are written only when set."""
    if value:
        record[key] = True
    else:
        record.pop(key, None)


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a decimal number", type(None): "null"}.get(type(value), type(value).__name__)



# The field where a judging command (compare, eval --items, elo --items) writes the content key
# of each judgement, so that a resume reuses it only for the same texts under the same settings.
JUDGE_KEY = "judge_key"


def content_key(value: Any) -> str:
    """A short stable hash of the canonical JSON of `value` (lists for tuples)."""
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

