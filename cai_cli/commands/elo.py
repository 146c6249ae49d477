"""cai elo: AI-judged ratings of several models' answers, per dimension, with intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions
from cai_cli.flags import IO_PANEL, Some, with_settings
from cai_cli.options import MODEL_OPTIONS, SkipInvalidOpt
from cai_cli.settings import ELO_JUDGE, FeedbackSettings

RATINGS_PANEL = "Ratings"


# The judge is asked as `compare` asks, under K principles of each dimension's constitution:
# one fixed principle (--principle) would not be in the other dimension's.
@with_settings(judge=Some(ELO_JUDGE, without=("principle", "layout")), model_options=MODEL_OPTIONS)
def elo(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="JSONL answers, one file per model (records with 'response', matched by id), or one file whose "
             "records hold 'answers': {model: text}.", show_default=False)] = None,
    name: Annotated[Optional[list[str]], typer.Option(
        "--name", show_default=False, rich_help_panel=IO_PANEL,
        help="The model's name for each input, in order (default: the file name without .jsonl).")] = None,
    dimension: Annotated[Optional[list[str]], typer.Option(
        "--dimension", metavar="NAME=CONSTITUTION", show_default=False, rich_help_panel=RATINGS_PANEL,
        help="A rating dimension and the constitution whose comparison principles judge it; repeatable "
             "(default: harmless=harmlessness and helpful=helpfulness). NAME alone picks a default one.")] = None,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", min=0, rich_help_panel=RATINGS_PANEL,
        help="Resamples of the prompts for the 95% intervals (0: none).")] = 1000,
    items: Annotated[Optional[Path], typer.Option(
        "--items", show_default=False, rich_help_panel=IO_PANEL,
        help="Keep every judgement in FILE (JSONL, one line each as it is made); with --resume, judgements "
             "already there are not asked again.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", rich_help_panel=IO_PANEL,
        help="With --items: go on from the judgements already in FILE, reusing those whose prompt, answers and "
             "settings are unchanged (the others are judged again; kept ones not in the input are dropped).")] = False,
    from_items: Annotated[Optional[Path], typer.Option(
        "--from-items", show_default=False, rich_help_panel=IO_PANEL,
        help="Refit ratings from judgements kept with --items, without loading a model.")] = None,
    labels: Annotated[Optional[list[str]], typer.Option(
        "--labels", metavar="[DIMENSION=]FILE", show_default=False, rich_help_panel=RATINGS_PANEL,
        help="Also (or only) rate from blind human labels (`cai label` records), without a model: a win counts "
             "1, a tie half each way, a skip nothing. DIMENSION names what the labellers judged (default: "
             "overall); repeatable. Marked \"judge\": \"blind labels\", with each model's answer classes.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", show_default=False, rich_help_panel=IO_PANEL,
        help="Write the ratings (JSONL) to FILE instead of stdout.")] = None,
    skip_invalid: SkipInvalidOpt = False,
    *,
    judge: FeedbackSettings,
    model_options: BackendOptions,
) -> None:
    """Rate models by AI-judged pairwise comparisons of their answers: Bradley-Terry Elo per
    dimension (harmlessness, helpfulness) with 95% bootstrap intervals over prompts, win rates
    and the number of judgements behind each figure.

    Each pair of models is judged on each shared prompt as `cai compare` judges
    a pair (K principles of the dimension, both orderings, soft labels that
    count as fractional wins). stdout: one JSON object per model and dimension;
    stderr: a table. Validate the judge first (`cai eval`) on pairs like these.

    Examples:

        cai elo base.jsonl sl-cai.jsonl -m judge.gguf --items judged.jsonl

        cai elo red_team/base.jsonl red_team/sl-cai.jsonl --dimension harmless --name base --name sl-cai

        cai elo --from-items judged.jsonl --bootstrap 2000 > ratings.jsonl

        cai elo --labels harmless=labels.jsonl > human-elo.jsonl
    """
    from cai_cli.errors import console
    from cai_cli.stages.elo import EloSettings, elo_ratings

    settings = EloSettings(answers=tuple(inputs or ()), names=tuple(name or ()), dimensions=tuple(dimension or ()),
                           judge=judge, bootstrap=bootstrap, items=items, resume=resume, from_items=from_items,
                           labels=tuple(labels or ()), skip_invalid=skip_invalid)
    records = elo_ratings(settings, model_options)
    text = "".join(json.dumps(record) + "\n" for record in records)
    if output is None:
        print(text, end="", flush=True)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"elo: wrote {len(records)} ratings to {output}")
