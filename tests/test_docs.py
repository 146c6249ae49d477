"""The documentation shows only what exists, and the README stays a first-time user's page.

Every page (README.md, CONTRIBUTING.md, docs/*.md) is read as a user would copy from it: each
`cai` command and flag it shows, in a shell block or an inline code span, is one the CLI has;
each `make` target is a rule of the Makefile it runs; each relative link and #anchor resolves;
each repository path it names in code exists. Pure text checks against the command tree that
`cai --help` is built from: no model, no subprocess.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

# Flags of other tools that the pages show on their own (a vLLM, llama-server, accelerate or
# compiler flag in a sentence), so that a bare flag span is either one of these or cai's.
FOREIGN_FLAGS = {"--max-logprobs", "-np", "--multi_gpu", "--num_processes", "--cpu", "-march"}
# Paths a recipe or command writes: named in the pages, not kept in the repository.
GENERATED = ("examples/runs/", "examples/models/", "examples/experiment-")
REPO_PATH = re.compile(r"(?:cai_cli|examples|tests|benchmarks|docs|constitutions)/[\w./-]*")
FLAG = re.compile(r"^--?[A-Za-z][\w-]*")
SHELL_FENCES = {"", "sh", "bash", "shell", "console"}


@dataclass
class Page:
    path: Path
    text: str
    prose: str  # the text with fenced blocks removed
    blocks: list[tuple[str, str]]  # (info string, body) of each fenced block

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))

    def spans(self) -> list[str]:
        """Inline code spans of the prose; a span may wrap over a line break."""
        return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", self.prose)]

    def shell_lines(self) -> list[str]:
        """Each command line of the shell blocks, continuation lines joined, comments cut."""
        lines = []
        for info, body in self.blocks:
            if info not in SHELL_FENCES:
                continue
            for line in re.sub(r"\\\n", " ", body).splitlines():
                lines.append(re.split(r"\s#", line, maxsplit=1)[0].strip())
        return [line for line in lines if line]


def read_page(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"^```([\w-]*)\n(.*?)^```", text, flags=re.M | re.S)
    prose = re.sub(r"^```[\w-]*\n.*?^```", "", text, flags=re.M | re.S)
    return Page(path, text, prose, blocks)


@functools.cache
def cli_tree() -> dict[str, set[str]]:
    """Every command path ("", "sample", "constitution show", ...) and the flags it takes."""
    import typer

    from cai_cli.cli import app

    found: dict[str, set[str]] = {}

    def walk(command, path: str) -> None:
        flags = {"-h", "--help"}
        for param in command.params:
            flags.update(getattr(param, "opts", []))
            flags.update(getattr(param, "secondary_opts", []))
        found[path] = {flag for flag in flags if flag.startswith("-")}
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def all_cai_flags() -> set[str]:
    return set().union(*cli_tree().values())


def words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:  # an unbalanced quote in an example: plain words are enough here
        return segment.split()


def shell_segments(command_line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at pipes, ;, && and redirections), as words."""
    pieces = re.split(r"\|\|?|&&|;", command_line)
    return [words(re.split(r"\s[<>]", piece, maxsplit=1)[0]) for piece in pieces]


def cai_invocation(tokens: list[str], bare_command: bool = False) -> tuple[list[str], list[str]] | None:
    """(the command path's words, the flags after it) when `tokens` run cai: `cai ...`,
    `python -m cai_cli ...`, `accelerate launch ... -m cai_cli ...`; with `bare_command`, also a
    command written without `cai` (`train-pm --keep-flagged`)."""
    tree = cli_tree()
    start = None
    for i, token in enumerate(tokens):
        if token == "cai" or (token == "cai_cli" and i > 0 and tokens[i - 1] == "-m"):
            start = i + 1
            break
    if start is None:
        if not (bare_command and tokens and tokens[0] in tree and len(tokens) > 1):
            return None
        start = 0
    rest = tokens[start:]
    while rest and rest[0].startswith("-"):  # global options: cai --debug sample ...
        rest = rest[1:]
    path: list[str] = []
    while rest and not rest[0].startswith("-"):
        candidates = rest[0].split("/")  # `cai constitution show/validate`
        if not all(" ".join(path + [c]) in tree for c in candidates):
            break
        path.append(rest[0])
        rest = rest[1:]
    flags = [match.group(0) for token in rest if (match := FLAG.match(token))]
    return path, flags


def unknown_in(invocation: tuple[list[str], list[str]], raw: list[str]) -> list[str]:
    """What an invocation shows that cai lacks: a command word that is none, or a flag."""
    tree = cli_tree()
    path, flags = invocation
    problems = []
    if not path:
        named = [t for t in raw[raw.index("cai") + 1:] if not t.startswith("-")] if "cai" in raw else []
        if named and named[0] not in ("...",) and not named[0].isupper():
            problems.append(f"no command {named[0]!r}")
        known = tree[""]
        problems += [f"no global flag {flag}" for flag in flags if flag not in known]
        return problems
    for alternatives in product_paths(path):
        known = tree[alternatives] | tree[""]
        problems += [f"`cai {alternatives}` has no {flag}" for flag in flags if flag not in known]
    return problems


def product_paths(path: list[str]) -> list[str]:
    """`constitution show/validate` -> ["constitution show", "constitution validate"]."""
    paths = [""]
    for word in path:
        paths = [f"{p} {alternative}".strip() for p in paths for alternative in word.split("/")]
    return paths


