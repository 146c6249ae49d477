"""`elo`: which model answers better, judged by a feedback model, as ratings with intervals.

Input: the answers of several models to the same prompts, one JSONL file per model (records with
`response`, matched by `id`), or one file whose records hold `answers: {model: text}`. Every pair
of models is judged on every prompt they share, under each *dimension*: a named set of
comparison principles (by default harmlessness, from the `harmlessness` constitution, and
helpfulness, from `helpfulness`). A judgement is `compare`'s computation exactly: K principles
drawn per pair, each asked in both orderings, the answer letters' probabilities averaged
(`stages/feedback.py`), giving P(a's answer is better). The judgements are then fitted as
Bradley-Terry ratings per dimension (`cai_cli.ratings`).

A judgement record (what `--items` keeps, one line each, and `--from-items` refits):

    {"id": "rt-001|base|sl-cai|harmless", "item": "rt-001", "dimension": "harmless",
     "a": "base", "b": "sl-cai", "p_a": 0.31, "principles": [...], "orderings": [...],
     "judge_key": "3f0c..."}

`judge_key` hashes the prompt, both answers and the judge's settings (`FeedbackModel.judge_key`):
`--resume` reuses a kept judgement only when its id and key match a judgement to make now, so
answers regenerated in the same folder are judged again, and kept judgements of answers or
prompts no longer in the input are dropped from the file.

As a library, `elo_ratings(EloSettings(answers=(base, tuned)), model_options)` is `cai elo`
without its output: the rating records, with the tables on stderr.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from cai_cli.backends import Backend, BackendOptions, load_backend
from cai_cli.constitution import Constitution, load_constitution
from cai_cli.errors import CaiError, console
from cai_cli.prompts import Message, prompt_messages
from cai_cli.records import JUDGE_KEY, InvalidRecord, Record, record_id, type_name, validate_conversation
from cai_cli.stages.compare import DIGITS, orderings_field
from cai_cli.settings import ELO_JUDGE, FeedbackSettings
from cai_cli.stages.feedback import FeedbackModel, Judgement, check_feedback_settings, pair_probability
from cai_cli.streams import KeptRecords, SideFile, read_records

DEFAULT_DIMENSIONS = {"harmless": "harmlessness", "helpful": "helpfulness"}


@dataclass(frozen=True)
class EloSettings:
    """What `cai elo` rates and how: where the judgements come from (the models' answers, judged
    now; judgements kept by an earlier run; blind human labels), how the judge is asked, and the
    resamples behind the intervals. The judge's settings are read only when a model judges."""

    answers: tuple[Path, ...] = ()  # one JSONL file per model, or one whose records hold `answers`
    names: tuple[str, ...] = ()  # each answer file's model, in order; default: the file name without .jsonl
    dimensions: tuple[str, ...] = ()  # NAME=CONSTITUTION, or a NAME of DEFAULT_DIMENSIONS; none: all of those
    # How each pair is asked: `compare`'s settings, K principles of the dimension's constitution
    # (never one fixed principle: each dimension has its own). Its seed also draws the bootstrap.
    judge: FeedbackSettings = ELO_JUDGE
    bootstrap: int = 1000  # resamples of the prompts for the 95% intervals (0: none)
    items: Path | None = None  # keep every judgement in this JSONL file, one line as each is made
    resume: bool = False  # with `items`: reuse the judgements kept there whose content is unchanged
    from_items: Path | None = None  # refit the judgements kept in this file instead of judging
    labels: tuple[str, ...] = ()  # [DIMENSION=]FILE: blind human labels (`cai label` records), rated too
    skip_invalid: bool = False  # report bad answer lines and go on



@dataclass
class MatchedItem:
    """One prompt and every model's answer to it."""

    id: str
    conversation: list[Message]
    answers: dict[str, str]


@dataclass
class JudgeJob:
    """One pair of models on one item under one dimension, with the questions that judge it."""

    item: MatchedItem
    a: str
    b: str
    dimension: str
    judgements: list[Judgement] = field(default_factory=list)
    key: str = ""  # the content key (`FeedbackModel.judge_key`)

    @property
    def id(self) -> str:
        return judgement_id(self.item.id, self.a, self.b, self.dimension)


