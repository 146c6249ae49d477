"""What `cai report` reads: each input's kind, told from its content, and its checked records.

An input is `[NAME=]PATH`. NAME names the series in legends and tables (default: the file name
without `.jsonl`, or the folder's name); for answer files it may be `MODEL@SET`, the model and the
prompt set the answers are to (red-team, helpful, ...). The kind comes from the keys of the
first record, never from the file name:

| kind | recognised by | written by |
|---|---|---|
| `ratings` | `model`, `dimension`, `elo` | `cai elo` |
| `judgements` | `item`, `dimension`, `a`, `b`, `p_a` | `cai elo --items` (refitted here) |
| `eval-items` | `p_correct`, `correct` | `cai eval --items` |
| `preferences` | `chosen`, `rejected`, `label` | `cai compare` |
| `revision-scores` | `initial_score`, or `revisions` entries with a `score` | `cai score` on `revise` output |
| `answers` | `response` (with `prompt`/`messages`) | `cai sample` (also `revise`) |
| `training-run` | a folder with `training_log.jsonl` or `trainer_state.json` | `cai train-*` (a checkpoint) |

Every record of a file must then fit its kind; one that does not stops the report with
`Error: FILE:LINE: why`, and a file of no known kind with `Error: FILE: why`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError
from cai_cli.records import InvalidRecord, Record, type_name, validate_response
from cai_cli.stages.elo import validate_judgement
from cai_cli.streams import read_records

CHECKPOINT_STATE = "trainer_state.json"


@dataclass
class ReportInput:
    """One input, read and checked: its records (files) or its training log (run folders)."""

    name: str
    path: Path
    kind: str
    records: list[Record] = field(default_factory=list)
    prompt_set: str | None = None  # answers only: the SET of MODEL@SET
    provenance: dict[str, Any] = field(default_factory=dict)  # training runs: cai_training.json

    @property
    def size(self) -> int:
        return len(self.records)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def need_number(record: Record, key: str, low: float = -math.inf, high: float = math.inf) -> None:
    if key not in record:
        raise InvalidRecord(f"record has no '{key}'")
    value = record[key]
    if not is_number(value):
        raise InvalidRecord(f"'{key}' must be a number, not {type_name(value)}")
    if not low <= value <= high:
        raise InvalidRecord(f"'{key}' must be in [{low:g}, {high:g}], not {value!r}")


def need_text(record: Record, key: str) -> None:
    if not isinstance(record.get(key), (str, int)) or isinstance(record.get(key), bool):
        raise InvalidRecord(f"'{key}' must be a string")


def validate_rating(record: Record) -> None:
    need_text(record, "model")
    need_text(record, "dimension")
    for key in ("elo", "low", "high"):
        need_number(record, key)
    need_number(record, "items", 0)


def validate_eval_item(record: Record) -> None:
    need_number(record, "p_correct", 0.0, 1.0)
    need_number(record, "correct", 0.0, 1.0)


def validate_preference(record: Record) -> None:
    need_number(record, "label", 0.0, 1.0)


def validate_revision_scores(record: Record) -> None:
    if "initial_score" in record:
        need_number(record, "initial_score")
    revisions = record.get("revisions", [])
    if not isinstance(revisions, list):
        raise InvalidRecord(f"'revisions' must be a list, not {type_name(revisions)}")
    for i, entry in enumerate(revisions):
        if not isinstance(entry, dict) or not is_number(entry.get("score")):
            raise InvalidRecord(f"revisions[{i}] has no 'score' (run `cai score` on the revised records)")
    if "initial_score" not in record and not revisions:
        raise InvalidRecord("no 'initial_score' and no scored revisions")


@dataclass(frozen=True)
class Kind:
    name: str
    recognise: Callable[[Record], bool]  # does a file whose first record is this one hold this kind?
    validate: Callable[[Record], None]  # every record of such a file
    what: str  # for messages: what such a file is


def has(*keys: str) -> Callable[[Record], bool]:
    return lambda record: set(keys) <= record.keys()


def has_revision_scores(record: Record) -> bool:
    revisions = record.get("revisions")
    return "initial_score" in record or (isinstance(revisions, list) and any(
        isinstance(entry, dict) and "score" in entry for entry in revisions))


# In order: the first kind that recognises the first record. Scored preference pairs are still
# preferences; eval items keep their input's keys (chosen/rejected), so they come first.
KINDS = (
    Kind("ratings", has("model", "dimension", "elo"), validate_rating, "ratings from `cai elo`"),
    Kind("judgements", has("item", "dimension", "a", "b", "p_a"), validate_judgement,
         "judgements from `cai elo --items`"),
    Kind("eval-items", has("p_correct", "correct"), validate_eval_item, "items from `cai eval --items`"),
    Kind("preferences", has("chosen", "rejected", "label"), validate_preference,
         "preference labels from `cai compare`"),
    Kind("revision-scores", has_revision_scores, validate_revision_scores, "scored revisions from `cai score`"),
    Kind("answers", has("response"), validate_response, "answers from `cai sample`"),
)


def kind_of(record: Record) -> Kind | None:
    return next((kind for kind in KINDS if kind.recognise(record)), None)


def parse_spec(spec: str) -> tuple[str | None, str | None, Path]:
    """`[NAME[@SET]=]PATH` -> (name, set, path). A path that exists is taken whole, even with '='."""
    if "=" in spec and not Path(spec).exists():
        label, _, path = spec.partition("=")
        if not label or not path:
            raise CaiError(f"{spec}: give NAME=FILE or FILE")
        name, _, prompt_set = label.partition("@")
        if not name or ("@" in label and not prompt_set):
            raise CaiError(f"{spec}: give MODEL@SET=FILE, MODEL=FILE or FILE")
        return name, prompt_set or None, Path(path)
    return None, None, Path(spec)


def read_input(spec: str) -> ReportInput:
    """Read one input, tell its kind and check every record of it (or the run folder)."""
    name, prompt_set, path = parse_spec(spec)
    if path.is_dir():
        found = read_training_run(path, name or path.resolve().name)
    elif not path.exists():
        raise CaiError(f"{path}: no such file or folder")
    else:
        found = read_records_of_kind(path, name or path.name.removesuffix(".jsonl"))
    if prompt_set is not None:
        if found.kind != "answers":
            raise CaiError(f"{path}: MODEL@SET= names the prompt set of answers, and this file holds {found.kind}")
        found.prompt_set = prompt_set
    return found


def read_records_of_kind(path: Path, name: str) -> ReportInput:
    first = next(read_records(path, lambda record: None), None)
    if first is None:
        raise CaiError(f"{path}: no records")
    kind = kind_of(first)
    if kind is None:
        keys = ", ".join(sorted(first)[:12])
        raise CaiError(f"{path}: cannot tell what it holds (its first record has {keys}); report reads "
                       + ", ".join(k.what for k in KINDS) + " and training run folders")
    records = list(read_records(path, kind.validate))
    return ReportInput(name, path, kind.name, records)


def read_training_run(folder: Path, name: str) -> ReportInput:
    """A `train-*` output folder (its `training_log.jsonl`) or a checkpoint (its trainer state)."""
    from cai_cli.training.loading import PROVENANCE_FILE, TRAINING_LOG_FILE

    provenance: dict[str, Any] = {}
    if (folder / PROVENANCE_FILE).is_file():
        try:
            provenance = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
        except ValueError:
            raise CaiError(f"{folder / PROVENANCE_FILE}: not valid JSON") from None
    if (folder / TRAINING_LOG_FILE).is_file():
        log = list(read_records(folder / TRAINING_LOG_FILE, validate_log_entry))
    elif (folder / CHECKPOINT_STATE).is_file():
        try:
            log = json.loads((folder / CHECKPOINT_STATE).read_text(encoding="utf-8"))["log_history"]
        except (ValueError, KeyError, TypeError):
            raise CaiError(f"{folder / CHECKPOINT_STATE}: no log_history in it") from None
    elif provenance:
        raise CaiError(f"{folder}: no {TRAINING_LOG_FILE} (the folder was trained before cai kept its log)")
    else:
        raise CaiError(f"{folder}: a folder, but not a training run (no {TRAINING_LOG_FILE} or {CHECKPOINT_STATE})")
    log = [entry for entry in log if isinstance(entry, dict) and is_number(entry.get("step"))
           and "train_runtime" not in entry]
    if not log:
        raise CaiError(f"{folder}: its training log has no logged steps")
    return ReportInput(name, folder, "training-run", log, provenance=provenance)


def validate_log_entry(record: Record) -> None:
    need_number(record, "step", 0)
