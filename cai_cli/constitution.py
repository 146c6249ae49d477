"""Constitutions: the principles that critiques, revisions and comparisons are asked under.

Three formats load into one `Constitution`:

- the project's own (YAML or JSON): `critiques` (name, critique, revision), `comparisons`
  (name, text) and `few_shot` worked examples; see `constitutions/harmlessness.yaml`;
- the paper's published JSON files: critique/revision pairs (`{name: {"prompt": [...],
  "edit_request": ...}}`), comparison principles (a list of strings ending in "Options:") and
  few-shot transcripts (a list of "Human: ... CritiqueRequest: ..." strings);
- Hugging Face's open reproduction: `{"constitutions": [{critic, revision}], "system_chat": [...]}`.

Several files may be given together (`-c critiques.json -c comparisons.json`); their parts add up.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError

CONSTITUTIONS_DIR = Path(__file__).resolve().parent.parent / "constitutions"
DEFAULT_CONSTITUTION = "harmlessness"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CritiquePrinciple:
    """One critique request and the revision request that goes with it."""

    name: str
    critique: str
    revision: str


@dataclass(frozen=True)
class ComparisonPrinciple:
    """A multiple-choice question stem, e.g. 'Which of these responses is less harmful?'."""

    name: str
    text: str


@dataclass(frozen=True)
class FewShotExample:
    """A worked critique/revision exchange put in front of the model's own conversation."""

    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


@dataclass
class Constitution:
    name: str
    description: str = ""
    critiques: list[CritiquePrinciple] = field(default_factory=list)
    comparisons: list[ComparisonPrinciple] = field(default_factory=list)
    few_shot: list[FewShotExample] = field(default_factory=list)

    def critique_principle(self, name: str) -> CritiquePrinciple:
        for principle in self.critiques:
            if principle.name == name:
                return principle
        raise CaiError(f"no critique principle named {name!r} in constitution {self.name!r} "
                       f"(it has: {', '.join(p.name for p in self.critiques) or 'none'})")

    def comparison_principle(self, name: str) -> ComparisonPrinciple:
        for principle in self.comparisons:
            if principle.name == name:
                return principle
        raise CaiError(f"no comparison principle named {name!r} in constitution {self.name!r} "
                       f"(it has: {', '.join(p.name for p in self.comparisons) or 'none'})")

    def require_critiques(self) -> None:
        if not self.critiques:
            raise CaiError(f"constitution {self.name!r} has no critique/revision principles")

    def require_comparisons(self) -> None:
        if not self.comparisons:
            raise CaiError(f"constitution {self.name!r} has no comparison principles")

    def to_dict(self) -> dict[str, Any]:
        """The project's own format, e.g. to convert a paper or Hugging Face file."""
        return {
            "name": self.name,
            "description": self.description,
            "critiques": [asdict(p) for p in self.critiques],
            "comparisons": [asdict(p) for p in self.comparisons],
            "few_shot": [asdict(e) for e in self.few_shot],
        }


def load_constitution(specs: list[str] | str | None = None) -> Constitution:
    """Load and merge constitutions from files or names of the project's own (`harmlessness`)."""
    if not specs:
        specs = [DEFAULT_CONSTITUTION]
    if isinstance(specs, str):
        specs = [specs]
    parts = [load_one(resolve_spec(spec)) for spec in specs]
    merged = Constitution(name="+".join(p.name for p in parts),
                          description=" ".join(p.description for p in parts if p.description))
    for part in parts:
        merged.critiques += part.critiques
        merged.comparisons += part.comparisons
        merged.few_shot += part.few_shot
    check_unique(merged)
    return merged


def resolve_spec(spec: str) -> Path:
    path = Path(spec)
    if path.exists():
        return path
    for suffix in (".yaml", ".yml", ".json"):
        candidate = CONSTITUTIONS_DIR / f"{spec}{suffix}"
        if "/" not in spec and candidate.exists():
            return candidate
    known = sorted(p.stem for p in CONSTITUTIONS_DIR.glob("*.y*ml")) if CONSTITUTIONS_DIR.exists() else []
    raise CaiError(f"constitution {spec!r} not found: give a file path or one of: {', '.join(known) or 'none'}")


def load_one(path: Path) -> Constitution:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaiError(f"cannot read constitution {path}: {exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types; both mean "not parseable"
        raise CaiError(f"constitution {path} is not valid {path.suffix.lstrip('.').upper()}: "
                       f"{str(exc).splitlines()[0]}") from None
    try:
        return parse_constitution(data, default_name=path.stem)
    except ValueError as exc:
        raise CaiError(f"constitution {path}: {exc}") from None


def parse_constitution(data: Any, default_name: str = "constitution") -> Constitution:
    """Recognise the format of already-parsed data and build a `Constitution` from it."""
    if isinstance(data, dict) and ("critiques" in data or "comparisons" in data):
        return parse_own(data, default_name)
    if isinstance(data, dict) and "constitutions" in data:
        return parse_hugging_face(data, default_name)
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "edit_request" in v for v in data.values()):
        return parse_paper_critiques(data, default_name)
    if isinstance(data, list) and data and all(isinstance(v, str) for v in data):
        if all("CritiqueRequest:" in v for v in data):
            return Constitution(default_name, few_shot=[parse_paper_transcript(t) for t in data])
        return Constitution(default_name, comparisons=[
            ComparisonPrinciple(f"{default_name}-{i}", strip_label(text, "Options:"))
            for i, text in enumerate(data, 1)])
    raise ValueError("unrecognised format: expected the project's YAML/JSON (critiques, comparisons, "
                     "few_shot), the paper's JSON, or Hugging Face's JSON (constitutions, system_chat)")


