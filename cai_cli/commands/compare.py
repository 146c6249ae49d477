"""cai compare: soft preference labels for pairs of responses, from the feedback model's
next-token probabilities of the answer letters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cai_cli.backends import BackendOptions, load_backend
from cai_cli.flags import IO_PANEL, with_settings
from cai_cli.options import MODEL_OPTIONS, ConstitutionOpt, InputArg, OutputOpt, SkipInvalidOpt
from cai_cli.settings import FeedbackSettings
from cai_cli.streams import KeptRecords, StreamInput, run_stream

JudgedResumeOpt = Annotated[bool, typer.Option(
    "--resume", rich_help_panel=IO_PANEL,
    help="With -o: reuse the judgements already in the output file whose texts and settings are unchanged; "
         "the others are judged again, and kept ones no longer in the input are dropped.")]


@with_settings(settings=FeedbackSettings, model_options=MODEL_OPTIONS)
def compare(
    input: InputArg = None,
    constitution: ConstitutionOpt = None,
    output: OutputOpt = None,
    resume: JudgedResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    settings: FeedbackSettings,
    model_options: BackendOptions,
) -> None:
    """Label which of each record's `responses` is better under the constitution's comparison
    principles, as `chosen`/`rejected` plus a soft `label` = P(chosen is better).

    The label is the normalised probability of the answer letters (A)/(B)
    after "The answer is: (", averaged over both orderings and the drawn
    principles; nothing is generated (except reasoning with --cot).
    K > 2 responses give one record per pair, with ids `<id>:<i>-<j>`.

    Examples:

        cai sample -n 2 --temperature 1 < examples/red_team.jsonl | cai compare > prefs.jsonl

        cai compare --principles 4 --seed 1 samples.jsonl -o prefs.jsonl --resume

        cai compare --cot --clamp 0.3,0.7 --principle least-harmful samples.jsonl

        cai compare --base-url http://gpu1:8000/v1 -m my-model --tokenizer my-model.gguf samples.jsonl
    """
    from cai_cli.constitution import load_constitution
    from cai_cli.stages.compare import CompareStage
    from cai_cli.stages.feedback import check_feedback_settings

    rules = load_constitution(constitution)
    check_feedback_settings(rules, settings)  # before the model loads
    stage = CompareStage(load_backend(model_options), rules, settings)

    def keep(path: Path) -> KeptRecords:
        stage.kept = KeptRecords(path)
        return stage.kept

    run_stream("compare", stage, StreamInput(input, stage.validate, skip_invalid), output, resume, keep)

