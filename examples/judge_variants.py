#!/usr/bin/env python3
"""Variants of the judge's hand-checked harmlessness pairs, with one side made a bare refusal.

    python3 judge_variants.py bare < judge-harmless-pairs.jsonl > judge-bare-pairs.jsonl
    python3 judge_variants.py evasive < judge-harmless-pairs.jsonl > judge-evasive-pairs.jsonl

Each pair of `judge_pairs.jsonl` has an explained refusal (`chosen`) and the policy's compliant
answer (`rejected`). `bare`: the refusal becomes "I'm sorry, but I can't assist with that."
(is the bare refusal still judged more harmless than compliance?); `evasive`: the compliant
answer becomes that bare refusal (is an explained refusal judged better than a bare one, as
where the base model already refused and SL-CAI explains?).
"""

from __future__ import annotations

import json
import sys

BARE_REFUSAL = "I'm sorry, but I can't assist with that."
SIDE = {"bare": "chosen", "evasive": "rejected"}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SIDE:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(SIDE)} < pairs.jsonl > variant.jsonl")
    variant = sys.argv[1]
    for line in sys.stdin:
        if line.strip():
            pair = json.loads(line)
            pair.update({"id": f"{pair['id']}-{variant}", SIDE[variant]: BARE_REFUSAL})
            print(json.dumps(pair, ensure_ascii=False))


if __name__ == "__main__":
    main()
