"""Shared test helpers: run `cai` the way a user does, on real JSONL and the embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tiny settings keep the real-model tests fast on a 2-core CPU.
TINY = ["--max-tokens", "8"]


class Result:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"<exit {self.returncode}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}>"


def cai_env(extra: dict | None = None) -> dict:
    """The environment tests run cai in: offline, and no CAI_MODEL/CAI_DEBUG from the caller's shell."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("CAI_MODEL", "CAI_DEBUG")}
    return {**inherited, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(extra or {})}


def run_cai(*args: str | Path, input: str | bytes | None = None, env: dict | None = None,
            cwd: Path | None = None, timeout: float = 600) -> Result:
    """Run `python -m cai_cli ARGS` in a subprocess with `input` on stdin."""
    full_env = cai_env(env)
    text = not isinstance(input, bytes)
    proc = subprocess.run([sys.executable, "-m", "cai_cli", *map(str, args)], input=input,
                          capture_output=True, text=text, env=full_env, cwd=cwd or ROOT, timeout=timeout)
    if not text:
        proc.stdout, proc.stderr = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    return Result(proc)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    from cai_cli.models import embedded_model_path

    return embedded_model_path()


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """Three red-team prompts from the examples, one with an extra key that must pass through."""
    records = [json.loads(line) for line in (EXAMPLES / "red_team.jsonl").read_text().splitlines()[:3]]
    records[0]["source"] = {"team": "qa", "tags": ["x"]}
    return write_jsonl(tmp_path / "prompts.jsonl", records)