def cai_problems(page: Page) -> list[str]:
    problems = []
    for line in page.shell_lines():
        for tokens in shell_segments(line):
            invocation = cai_invocation(tokens)
            if invocation:
                problems += [f"{page.name}: {line!r}: {p}" for p in unknown_in(invocation, tokens)]
    for span in page.spans():
        for tokens in shell_segments(span):
            invocation = cai_invocation(tokens, bare_command=True)
            if invocation:
                problems += [f"{page.name}: `{span}`: {p}" for p in unknown_in(invocation, tokens)]
            elif tokens and tokens[0].startswith("-"):
                flags = [m.group(0) for t in tokens if (m := FLAG.match(t))]
                problems += [f"{page.name}: `{span}`: no cai command has {flag}" for flag in flags
                             if flag not in all_cai_flags() | FOREIGN_FLAGS]
    return problems


@functools.cache
def make_targets(directory: Path) -> set[str]:
    """The rule names of a Makefile and the files it includes (names without variables)."""
    targets: set[str] = set()
    files = [directory / "Makefile"]
    while files:
        text = files.pop().read_text(encoding="utf-8")
        files += [directory / name for name in re.findall(r"^-?include\s+(\S+)", text, flags=re.M)]
        for head in re.findall(r"^([^\s#:=][^:=]*?)\s*&?:(?!=)", text, flags=re.M):
            targets.update(t for t in head.split() if "$" not in t)
    return targets


def make_problems(page: Page) -> list[str]:
    problems = []
    for line in page.shell_lines() + page.spans():
        for tokens in shell_segments(line):
            if "make" not in tokens:
                continue
            rest = tokens[tokens.index("make") + 1:]
            directory = ROOT
            if rest[:1] == ["-C"] and len(rest) > 1:
                directory, rest = ROOT / rest[1], rest[2:]
            for target in rest:
                if "=" in target or target.startswith("-") or "/" in target:
                    continue  # a variable, a flag, or a file the recipe writes
                if target not in make_targets(directory):
                    problems.append(f"{page.name}: {line!r}: no make target {target!r} in {directory.name}")
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    return anchors_in(read_page(path).prose)


def anchors_in(prose: str) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*)$", prose, flags=re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def link_problems(page: Page) -> list[str]:
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.prose):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not this test's business
        file_part, _, anchor = target.partition("#")
        if not file_part:
            if anchor not in anchors_in(page.prose):
                problems.append(f"{page.name}: link to {target}: no heading #{anchor} on this page")
            continue
        resolved = (page.path.parent / file_part).resolve()
        if not resolved.exists():
            problems.append(f"{page.name}: link to {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{page.name}: link to {target}: no heading #{anchor} there")
    return problems


def path_problems(page: Page) -> list[str]:
    """Repository paths named in code (inline, or at the start of a layout block's line) exist."""
    named = [span for span in page.spans() if REPO_PATH.fullmatch(span)]
    for info, body in page.blocks:
        if info == "":
            named += [line.split()[0] for line in body.splitlines()
                      if line.split() and REPO_PATH.fullmatch(line.split()[0])]
    return [f"{page.name}: `{path}`: not in the repository" for path in named
            if not path.startswith(GENERATED) and "NAME" not in path and not (ROOT / path).exists()]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_shows_only_commands_flags_and_make_targets_that_exist(path):
    page = read_page(path)
    assert cai_problems(page) + make_problems(page) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_pages_links_anchors_and_paths_resolve(path):
    page = read_page(path)
    assert link_problems(page) + path_problems(page) == []


def test_every_docs_page_says_what_it_covers_and_links_back_and_the_readme_links_every_page():
    readme = read_page(ROOT / "README.md")
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in re.findall(r"\]\(([^)\s]+)\)", readme.prose)}
    for path in PAGES[1:]:
        assert path.resolve() in linked, f"README.md has no link to {path.relative_to(ROOT)}"
        first_paragraph = path.read_text(encoding="utf-8").split("\n\n")[1]
        back = "README.md" if path.parent == ROOT else "../README.md"
        assert f"]({back}" in first_paragraph, f"{path.relative_to(ROOT)}'s opening lines do not link back to the README"


def test_the_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail "
                                       "into a docs/ page and link it from the README's table")


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check fails on a page with the mistake it is there for."""
    bad = tmp_path / "bad.md"
    bad.write_text("# Bad\n\nSee [gone](nowhere.md), [here](#no-such-heading) and `cai_cli/nothing.py`.\n\n"
                   "```sh\ncai sample --no-such-flag < x.jsonl | cai critiqe\nmake no-such-target\n```\n\n"
                   "Also `cai revise --directly`, `train-pm --keep-flaged` and `--principels 4`.\n", encoding="utf-8")
    page = read_page(bad)
    page.path = ROOT / "docs" / "bad.md"  # resolve its links as a docs page's
    cai = " ".join(cai_problems(page))
    for mistake in ("--no-such-flag", "'critiqe'", "--directly", "--keep-flaged", "--principels"):
        assert mistake in cai
    assert "no-such-target" in " ".join(make_problems(page))
    links = " ".join(link_problems(page) + path_problems(page))
    assert "nowhere.md" in links and "#no-such-heading" in links and "cai_cli/nothing.py" in links
