"""llama.cpp weight repacking on and off, per quantization type, on this CPU.

llama.cpp can repack weights at load into layouts for the CPU's vector units (its "extra buffer
types"); `cai --repack auto` keeps that on except on CPUs with AMX, where the repacked AMX path
crashes (see cai_cli/hardware.py). This measures what repacking buys where it is safe: prompt
processing and single-stream generation, tokens per second, with it on and off, for each GGUF.

    python benchmarks/bench_repack.py                       # embedded Q4_1, and a Q4_0 made from it
    python benchmarks/bench_repack.py --model models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

Each measurement runs in a child process, so a configuration that crashes (repacking on an AMX
CPU) is reported as a crash instead of ending the benchmark. The Q4_0 file is requantized from the
embedded Q4_1 with llama.cpp's own quantizer: its text is worse, its speed is what is measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT_TOKENS = 256
NEW_TOKENS = 64


def requantize(source: Path, target: Path, file_type: str = "Q4_0") -> Path:
    """`source` requantized to `file_type` by llama.cpp (`llama_model_quantize`)."""
    import ctypes

    import llama_cpp

    from cai_cli.backends.native_logs import quiet_native_logs

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}")
    params.allow_requantize = True
    with quiet_native_logs(False):
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise SystemExit(f"llama_model_quantize failed with status {status}")
    return target


def measure(model: str, repack: bool, threads: int, repeats: int) -> dict:
    """The child side: load with repacking on or off, time prompt processing and generation."""
    import time

    from cai_cli.backends.llama_loading import load_llama
    from cai_cli.backends.native_logs import quiet_native_logs

    with quiet_native_logs(False):
        llm = load_llama(model, repack=repack, n_ctx=PROMPT_TOKENS + NEW_TOKENS + 8, n_batch=512,
                         n_threads=threads, n_threads_batch=threads, verbose=False)
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    prompt = llm.tokenize(text.encode(), add_bos=False)[:PROMPT_TOKENS]
    best_prompt = best_generate = float("inf")
    for _ in range(repeats):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        best_prompt = min(best_prompt, time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(NEW_TOKENS):  # greedy, one token per decode: the single-stream generation path
            llm.eval([int(llm.scores[llm.n_tokens - 1].argmax())])
        best_generate = min(best_generate, time.perf_counter() - started)
    return {"prompt_tok_s": PROMPT_TOKENS / best_prompt, "generate_tok_s": NEW_TOKENS / best_generate}


def run_child(model: Path, repack: bool, threads: int, repeats: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from bench_repack import measure; "
            "print(json.dumps(measure(sys.argv[2], sys.argv[3] == 'on', int(sys.argv[4]), int(sys.argv[5]))))")
    child = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(model),
                            "on" if repack else "off", str(threads), str(repeats)],
                           capture_output=True, text=True)
    if child.returncode != 0:
        return {"error": f"exit status {child.returncode}" + (" (native crash)" if child.returncode < 0 else "")}
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="more GGUF files to measure (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per configuration")
    args = parser.parse_args()

    from cai_cli import hardware
    from cai_cli.models import embedded_model_path

    print(f"CPU: {hardware.cpu_model()}, AMX: {'yes' if hardware.has_amx() else 'no'}; "
          f"{args.threads} thread(s), {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, best of {args.repeats}")
    with tempfile.TemporaryDirectory() as scratch:
        embedded = embedded_model_path()
        models = [("SmolLM2-135M Q4_1 (embedded)", embedded),
                  ("SmolLM2-135M Q4_0", requantize(embedded, Path(scratch) / "smollm2-q4_0.gguf"))]
        models += [(Path(m).name, Path(m)) for m in args.model]
        print(f"{'model':<46} {'prompt tok/s off -> on':>24} {'ratio':>6}   {'generate tok/s off -> on':>26} {'ratio':>6}")
        for name, path in models:
            off, on = run_child(path, False, args.threads, args.repeats), run_child(path, True, args.threads, args.repeats)
            if "error" in off or "error" in on:
                print(f"{name:<46} off: {off.get('error', 'ok')}, on: {on.get('error', 'ok')}")
                continue
            print(f"{name:<46} {off['prompt_tok_s']:>10.1f} -> {on['prompt_tok_s']:>9.1f} "
                  f"{on['prompt_tok_s'] / off['prompt_tok_s']:>6.2f}x   {off['generate_tok_s']:>11.1f} -> "
                  f"{on['generate_tok_s']:>10.1f} {on['generate_tok_s'] / off['generate_tok_s']:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
