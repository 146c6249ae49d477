"""What AI feedback costs per pair: `cai compare --principles K` in both prompt layouts, against
generating an answer per question, same model, same run.

- compare: one forward pass per question (principle x ordering), reading the next-token
  probabilities of the answer letters after "The answer is: (". The questions of a pair go to the
  backend in the order in which consecutive prompts share the longest token prefix; llama.cpp
  reuses its KV cache for it, transformers computes it once per batch. "tokens read" counts the
  prompt tokens the model actually computed (the backends' `tokens_read`), beside the seconds.
  - responses-first: conversation, both responses, then the principle's question. The K
    principles of one ordering share everything but their question at the end.
  - paper: the principle's question before the responses; every principle re-reads them (what
    `compare` did before the responses-first layout).
- naive: the same questions (--naive-layout), but the model writes its answer (greedy, through the
  backend's own batched generation, prefix reuse included) and the first "(A)"/"(B)" in the text
  is its vote. The answer is cut at each of --naive-tokens: 4 is the best case (a model that
  names its letter first and a reader that stops right there); the embedded model's full answers
  run to ~30-250 tokens, so 128 is close to "generate the answer".

Two sets of pairs, since the saving grows with the responses' length:
- labeled: examples/labeled_pairs.jsonl, hand-written responses of ~20-60 tokens;
- sampled: two responses per red-team prompt sampled by the same model at --sample-tokens (128,
  what examples/Makefile labels), temperature 1, seeded; not timed.

Usage:

    python benchmarks/bench_compare.py --threads 1                  # both sets, K = 1, 4, 8, embedded model
    python benchmarks/bench_compare.py --backend transformers --pairs 4
    python benchmarks/bench_compare.py --sets labeled --ks 1,4 --naive-tokens 4 -m model.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cai_cli.backends import BackendOptions, GenerationRequest, load_backend  # noqa: E402
from cai_cli.constitution import load_constitution  # noqa: E402
from cai_cli.prompts import COMPARISON_LAYOUTS, DEFAULT_COMPARISON_LAYOUT, derive_seed  # noqa: E402
from cai_cli.stages.compare import CompareStage  # noqa: E402
from cai_cli.settings import FeedbackSettings
from cai_cli.stages.feedback import FeedbackModel, judged_conversation  # noqa: E402

LETTER = re.compile(r"\(([AB])\)|\b([AB])\b")


def labeled_pairs(count: int) -> list[dict]:
    lines = (ROOT / "examples" / "labeled_pairs.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    # The better response second in every other pair, so neither letter is always right.
    return [{"id": r["id"], "prompt": r["prompt"],
             "responses": [r["chosen"], r["rejected"]] if i % 2 else [r["rejected"], r["chosen"]]}
            for i, r in enumerate(records[:count])]


def sampled_pairs(backend, count: int, max_tokens: int) -> list[dict]:
    """Two sampled responses per red-team prompt (seeded), as `cai sample -n 2` writes them;
    prompts with an empty response are passed over."""
    lines = (ROOT / "examples" / "red_team.jsonl").read_text(encoding="utf-8").splitlines()
    pairs = []
    for record in (json.loads(line) for line in lines if line.strip()):
        chat = [{"role": "user", "content": record["prompt"]}]
        requests = [GenerationRequest(chat, max_tokens, 1.0, 0.95, derive_seed(0, record["id"], n)) for n in range(2)]
        responses = [completion.text.strip() for completion in backend.generate(requests)]
        if all(responses):
            pairs.append({"id": record["id"], "prompt": record["prompt"], "responses": responses})
        if len(pairs) == count:
            break
    return pairs


def run_compare(backend, rules, pairs: list[dict], k: int, layout: str) -> tuple[list[int], float, int]:
    """The preferred response's index for each pair, the seconds and the prompt tokens read."""
    stage = CompareStage(backend, rules, FeedbackSettings(principles=k, layout=layout))
    read_before, started = backend.tokens_read, time.perf_counter()
    choices = [record["chosen_index"] for record in stage(dict(p) for p in pairs)]
    return choices, time.perf_counter() - started, backend.tokens_read - read_before


def parse_letter(text: str) -> str | None:
    match = LETTER.search(text)
    return (match.group(1) or match.group(2)) if match else None


