"""cai elo: AI-judged ratings of several models' answers, per dimension, with intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions
from cai_cli.commands.compare import ClampOpt, CotOpt, PrinciplesOpt, ReasoningTemperatureOpt, ReasoningTokensOpt, SwapOpt
from cai_cli.options import IO_PANEL, SeedOpt, SkipInvalidOpt, TopPOpt, with_model_options

RATINGS_PANEL = "Ratings"


@with_model_options
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
    principles: PrinciplesOpt = 4,
    swap: SwapOpt = True,
    cot: CotOpt = False,
    clamp: ClampOpt = None,
    max_tokens: ReasoningTokensOpt = 128,
    temperature: ReasoningTemperatureOpt = 0.0,
    top_p: TopPOpt = 0.95,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", min=0, rich_help_panel=RATINGS_PANEL,
        help="Resamples of the prompts for the 95% intervals (0: none).")] = 1000,
    seed: SeedOpt = 0,
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
    from cai_cli.errors import CaiError, console
    from cai_cli.stages.elo import ratings_by_dimension, rating_records, read_judgements, show_ratings

    records = []
    if from_items is not None:
        if inputs:
            raise CaiError("--from-items refits kept judgements: give no answer files with it")
        judgements, lengths, models = read_judgements(from_items), None, None
    elif inputs:
        judgements, lengths, models = judge(inputs, name, dimension, principles, swap, cot, clamp, max_tokens,
                                            temperature, top_p, seed, items, resume, skip_invalid, model_options)
    elif labels:
        judgements = None
    else:
        raise CaiError("give the answer files to judge (one per model), --from-items FILE or --labels FILE")
    if judgements is not None:
        if not judgements:
            raise CaiError("no judgements to rate")
        records = rating_records(ratings_by_dimension(judgements, bootstrap, seed, models), lengths)
        show_ratings(records)
    if labels:
        from cai_cli.labels import label_ratings_of_files, show_label_ratings

        human = label_ratings_of_files(labels, bootstrap, seed)
        show_label_ratings(human)
        records += human
    text = "".join(json.dumps(record) + "\n" for record in records)
    if output is None:
        print(text, end="", flush=True)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"elo: wrote {len(records)} ratings to {output}")


def judge(inputs, names, dimension_specs, principles, swap, cot, clamp, max_tokens, temperature, top_p, seed,
          items_path, resume, skip_invalid, model_options):
    """Judge every pair of models on every shared prompt; return the judgements (kept ones
    first), the models' mean answer length in words, and the models in input order."""
    from contextlib import nullcontext

    from cai_cli.backends import load_backend
    from cai_cli.constitution import load_constitution
    from cai_cli.errors import CaiError, console
    from cai_cli.records import KeptRecords, RecordWriter, stale_message
    from cai_cli.stages.elo import DEFAULT_DIMENSIONS, JudgeStage, match_answers, validate_judgement
    from cai_cli.stages.feedback import FeedbackSettings, check_feedback_settings, parse_clamp

    if names and len(names) != len(inputs):
        raise CaiError(f"{len(names)} --name for {len(inputs)} inputs: give one name per input file")
    names = names or [path.name.removesuffix(".jsonl") for path in inputs]
    dimensions = {}
    for spec in dimension_specs or list(DEFAULT_DIMENSIONS):
        key, _, constitution = spec.partition("=")
        if not constitution and key not in DEFAULT_DIMENSIONS:
            raise CaiError(f"--dimension {spec}: give NAME=CONSTITUTION (or one of {', '.join(DEFAULT_DIMENSIONS)})")
        dimensions[key] = load_constitution(constitution or DEFAULT_DIMENSIONS[key])
    settings = FeedbackSettings(None, principles, swap, cot, parse_clamp(clamp, cot), max_tokens, temperature, top_p,
                                seed)
    for rules in dimensions.values():
        check_feedback_settings(rules, settings)
    matched, unmatched = match_answers(list(zip(names, inputs)), skip_invalid)
    for model, ids in unmatched.items():
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        console.print(f"elo: {len(ids)} answer(s) of {model} have no match in every other input, left out: {shown}",
                      markup=False, soft_wrap=True)
    if not matched:
        raise CaiError("no prompt is answered in every input (answers are matched by id)")
    models = list(matched[0].answers)
    lengths = {model: sum(len(item.answers[model].split()) for item in matched) / len(matched) for model in models}
    if resume and not items_path:
        raise CaiError("--resume needs --items FILE: the judgements already made are read from it")
    with RecordWriter(items_path, resume) if items_path else nullcontext() as writer:
        kept = KeptRecords(items_path, validate_judgement) if resume and items_path.exists() else None
        backend = load_backend(model_options)
        stage = JudgeStage(backend, dimensions, settings, kept)
        for item in matched:
            stage.check_fits(item)
        reusable = sum(stage.is_kept(job) for item in matched for job in stage.jobs(item))
        total = len(matched) * len(models) * (len(models) - 1) // 2 * len(dimensions)
        console.print(f"elo: {len(matched)} prompts, {len(models)} models, {len(dimensions)} dimension(s): "
                      f"{total - reusable} judgements to make, {reusable} kept from before", markup=False,
                      soft_wrap=True)
        made = []
        for record in stage(matched):
            made.append(record)
            if writer:
                writer.write(record)
    if kept is None:
        return made, lengths, models
    reused = kept.reused()
    if stale := kept.drop_stale():
        console.print(stale_message("elo", stale), markup=False, soft_wrap=True)
    return reused + made, lengths, models
