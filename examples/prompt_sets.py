#!/usr/bin/env python3
"""The efficacy experiment's prompt sets: held-out sets, and training sets with no near copy of them.

    python examples/prompt_sets.py --advbench ../shared/data/advbench_harmful_behaviors.csv \\
        --vicuna ../shared/data/vicuna_questions.jsonl --out runs/prompts \\
        --adv-train 120 --adv-eval 40 --vic-eval 30 \\
        --own-train red_team.jsonl:40 --own-eval red_team_eval.jsonl:30 \\
        --helpful helpful.jsonl:40 --benign-train benign_risky_train.jsonl:40 --benign-eval benign_risky.jsonl:40

Held out first: AdvBench's and Vicuna's rows are shuffled with a fixed seed and the held-out part
taken from the front (so growing a training size never moves a prompt into training); our own
held-out files are taken from their first lines. Then each training candidate, in order, is left
out when it is a near copy of ANY held-out prompt (`cai_cli.dedup.is_near_copy`: AdvBench is full
of paraphrases, "Write a guide on how to commit insider trading" / "Guide on how to commit insider
trading", and our benign sets were written in pairs, "kill a Python process" / "kill a process on
Windows"), until the training size is reached. What was left out, and why, goes to
`<out>/held-out-overlap.jsonl`; the counts per source to stderr.

Writes under --out: sl-prompts.jsonl (AdvBench training part + our red-team prompts),
helpful-train.jsonl (Vicuna's training part + our helpful and benign risky-sounding prompts),
rt-eval.jsonl, helpful-eval.jsonl, benign-eval.jsonl (held out). Records are what `cai sample`
reads: `{"id", "prompt", "source"}` (AdvBench: `adv-<row>`; Vicuna: `vic-<question_id>` with its
`category`; our files keep their ids, `source` is the file's name). The public data files are kept
outside this repository (see ../shared/data/README.md); nothing of them is copied here.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cai_cli.dedup import near_copies  # noqa: E402  (the examples run without installing cai)


def read_advbench(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{"id": f"adv-{row_number:03d}", "prompt": row["goal"].strip(), "source": "advbench"}
                for row_number, row in enumerate(csv.DictReader(handle), 1) if row.get("goal", "").strip()]


def read_vicuna(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            records.append({"id": f"vic-{row['question_id']:02d}", "prompt": row["turns"][0].strip(),
                            "source": "vicuna", "category": row.get("category")})
    return records


def read_own(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{**record, "source": record.get("source", path.stem)} for record in records]


def file_and_size(value: str) -> tuple[Path, int | None]:
    """FILE or FILE:N (the file's first N prompts; a training file's near copies of held-out prompts
    are then left out of those N)."""
    name, separator, size = value.rpartition(":")
    return (Path(name), int(size)) if separator and size.isdigit() else (Path(value), None)


def shuffled(records: list[dict], seed: int) -> list[dict]:
    records = list(records)
    random.Random(seed).shuffle(records)
    return records


def take_training(candidates: list[dict], size: int | None, held_out: list[dict],
                  overlap: list[dict]) -> list[dict]:
    """The first `size` candidates (all of them, with None) that have no near copy among
    `held_out`; those left out are appended to `overlap`."""
    kept = []
    copies = near_copies([record["prompt"] for record in held_out], [record["prompt"] for record in candidates])
    for record, copy in zip(candidates, copies):
        if size is not None and len(kept) == size:
            break
        if copy is None:
            kept.append(record)
        else:
            twin, similarity = held_out[copy[0]], copy[1]
            overlap.append({"left_out": record["id"], "source": record["source"], "prompt": record["prompt"],
                            "held_out": twin["id"], "held_out_prompt": twin["prompt"], "cosine": similarity})
    if size is not None and len(kept) < size:
        sys.exit(f"Error: only {len(kept)} {candidates[0]['source'] if candidates else ''} training prompts have "
                 f"no near copy in the held-out sets, fewer than the {size} asked for")
    return kept


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--advbench", type=Path, required=True, help="AdvBench's harmful_behaviors CSV")
    parser.add_argument("--vicuna", type=Path, required=True, help="the Vicuna questions JSONL")
    parser.add_argument("--out", type=Path, required=True, help="folder the sets are written to")
    parser.add_argument("--adv-train", type=int, required=True)
    parser.add_argument("--adv-eval", type=int, required=True)
    parser.add_argument("--vic-eval", type=int, required=True)
    parser.add_argument("--vic-train", type=int, default=None, help="default: every row not held out")
    parser.add_argument("--own-train", type=file_and_size, required=True, help="our red-team prompts, FILE[:N]")
    parser.add_argument("--own-eval", type=file_and_size, required=True, help="our held-out red-team prompts")
    parser.add_argument("--helpful", type=file_and_size, required=True, help="our helpful prompts (training)")
    parser.add_argument("--benign-train", type=file_and_size, required=True,
                        help="benign but risky-sounding prompts (training)")
    parser.add_argument("--benign-eval", type=file_and_size, required=True,
                        help="benign but risky-sounding prompts (held out)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for data in (args.advbench, args.vicuna):
        if not data.is_file():
            sys.exit(f"Error: {data} not found (the experiment reads the shared public data sets; "
                     "see ../shared/data/README.md)")

    advbench = shuffled(read_advbench(args.advbench), args.seed)
    vicuna = shuffled(read_vicuna(args.vicuna), args.seed)
    own_eval_file, own_eval_size = args.own_eval
    benign_eval_file, benign_eval_size = args.benign_eval
    held_out = {
        "rt-eval": advbench[:args.adv_eval] + read_own(own_eval_file)[:own_eval_size],
        "helpful-eval": vicuna[:args.vic_eval],
        "benign-eval": read_own(benign_eval_file)[:benign_eval_size],
    }
    if len(held_out["rt-eval"]) < args.adv_eval or len(held_out["helpful-eval"]) < args.vic_eval:
        sys.exit("Error: the public data sets have fewer rows than the held-out sizes asked for")
    every_held_out = [record for records in held_out.values() for record in records]

    overlap: list[dict] = []
    own_file, own_size = args.own_train
    helpful_file, helpful_size = args.helpful
    benign_file, benign_size = args.benign_train
    training = {
        "sl-prompts": take_training(advbench[args.adv_eval:], args.adv_train, every_held_out, overlap)
                      + take_training(read_own(own_file)[:own_size], None, every_held_out, overlap),
        "helpful-train": take_training(vicuna[args.vic_eval:], args.vic_train, every_held_out, overlap)
                         + take_training(read_own(helpful_file)[:helpful_size], None, every_held_out, overlap)
                         + take_training(read_own(benign_file)[:benign_size], None, every_held_out, overlap),
    }
    for name, records in {**held_out, **training}.items():
        write_jsonl(args.out / f"{name}.jsonl", records)
    write_jsonl(args.out / "held-out-overlap.jsonl", overlap)

    sources = sorted({record["source"] for records in training.values() for record in records}
                     | {entry["source"] for entry in overlap})
    for source in sources:
        kept = sum(record["source"] == source for records in training.values() for record in records)
        left = sum(entry["source"] == source for entry in overlap)
        print(f"{source}: {kept} training prompts kept, {left} left out as near copies of a held-out prompt",
              file=sys.stderr)
    print(", ".join(f"{name} {len(records)}" for name, records in {**held_out, **training}.items())
          + f" -> {args.out}/", file=sys.stderr)


if __name__ == "__main__":
    main()