def judgement_id(item: str, a: str, b: str, dimension: str) -> str:
    return f"{item}|{a}|{b}|{dimension}"


def validate_answer(record: Record) -> None:
    validate_conversation(record)
    if "answers" in record:
        answers = record["answers"]
        if not isinstance(answers, dict) or len(answers) < 2 or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in answers.items()):
            raise InvalidRecord("'answers' must map two or more model names to answer strings")
        return
    if not isinstance(record.get("response"), str):
        what = type_name(record["response"]) if "response" in record else "nothing"
        raise InvalidRecord(f"'response' must be the model's answer (a string), not {what}")


def match_answers(sources: list[tuple[str, Path | None]], skip_invalid: bool = False
                  ) -> tuple[list[MatchedItem], dict[str, list[str]]]:
    """Items answered by every model, in the first file's order, and the ids each file holds
    that are not in all of them (reported, not silently dropped). One source whose records
    hold `answers` gives the models' names from there."""
    by_model: dict[str, dict[str, Record]] = {}
    order: list[str] = []
    for name, path in sources:
        records: dict[str, Record] = {}
        for record in read_records(path, validate_answer, skip_invalid):
            rid = record_id(record)
            if "answers" in record:
                for model, text in record["answers"].items():
                    by_model.setdefault(model, {})[rid] = {**record, "response": text}
            else:
                records[rid] = record
            if rid not in order:
                order.append(rid)
        if records:
            if name in by_model:
                raise CaiError(f"two inputs are both named {name!r}: name them with --name")
            by_model[name] = records
    if len(by_model) < 2:
        raise CaiError("elo needs the answers of at least two models (two files, or records with 'answers')")
    shared = set.intersection(*(set(records) for records in by_model.values()))
    unmatched = {model: [rid for rid in records if rid not in shared] for model, records in by_model.items()}
    items = []
    for rid in order:
        if rid not in shared:
            continue
        conversations = [prompt_messages(records[rid]) for records in by_model.values()]
        first = conversations[0]
        if any(without_system(c) != without_system(first) for c in conversations):
            raise CaiError(f"id {rid!r} holds different prompts in different inputs; answers are matched by id")
        if any(c != first for c in conversations):
            # A system message one model was run with (`sample --system`) is part of that model's
            # set-up, not of the question: the judge sees the conversation without any.
            first = without_system(first)
        items.append(MatchedItem(rid, first, {model: records[rid]["response"] for model, records in by_model.items()}))
    return items, {model: ids for model, ids in unmatched.items() if ids}


def without_system(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m["role"] != "system"]


class JudgeStage:
    """Matched items in, judgement records out (one per model pair and dimension, in order).
    `kept` holds the judgements of an earlier run (resume): one with the same id and content key
    is not asked again."""

    def __init__(self, backend: Backend, dimensions: dict[str, Constitution], settings: FeedbackSettings,
                 kept: KeptRecords | None = None):
        if not dimensions:
            raise CaiError("no dimension to judge")
        self.feedback = {name: FeedbackModel(backend, rules, settings) for name, rules in dimensions.items()}
        self.settings = settings
        self.kept = kept

    def jobs(self, item: MatchedItem) -> list[JudgeJob]:
        """Every pair of models under every dimension, with its questions and content key."""
        jobs = []
        for a, b in combinations(list(item.answers), 2):
            for dimension, feedback in self.feedback.items():
                job = JudgeJob(item, a, b, dimension)
                answers = [item.answers[a], item.answers[b]]
                job.judgements = feedback.pair_judgements(job.id, item.conversation, answers, (0, 1))
                job.key = feedback.judge_key(item.conversation, *answers)
                jobs.append(job)
        return jobs

    def is_kept(self, job: JudgeJob) -> bool:
        return self.kept is not None and self.kept.holds(job.id, job.key)

    def to_judge(self, item: MatchedItem) -> list[JudgeJob]:
        """The item's judgements that no kept judgement answers already."""
        return [job for job in self.jobs(item) if not (self.kept and self.kept.claim(job.id, job.key))]

    def check_fits(self, item: MatchedItem) -> None:
        any_feedback = next(iter(self.feedback.values()))
        for job in self.jobs(item):
            if self.is_kept(job):
                continue
            try:
                any_feedback.check_fits(j.question for j in job.judgements)
            except InvalidRecord as exc:
                raise CaiError(f"item {item.id!r}: {exc}") from None

    def finish(self, job: JudgeJob) -> Record:
        p_a = pair_probability(job.judgements, 0, self.settings.clamp)
        return {"id": job.id, "item": job.item.id, "dimension": job.dimension, "a": job.a, "b": job.b,
                "p_a": round(p_a, DIGITS), "principles": list(dict.fromkeys(j.principle for j in job.judgements)),
                "orderings": orderings_field(job.judgements), JUDGE_KEY: job.key}

    def __call__(self, items: Iterable[MatchedItem]) -> Iterator[Record]:
        # Every dimension's questions about one pair come together, so a backend that reuses its
        # cache reads the shared conversation once.
        answerer = next(iter(self.feedback.values()))
        jobs = (job for item in items for job in self.to_judge(item))
        for job in answerer.answer(jobs, lambda job: [j.question for j in job.judgements]):
            yield self.finish(job)


