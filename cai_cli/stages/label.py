"""The interactive side of `cai label`: blind items in, label records out, one keypress at a time.

The screen shows one item: the prompt, "Answer A" and "Answer B" (never a model's name), and
what to press. A label is written (and flushed) the moment its last key is pressed, so quitting
or a crash loses at most the item on screen; rerunning the same command skips what the output
file already holds (matched by prompt id and pair of models, so a new draw of sides cannot
label an item twice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cai_cli.errors import CaiError, console
from cai_cli.labels import ANSWER_CLASSES, RUBRIC, BlindItem, unblinded_record, validate_label
from cai_cli.records import Record
from cai_cli.streams import read_records

CLASS_KEYS = {str(i): name for i, name in enumerate(ANSWER_CLASSES, 1)}
NO_CLASS_KEY = "0"
VERDICT_KEYS = {"a": "A", "b": "B", "t": "tie", "s": "skip"}
UNDO_KEY, QUIT_KEY = "u", "q"


class KeyReader:
    """Single keys from a terminal. Cbreak mode: no echo and no waiting for Enter, while Ctrl-C
    still interrupts and the output still turns "\\n" into a new line; the old mode comes back
    on exit, whatever happens."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending: list[str] = []
        self.saved = None

    def __enter__(self) -> KeyReader:
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc_info: object) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def key(self) -> str:
        """The next key pressed (lower case); QUIT_KEY when the terminal closes."""
        while not self.pending:
            chunk = os.read(self.fd, 64)
            if not chunk:
                return QUIT_KEY
            text = chunk.decode("utf-8", "ignore")
            # An arrow or function key arrives as one escape sequence: ignore it whole.
            if not text.startswith("\x1b"):
                self.pending.extend(text)
        return self.pending.pop(0).lower()


class LabelFile:
    """The output: label records appended one flushed line each. The lines written in this
    session can be taken back (undo), newest first."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise CaiError(f"cannot write {path}: {exc.strerror}") from None
        self.starts: list[int] = []

    def write(self, record: Record) -> None:
        self.starts.append(os.lseek(self.fd, 0, os.SEEK_END))
        view = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        while view:
            view = view[os.write(self.fd, view):]

    def undo(self) -> None:
        os.ftruncate(self.fd, self.starts.pop())

    def close(self) -> None:
        os.close(self.fd)


def read_labels_so_far(path: Path) -> list[Record]:
    """The labels an earlier session wrote to `path`, after cutting a torn last line (a session
    killed mid-write)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        console.print(f"Repaired {path}: dropped an incomplete last line ({len(data) - end} bytes)",
                      markup=False, soft_wrap=True)
        os.truncate(path, end)
    return list(read_records(path, validate_label))


def pair_of(item_id: str, models: Sequence[str]) -> tuple[str, frozenset[str]]:
    return str(item_id), frozenset(models)


@dataclass
class Session:
    """One sitting: the items still to label, in order, and where the labels go."""

    items: list[BlindItem]  # those still to label
    total: int  # all items, labelled before or not
    output: LabelFile
    labeler: str
    models: Sequence[str]
    written: list[int] = field(default_factory=list)  # positions in `items` labelled this session

    @property
    def done_before(self) -> int:
        return self.total - len(self.items)

    def run(self, keys: KeyReader) -> int:
        """Label items until all are done or the labeller quits; return how many were labelled."""
        position = 0
        while position < len(self.items):
            step = self.label_one(self.items[position], position, keys)
            if step is None:
                break
            position = max(position + step, 0)
        return len(self.written)

    def label_one(self, item: BlindItem, position: int, keys: KeyReader) -> int | None:
        """Ask for one item's label; return how far to move (1: next, -1: back to the previous
        one after undoing it), or None to quit."""
        classes: dict[str, str | None] = {}
        note = ""
        while True:
            self.draw(item, position, classes, note)
            note = ""
            key = keys.key()
            if key == QUIT_KEY:
                return None
            if key == UNDO_KEY:
                if not classes and self.written:
                    self.output.undo()
                    return self.written.pop() - position
                classes.clear()
                continue
            if len(classes) < 2:
                if key in CLASS_KEYS or key == NO_CLASS_KEY:
                    classes["AB"[len(classes)]] = CLASS_KEYS.get(key)
                else:
                    note = f"'{key}' is not a class key: press 1-5, or 0 to leave the answer unclassed"
                continue
            if key not in VERDICT_KEYS:
                note = f"'{key}' does nothing here: press a, b, t or s"
                continue
            self.output.write(unblinded_record(item.key_entry(), item.item, classes["A"], classes["B"],
                                               VERDICT_KEYS[key], self.labeler, self.models))
            self.written.append(position)
            return 1

    def draw(self, item: BlindItem, position: int, classes: dict[str, str | None], note: str) -> None:
        from rich.panel import Panel
        from rich.text import Text

        console.clear()
        console.rule(f"item {self.done_before + position + 1} of {self.total}", style="bold")
        if item.messages:
            turns = Text()
            for message in item.messages:
                turns.append(f"{'Human' if message['role'] == 'user' else 'Assistant'}: ", style="bold")
                turns.append(message["content"].strip() + "\n\n")
            console.print(Panel(turns, title="Conversation", title_align="left"))
        else:
            console.print(Panel(Text(item.prompt.strip()), title="Prompt", title_align="left"))
        for side in ("A", "B"):
            mark = f" ({classes[side] or 'no class'})" if side in classes else ""
            console.print(Panel(Text(item.answers[side].strip() or "(empty)"), title=f"Answer {side}{mark}",
                                title_align="left", border_style="cyan"))
        if len(classes) < 2:
            side = "AB"[len(classes)]
            console.print(Text(f"Class of answer {side}:", style="bold"))
            for key, name in CLASS_KEYS.items():
                console.print(Text(f"  {key}  {name:<18} {RUBRIC[name]}"))
            console.print(Text(f"  {NO_CLASS_KEY}  (leave it unclassed)"))
        else:
            console.print(Text("Which answer is better?  a: A is better   b: B is better   t: tie   s: skip",
                               style="bold"))
        back = "redo this item" if classes or not self.written else "go back to the previous item"
        console.print(Text(f"u: {back}   q: quit (labels so far are saved)", style="dim"))
        if note:
            console.print(Text(note, style="yellow"))
