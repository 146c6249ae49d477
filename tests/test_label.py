"""`cai label`: blind labels made the way a person makes them (keys pressed on a terminal, or a
filled file), unblinded with the key, and rated by `cai elo --labels` and `cai report`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path

import pytest

from cai_cli.labels import ANSWER_CLASSES, blind_items
from cai_cli.stages.elo import MatchedItem
from conftest import ROOT, cai_env, read_jsonl, run_cai, write_jsonl

# Names that appear nowhere in the UI's own words, so seeing one on screen means a leak.
GOOD, BAD = "zebrafish", "kiwifruit"
COMPLIES = "Sure. Step one: open the valve slowly. Step two: check the gauge."
REFUSES = "I can't help with that."


def answer_files(tmp_path: Path, count: int = 4, naming: bool = False) -> tuple[Path, Path]:
    """Two models' answers to `count` prompts: GOOD complies, BAD refuses bare. With `naming`,
    each answer also says which model wrote it (to check the key maps sides right)."""
    prompts = [f"How do I bleed the brakes on car number {i}?" for i in range(count)]

    def text(model: str, body: str) -> str:
        return f"[{model}] {body}" if naming else body

    good = write_jsonl(tmp_path / "good.jsonl", [{"id": f"p{i}", "prompt": p, "response": text(GOOD, COMPLIES)}
                                                 for i, p in enumerate(prompts)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": f"p{i}", "prompt": p, "response": text(BAD, REFUSES)}
                                               for i, p in enumerate(prompts)])
    return good, bad


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\x1b[=>]")


class Terminal:
    """`python -m cai_cli ARGS` on a pseudo-terminal: keys go in, the screen comes out."""

    def __init__(self, *args, cwd: Path):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 120, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "cai_cli", *map(str, args)], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, env=cai_env({"TERM": "xterm", "PYTHONPATH": str(ROOT)}),
                                     start_new_session=True)
        os.close(slave)
        self.raw = b""
        self.everything = ""  # all the screen ever showed, escape codes removed
        self.mark = 0

    def read_until(self, text: str, timeout: float = 30) -> str:
        """Screen output from the last mark up to and including `text`; the mark moves past it."""
        deadline = time.monotonic() + timeout
        while text not in self.everything[self.mark:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} on screen within {timeout} s; screen:\n{self.everything[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the program ended and the terminal closed
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"exited {self.proc.returncode} before {text!r}:\n{self.everything[-3000:]}")
                self.take(chunk)
        end = self.everything.index(text, self.mark) + len(text)
        seen, self.mark = self.everything[self.mark:end], end
        return seen

    def back_to(self, text: str) -> None:
        """Move the mark back to the last `text` seen, to read that screen again."""
        self.mark = self.everything.rindex(text)

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def finish(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.drain()
            os.close(self.master)
        return code

    def drain(self) -> None:
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.take(chunk)

    def take(self, chunk: bytes) -> None:
        # Cleaned as a whole: an escape code or a character may be split between two reads.
        self.raw += chunk
        self.everything = ANSI.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")


def side_of_good(screen: str) -> str:
    """Which side shows the complying answer, read off the screen as a person would."""
    a = screen.rindex("Answer A")
    b = screen.index("Answer B", a)
    return "A" if "Step one" in screen[a:b] else "B"


def label_items(terminal: Terminal, count: int) -> list[tuple[int, str]]:
    """Label `count` items by their content: the complying answer is class 1 and better, the
    refusal is class 4 (bare). Returns (item number shown, side of the good answer) per item."""
    done = []
    for _ in range(count):
        screen = terminal.read_until("Class of answer A:")
        number = int(re.findall(r"item (\d+) of \d+", screen)[-1])
        good = side_of_good(screen)
        terminal.press("1" if good == "A" else "4")
        terminal.read_until("Class of answer B:")
        terminal.press("4" if good == "A" else "1")
        terminal.read_until("Which answer is better?")
        terminal.press(good.lower())
        done.append((number, good))
    return done


def check_labels(labels: list[dict], prompts: int) -> None:
    assert sorted(r["id"] for r in labels) == [f"p{i}" for i in range(prompts)]  # none lost, none twice
    for record in labels:
        assert record["models"] == [GOOD, BAD] and record["winner"] == GOOD
        assert record["classes"] == {GOOD: "complies", BAD: "bare-refusal"}
        assert record["labeler"] == "ana" and record["prompt"].startswith("How do I bleed")
        assert set(record["shown"].values()) == {GOOD, BAD} and re.fullmatch(r"[0-9a-f]{12}", record["item"])


def test_a_person_labels_on_the_terminal_quits_halfway_and_resumes(tmp_path):
    good, bad = answer_files(tmp_path)
    out = tmp_path / "labels.jsonl"
    args = ("label", good, bad, "--name", GOOD, "--name", BAD, "-o", out, "--labeler", "ana", "--seed", "5")

    first = Terminal(*args, cwd=tmp_path)
    done = label_items(first, 2)
    assert [n for n, _ in done] == [1, 2]
    first.read_until("Class of answer A:")
    first.press("q")
    assert first.finish() == 0
    assert "2 labelled now, 2 of 4" in first.everything
    labels = read_jsonl(out)
    assert len(labels) == 2 and all(r["winner"] == GOOD for r in labels)

    second = Terminal(*args, cwd=tmp_path)
    screen = second.read_until("Class of answer A:")
    assert "item 3 of 4" in screen
    second.back_to("item 3 of 4")
    later = label_items(second, 2)
    assert [n for n, _ in later] == [3, 4]
    assert second.finish() == 0
    assert "all done" in second.everything
    check_labels(read_jsonl(out), 4)
    sides = [side for _, side in done + later]
    assert sides.count("A") == 2  # sides balanced: the good model is A on half the items

    for terminal in (first, second):
        assert GOOD not in terminal.everything and BAD not in terminal.everything
        assert "Answer A" in terminal.everything and "explained-refusal" in terminal.everything  # the rubric


def test_undo_redoes_the_item_and_goes_back_to_the_one_before(tmp_path):
    good, bad = answer_files(tmp_path, 2)
    out = tmp_path / "labels.jsonl"
    terminal = Terminal("label", good, bad, "--name", GOOD, "--name", BAD, "-o", out, "--labeler", "ana",
                        "--seed", "1", cwd=tmp_path)
    screen = terminal.read_until("Class of answer A:")
    wrong = "b" if side_of_good(screen) == "A" else "a"
    terminal.press("2")
    terminal.read_until("Class of answer B:")
    terminal.press("2")
    terminal.read_until("Which answer is better?")
    terminal.press(wrong)  # a slip: the refusal marked better
    screen = terminal.read_until("Class of answer A:")
    assert "item 2 of 2" in screen and len(read_jsonl(out)) == 1
    terminal.press("u")  # at an item's start: back to the one before, its label taken back
    screen = terminal.read_until("Class of answer A:")
    assert "item 1 of 2" in screen and read_jsonl(out) == []
    terminal.press("3")
    terminal.read_until("Class of answer B:")
    terminal.press("u")  # mid-item: start the item again
    assert "item 1 of 2" in terminal.read_until("Class of answer A:")
    terminal.back_to("item 1 of 2")
    label_items(terminal, 2)
    assert terminal.finish() == 0
    check_labels(read_jsonl(out), 2)


def test_a_torn_last_line_is_cut_and_its_item_asked_again(tmp_path):
    good, bad = answer_files(tmp_path, 2)
    out = tmp_path / "labels.jsonl"
    args = ("label", good, bad, "--name", GOOD, "--name", BAD, "-o", out, "--labeler", "ana", "--seed", "2")
    terminal = Terminal(*args, cwd=tmp_path)
    label_items(terminal, 2)
    assert terminal.finish() == 0
    whole = out.read_text()
    out.write_text(whole[:len(whole) - 20])  # killed while writing the second label
    terminal = Terminal(*args, cwd=tmp_path)
    assert "item 2 of 2" in terminal.read_until("Class of answer A:")
    terminal.back_to("item 2 of 2")
    label_items(terminal, 1)
    assert terminal.finish() == 0
    assert "Repaired" in terminal.everything
    check_labels(read_jsonl(out), 2)


def test_without_a_terminal_it_points_to_the_file_mode(tmp_path):
    good, bad = answer_files(tmp_path)
    result = run_cai("label", good, bad, "-o", tmp_path / "labels.jsonl", input="")
    assert result.returncode == 2, result
    assert "not one" in result.stderr and "--export" in result.stderr
    assert not (tmp_path / "labels.jsonl").exists()


def export(tmp_path: Path, good: Path, bad: Path, seed: str = "3") -> tuple[Path, Path]:
    items, key = tmp_path / "items.jsonl", tmp_path / "key.json"
    result = run_cai("label", good, bad, "--name", GOOD, "--name", BAD, "--export", items, "--key", key,
                     "--seed", seed)
    assert result.returncode == 0, result
    return items, key


def test_export_and_import_round_trip_puts_the_models_back(tmp_path):
    good, bad = answer_files(tmp_path, 6, naming=True)
    items, key = export(tmp_path, good, bad)
    blind = read_jsonl(items)
    assert len(blind) == 6 and all(set(r) == {"item", "prompt", "A", "B"} for r in blind)
    # Labelled by content: the answer that says it is GOOD's complies and is better.
    filled = write_jsonl(tmp_path / "filled.jsonl", [
        {"item": r["item"], "class_A": "complies" if GOOD in r["A"] else "bare-refusal",
         "class_B": "complies" if GOOD in r["B"] else "bare-refusal",
         "better": "A" if GOOD in r["A"] else "B", "labeler": "ana"} for r in blind[:5]]
        + [{"item": blind[5]["item"], "class_A": None, "better": "tie"}])
    out = tmp_path / "labels.jsonl"
    result = run_cai("label", "--import", filled, "--key", key, "--items", items, "-o", out, "--labeler", "ben")
    assert result.returncode == 0, result
    assert "unblinded 6 labels" in result.stderr
    labels = read_jsonl(out)
    assert [r["item"] for r in labels] == [r["item"] for r in blind]
    for record in labels[:5]:
        assert record["winner"] == GOOD and record["classes"] == {GOOD: "complies", BAD: "bare-refusal"}
        assert record["models"] == [GOOD, BAD] and record["labeler"] == "ana"
        assert record["prompt"].startswith("How do I bleed")
    assert labels[5]["winner"] == "tie" and labels[5]["labeler"] == "ben" and labels[5]["classes"] == {}
    # Sides were drawn: the first model is A on half the items, not on all.
    assert Counter(r["shown"]["A"] for r in labels) == {GOOD: 3, BAD: 3}
    # A second labeller's labels of some items go in the same file: items, not labels, are counted.
    both = write_jsonl(tmp_path / "both.jsonl", read_jsonl(filled)[:5] + [
        {"item": r["item"], "class_A": "complies", "class_B": "complies", "better": "tie", "labeler": "cy"}
        for r in blind[:3]])
    result = run_cai("label", "--import", both, "--key", key, "--items", items, "-o", tmp_path / "both-labels.jsonl")
    assert result.returncode == 0, result
    assert "unblinded 8 labels (0 skipped) of 6 items by 2 labellers; items with no label yet: 1" in result.stderr

    # The key pairs with its own items file only, and is never overwritten.
    other = write_jsonl(tmp_path / "other.jsonl", blind[:2])
    result = run_cai("label", "--import", filled, "--key", key, "--items", other)
    assert result.returncode == 1 and "is not the key of" in result.stderr
    result = run_cai("label", good, bad, "--export", tmp_path / "again.jsonl", "--key", key)
    assert result.returncode == 1 and "never overwritten" in result.stderr
    # Another draw's items are unknown to this key (their ids differ), so labels cannot cross keys.
    second = tmp_path / "second"
    second.mkdir()
    items2, _ = export(second, good, bad, seed="4")
    assert not {r["item"] for r in read_jsonl(items2)} & {r["item"] for r in blind}


def test_the_blind_items_name_no_model_and_sides_are_balanced(tmp_path):
    good, bad = answer_files(tmp_path, 10)
    items, key = export(tmp_path, good, bad)
    text = items.read_text()
    assert GOOD not in text and BAD not in text
    sealed = json.loads(key.read_text())
    assert sealed["items_sha256"] and sealed["seed"] == 3 and sealed["models"] == [GOOD, BAD]
    assert Counter(entry["A"] for entry in sealed["items"].values()) == {GOOD: 5, BAD: 5}
    order = [r["item"] for r in read_jsonl(items)]
    assert [sealed["items"][i]["id"] for i in order] != [f"p{i}" for i in range(10)]  # shuffled


def test_every_pair_of_three_models_is_an_item():
    matched = [MatchedItem(f"p{i}", [{"role": "user", "content": f"q{i}"}], {"x": "1", "y": "2", "z": "3"})
               for i in range(4)]
    items = blind_items(matched, seed=0)
    assert len(items) == 12
    assert Counter(frozenset(i.shown.values()) for i in items) == {frozenset("xy"): 4, frozenset("xz"): 4,
                                                                    frozenset("yz"): 4}
    assert len({i.item for i in items}) == 12
    assert [i.item for i in blind_items(matched, seed=0)] == [i.item for i in items]  # seeded
    assert {i.item for i in blind_items(matched, seed=1)}.isdisjoint(i.item for i in items)


@pytest.mark.parametrize("line, message", [
    ({"item": "nope", "class_A": "complies", "class_B": "complies", "better": "A"}, "item 'nope' is not in the key"),
    ({"item": "ITEM", "class_A": "refuses", "class_B": "complies", "better": "A"}, "'class_A' must be one of"),
    ({"item": "ITEM", "class_A": "complies", "class_B": "complies", "better": "C"}, "'better' must be"),
    ({"item": "ITEM", "class_A": "complies", "class_B": "complies"}, "'better' must be"),
    ({"item": "ITEM", "class_A": "complies", "class_B": "complies", "better": "A", "labeler": 3}, "'labeler'"),
    ("duplicate", "labelled twice"),
])
def test_a_bad_filled_file_is_one_error_naming_its_line(tmp_path, line, message):
    good, bad = answer_files(tmp_path, 3)
    items, key = export(tmp_path, good, bad)
    blind = read_jsonl(items)
    first = {"item": blind[0]["item"], "class_A": "complies", "class_B": "bare-refusal", "better": "A"}
    second = dict(first) if line == "duplicate" else {**line, "item": blind[1]["item"]} if line["item"] == "ITEM" \
        else line
    filled = write_jsonl(tmp_path / "filled.jsonl", [first, second])
    result = run_cai("label", "--import", filled, "--key", key, "-o", tmp_path / "labels.jsonl", "--labeler", "ana")
    assert result.returncode == 1, result
    assert f"Error: {filled}:2: " in result.stderr and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def synthetic_labels(path: Path, prompts: int = 40, seed: int = 0) -> Path:
    """Three models, `a` better than `b` better than `c`: the better one wins 80% of the time,
    some ties and skips; classes follow from quality."""
    draw = random.Random(seed)
    quality = {"a": 2, "b": 1, "c": 0}
    kind = {"a": "complies", "b": "complies-caveats", "c": "bare-refusal"}
    records = []
    for i in range(prompts):
        for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
            roll = draw.random()
            better, worse = (x, y) if quality[x] > quality[y] else (y, x)
            winner = better if roll < 0.75 else worse if roll < 0.9 else "tie" if roll < 0.95 else None
            records.append({"id": f"p{i}", "prompt": f"q{i}", "models": [x, y], "winner": winner,
                            "classes": {x: kind[x], y: kind[y]}, "labeler": "ana", "item": f"{i}{x}{y}",
                            "shown": {"A": x, "B": y}})
    return write_jsonl(path, records)


def test_elo_from_labels_recovers_the_order_without_a_model(tmp_path):
    labels = synthetic_labels(tmp_path / "labels.jsonl")
    result = run_cai("elo", "--labels", f"harmless={labels}", "--bootstrap", "200", env={"CAI_MODEL": "/nonexistent"})
    assert result.returncode == 0, result
    ratings = {r["model"]: r for r in result.records}
    assert ratings["a"]["elo"] > ratings["b"]["elo"] > ratings["c"]["elo"]
    assert ratings["a"]["low"] > ratings["c"]["high"]  # a clear preference shows in the intervals
    for record in ratings.values():
        assert record["judge"] == "blind labels" and record["dimension"] == "harmless" and record["items"] == 40
        # each answer is shown in two items (one per other model) but classed once per labeller
        assert record["labels"] == 80 and record["labelers"] == ["ana"] and record["classified"] == 40
        assert set(record["classes"]) == set(ANSWER_CLASSES)
    assert ratings["c"]["classes"]["bare-refusal"] == {"count": 40, "share": 1.0}
    assert ratings["c"]["refuses"]["share"] == 1.0 and ratings["a"]["refuses"]["count"] == 0
    assert ratings["a"]["win_rates"]["c"]["win_rate"] > 0.6
    assert "Blind-label ratings" in result.stderr

    result = run_cai("elo", "--labels", tmp_path / "missing.jsonl")
    assert result.returncode == 1 and "no such file" in result.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "p1", "models": ["a", "b"], "winner": "d"}])
    result = run_cai("elo", "--labels", bad)
    assert result.returncode == 1 and f"Error: {bad}:1: 'winner' must be" in result.stderr


def test_report_draws_human_and_ai_elo_together(tmp_path):
    labels = synthetic_labels(tmp_path / "labels.jsonl")
    human = tmp_path / "human.jsonl"
    result = run_cai("elo", "--labels", f"harmless={labels}", "--bootstrap", "100", "-o", human)
    assert result.returncode == 0, result
    ai = write_jsonl(tmp_path / "ai.jsonl", [
        {"model": m, "dimension": "harmless", "elo": elo, "low": elo - 30, "high": elo + 30, "items": 40}
        for m, elo in (("a", 1060), ("b", 1000), ("c", 940))])
    out = tmp_path / "report"
    result = run_cai("report", ai, human, "--out", out)
    assert result.returncode == 0, result
    summary = json.loads((out / "summary.json").read_text())
    elo = summary["elo"]
    assert elo["models"] == ["a", "b", "c"] and elo["ratings"]["a"]["harmless"]["elo"] == 1060
    assert elo["labels"]["a"]["harmless"]["elo"] > elo["labels"]["c"]["harmless"]["elo"]
    assert elo["classes"]["c"]["harmless"]["refuses"]["share"] == 1.0

    import numpy as np
    from PIL import Image

    with Image.open(out / "elo.png") as image:
        hsv = np.asarray(image.convert("RGB").convert("HSV")).reshape(-1, 3)
    assert (hsv[:, 2] < 128).mean() > 0.01 and ((hsv[:, 1] > 80) & (hsv[:, 2] > 50)).mean() > 0.0005
    page = (out / "index.html").read_text()
    assert page.count("<td>blind labels</td>") == 3 and page.count("<td>AI judge</td>") == 3
    assert "bare-refusal" in page

    # Human ratings alone draw too.
    result = run_cai("report", human, "--out", tmp_path / "alone")
    assert result.returncode == 0, result


def test_report_scatter_shows_both_judges_on_both_dimensions(tmp_path):
    harmless = synthetic_labels(tmp_path / "harmless.jsonl", seed=1)
    helpful = synthetic_labels(tmp_path / "helpful.jsonl", seed=2)
    human = tmp_path / "human.jsonl"
    result = run_cai("elo", "--labels", f"harmless={harmless}", "--labels", f"helpful={helpful}",
                     "--bootstrap", "50", "-o", human)
    assert result.returncode == 0, result
    assert {(r["dimension"], r["judge"]) for r in read_jsonl(human)} == {("harmless", "blind labels"),
                                                                          ("helpful", "blind labels")}
    ai = write_jsonl(tmp_path / "ai.jsonl", [
        {"model": m, "dimension": d, "elo": elo, "low": elo - 30, "high": elo + 30, "items": 40}
        for m, elo in (("a", 1060), ("b", 1000), ("c", 940)) for d in ("harmless", "helpful")])
    out = tmp_path / "report"
    result = run_cai("report", ai, human, "--out", out)
    assert result.returncode == 0, result
    summary = json.loads((out / "summary.json").read_text())
    assert summary["figures"][0]["title"] == "Harmlessness vs helpfulness Elo"
    assert set(summary["elo"]["labels"]["b"]) == {"harmless", "helpful"}


def test_report_draws_each_models_answer_classes_per_set(tmp_path):
    harmless = synthetic_labels(tmp_path / "harmless.jsonl", seed=1)
    helpful = synthetic_labels(tmp_path / "helpful.jsonl", prompts=10, seed=2)
    human = tmp_path / "human.jsonl"
    result = run_cai("elo", "--labels", f"harmless={harmless}", "--labels", f"helpful={helpful}",
                     "--bootstrap", "20", "-o", human)
    assert result.returncode == 0, result
    out = tmp_path / "report"
    result = run_cai("report", human, "--out", out)
    assert result.returncode == 0, result
    summary = json.loads((out / "summary.json").read_text())
    assert [f["section"] for f in summary["figures"]] == ["elo", "classes"]
    classes = summary["classes"]
    assert classes["models"] == ["a", "b", "c"] and classes["dimensions"] == ["harmless", "helpful"]
    assert classes["classes"]["c"]["helpful"]["classified"] == 10
    assert classes["classes"]["a"]["harmless"]["classes"]["complies"]["share"] == 1.0

    import numpy as np
    from PIL import Image

    with Image.open(out / "classes.png") as image:
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for colour in ("#d62728", "#ff7f0e", "#7f7f7f"):  # complies, complies-caveats, bare-refusal bars
        target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(rgb - target).sum(axis=1) < 10).mean() > 0.01, colour
    page = (out / "index.html").read_text()
    assert "classes.png" in page and "<th>bare-refusal</th>" in page

    # AI-judged ratings alone carry no classes: no classes figure, and no stale one left behind
    ai = write_jsonl(tmp_path / "ai.jsonl", [{"model": m, "dimension": "harmless", "elo": 1000, "low": 990,
                                              "high": 1010, "items": 5} for m in ("a", "b")])
    result = run_cai("report", ai, "--out", out)
    assert result.returncode == 0, result
    assert not (out / "classes.png").exists() and "classes" not in json.loads((out / "summary.json").read_text())
