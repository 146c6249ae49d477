"""`redteam`: grow a prompt set from a few seeds by few-shot generation, deduplicated.

The paper had 42k human red-team prompts and generated 140k more by showing a pretrained model a
few human ones and letting it write another; it did the same for helpfulness prompts. Here each
*attempt* shows the model K seed prompts drawn at random and asks for one more (a chat turn, or
with `raw` a numbered list the model continues). What it writes is kept only when it is a usable,
new request: not empty, cut off, too long, an answer or a comment, a copy of one of its examples,
or an exact or near duplicate of a seed or of a prompt kept before it (`cai_cli.dedup`). Attempts
go on until `n` prompts are kept or `max_attempts` were made.

Everything about attempt i (its examples, its topic, its sampling seed, its id
`<kind>-<seed>-<i>`) follows from the run's seed and i alone, and attempts are judged in order,
so the output does not depend on batching, and a killed run resumes exactly: the prompts already
written go back into the duplicate index and attempts go on after the last one written.

    stage = RedteamStage(backend, RedteamSettings(n=100), seeds)
    for record in stage(AttemptSlots(stage).records(skip=())):
        print(record["prompt"])
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cai_cli.backends import Backend, Completion, Sampling, check_fits
from cai_cli.dedup import DEFAULT_NGRAM, DEFAULT_THRESHOLD, NearDuplicateIndex, distinct_ngrams_per
from cai_cli.errors import CaiError
from cai_cli.prompts import PROMPT_KINDS, build_new_prompt_messages, build_new_prompt_text, derive_seed
from cai_cli.records import InvalidRecord, Record, record_id, type_name, validate_conversation
from cai_cli.stages import Plan, run_generation
from cai_cli.settings import REDTEAM_SAMPLING
from cai_cli.stages.checks import extract_prompt, prompt_problem
from cai_cli.streams import read_records, source_name

KINDS = tuple(PROMPT_KINDS)
# Reasons a generated text is dropped, in the order they are checked (and reported).
DROP_REASONS = ("empty", "truncated", "too long", "not a request", "echo", "duplicate", "near-duplicate")
# Without --max-attempts, give up after this many attempts per prompt asked for: a small model
# keeps one attempt in three or four, and a run that keeps fewer is better stopped and looked at.
ATTEMPTS_PER_PROMPT = 5


@dataclass(frozen=True)
class RedteamSettings:
    """How many prompts to grow and how; `max_attempts=None` means `ATTEMPTS_PER_PROMPT * n`."""

    n: int
    kind: str = "red-team"  # or "helpful": prompts for the helpfulness mix of SL-CAI
    shots: int = 5  # seed prompts shown per attempt
    topics: tuple[str, ...] = ()  # attempt i asks for topics[i % len(topics)]
    raw: bool = False  # a numbered list for a base model to continue, instead of a chat turn
    max_attempts: int | None = None
    max_words: int = 60  # a longer prompt is dropped as "too long"
    threshold: float = DEFAULT_THRESHOLD  # Jaccard similarity of word n-grams that makes a near duplicate
    ngram: int = DEFAULT_NGRAM
    sampling: Sampling = REDTEAM_SAMPLING

    def __post_init__(self):
        if self.kind not in PROMPT_KINDS:
            raise CaiError(f"unknown --kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if not 0 < self.threshold <= 1:
            raise CaiError("--dedup-threshold must be above 0 (at 0 every prompt would be a near duplicate)")

    @property
    def attempts(self) -> int:
        return self.max_attempts if self.max_attempts is not None else ATTEMPTS_PER_PROMPT * self.n


def validate_seed(record: Record) -> None:
    """A seed is a record with a non-empty `prompt` string (and an optional id)."""
    validate_conversation(record)
    if "prompt" not in record:
        raise InvalidRecord("a seed needs a 'prompt' string (a 'messages' conversation is not a prompt to imitate)")


def read_prompts(path: Path | None, skip_invalid: bool = False) -> list[Record]:
    """All the seed records of a JSONL file (stdin for None or '-'); bad lines are `Error:`s
    naming the line, or with `skip_invalid` reported and skipped."""
    records = list(read_records(path, validate_seed, skip_invalid))
    if not records:
        raise CaiError(f"{source_name(path)}: no prompts in it (one JSON object with a 'prompt' per line)")
    return records


def read_topics(topics: list[str], path: Path | None = None) -> tuple[str, ...]:
    """The topics of --topics FILE (one per line; blank lines and #-comments skipped), then --topic's."""
    from_file: list[str] = []
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CaiError(f"cannot read --topics {path}: {getattr(exc, 'strerror', None) or exc}") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise CaiError(f"--topics {path} holds no topics (one per line)")
    chosen = tuple(from_file + [t.strip() for t in topics])
    if any(not t for t in chosen):
        raise CaiError("--topic must not be empty")
    return chosen


class RedteamStage:
    def __init__(self, backend: Backend, settings: RedteamSettings, seeds: list[Record],
                 avoid: Iterable[Record] = ()):
        if not seeds:
            raise CaiError("no seed prompts to generate from")
        self.backend, self.settings = backend, settings
        self.seeds = [(record_id(r), r["prompt"]) for r in seeds]
        self.index = NearDuplicateIndex(settings.threshold, settings.ngram)
        for key, text in self.seeds + [(record_id(r), r["prompt"]) for r in avoid]:
            self.index.add(key, text)
        self.kept: list[str] = []  # every generated prompt of the output, earlier runs' too
        self.next_attempt = 0
        self.counts: Counter[str] = Counter()  # this run's attempts: "generated", "kept", drop reasons
        self.started = 0  # this run's attempts handed to the backend (finished or not)
        # What the model is told besides the examples (and the topic, which it may well repeat).
        self.instruction = (build_new_prompt_text(settings.kind, []) if settings.raw
                            else build_new_prompt_messages(settings.kind, [])[-1]["content"])
        self.id_pattern = re.compile(re.escape(f"{settings.kind}-{settings.sampling.seed}-") + r"(\d+)")

    @property
    def done(self) -> bool:
        return len(self.kept) >= self.settings.n

    def plan(self, slot: Record) -> Plan:
        s, attempt = self.settings, slot["attempt"]
        rng = random.Random(derive_seed(s.sampling.seed, "redteam", attempt))
        shots = rng.sample(self.seeds, min(s.shots, len(self.seeds)))
        texts = [text for _, text in shots]
        topic = s.topics[attempt % len(s.topics)] if s.topics else None
        seed = derive_seed(s.sampling.seed, "redteam", attempt, "sample")
        if s.raw:
            request = s.sampling.request([], seed, prompt=build_new_prompt_text(s.kind, texts, topic), stop=("\n",))
            prompt = request.prompt
        else:
            request = s.sampling.request(build_new_prompt_messages(s.kind, texts, topic), seed)
            prompt = self.backend.render(request.messages)
        try:
            check_fits(self.backend, prompt, s.sampling.max_tokens)
        except InvalidRecord as exc:
            raise CaiError(f"attempt {attempt}, showing {len(shots)} seed prompts: {exc}; or lower --shots") from None
        return Plan([request], {"shots": shots, "topic": topic})

    def finish(self, slot: Record, plan: Plan, completions: list[Completion]) -> Record | None:
        """The new prompt's record, or None when what the model wrote is dropped (and counted)."""
        completion = completions[0]
        prompt, runs_to_end = extract_prompt(completion.text)
        shots = plan.context["shots"]
        problem = prompt_problem(prompt, completion.truncated and runs_to_end,
                                 [text for _, text in shots], self.settings.max_words, self.instruction)
        if problem is None and (duplicate := self.index.match(prompt)):
            problem = duplicate[0]
        self.counts["generated"] += 1
        if problem:
            self.counts[problem] += 1
            return None
        record = {"id": f"{self.settings.kind}-{self.settings.sampling.seed}-{slot['attempt']}", "prompt": prompt,
                  "source": "generated", "seed_ids": [key for key, _ in shots]}
        if plan.context["topic"]:
            record["topic"] = plan.context["topic"]
        self.counts["kept"] += 1
        self._keep(record, slot["attempt"])
        return record

    def _keep(self, record: Record, attempt: int) -> None:
        self.index.add(record["id"], record["prompt"])
        self.kept.append(record["prompt"])
        self.next_attempt = max(self.next_attempt, attempt + 1)

    def validate_output(self, record: Record) -> None:
        """A record an earlier run of the same command (kind and seed) wrote."""
        if not isinstance(record.get("prompt"), str):
            raise InvalidRecord(f"'prompt' must be a string, not {type_name(record.get('prompt'))}")
        if not self.id_pattern.fullmatch(str(record.get("id"))):
            raise InvalidRecord(f"id {record.get('id')!r} is not one this run writes "
                                f"('{self.settings.kind}-{self.settings.sampling.seed}-<attempt>'); resume only "
                                "into the output of the same command, --kind and --seed")

    def restore(self, records: Iterable[Record]) -> None:
        """Take back the records an interrupted run wrote: they count as kept and as seen."""
        for record in records:
            self._keep(record, int(self.id_pattern.fullmatch(str(record["id"])).group(1)))

    def summary(self) -> str:
        s, counts = self.settings, self.counts
        dropped = [f"{counts[reason]} {reason}" for reason in DROP_REASONS if counts[reason]]
        parts = [f"{counts['generated']} generated, {counts['kept']} kept, "
                 f"{counts['generated'] - counts['kept']} dropped" + (f" ({', '.join(dropped)})" if dropped else "")]
        if self.kept:
            # Over groups of the same size on both sides: distinct-n falls as a set grows.
            size = min(len(self.seeds), len(self.kept))
            seeds = distinct_ngrams_per([text for _, text in self.seeds], size)
            parts.append(f"distinct bigrams {distinct_ngrams_per(self.kept, size):.2f} per {size} prompts "
                         f"(seeds: {seeds:.2f})")
        if not self.done:
            parts.append(f"stopped after --max-attempts {s.attempts} with {len(self.kept)} of {s.n} prompts "
                         "(raise --max-attempts; see which reason drops most)")
        return "; ".join(parts)

    def __call__(self, slots: Iterable[Record]) -> Iterator[Record]:
        slots = iter(slots)
        while not self.done:
            started = self.started
            for record in run_generation(self, self._attempts_worth_starting(slots)):
                if record is not None:
                    yield record
                    if self.done:
                        return  # attempts still in flight are dropped unseen, as in any run that stops here
            if self.started == started:
                return  # no attempts left (--max-attempts)

    def _attempts_worth_starting(self, slots: Iterator[Record]) -> Iterator[Record]:
        """The next attempts, while those in flight are likely to keep fewer prompts than are
        still wanted. A batching backend starts `--parallel` attempts at once, and near the end of
        a run (or in a run of one prompt) most of a full batch would be thrown away unseen; so
        once enough are in flight this stops, the batch finishes, and `__call__` starts the next
        with what is then still wanted. Which attempts are judged, and in what order, is the same
        as when one attempt runs at a time."""
        while self.started - self.counts["generated"] < self._worth_in_flight():
            slot = next(slots, None)
            if slot is None:
                return
            self.started += 1
            yield slot

    def _worth_in_flight(self) -> int:
        """Attempts that keep the prompts still wanted, at this run's keep rate so far (one in
        two before the first is judged)."""
        wanted = self.settings.n - len(self.kept)
        keep_rate = (self.counts["kept"] + 1) / (self.counts["generated"] + 2)
        return math.ceil(wanted / keep_rate)


class AttemptSlots:
    """`run_stream`'s input for `redteam`: numbered attempts instead of records from a file.

    When resuming (`skip` holds the ids already written), the output's records go back into the
    stage first, so the duplicate index and the count are as the killed run left them, and the
    attempts go on after the last one written."""

    def __init__(self, stage: RedteamStage, seeds_path: Path | None = None, output: Path | None = None):
        self.stage, self.output = stage, output
        self.path = seeds_path  # run_stream refuses an output file that is this input
        self.error = None

    def records(self, skip: Iterable[str]) -> Iterator[Record]:
        if skip and self.output is not None:
            self.stage.restore(read_records(self.output, self.stage.validate_output))
        for attempt in range(self.stage.next_attempt, self.stage.settings.attempts):
            if self.stage.done:
                return
            yield {"attempt": attempt}
