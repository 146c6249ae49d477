"""Generation throughput: the batched path against the naive per-record loop, same model, same run.

- naive: what a user would write by hand, one call per request. On llama.cpp, llama-cpp-python's
  high-level `Llama.create_completion` per prompt (it still reuses the KV cache of the prefix a
  prompt shares with the previous one); on transformers, one `model.generate` per prompt.
- batched: the backend's own `generate`, as every `cai` command runs it. On llama.cpp, the
  continuous-batching engine (`--parallel` sequences per decode, native seeded samplers, prefix
  reuse); on transformers, left-padded batches of `--batch-size` prompts sorted by length.

Two workloads, each on the same requests for both paths:
- sample: `cai sample` over --prompts prompts (red-team then helpfulness examples) with
  --tokens new tokens at most;
- round: one critique/revise round (`cai critique | cai revise`, few-shot on) over the batched
  path's sample output, --tokens new tokens at most per critique and per revision.

Tokens are the generated texts re-tokenized by the model's tokenizer (the same count for both
paths). Every path runs in a fresh subprocess, so its peak memory (ru_maxrss, which includes the
loaded model) is its own. The load average goes beside the figures: the machine may be shared.

Usage:

    python benchmarks/bench_generation.py                       # 64 prompts x 64 tokens, both backends
    python benchmarks/bench_generation.py --prompts 16 --tokens 16   # a quick run
    python benchmarks/bench_generation.py --backend llama-cpp --parallel 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cai_cli.backends import BackendOptions, Completion, Sampling, load_backend  # noqa: E402


def load_prompts(count: int) -> list[dict]:
    """Red-team prompts first, then helpfulness ones, repeated (with fresh ids) if more are asked."""
    lines = [line for name in ("red_team.jsonl", "helpful.jsonl")
             for line in (ROOT / "examples" / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    return [{**records[i % len(records)], "id": f"{records[i % len(records)]['id']}-{i // len(records)}"}
            for i in range(count)]


# The two ways of producing texts for a list of requests ----------------------------------------

def naive_llama_cpp(backend, requests):
    """One `create_completion` per request, with the same sampling settings as the engine."""
    texts = []
    for request in requests:
        tokens = backend.tokenize(backend.render(request.messages))
        result = backend.llm.create_completion(
            tokens, max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
            top_k=0, min_p=0.0, repeat_penalty=1.0, seed=request.seed)
        choice = result["choices"][0]
        texts.append(Completion(choice["text"], choice["finish_reason"]))
    return texts


def naive_transformers(backend, requests):
    """One `model.generate` per request (a batch of one: no padding)."""
    import torch

    texts = []
    for request in requests:
        encoded = backend.tokenizer(backend.render(request.messages), return_tensors="pt",
                                    add_special_tokens=False).to(backend.device)
        torch.manual_seed(request.seed)
        sampling = request.temperature > 0
        with torch.inference_mode():
            output = backend.model.generate(
                **encoded, max_new_tokens=request.max_tokens, do_sample=sampling,
                temperature=request.temperature if sampling else None, top_p=request.top_p if sampling else None,
                top_k=None, pad_token_id=backend.tokenizer.pad_token_id)
        new = output[0, encoded.input_ids.shape[1]:]
        finish = "length" if len(new) >= request.max_tokens and new[-1] not in backend.end_token_ids() else "stop"
        texts.append(Completion(backend.tokenizer.decode(new, skip_special_tokens=True), finish))
    return texts


def run_stage(stage, records, generate):
    """Plan every record's requests, produce the texts with `generate`, finish the records."""
    plans = [stage.plan(record) for record in records]
    texts = list(generate([request for plan in plans for request in plan.requests]))
    finished, start = [], 0
    for record, plan in zip(records, plans):
        finished.append(stage.finish(record, plan, texts[start:start + len(plan.requests)]))
        start += len(plan.requests)
    return finished, texts


