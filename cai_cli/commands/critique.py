"""cai critique: the model critiques its response under a principle of the constitution."""

from __future__ import annotations

from cai_cli.backends import BackendOptions, load_backend
from cai_cli.flags import with_settings
from cai_cli.options import MODEL_OPTIONS, ConstitutionOpt, InputArg, OutputOpt, ResumeOpt, SkipInvalidOpt
from cai_cli.settings import CritiqueSettings
from cai_cli.streams import StreamInput, run_stream


@with_settings(settings=CritiqueSettings, model_options=MODEL_OPTIONS)
def critique(
    input: InputArg = None,
    constitution: ConstitutionOpt = None,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    settings: CritiqueSettings,
    model_options: BackendOptions,
) -> None:
    """Critique each record's `response` under a principle drawn at random (seeded) and append
    `{principle, critique}` to its `revisions` history. Follow with `cai revise`.

    Examples:

        cai critique < initial.jsonl | cai revise > revised.jsonl

        cai critique --principle honesty --no-few-shot initial.jsonl

        cai critique -c my_constitution.yaml initial.jsonl -o critiqued.jsonl --resume
    """
    from cai_cli.constitution import load_constitution
    from cai_cli.stages.critique import CritiqueStage

    rules = load_constitution(constitution)
    stage = CritiqueStage(load_backend(model_options), rules, settings)
    run_stream("critique", stage, StreamInput(input, stage.validate, skip_invalid), output, resume)