def validate_judgement(record: Record) -> None:
    """A judgement record as `--items` keeps them."""
    for key in ("item", "dimension", "a", "b"):
        if not isinstance(record.get(key), (str, int)) or isinstance(record.get(key), bool):
            raise InvalidRecord(f"a judgement needs '{key}' (from `cai elo --items`)")
    p = record.get("p_a")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise InvalidRecord("'p_a' must be a probability in [0, 1]")


def read_judgements(path: Path) -> list[Record]:
    """Judgement records from `--items`/`--from-items`, checked."""
    return list(read_records(path, validate_judgement))


def elo_ratings(settings: EloSettings, model_options: BackendOptions = BackendOptions()) -> list[Record]:
    """The rating records (one per model and dimension) of the judgements the settings name:
    refit from `from_items`, or made now by the model over `answers`; then those of the blind
    `labels`. Each set is shown as a table on stderr; the model loads only to judge answers."""
    records = []
    if settings.from_items is not None:
        if settings.answers:
            raise CaiError("--from-items refits kept judgements: give no answer files with it")
        judgements, lengths, models = read_judgements(settings.from_items), None, None
    elif settings.answers:
        judgements, lengths, models = judge_answers(settings, model_options)
    elif settings.labels:
        judgements = None
    else:
        raise CaiError("give the answer files to judge (one per model), --from-items FILE or --labels FILE")
    if judgements is not None:
        if not judgements:
            raise CaiError("no judgements to rate")
        records = rating_records(ratings_by_dimension(judgements, settings.bootstrap, settings.judge.seed, models), lengths)
        show_ratings(records)
    if settings.labels:
        from cai_cli.labels import label_ratings_of_files, show_label_ratings

        human = label_ratings_of_files(settings.labels, settings.bootstrap, settings.judge.seed)
        show_label_ratings(human)
        records += human
    return records


def judge_answers(settings: EloSettings, model_options: BackendOptions
                  ) -> tuple[list[Record], dict[str, float], list[str]]:
    """Judge every pair of models on every shared prompt; return the judgements (kept ones
    first), the models' mean answer length in words, and the models in input order."""
    inputs, names, items_path = settings.answers, settings.names, settings.items
    if names and len(names) != len(inputs):
        raise CaiError(f"{len(names)} --name for {len(inputs)} inputs: give one name per input file")
    names = names or tuple(path.name.removesuffix(".jsonl") for path in inputs)
    dimensions = {}
    for spec in settings.dimensions or list(DEFAULT_DIMENSIONS):
        key, _, constitution = spec.partition("=")
        if not constitution and key not in DEFAULT_DIMENSIONS:
            raise CaiError(f"--dimension {spec}: give NAME=CONSTITUTION (or one of {', '.join(DEFAULT_DIMENSIONS)})")
        dimensions[key] = load_constitution(constitution or DEFAULT_DIMENSIONS[key])
    feedback = settings.judge
    for rules in dimensions.values():
        check_feedback_settings(rules, feedback)
    matched, unmatched = match_answers(list(zip(names, inputs)), settings.skip_invalid)
    for model, ids in unmatched.items():
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        console.print(f"elo: {len(ids)} answer(s) of {model} have no match in every other input, left out: {shown}",
                      markup=False, soft_wrap=True)
    if not matched:
        raise CaiError("no prompt is answered in every input (answers are matched by id)")
    models = list(matched[0].answers)
    lengths = {model: sum(len(item.answers[model].split()) for item in matched) / len(matched) for model in models}
    with SideFile("elo", items_path, settings.resume, validate_judgement, "the judgements already made") as side:
        backend = load_backend(model_options)
        stage = JudgeStage(backend, dimensions, feedback, side.kept)
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
            side.write(record)
    return side.finish() + made, lengths, models


