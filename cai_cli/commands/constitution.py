"""cai constitution: inspect, validate and convert constitutions."""

from __future__ import annotations

import json

import typer

from cai_cli.errors import console
from cai_cli.options import ConstitutionOpt

app = typer.Typer(help="Inspect, validate and convert constitutions.", no_args_is_help=True)


@app.command()
def show(constitution: ConstitutionOpt = None) -> None:
    """Print a constitution in the project's own format (JSON on stdout): a way to read one, or
    to convert the paper's or Hugging Face's files.

    Examples:

        cai constitution show

        cai constitution show -c critiques.json -c comparisons.json > merged.json
    """
    from cai_cli.constitution import load_constitution

    print(json.dumps(load_constitution(constitution).to_dict(), indent=2, ensure_ascii=False))


@app.command()
def validate(constitution: ConstitutionOpt = None) -> None:
    """Check a constitution and summarise it on stderr; exit 1 with the problem if it is broken.

    Examples:

        cai constitution validate -c my_constitution.yaml
    """
    from cai_cli.constitution import load_constitution

    rules = load_constitution(constitution)
    console.print(f"{rules.name}: {len(rules.critiques)} critique/revision principles, "
                  f"{len(rules.comparisons)} comparison principles, {len(rules.few_shot)} few-shot examples")
