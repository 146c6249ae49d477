"""cai score: add a preference-model score to every response of every record."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions
from cai_cli.flags import MODEL_PANEL, setting_help
from cai_cli.options import InputArg, OutputOpt, ResumeOpt, SkipInvalidOpt
from cai_cli.streams import StreamInput, run_stream


def score(
    input: InputArg = None,
    reward_model: Annotated[str, typer.Option(
        "--reward-model", "--pm", show_default=False,
        help="Preference model folder written by `cai train-pm`.")] = ...,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, rich_help_panel=MODEL_PANEL,
        help=setting_help(BackendOptions, "batch_size"))] = 8,
    max_length: Annotated[Optional[int], typer.Option(
        "--max-length", min=8, show_default=False,
        help="Longest scored conversation in tokens; the start of longer ones is cut, and counted "
             "(default: the --max-length the preference model was trained with).")] = None,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", rich_help_panel=MODEL_PANEL, help=setting_help(BackendOptions, "verbose"))] = False,
) -> None:
    """Add a preference-model score to every answer of every record.

    `response` -> `score`, `responses` -> `scores`, `initial_response` -> `initial_score`, each
    `revisions[i]` -> `revisions[i].score` (harmlessness per revision round), `chosen`/`rejected`
    -> `chosen_score`/`rejected_score`. Higher means preferred.

    Examples:

        cai score --reward-model runs/pm < revised.jsonl > scored.jsonl

        cai sample -n 4 < examples/red_team.jsonl | cai score --pm runs/pm

        cai score --pm runs/pm prefs.jsonl -o scored.jsonl --resume
    """
    from cai_cli.stages.score import ScoreStage
    from cai_cli.training.preference import PreferenceModel

    stage = ScoreStage(PreferenceModel(reward_model, batch_size, max_length, verbose))
    run_stream("score", stage, StreamInput(input, stage.validate, skip_invalid), output, resume)
