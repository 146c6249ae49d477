"""cai classify: an AI classifier of answers into the blind labels' classes, and its check
against blind labels (precision and recall)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions
from cai_cli.flags import with_settings
from cai_cli.options import MODEL_OPTIONS, OutputOpt, ResumeOpt, SkipInvalidOpt

CLASSIFIER_PANEL = "Classifier"


@with_settings(model_options=MODEL_OPTIONS)
def classify(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="JSONL answers ('prompt' or 'messages', 'response'); '-' or none reads stdin. With --validate, "
             "one file per model.", show_default=False, allow_dash=True)] = None,
    validate: Annotated[Optional[Path], typer.Option(
        "--validate", metavar="LABELS", show_default=False, rich_help_panel=CLASSIFIER_PANEL,
        help="Blind labels (`cai label` output): print the classifier's precision and recall against them "
             "instead of writing records.")] = None,
    name: Annotated[Optional[list[str]], typer.Option(
        "--name", show_default=False, rich_help_panel=CLASSIFIER_PANEL,
        help="--validate: the model's name for each input, in order, as the labels name it "
             "(default: the file name without .jsonl).")] = None,
    orders: Annotated[int, typer.Option(
        "--orders", rich_help_panel=CLASSIFIER_PANEL,
        help="Option orders asked and averaged: 5 (every rotation: each class once under each letter, so a "
             "letter bias cancels), 2 (listed and reversed: the middle class stays under (C)) or 1 (as listed).")] = 5,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    skip_invalid: SkipInvalidOpt = False,
    *,
    model_options: BackendOptions,
) -> None:
    """Classify each answer as complies, complies-caveats, explained-refusal,
    bare-refusal or off-topic, by an AI model; check it against blind labels with --validate.

    The model is asked one multiple-choice question per option order, (A)-(E)
    with a one-line definition of each class; the next-token probabilities of
    the letters are averaged over the orders into `class_probs`, and
    `answer_class` is the most probable class. Its rates mean something only
    as far as it agrees with people: report them with the precision and
    recall that --validate prints (JSON on stdout, tables on stderr).
    Answers that already hold `answer_class` are not classified again.

    Examples:

        cai classify answers/base.jsonl -o classified/base.jsonl

        cai classify --validate labels.jsonl classified/base.jsonl classified/sl-cai.jsonl --name base --name sl-cai

        cai classify -m judge.gguf --orders 2 --validate labels.jsonl base.jsonl sl-cai.jsonl | jq .refuses
    """
    from cai_cli.backends import load_backend
    from cai_cli.errors import CaiError, console
    from cai_cli.streams import StreamInput, run_stream
    from cai_cli.stages.classify import (ClassifyStage, agreement, classify_labeled_answers, match_labels,
                                         option_orders, read_labels, show_agreement)

    option_orders(orders)  # a bad --orders fails before the model loads
    inputs = inputs or [Path("-")]
    if validate is None:
        if len(inputs) > 1:
            raise CaiError("classify reads one answer file at a time (several go with --validate)")
        if name:
            raise CaiError("--name names the answer files of --validate")
        stage = ClassifyStage(load_backend(model_options), orders)
        run_stream("classify", stage, StreamInput(inputs[0], stage.validate, skip_invalid), output, resume)
        return
    if output is not None or resume:
        raise CaiError("--validate prints a summary; it does not write records (-o, --resume): classify with -o "
                       "first, then validate the classified files")
    if name and len(name) != len(inputs):
        raise CaiError(f"{len(name)} --name for {len(inputs)} inputs: give one name per answer file")
    if not name and any(str(path) == "-" for path in inputs):
        raise CaiError("name the model whose answers come from stdin with --name")
    names = name or [path.name.removesuffix(".jsonl") for path in inputs]
    if len(set(names)) < len(names):
        raise CaiError(f"two answer files have the same name ({', '.join(names)}): tell them apart with --name")
    labels = read_labels(validate)
    classified = classify_labeled_answers(list(zip(names, inputs)), labels,
                                          lambda: ClassifyStage(load_backend(model_options), orders))
    pairs, per_model, unmatched = match_labels(labels, classified)
    if not pairs:
        labeled_models = sorted({label.model for label in labels})
        raise CaiError(f"no labeled answer of {validate} is in the answer files (labels name the models "
                       f"{', '.join(labeled_models) or 'none'}; the files are {', '.join(names)}; answers match by id)")
    if unmatched:
        console.print(f"classify: {unmatched} labeled answer(s) of these models have no record in the answer files, "
                      "left out", markup=False, soft_wrap=True)
    report = agreement(pairs)
    report["models"] = {model: dict(counts) for model, counts in per_model.items()}
    report["unmatched"] = unmatched
    show_agreement(report)
    print(json.dumps(report), flush=True)
