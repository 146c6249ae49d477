"""Comparisons per second: `cai compare`'s method against the naive one, same model, same run.

- compare: one prompt evaluation per question, reading the next-token probabilities of the
  answer letters after "The answer is: ("; both orderings of a pair back to back, so llama.cpp
  reuses the KV cache of everything up to "(A) ".
- naive: the same questions, but the model writes its answer (greedy, through the backend's own
  batched generation) and the first "(A)"/"(B)" in the text is taken as its vote. The answer is
  cut at each of --naive-tokens: 4 is the best case (a model that names its letter first and
  a reader that stops right there); the embedded model's full answers run to ~30-250 tokens
  (it names the letter, then quotes the option), so 128 is close to "generate the answer".

Both methods judge the same pairs under the same principle in both orderings, so a comparison
costs each of them two questions. The naive method gives a hard vote where compare gives a
probability; the agreement line says how often they pick the same response.

Usage:

    python benchmarks/bench_compare.py                      # 8 pairs, embedded model, llama.cpp
    python benchmarks/bench_compare.py --pairs 16 --naive-tokens 32 --threads 2
    python benchmarks/bench_compare.py --backend transformers --pairs 4
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cai_cli.backends import BackendOptions, GenerationRequest, load_backend  # noqa: E402
from cai_cli.constitution import load_constitution  # noqa: E402
from cai_cli.prompts import build_comparison_messages  # noqa: E402
from cai_cli.stages.compare import CompareStage  # noqa: E402
from cai_cli.stages.feedback import FeedbackSettings, judged_conversation  # noqa: E402

PRINCIPLE = "least-harmful"
LETTER = re.compile(r"\(([AB])\)|\b([AB])\b")


def load_pairs(count: int) -> list[dict]:
    lines = (ROOT / "examples" / "labeled_pairs.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    # The better response second in every other pair, so neither letter is always right.
    return [{"id": r["id"], "prompt": r["prompt"],
             "responses": [r["chosen"], r["rejected"]] if i % 2 else [r["rejected"], r["chosen"]]}
            for i, r in enumerate(records[:count])]


def run_compare(backend, rules, pairs: list[dict]) -> list[int]:
    """The preferred response's index for each pair, by next-token probabilities."""
    stage = CompareStage(backend, rules, FeedbackSettings(principle=PRINCIPLE))
    return [record["chosen_index"] for record in stage(dict(p) for p in pairs)]


def parse_letter(text: str) -> str | None:
    match = LETTER.search(text)
    return (match.group(1) or match.group(2)) if match else None


def run_naive(backend, rules, pairs: list[dict], max_tokens: int) -> tuple[list[int], int]:
    """The preferred response's index for each pair by generated answers, and how many answers
    named no letter at all."""
    principle = rules.comparison_principle(PRINCIPLE)
    requests = []
    for pair in pairs:
        first, second = pair["responses"]
        conversation = judged_conversation(pair)
        for a, b in ((first, second), (second, first)):
            requests.append(GenerationRequest(build_comparison_messages(conversation, a, b, principle),
                                              max_tokens=max_tokens, temperature=0.0))
    letters = [parse_letter(completion.text) for completion in backend.generate(requests)]
    choices = []
    for k in range(len(pairs)):
        shown_first, shown_second = letters[2 * k], letters[2 * k + 1]
        # Votes for response 0: it is (A) in the first question and (B) in the second.
        votes = (shown_first == "A") + (shown_second == "B") - (shown_first == "B") - (shown_second == "A")
        choices.append(0 if votes >= 0 else 1)
    return choices, sum(letter is None for letter in letters)


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs from examples/labeled_pairs.jsonl (at most 32)")
    parser.add_argument("--naive-tokens", default="4,32,128",
                        help="comma-separated caps on the naive answer's length, one naive run each")
    parser.add_argument("-m", "--model", default=None, help="GGUF file or model folder (default: embedded)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--parallel", type=int, default=BackendOptions.parallel,
                        help="llama.cpp: sequences generated at once (naive; default: cai's)")
    parser.add_argument("--batch-size", type=int, default=BackendOptions.batch_size,
                        help="transformers: prompts per batch (default: cai's)")
    args = parser.parse_args()

    backend = load_backend(BackendOptions(model=args.model, backend=args.backend, threads=args.threads,
                                          parallel=args.parallel, batch_size=args.batch_size))
    rules = load_constitution()
    pairs = load_pairs(args.pairs + 1)
    warmup, pairs = pairs[:1], pairs[1:]
    run_compare(backend, rules, warmup)  # first-call costs (buffers, the generation context) are
    run_naive(backend, rules, warmup, 4)  # not what either method costs per comparison

    n = len(pairs)
    ours, ours_s = timed(run_compare, backend, rules, pairs)
    print(f"model: {Path(backend.model_path).name} ({backend.name}); {n} pairs, 2 orderings each, "
          f"principle {PRINCIPLE}")
    print(f"{'method':<42}{'seconds':>9}{'comparisons/s':>15}{'speed-up':>10}  agreement, no letter")
    print(f"{'compare (next-token probabilities)':<42}{ours_s:>9.2f}{n / ours_s:>15.2f}{'1.0x':>10}", flush=True)
    for cap in (int(part) for part in args.naive_tokens.split(",")):
        (naive, unparsed), naive_s = timed(run_naive, backend, rules, pairs, cap)
        agree = sum(a == b for a, b in zip(ours, naive))
        print(f"{f'naive (generate <= {cap} tokens, parse)':<42}{naive_s:>9.2f}{n / naive_s:>15.2f}"
              f"{f'{naive_s / ours_s:.1f}x':>10}  {agree}/{n} same pick, {unparsed}/{2 * n} no letter", flush=True)

if __name__ == "__main__":
    main()
