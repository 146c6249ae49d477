"""JSONL records in and out: reading with line-numbered errors, writing one whole flushed line per
record, resuming from an earlier run's output.

Every streaming command reads records with `read_records` and writes them with `RecordWriter`;
`run_stream` ties the two together around a stage function so that each command only has to
say what its stage does. What a record is (its ids, the validators, `InvalidRecord`) is in
`cai_cli/records.py`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich.markup import escape

from cai_cli.errors import CaiError, console
from cai_cli.records import (JUDGE_KEY, InvalidRecord, Record, RecordError, Validator, content_id, record_id, type_name,
                             validate_conversation)

if TYPE_CHECKING:
    import jsonlines


def source_name(path: Path | None) -> str:
    return "<stdin>" if path is None or str(path) == "-" else str(path)


def read_records(
    path: Path | None,
    validate: Validator = validate_conversation,
    skip_invalid: bool = False,
    lines: dict[str, int] | None = None,
) -> Iterator[Record]:
    """Yield the valid records of a JSONL file (or stdin for None / '-'), each with an `id`.

    A bad line raises `RecordError` naming the source and line, or with `skip_invalid` is
    reported on stderr and skipped. Blank lines, a UTF-8 BOM and CRLF line ends are accepted.
    `lines`, when given, is filled with id -> line number so later errors can point back.
    """
    source = source_name(path)
    try:
        stream = sys.stdin.buffer if source == "<stdin>" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise CaiError(f"cannot read {source}: {exc.strerror}") from None
    import jsonlines  # here, not at the top: every command imports this module, and `cai --help` reads nothing

    numbered = NumberedLines(stream)
    reader = jsonlines.Reader(numbered, loads=load_json_line)
    try:
        while True:
            try:
                record = reader.read(skip_empty=True, allow_none=True)
            except EOFError:
                return
            except jsonlines.InvalidLineError as exc:
                report(RecordError(source, exc.lineno, describe_invalid_line(exc)), skip_invalid)
                continue
            try:
                if not isinstance(record, dict):
                    raise InvalidRecord(f"expected a JSON object, got {type_name(record)}")
                check_writable(record)
                validate(record)
            except InvalidRecord as exc:
                report(RecordError(source, numbered.lineno, str(exc)), skip_invalid)
                continue
            if "id" not in record:
                record["id"] = content_id(record)
            if lines is not None:
                lines[str(record["id"])] = numbered.lineno
            yield record
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def load_json_line(line: str) -> Any:
    """`json.loads`, with deeply nested junk reported as bad JSON instead of a RecursionError
    (which is not a ValueError, so it would escape the reader as a traceback)."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def check_writable(record: Record) -> None:
    """Refuse what Python's JSON reader accepts but no valid JSONL output can hold, so a bad
    value stops at its input line instead of crashing the writer (or the tokenizer) later: lone
    UTF-16 surrogate escapes (UTF-8 cannot encode them) and NaN/Infinity or numbers too large
    for a float (they would be written as the non-JSON words NaN and Infinity)."""
    try:
        json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecord("a string holds a lone UTF-16 surrogate escape (such as \\ud800), "
                            "which UTF-8 cannot encode") from None
    except ValueError:
        raise InvalidRecord("a number is NaN, Infinity or too large for a 64-bit float") from None
    except RecursionError:
        raise InvalidRecord("nested too deeply") from None


UTF8_BOM = b"\xef\xbb\xbf"