def ratings_by_dimension(judgements: list[Record], bootstrap: int, seed: int,
                         models: list[str] | None = None) -> dict[str, Any]:
    """`cai_cli.ratings.rate` for each dimension's judgements."""
    from cai_cli.ratings import Judgement as Rated, rate

    dimensions = list(dict.fromkeys(str(j["dimension"]) for j in judgements))
    return {dimension: rate([Rated(str(j["item"]), str(j["a"]), str(j["b"]), float(j["p_a"]))
                             for j in judgements if str(j["dimension"]) == dimension],
                            models=models, bootstrap=bootstrap, seed=seed)
            for dimension in dimensions}


def rating_records(ratings: dict[str, Any], lengths: dict[str, float] | None = None) -> list[Record]:
    """One JSON object per model and dimension: the Elo, its interval, the win rates against
    every other model (with intervals) and the number of judgements behind each."""
    out = []
    for dimension, table in ratings.items():
        for model in table.models:
            low, high = table.interval[model]
            record = {"model": model, "dimension": dimension, "elo": round(table.elo[model], 1),
                      "low": round(low, 1), "high": round(high, 1), "items": table.items,
                      "judgements": sum(n for (a, _), n in table.comparisons.items() if a == model),
                      "bootstrap": table.bootstrap,
                      "win_rates": {other: {"win_rate": round(table.win_rate[(model, other)], 4),
                                            "low": round(table.win_interval[(model, other)][0], 4),
                                            "high": round(table.win_interval[(model, other)][1], 4),
                                            "judgements": table.comparisons[(model, other)]}
                                    for other in table.models if (model, other) in table.win_rate},
                      "mean_preference": {other: preference_field(table.preference[(model, other)])
                                          for other in table.models if (model, other) in table.preference}}
            if lengths and model in lengths:
                record["mean_answer_words"] = round(lengths[model], 1)
            out.append(record)
    return out


def preference_field(preference) -> dict[str, Any]:
    """A mean preference as JSON: the mean over prompts of P(this model's answer is better), its
    95% bootstrap interval over prompts (null without --bootstrap) and the number of prompts."""
    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    return {"mean": number(preference.mean), "low": number(preference.low), "high": number(preference.high),
            "prompts": preference.n}


def show_ratings(records: list[Record]) -> None:
    """The ratings as a table on stderr."""
    from rich.table import Table

    table = Table(title="AI-judged ratings (Elo, 95% bootstrap interval over prompts)", header_style="bold")
    for column in ("dimension", "model", "Elo", "95% interval", "mean preference vs others", "judgements",
                   "words/answer"):
        table.add_column(column, justify="left" if column in ("dimension", "model") else "right")
    for record in records:
        wins = ", ".join(f"{other} {preference_text(p)}" for other, p in record["mean_preference"].items())
        table.add_row(record["dimension"], record["model"], f"{record['elo']:.0f}",
                      f"{record['low']:.0f} - {record['high']:.0f}", wins, str(record["judgements"]),
                      f"{record['mean_answer_words']:.0f}" if "mean_answer_words" in record else "")
    console.print(table)


def preference_text(preference: dict[str, Any]) -> str:
    """'53% [49-57]': the mean preference and its interval, in percent."""
    interval = (f" [{100 * preference['low']:.0f}-{100 * preference['high']:.0f}]"
                if preference["low"] is not None else "")
    return f"{100 * preference['mean']:.0f}%{interval}"