def worker(spec: dict) -> dict:
    """One timed measurement in this process: a path (naive/batched) on one workload."""
    from cai_cli.constitution import load_constitution
    from cai_cli.settings import CritiqueSettings
    from cai_cli.stages.critique import CritiqueStage
    from cai_cli.stages.revise import ReviseStage
    from cai_cli.stages.sample import SampleSettings, SampleStage

    if spec["threads"] and spec["backend"] == "transformers":
        import torch

        torch.set_num_threads(spec["threads"])
    backend = load_backend(BackendOptions(model=spec["model"], backend=spec["backend"], parallel=spec["parallel"],
                                          batch_size=spec["batch_size"], threads=spec["threads"]))
    if spec["path"] == "batched":
        generate = backend.generate
        if backend.name == "llama-cpp":
            backend.batch_engine()  # allocating its context is set-up, like the naive path's at load time
    else:
        naive = naive_llama_cpp if backend.name == "llama-cpp" else naive_transformers
        generate = lambda requests: naive(backend, requests)  # noqa: E731
    sampling = Sampling(max_tokens=spec["tokens"], temperature=spec["temperature"], top_p=0.95, seed=spec["seed"])
    records = [json.loads(line) for line in Path(spec["input"]).read_text(encoding="utf-8").splitlines()]
    started = time.perf_counter()
    if spec["workload"] == "sample":
        records, texts = run_stage(SampleStage(backend, SampleSettings(sampling=sampling)), records, generate)
    else:
        constitution = load_constitution(None)
        round_settings = CritiqueSettings(sampling=sampling)
        records, critiques = run_stage(CritiqueStage(backend, constitution, round_settings), records, generate)
        records, revisions = run_stage(ReviseStage(backend, constitution, round_settings), records, generate)
        texts = critiques + revisions
    seconds = time.perf_counter() - started
    if spec.get("output"):
        Path(spec["output"]).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = {"tokens": sum(backend.count_tokens(t.text) for t in texts), "completions": len(texts), "seconds": seconds,
              "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if spec["path"] == "batched" and backend.name == "llama-cpp":
        engine = backend.batch_engine()
        result["note"] = (f"prompt tokens decoded {engine.prefilled_tokens}, taken from the cache "
                          f"{engine.reused_tokens} ({engine.copied_prefixes} copied from another slot)")
    return result


def measure(spec: dict) -> dict:
    """Run `worker(spec)` in a fresh Python process (its own peak memory) and return its result."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"worker failed ({spec['backend']} {spec['workload']} {spec['path']}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts for sample (the round uses the same records)")
    parser.add_argument("--tokens", type=int, default=64, help="most new tokens per completion")
    parser.add_argument("--backend", choices=("both", "llama-cpp", "transformers"), default="both")
    parser.add_argument("--workload", choices=("both", "sample", "round"), default="both")
    parser.add_argument("-m", "--model", default=None, help="GGUF file or model folder (default: embedded)")
    parser.add_argument("--parallel", type=int, default=BackendOptions.parallel,
                        help="llama.cpp: sequences decoded at once (batched; default: cai's)")
    parser.add_argument("--batch-size", type=int, default=BackendOptions.batch_size,
                        help="transformers: prompts per batch (batched; default: cai's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for both paths (default 1: the figures in llama.cpp's own "
                             "batched bench here are single-threaded, and the machine is shared)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    backends = ("llama-cpp", "transformers") if args.backend == "both" else (args.backend,)
    workloads = ("sample", "round") if args.workload == "both" else (args.workload,)
    print(f"{args.prompts} prompts x {args.tokens} new tokens, temperature {args.temperature}, threads {args.threads}, "
          f"parallel {args.parallel}, batch size {args.batch_size}; {load_average()}")
    with tempfile.TemporaryDirectory() as scratch:
        prompts = Path(scratch) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in load_prompts(args.prompts)), encoding="utf-8")
        for backend in backends:
            sampled = Path(scratch) / f"{backend}-sampled.jsonl"
            for workload in workloads:
                results = {}
                for path in ("naive", "batched"):
                    spec = {"backend": backend, "model": args.model, "workload": workload, "path": path,
                            "parallel": args.parallel, "batch_size": args.batch_size, "threads": args.threads,
                            "tokens": args.tokens, "temperature": args.temperature, "seed": args.seed,
                            "input": str(prompts if workload == "sample" else sampled),
                            "output": str(sampled) if (workload, path) == ("sample", "batched") else None}
                    if workload == "round" and not sampled.exists():  # --workload round alone
                        measure({**spec, "workload": "sample", "path": "batched", "input": str(prompts),
                                 "output": str(sampled)})
                    results[path] = measure(spec)
                    r = results[path]
                    print(f"{backend:12} {workload:6} {path:7}: {r['completions']:4} completions {r['tokens']:6} tokens "
                          f"in {r['seconds']:7.1f} s = {r['tokens'] / r['seconds']:6.1f} tok/s, "
                          f"peak {r['peak_mb']:5.0f} MB  ({load_average()})", flush=True)
                    if r.get("note"):
                        print(f"{'':30}{r['note']}")
                naive, batched = (results[p]["tokens"] / results[p]["seconds"] for p in ("naive", "batched"))
                print(f"{backend:12} {workload:6} batched/naive: {batched / naive:.2f}x tokens/s", flush=True)


if __name__ == "__main__":
    main()
