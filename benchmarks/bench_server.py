"""The OpenAI-compatible server backend against in-process generation, same model, same machine.

The same `sample` workload (--prompts red-team and helpfulness prompts, at most --tokens new
tokens each, seeded) is generated five ways, each timed after its model is loaded:

- in-process, batched: `--backend llama-cpp`, cai's continuous-batching engine (--parallel);
- in-process, one at a time: llama-cpp-python's `create_chat_completion` per request, which is
  exactly what llama-cpp-python's server runs for each request;
- server, --concurrency 1 and 8: `--backend openai` against llama-cpp-python's server
  (`python -m cai_cli.llama_server`) on the loopback address;
- two servers, --concurrency 1 each: the same, spread over two server processes.

"server c1 / in-process one at a time" is the price of HTTP (JSON, a socket, a second process);
"c8 / c1" is what the server gains from requests in flight. llama-cpp-python's server runs one
request at a time, so it gains nothing from them: servers that batch (vLLM, SGLang, TGI,
llama.cpp's llama-server with --parallel) are the ones that turn concurrency into throughput.
Each server and cai get --threads threads; the load average goes beside the figures, since the
machine may be shared.

Usage:

    python benchmarks/bench_server.py                      # 32 prompts x 64 tokens, best of 3
    python benchmarks/bench_server.py --prompts 8 --tokens 16 --repeat 1   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import load_average, load_prompts  # noqa: E402

from cai_cli.backends import BackendOptions, Completion, Sampling, load_backend  # noqa: E402

ALIAS = "bench-model"


class OneAtATime:
    """The llama.cpp backend generating as llama-cpp-python's server does for each request:
    `create_chat_completion`, one request after the other, in this process."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, requests):
        for request in requests:
            result = self.backend.llm.create_chat_completion(
                request.messages, max_tokens=request.max_tokens, temperature=request.temperature,
                top_p=request.top_p, seed=request.seed)
            choice = result["choices"][0]
            yield Completion(choice["message"]["content"] or "", choice["finish_reason"])


def worker(spec: dict) -> dict:
    """One timed run of the sample stage in this process."""
    from cai_cli.stages.sample import SampleSettings, SampleStage

    if spec["path"].startswith("server"):
        options = BackendOptions(backend="openai", model=ALIAS, base_urls=tuple(spec["urls"]),
                                 concurrency=spec["concurrency"], tokenizer=spec["gguf"])
    else:
        options = BackendOptions(model=spec["gguf"], backend="llama-cpp", threads=spec["threads"],
                                 parallel=spec["parallel"])
    backend = load_backend(options)
    generating = OneAtATime(backend) if spec["path"] == "one at a time" else backend
    stage = SampleStage(generating, SampleSettings(sampling=Sampling(max_tokens=spec["tokens"],
                                                                    temperature=spec["temperature"], seed=spec["seed"])))
    if spec["path"] == "batched":
        backend.batch_engine()  # allocating its context is set-up, like a server's start
    records = [json.loads(line) for line in Path(spec["input"]).read_text(encoding="utf-8").splitlines()]
    started = time.perf_counter()
    finished = list(stage(records))
    seconds = time.perf_counter() - started
    # Generated tokens, counted with the model's own tokenizer whichever way they were made.
    count = backend.local.tokenize if spec["path"].startswith("server") else backend.tokenize
    tokens = sum(len(count(r["response"])) for r in finished)
    return {"seconds": seconds, "tokens": tokens, "records": len(finished)}


def measure(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"worker failed ({spec['path']}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="threads for cai and for each server")
    parser.add_argument("--parallel", type=int, default=BackendOptions.parallel, help="in-process batched: sequences")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every path; the best of each is kept")
    parser.add_argument("-m", "--model", default=None, help="GGUF file (default: the embedded model)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    from cai_cli.llama_server import ServerProcess
    from cai_cli.models import resolve_model

    gguf = str(resolve_model(args.model))
    server_args = ["-m", gguf, "--alias", ALIAS, "--threads", str(args.threads), "--n-ctx", "2048"]
    print(f"{args.prompts} prompts x {args.tokens} new tokens, temperature {args.temperature}, threads {args.threads} "
          f"(cai and each server); {load_average()}")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        prompts = Path(scratch) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in load_prompts(args.prompts)), encoding="utf-8")
        common = {"gguf": gguf, "input": str(prompts), "tokens": args.tokens, "temperature": args.temperature,
                  "seed": args.seed, "threads": args.threads, "parallel": args.parallel}
        runs = [("in-process, batched", {"path": "batched"}),
                ("in-process, one at a time", {"path": "one at a time"})]
        with ServerProcess(server_args) as first, ServerProcess(server_args) as second:
            runs += [("server, --concurrency 1", {"path": "server", "urls": [first.url], "concurrency": 1}),
                     ("server, --concurrency 8", {"path": "server", "urls": [first.url], "concurrency": 8}),
                     ("two servers, --concurrency 1", {"path": "server", "urls": [first.url, second.url],
                                                       "concurrency": 1})]
            # Rounds of every path, interleaved, keeping each path's best: on a shared machine
            # the other jobs' load comes and goes, and the best run is the least disturbed.
            for round_number in range(1, args.repeat + 1):
                print(f" round {round_number} of {args.repeat}", flush=True)
                for name, extra in runs:
                    result = measure({**common, **extra})
                    if name not in results or result["seconds"] < results[name]["seconds"]:
                        results[name] = result
                    print(f"  {name:30s} {result['tokens']:6d} tokens in {result['seconds']:6.1f} s = "
                          f"{result['tokens'] / result['seconds']:6.1f} tok/s; {load_average()}", flush=True)

    def rate(name: str) -> float:
        return results[name]["tokens"] / results[name]["seconds"]

    print(f"best of {args.repeat} (tokens/s):")
    for name in results:
        print(f"  {name:30s} {rate(name):6.1f}")
    print("ratios (tokens/s):")
    for label, top, bottom in [
            ("server c1 / in-process one at a time (HTTP's cost)", "server, --concurrency 1",
             "in-process, one at a time"),
            ("server c8 / server c1 (requests in flight)", "server, --concurrency 8", "server, --concurrency 1"),
            ("two servers / one server, c1 each", "two servers, --concurrency 1", "server, --concurrency 1"),
            ("server c8 / in-process batched (cai's default)", "server, --concurrency 8", "in-process, batched")]:
        print(f"  {label:52s} {rate(top) / rate(bottom):.2f}x")


if __name__ == "__main__":
    main()
