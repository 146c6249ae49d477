#!/usr/bin/env python3
"""Prompt sets for the efficacy experiment, split into a training part and a held-out part.

    python examples/prompt_sets.py advbench ../shared/data/advbench_harmful_behaviors.csv \\
        --train runs/rt-train.jsonl --eval runs/rt-eval.jsonl --train-size 160 --eval-size 100
    python examples/prompt_sets.py vicuna ../shared/data/vicuna_questions.jsonl \\
        --train runs/helpful-train.jsonl --eval runs/helpful-eval.jsonl --eval-size 40

The rows are shuffled with a fixed seed and the held-out part is taken first, so growing
`--train-size` never moves a prompt from the held-out set into training. Output records are what
`cai sample` reads: `{"id", "prompt", "source"}` (AdvBench: `adv-<row>`; Vicuna:
`vic-<question_id>`, with its `category`). The data files are public sets kept outside this
repository (see ../shared/data/README.md); nothing of them is copied here.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path


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


READERS = {"advbench": read_advbench, "vicuna": read_vicuna}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(READERS))
    parser.add_argument("data", type=Path, help="the public data file")
    parser.add_argument("--train", type=Path, required=True, help="where the training part goes")
    parser.add_argument("--eval", type=Path, required=True, help="where the held-out part goes")
    parser.add_argument("--eval-size", type=int, required=True)
    parser.add_argument("--train-size", type=int, default=None, help="default: every row not held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"Error: {args.data} not found (the experiment reads the shared public data sets; "
                 "see ../shared/data/README.md)")
    records = READERS[args.kind](args.data)
    random.Random(args.seed).shuffle(records)
    held_out = records[:args.eval_size]
    rest = records[args.eval_size:]
    train = rest if args.train_size is None else rest[:args.train_size]
    if len(held_out) < args.eval_size or (args.train_size is not None and len(train) < args.train_size):
        sys.exit(f"Error: {args.data} has {len(records)} rows, fewer than --eval-size + --train-size")
    write_jsonl(args.eval, held_out)
    write_jsonl(args.train, train)
    print(f"{args.kind}: {len(train)} training prompts -> {args.train}, {len(held_out)} held out -> {args.eval}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
