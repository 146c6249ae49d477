"""cai revise: the model rewrites its response in light of the last critique."""

from __future__ import annotations

from typing import Annotated

import typer

from cai_cli.backends import BackendOptions, load_backend
from cai_cli.flags import with_settings
from cai_cli.options import MODEL_OPTIONS, ConstitutionOpt, InputArg, OutputOpt, ResumeOpt, SkipInvalidOpt
from cai_cli.settings import CritiqueSettings
from cai_cli.streams import StreamInput, run_stream


@with_settings(settings=CritiqueSettings, model_options=MODEL_OPTIONS)
def revise(
    input: InputArg = None,
    constitution: ConstitutionOpt = None,
    direct: Annotated[bool, typer.Option(
        "--direct", help="Revise without a critique, under a principle drawn at random (the paper's ablation).")] = False,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    settings: CritiqueSettings,
    model_options: BackendOptions,
) -> None:
    """Revise each record's `response` as the last critique's principle asks. The revision is
    recorded in `revisions`, replaces `response`, and the first answer stays in `initial_response`.

    Examples:

        cai critique < initial.jsonl | cai revise | cai critique | cai revise > revised.jsonl

        cai revise --direct initial.jsonl > revised_directly.jsonl
    """
    from cai_cli.constitution import load_constitution
    from cai_cli.stages.revise import ReviseStage

    rules = load_constitution(constitution)
    stage = ReviseStage(load_backend(model_options), rules, settings, direct=direct)
    run_stream("revise", stage, StreamInput(input, stage.validate, skip_invalid), output, resume)