def run_naive(backend, rules, pairs: list[dict], k: int, layout: str, max_tokens: int) -> tuple[list[int], float, int]:
    """The preferred response's index for each pair by generated answers (one vote per question,
    the same questions `compare` asks), the seconds, and how many answers named no letter."""
    feedback = FeedbackModel(backend, rules, FeedbackSettings(principles=k, layout=layout))
    started = time.perf_counter()
    judged = [feedback.pair_judgements(p["id"], judged_conversation(p), p["responses"], (0, 1)) for p in pairs]
    requests = [GenerationRequest(j.question.messages, max_tokens=max_tokens, temperature=0.0)
                for judgements in judged for j in judgements]
    letters = iter([parse_letter(completion.text) for completion in backend.generate(requests)])
    choices, unparsed = [], 0
    for judgements in judged:
        votes = 0  # for response 0
        for judgement in judgements:
            letter = next(letters)
            unparsed += letter is None
            if letter is not None:
                votes += 1 if judgement.order["AB".index(letter)] == 0 else -1
        choices.append(0 if votes >= 0 else 1)
    return choices, time.perf_counter() - started, unparsed


def mean_tokens(backend, pairs: list[dict]) -> float:
    return sum(backend.count_tokens(r) for p in pairs for r in p["responses"]) / (2 * len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6, help="pairs per set (labeled: at most 31)")
    parser.add_argument("--sets", default="labeled,sampled", help="comma-separated: labeled, sampled")
    parser.add_argument("--ks", default="1,4,8", help="comma-separated --principles values")
    parser.add_argument("--layouts", default=",".join(COMPARISON_LAYOUTS))
    parser.add_argument("--naive-k", type=int, default=4, help="--principles of the naive runs")
    parser.add_argument("--naive-layout", default=DEFAULT_COMPARISON_LAYOUT)
    parser.add_argument("--naive-tokens", default="4,128",
                        help="comma-separated caps on the naive answer's length, one naive run each ('' for none)")
    parser.add_argument("--sample-tokens", type=int, default=128, help="sampled set: most tokens per response")
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
    ks = [int(k) for k in args.ks.split(",")]
    layouts = args.layouts.split(",")
    caps = [int(cap) for cap in args.naive_tokens.split(",") if cap]
    warmup = labeled_pairs(32)[-1:]
    run_compare(backend, rules, warmup, 1, layouts[0])  # first-call costs (buffers, the generation
    run_naive(backend, rules, warmup, 1, args.naive_layout, 4)  # context) are no method's cost per pair
    load = os.getloadavg()[0]
    print(f"model: {Path(backend.model_path).name} ({backend.name}); threads {args.threads or 'all'}; "
          f"load average {load:.1f} at the start")
    for name in args.sets.split(","):
        pairs = labeled_pairs(args.pairs) if name == "labeled" else sampled_pairs(backend, args.pairs, args.sample_tokens)
        n = len(pairs)
        print(f"\n{name}: {n} pairs, responses of {mean_tokens(backend, pairs):.0f} tokens on average; "
              "both orderings of every principle")
        print("| method | K | s/pair | tokens read/pair | x K=1 | agreement |")
        print("|---|---|---|---|---|---|")
        picks, seconds = {}, {}
        for layout in layouts:
            for k in ks:
                choices, spent, read = run_compare(backend, rules, pairs, k, layout)
                picks[layout, k], seconds[layout, k] = choices, spent
                base = seconds.get((layout, ks[0]), spent)
                same = sum(a == b for a, b in zip(choices, picks[layouts[0], k]))
                print(f"| compare, {layout} | {k} | {spent / n:.2f} | {read / n:.0f} | {spent / base:.2f}x "
                      f"| {same}/{n} |", flush=True)
        reference = (args.naive_layout, args.naive_k)
        for cap in caps:
            choices, spent, unparsed = run_naive(backend, rules, pairs, args.naive_k, args.naive_layout, cap)
            same = sum(a == b for a, b in zip(choices, picks.get(reference, choices)))
            speedup = f", {spent / seconds[reference]:.1f}x compare's time" if reference in seconds else ""
            print(f"| naive, generate <= {cap} tokens and parse{speedup} | {args.naive_k} | {spent / n:.2f} | "
                  f"| | {same}/{n}, {unparsed}/{2 * args.naive_k * n} no letter |", flush=True)


if __name__ == "__main__":
    main()
