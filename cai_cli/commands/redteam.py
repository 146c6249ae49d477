"""cai redteam: grow a prompt set from a few seeds by few-shot generation, deduplicated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions, Sampling, load_backend
from cai_cli.dedup import DEFAULT_NGRAM, DEFAULT_THRESHOLD
from cai_cli.flags import with_settings
from cai_cli.options import MODEL_OPTIONS, InputArg, OutputOpt, SkipInvalidOpt
from cai_cli.settings import REDTEAM_SAMPLING
from cai_cli.streams import run_stream

GENERATION_PANEL = "Generation"
QUALITY_PANEL = "Quality"


@with_settings(sampling=REDTEAM_SAMPLING, model_options=MODEL_OPTIONS)
def redteam(
    n: Annotated[int, typer.Option(
        "-n", min=1, show_default=False, rich_help_panel=GENERATION_PANEL,
        help="How many new prompts to write (required).")],
    input: InputArg = None,
    kind: Annotated[str, typer.Option(
        "--kind", metavar="red-team|helpful", rich_help_panel=GENERATION_PANEL,
        help="red-team: requests for harmful help, for SL-CAI's critiques; helpful: ordinary requests, "
             "for the helpfulness mix.")] = "red-team",
    shots: Annotated[int, typer.Option(
        "--shots", min=1, rich_help_panel=GENERATION_PANEL,
        help="Seed prompts shown to the model per attempt, drawn at random (seeded).")] = 5,
    topic: Annotated[Optional[list[str]], typer.Option(
        "--topic", show_default=False, rich_help_panel=GENERATION_PANEL,
        help="Ask for prompts about this topic; repeat for several, spread evenly over the attempts.")] = None,
    topics: Annotated[Optional[Path], typer.Option(
        "--topics", show_default=False, rich_help_panel=GENERATION_PANEL,
        help="A text file of topics, one per line (blank lines and #-comments skipped), as --topic.")] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", rich_help_panel=GENERATION_PANEL,
        help="For base (pretrained) models: a plain numbered list that the model continues by one line, "
             "instead of a chat turn asking for a prompt.")] = False,
    max_attempts: Annotated[Optional[int], typer.Option(
        "--max-attempts", min=1, show_default=False, rich_help_panel=GENERATION_PANEL,
        help="Give up after this many generations even if fewer than N prompts were kept (default: 5 x N).")] = None,
    avoid: Annotated[Optional[list[Path]], typer.Option(
        "--avoid", show_default=False, rich_help_panel=QUALITY_PANEL,
        help="JSONL prompts that new ones must not duplicate, without showing them to the model "
             "(an evaluation set, an earlier run); repeatable.")] = None,
    max_words: Annotated[int, typer.Option(
        "--max-words", min=1, rich_help_panel=QUALITY_PANEL, help="Drop prompts longer than this.")] = 60,
    dedup_threshold: Annotated[float, typer.Option(
        "--dedup-threshold", min=0.0, max=1.0, rich_help_panel=QUALITY_PANEL,
        help="Drop a prompt whose word n-grams overlap this much (Jaccard similarity) with a seed's or an "
             "earlier prompt's: lower drops more.")] = DEFAULT_THRESHOLD,
    ngram: Annotated[int, typer.Option(
        "--ngram", min=1, rich_help_panel=QUALITY_PANEL,
        help="Words per n-gram for near-duplicate detection.")] = DEFAULT_NGRAM,
    output: OutputOpt = None,
    resume: Annotated[bool, typer.Option(
        "--resume", rich_help_panel="Input and output",
        help="With -o: keep the prompts already in the file and go on after them, as if never stopped.")] = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    sampling: Sampling,
    model_options: BackendOptions,
) -> None:
    """Write N new prompts in the vein of the seed prompts in INPUT: each attempt shows the model a
    few seeds at random and asks for one more. Empty, cut-off, overlong, echoed and non-request
    outputs and (near) duplicates of the seeds or of earlier prompts are dropped; the summary on
    stderr counts them. The records (`id`, `prompt`, `source`, `seed_ids`) go straight into `cai sample`.

    Examples:

        cai redteam examples/red_team.jsonl -n 200 -o more_red_team.jsonl --resume

        cai redteam examples/helpful.jsonl -n 100 --kind helpful > more_helpful.jsonl

        cai redteam seeds.jsonl -n 1000 --topic "cybercrime" --topic "harassment" -m model.gguf

        cai redteam seeds.jsonl -n 500 --raw -m base-model.gguf --avoid eval_prompts.jsonl
    """
    from cai_cli.stages.redteam import AttemptSlots, RedteamSettings, RedteamStage, read_prompts, read_topics

    settings = RedteamSettings(n, kind, shots, read_topics(topic or [], topics), raw, max_attempts, max_words,
                               dedup_threshold, ngram, sampling)
    seeds = read_prompts(input, skip_invalid)
    avoided = [record for path in avoid or [] for record in read_prompts(path, skip_invalid)]
    stage = RedteamStage(load_backend(model_options), settings, seeds, avoided)
    run_stream("redteam", stage, AttemptSlots(stage, input, output), output, resume)