class NumberedLines:
    """Iterates a binary stream's lines, remembering the number of the last one handed out."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.lineno = stream, 0

    def __iter__(self) -> Iterator[bytes]:
        for self.lineno, line in enumerate(self.stream, 1):
            # A BOM belongs to the file, not to its first line: cut it here so that a file
            # starting with BOM + blank line (or holding only a BOM) reads as blank, not bad JSON.
            if self.lineno == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]
            yield line


def describe_invalid_line(exc: jsonlines.InvalidLineError) -> str:
    message = str(exc).split(" (line ")[0]
    # json's own "line 1 column 9 (char 8)" counts inside the one line; keep just the column.
    message = re.sub(r": line \d+ column (\d+) \(char \d+\)", r" at column \1", message)
    if message.startswith("line contains invalid json"):
        return "not valid JSON" + message[len("line contains invalid json"):]
    if message.startswith("line is not valid utf-8"):
        return "not valid UTF-8" + message[len("line is not valid utf-8"):]
    return message


def report(error: RecordError, skip_invalid: bool) -> None:
    if not skip_invalid:
        raise error
    # Escaped: the message quotes the user's data, and a '[/x]' in it would be read as markup.
    console.print(f"[yellow]Skipped[/] {escape(str(error))}", markup=True, highlight=False, soft_wrap=True)


class OutputClosed(Exception):
    """stdout's reader went away (`cai sample | head -1`); `cli.main` stops quietly.

    Deliberately not an OSError: typer turns a broken pipe (EPIPE) into exit status 1 before
    `cli.main` could see it, and a pipeline cut short on purpose is not a failure."""


class RecordWriter:
    """Writes records as JSONL to stdout or to a file, one whole flushed line per record.

    With `resume`, the file is kept: a torn last line (a run killed mid-write) is cut off, the
    ids already written are collected in `done`, and new records are appended after them.
    Without it, the file is started afresh.
    """

    def __init__(self, output: Path | None, resume: bool = False):
        if resume and output is None:
            raise CaiError("--resume needs -o/--output FILE: the ids already done are read from it")
        self.output = output
        self.done: Counter[str] = Counter()
        self.written = 0
        self._fd: int | None = None
        if output is not None:
            if resume and output.exists():
                self.done = read_done_ids(output)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if resume else os.O_TRUNC)
            try:
                self._fd = os.open(output, flags, 0o644)
            except OSError as exc:
                raise CaiError(f"cannot write {output}: {exc.strerror}") from None

    def write(self, record: Record) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        if self._fd is None:
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except BrokenPipeError:
                raise OutputClosed from None
        else:
            # One write call per line on an O_APPEND descriptor: a kill leaves whole lines, or
            # at worst one torn last line that the next --resume cuts off.
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        self.written += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_done_ids(output: Path) -> Counter[str]:
    """The ids in an earlier run's output file, each with how many lines carry it, after cutting
    off a torn last line."""
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        console.print(f"Repaired {output}: dropped an incomplete last line ({len(data) - end} bytes)",
                      markup=False, soft_wrap=True)
        with open(output, "r+b") as handle:
            handle.truncate(end)
    done: Counter[str] = Counter()
    for lineno, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise CaiError(f"{output}:{lineno}: not valid JSON; refusing to resume into this file") from None
        if isinstance(record, dict):
            done[record_id(record)] += 1
    return done



class KeptRecords:
    """The judgements an earlier run kept in a file, for a resume keyed by content.

    A kept record is reused only for a judgement of this run with the same id *and* the same
    content key (`JUDGE_KEY`: a hash of the texts judged and of the settings that change the
    judgement). One whose texts were regenerated, or that was made under other settings, or
    whose prompt is no longer in the input, is *stale*: it is asked again or not at all, and
    `drop_stale` takes it out of the file at the end of the run, so that nothing downstream
    (a refit, a summary) counts it. Records written before keys existed are all stale.

    `holds` asks without taking (for checks before the run); `claim` takes one kept record for
    one judgement of this run (once per judgement: an input holding the same thing twice claims
    it twice, and is judged again where the file holds it once)."""

    def __init__(self, path: Path, validate: Validator = lambda record: None):
        self.path = path
        self.records: list[Record] = list(read_records(path, validate)) if path.exists() else []
        self.end = path.stat().st_size if path.exists() else 0  # where this run's new lines start
        self.available: Counter[tuple[str, str | None]] = Counter(self.key_of(r) for r in self.records)
        self.claimed: Counter[tuple[str, str | None]] = Counter()

    @staticmethod
    def key_of(record: Record) -> tuple[str, str | None]:
        key = record.get(JUDGE_KEY)
        return record_id(record), key if isinstance(key, str) else None  # no key: matches nothing

    def holds(self, rid: str, key: str) -> bool:
        return self.available[(rid, key)] > self.claimed[(rid, key)]

    def claim(self, rid: str, key: str) -> bool:
        """Take a kept record for judgement `rid` with content `key`; False when there is none
        left to take (the judgement must be made)."""
        if not self.holds(rid, key):
            return False
        self.claimed[(rid, key)] += 1
        return True

    def reused(self) -> list[Record]:
        """The kept records claimed so far, in file order."""
        left = Counter(self.claimed)
        out = []
        for record in self.records:
            if left[self.key_of(record)] > 0:
                left[self.key_of(record)] -= 1
                out.append(record)
        return out

    @property
    def stale(self) -> int:
        """Kept records no judgement of this run claimed."""
        return len(self.records) - sum(self.claimed.values())

    def drop_stale(self) -> int:
        """Rewrite the file as the claimed kept records, then every line this run added; return
        how many kept records went. Call it once the run has read its whole input."""
        stale = self.stale
        if stale and self.path.exists():
            added = self.path.read_bytes()[self.end:]
            kept = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.reused()).encode("utf-8")
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_bytes(kept + added)
            os.replace(temporary, self.path)
        return stale


def drop_stale(name: str, kept: KeptRecords) -> int:
    """Take the stale judgements out of `kept`'s file and say so on stderr; how many there were."""
    stale = kept.drop_stale()
    if stale:
        console.print(f"{name}: dropped {stale} stale judgement{'' if stale == 1 else 's'} (the texts judged or the "
                      "settings changed, or the prompt is no longer in the input)", markup=False, soft_wrap=True)
    return stale


