"""cai critique: the model critiques its response under a principle of the constitution."""

from __future__ import annotations

from cai_cli.backends import BackendOptions, load_backend
from cai_cli.options import (ConstitutionOpt, FewShotOpt, InputArg, MaxTokensOpt, OutputOpt, PrincipleOpt,
                             ResumeOpt, SeedOpt, SkipInvalidOpt, TemperatureOpt, TopPOpt, with_model_options)
from cai_cli.streams import StreamInput, run_stream


@with_model_options
def critique(
    input: InputArg = None,
    constitution: ConstitutionOpt = None,
    principle: PrincipleOpt = None,
    few_shot: FewShotOpt = True,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.95,
    seed: SeedOpt = 0,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
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
    from cai_cli.stages.critique import CritiqueSettings, CritiqueStage

    rules = load_constitution(constitution)
    settings = CritiqueSettings(principle, few_shot, max_tokens, temperature, top_p, seed)
    stage = CritiqueStage(load_backend(model_options), rules, settings)
    run_stream("critique", stage, StreamInput(input, stage.validate, skip_invalid), output, resume)
