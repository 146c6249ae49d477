#!/usr/bin/env python3
"""The preference model's answers on the judge's hand-checked pairs, as `cai eval --items`
records, so that `cai report` draws the PM's calibration beside the judge's.

    cai score --pm runs/pm judge-harmless-pairs.jsonl > pm-judge-harmless.jsonl
    python3 pm_judge_items.py pm-judge-*.jsonl > pm-judge-items.jsonl
    cai report pm-judge=pm-judge-items.jsonl judge=judge-harmless-items.jsonl --out report

In each pair `chosen` is the right answer (hand-checked; `judge_variants.py` keeps it so). The
PM was trained on sigma(score(chosen) - score(rejected)) as the probability that `chosen` is
better, so that is its probability of the right answer: `p_correct`; `correct` when it is above
one half. `kind` names the file the pair came from (harmless, helpful, bare, evasive).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} SCORED.jsonl ... > items.jsonl")
    for name in sys.argv[1:]:
        kind = Path(name).stem.removeprefix("pm-judge-")
        for line in Path(name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            pair = json.loads(line)
            p = 1.0 / (1.0 + math.exp(-(float(pair["chosen_score"]) - float(pair["rejected_score"]))))
            print(json.dumps({"id": f"{kind}:{pair['id']}", "kind": kind, "p_correct": round(p, 6), "correct": float(p > 0.5)}))


if __name__ == "__main__":
    main()