def parse_own(data: dict[str, Any], default_name: str) -> Constitution:
    unknown = set(data) - {"name", "description", "critiques", "comparisons", "few_shot"}
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
    constitution = Constitution(name=str(data.get("name") or default_name),
                                description=str(data.get("description") or "").strip())
    for i, item in enumerate(data.get("critiques") or []):
        fields = required_strings(item, ("name", "critique", "revision"), f"critiques[{i}]")
        constitution.critiques.append(CritiquePrinciple(*fields))
    for i, item in enumerate(data.get("comparisons") or []):
        fields = required_strings(item, ("name", "text"), f"comparisons[{i}]")
        constitution.comparisons.append(ComparisonPrinciple(*fields))
    for i, item in enumerate(data.get("few_shot") or []):
        prompt, response, critique, revision = required_strings(
            item, ("prompt", "response", "critique", "revision"), f"few_shot[{i}]")
        if "principle" in item:
            try:
                principle = constitution.critique_principle(str(item["principle"]))
            except CaiError as exc:
                raise ValueError(f"few_shot[{i}]: {exc}") from None
        elif constitution.critiques:
            principle = constitution.critiques[0]
        else:
            raise ValueError(f"few_shot[{i}] needs critique principles to take its requests from")
        constitution.few_shot.append(FewShotExample(prompt, response, principle.critique, critique,
                                                    principle.revision, revision))
    return constitution


def parse_paper_critiques(data: dict[str, Any], default_name: str) -> Constitution:
    constitution = Constitution(default_name)
    for name, item in data.items():
        prompts = item.get("prompt")
        critique = prompts[0] if isinstance(prompts, list) and prompts else prompts
        if not isinstance(critique, str) or not isinstance(item.get("edit_request"), str):
            raise ValueError(f"{name}: expected 'prompt' (a list of strings) and 'edit_request' (a string)")
        constitution.critiques.append(CritiquePrinciple(
            name, strip_label(critique, "Critique:"), strip_label(item["edit_request"], "Revision:")))
    return constitution


def parse_hugging_face(data: dict[str, Any], default_name: str) -> Constitution:
    constitution = Constitution(default_name)
    for i, item in enumerate(data.get("constitutions") or [], 1):
        critique, revision = required_strings(item, ("critic", "revision"), f"constitutions[{i - 1}]")
        constitution.critiques.append(CritiquePrinciple(f"{default_name}-{i}", critique, revision))
    for i, chat in enumerate(data.get("system_chat") or []):
        contents = [m.get("content") for m in chat if isinstance(m, dict)] if isinstance(chat, list) else []
        if len(contents) != 6 or not all(isinstance(c, str) for c in contents):
            raise ValueError(f"system_chat[{i}] must be 6 messages: prompt, response, critique request, "
                             "critique, revision request, revision")
        constitution.few_shot.append(FewShotExample(*[c.strip() for c in contents]))
    return constitution


PAPER_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|CritiqueRequest|Critique|RevisionRequest|Revision):")


def parse_paper_transcript(text: str) -> FewShotExample:
    """A few-shot transcript in the paper's `Human: / Assistant: / CritiqueRequest: ...` form."""
    pieces = PAPER_TURN.split(text)
    turns: dict[str, str] = {}
    for label, content in zip(pieces[1::2], pieces[2::2]):
        turns.setdefault(label, content.strip())
    missing = [k for k in ("Human", "Assistant", "CritiqueRequest", "Critique", "RevisionRequest", "Revision")
               if k not in turns]
    if missing:
        raise ValueError(f"few-shot transcript lacks {', '.join(missing)} turn(s)")
    return FewShotExample(turns["Human"], turns["Assistant"], turns["CritiqueRequest"], turns["Critique"],
                          turns["RevisionRequest"], turns["Revision"])


def required_strings(item: Any, keys: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object with {', '.join(keys)}")
    values = []
    for key in keys:
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}.{key} must be a non-empty string")
        values.append(value.strip())
    return values


def strip_label(text: str, label: str) -> str:
    """The paper's requests end in 'Critique:' / 'Revision:' / 'Options:' for a raw-text prompt;
    in a chat the answer is the assistant's turn, so the label goes."""
    text = text.strip()
    return text[: -len(label)].rstrip() if text.endswith(label) else text


def check_unique(constitution: Constitution) -> None:
    for kind, names in (("critique", [p.name for p in constitution.critiques]),
                        ("comparison", [p.name for p in constitution.comparisons])):
        for name in names:
            if not NAME_PATTERN.match(name):
                raise CaiError(f"{kind} principle name {name!r} is not valid: use letters, digits, '-', '_', '.'")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise CaiError(f"duplicate {kind} principle name(s): {', '.join(duplicates)}")