class SideFile:
    """`--items FILE` of `eval` and `elo`: every item or judgement the run makes, one whole line as
    it is made, beside the command's main output. With `--resume`, the lines an earlier run left
    in FILE are read first (`kept`, for the stage to reuse those whose content is unchanged) and
    `finish` takes the stale ones out at the end. Without FILE nothing is written or kept.

    `what` names what a resume reads back, for the error when --resume comes without FILE."""

    def __init__(self, name: str, path: Path | None, resume: bool, validate: Validator, what: str):
        if resume and path is None:
            raise CaiError(f"--resume needs --items FILE: {what} are read from it")
        self.name = name
        self.writer = RecordWriter(path, resume) if path is not None else None
        self.kept = KeptRecords(path, validate) if self.writer is not None and self.writer.done else None
        self.stale = 0

    def write(self, record: Record) -> None:
        if self.writer is not None:
            self.writer.write(record)

    def __enter__(self) -> SideFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> list[Record]:
        """After the run: the kept lines it reused, in file order; the stale ones leave the file."""
        if self.kept is None:
            return []
        reused = self.kept.reused()
        self.stale = drop_stale(self.name, self.kept)
        return reused


@dataclass
class StreamInput:
    """The input side of a command: where records come from and how strictly they are read."""

    path: Path | None = None
    validate: Validator = validate_conversation
    skip_invalid: bool = False
    lines: dict[str, int] = field(default_factory=dict)
    error: CaiError | None = None

    def records(self, skip: Iterable[str]) -> Iterator[Record]:
        """Valid records not in `skip`. A bad line ends the iteration quietly and is kept in
        `error`, so a stage can finish and write the records before it; `run_stream` raises it
        afterwards."""
        # Counted, not a set: when several input records share an id (the same prompt twice,
        # without ids), only as many of them as the output already holds are skipped.
        remaining = Counter(skip)
        try:
            for record in read_records(self.path, self.validate, self.skip_invalid, self.lines):
                rid = record_id(record)
                if remaining[rid] > 0:
                    remaining[rid] -= 1
                    continue
                yield record
        except CaiError as exc:
            self.error = exc


def run_stream(
    name: str,
    stage: Callable[[Iterable[Record]], Iterator[Record]],
    source: StreamInput,
    output: Path | None = None,
    resume: bool = False,
    keep: Callable[[Path], KeptRecords] | None = None,
) -> None:
    """Read records, run them through `stage`, write what comes out; stderr gets a summary.

    A resume skips the input records whose ids are already in the output; or, with `keep` (a
    judging stage that resumes by content, given the kept records `keep(output)` reads), the
    stage itself skips what it can reuse, and the kept records it did not use are dropped from
    the output at the end."""
    import time

    started = time.perf_counter()
    if output is not None and is_same_file(source.path, output):
        raise CaiError(f"-o {output} is the input file; write to another file (it would overwrite "
                       "the input while reading it)")
    kept = None
    with RecordWriter(output, resume) as writer:
        if writer.done and keep is not None and output is not None:
            kept = keep(output)
            console.print(f"{name}: {len(kept.records)} judgements already in {output}, reusing those whose texts "
                          "and settings are unchanged", markup=False, soft_wrap=True)
        elif writer.done:
            console.print(f"{name}: {writer.done.total()} records already in {output}, skipping those",
                          markup=False, soft_wrap=True)
        progress = Progress(name) if console.is_terminal else None
        try:
            for record in stage(source.records(skip=writer.done if kept is None else ())):
                writer.write(record)
                if progress:
                    progress.advance()
        except KeyboardInterrupt:
            # typer turns Ctrl-C into exit status 130 without a word; say what is safe.
            if progress:
                progress.stop()
            how = f"rerun with -o {output} --resume to go on" if output else "use -o FILE --resume to resume runs"
            console.print(f"Interrupted: {name} wrote {writer.written} complete records; {how}",
                          markup=False, soft_wrap=True)
            raise
        if progress:
            progress.stop()
    if source.error is not None:
        raise source.error
    stale = drop_stale(name, kept) if kept is not None else 0
    elapsed = time.perf_counter() - started
    if writer.written == 0 and writer.done and not stale:
        console.print(f"{name}: nothing to do, all of it is already in {output}",
                      markup=False, soft_wrap=True)
    else:
        details = [getattr(stage, "summary", lambda: "")()]
        details.append(f"dropped {stale} stale judgement{'' if stale == 1 else 's'}" if stale else "")
        console.print(f"{name}: {writer.written} records in {elapsed:.1f} s" + "".join(f"; {d}" for d in details if d),
                      markup=False, soft_wrap=True)


def is_same_file(input_path: Path | None, output: Path) -> bool:
    """Whether the output is the input (a file argument, or stdin redirected from it)."""
    try:
        out_stat = os.stat(output)
        if input_path is None or str(input_path) == "-":
            return os.path.samestat(os.fstat(sys.stdin.fileno()), out_stat)
        return os.path.samestat(os.stat(input_path), out_stat)
    except (OSError, ValueError):  # no output file yet, or no stdin to compare
        return False


class Progress:
    """A live record counter on a terminal's stderr."""

    def __init__(self, name: str):
        from rich.progress import Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = RichProgress(SpinnerColumn(), TextColumn(f"{name}: {{task.completed}} records"),
                                 TimeElapsedColumn(), console=console, transient=True)
        self._task = self._bar.add_task(name, total=None)
        self._bar.start()

    def advance(self) -> None:
        self._bar.advance(self._task)

    def stop(self) -> None:
        self._bar.stop()
