"""cai sample: answer each prompt with the model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions, Sampling, load_backend
from cai_cli.flags import SAMPLING_PANEL, with_settings
from cai_cli.options import MODEL_OPTIONS, InputArg, OutputOpt, ResumeOpt, SkipInvalidOpt
from cai_cli.streams import StreamInput, run_stream


@with_settings(sampling=Sampling, model_options=MODEL_OPTIONS)
def sample(
    input: InputArg = None,
    n: Annotated[Optional[int], typer.Option(
        "-n", min=1, show_default=False, rich_help_panel=SAMPLING_PANEL,
        help="Write a list of N samples as 'responses' (e.g. -n 2 for compare) instead of one 'response'.")] = None,
    system: Annotated[Optional[str], typer.Option(
        "--system", show_default=False, rich_help_panel=SAMPLING_PANEL,
        help="System message for records that have none.")] = None,
    redraw_refusals: Annotated[int, typer.Option(
        "--redraw-refusals", min=0, metavar="N", rich_help_panel=SAMPLING_PANEL,
        help="Draw an answer that refuses (the keyword detector of `cai report`) again, up to N times: "
             "for the helpful part of an SFT mix. Needs --temperature > 0.")] = 0,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    sampling: Sampling,
    model_options: BackendOptions,
) -> None:
    """Answer each record's `prompt` (or `messages`) and add the answer as `response`.

    Examples:

        cai sample < examples/red_team.jsonl > initial.jsonl

        cai sample -n 2 --temperature 1 examples/red_team.jsonl | cai compare > prefs.jsonl

        cai sample -m my-model.gguf --max-tokens 128 -o out.jsonl --resume prompts.jsonl

        cai sample --redraw-refusals 3 helpful_prompts.jsonl -o helpful.jsonl

        cai sample --base-url http://gpu1:8000/v1,http://gpu2:8000/v1 -m Qwen/Qwen2.5-7B-Instruct prompts.jsonl
    """
    from cai_cli.stages.sample import SampleSettings, SampleStage

    if redraw_refusals and sampling.temperature == 0:
        raise typer.BadParameter("needs --temperature > 0: a greedy redraw is the same answer again",
                                 param_hint="--redraw-refusals")
    backend = load_backend(model_options)
    stage = SampleStage(backend, SampleSettings(n, sampling, system, redraw_refusals))
    run_stream("sample", stage, StreamInput(input, stage.validate, skip_invalid), output, resume)
