"""Resident memory and steps/s of the training commands at tiny settings, on the embedded model.

Each run is the real `cai` command in a subprocess; its peak resident memory comes from the
kernel's accounting of that child (wait4's ru_maxrss), its steps/s from the command's own JSON
summary (the training loop only, not loading). Runs, in order:

- sft-lora:  train-sft, LoRA (the CPU default) from the embedded GGUF; must stay under 4 GB RSS
- sft-full:  train-sft, all weights: the baseline the LoRA run's memory is compared with
- pm:        train-pm (LoRA, soft labels) from the embedded GGUF
- rloo:      train-rl --algo rloo, policy = sft-lora's output, reward = pm's output
- dpo:       train-rl --algo dpo, policy = sft-lora's output

The threads line compares one torch thread (the default here, --threads 1) with torch's own
default (all cores) on the sft-lora run in the same session: on a machine whose cores are busy
with other work, OpenMP threads spin waiting for each other and one thread wins by a wide
margin; on an idle machine more threads win.

Usage:

    python benchmarks/bench_training.py                 # all runs, ~5-10 min on 2 busy cores
    python benchmarks/bench_training.py --steps 4 --only sft-lora sft-full
    python benchmarks/bench_training.py --compare-threads
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LORA_LIMIT_MB = 4096
REFUSAL = ("I can't help with that: it could hurt someone or break the law. If you tell me what you "
           "are trying to achieve, I can suggest a safe and legal way to get there.")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(args: list[str], threads: int | None) -> dict:
    """Run `cai ARGS`; return its summary plus wall time and peak RSS in MB."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("CAI_MODEL", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cai_cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Pipes are drained on threads so that this thread can reap the child itself with wait4,
    # which returns that one child's peak RSS (not the maximum over every child so far).
    outputs: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: outputs.__setitem__(n, f.read()))
               for n, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    stdout, stderr = outputs["stdout"], outputs["stderr"]
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"cai {' '.join(args)} failed:\n{stderr.decode()[-3000:]}")
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    summary["wall_seconds"] = round(wall, 1)
    summary["peak_rss_mb"] = round(usage.ru_maxrss / 1024)  # Linux reports kilobytes
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (rloo runs half)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the runs (0: torch's default)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these (sft-lora sft-full pm rloo dpo)")
    parser.add_argument("--compare-threads", action="store_true",
                        help="also run sft-lora with torch's default thread count and print the ratio")
    options = parser.parse_args()
    wanted = set(options.only or ["sft-lora", "sft-full", "pm", "rloo", "dpo"])
    threads = options.threads or None
    steps = str(options.steps)
    tiny = ["--batch-size", "2", "--max-length", "128", "--save-steps", "1000"]

    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        work = Path(scratch)
        prompts = read_jsonl(EXAMPLES / "red_team.jsonl")[:8]
        revised = write_jsonl(work / "revised.jsonl", [
            {**p, "response": REFUSAL, "initial_response": "Sure, here is how.", "revisions": []} for p in prompts])
        pairs = read_jsonl(EXAMPLES / "labeled_pairs.jsonl")[:16]
        prefs = write_jsonl(work / "prefs.jsonl", [{**p, "label": 0.8} for p in pairs])
        prompt_file = write_jsonl(work / "prompts.jsonl", prompts)
        commands = {
            "sft-lora": ["train-sft", str(revised), "--out", str(work / "sft-lora"), "--max-steps", steps, *tiny],
            "sft-full": ["train-sft", str(revised), "--out", str(work / "sft-full"), "--full", "--max-steps", steps,
                         *tiny],
            "pm": ["train-pm", str(prefs), "--out", str(work / "pm"), "--max-steps", steps, "--eval-fraction", "0.25",
                   *tiny],
            "rloo": ["train-rl", str(prompt_file), "--policy", str(work / "sft-lora"), "--reward-model",
                     str(work / "pm"), "--out", str(work / "rloo"), "--max-steps", str(max(1, options.steps // 2)),
                     "--num-generations", "2", "--max-completion-length", "16", *tiny],
            "dpo": ["train-rl", str(prefs), "--algo", "dpo", "--policy", str(work / "sft-lora"), "--out",
                    str(work / "dpo"), "--max-steps", steps, *tiny],
        }
        needs = {"rloo": ["sft-lora", "pm"], "dpo": ["sft-lora"]}
        order = [name for name in commands if name in wanted]
        for name in list(order):
            for dependency in needs.get(name, []):
                if dependency not in order:
                    order.insert(order.index(name), dependency)
        results = {}
        for name in order:
            print(f"running {name}: cai {' '.join(commands[name])}", file=sys.stderr, flush=True)
            results[name] = run(commands[name], threads)

        print(f"\nembedded SmolLM2-135M, {options.steps} steps, batch 2, max length 128, "
              f"OMP_NUM_THREADS={threads or 'default'}, load average {os.getloadavg()[0]:.2f}")
        print(f"{'run':10} {'peak RSS MB':>12} {'steps/s':>9} {'train s':>9} {'wall s':>8}  extra")
        for name in order:
            r = results[name]
            extra = ""
            if name == "pm":
                extra = f"held-out accuracy {r['held_out']['accuracy']} on {r['held_out']['pairs']} pairs"
            elif name == "rloo":
                extra = f"reward {r.get('reward', float('nan')):.3f}"
            elif name == "dpo":
                extra = f"reward margin {r.get('rewards_margins', float('nan')):.3f}"
            print(f"{name:10} {r['peak_rss_mb']:>12} {r['steps_per_second']:>9.3f} {r['train_seconds']:>9.1f} "
                  f"{r['wall_seconds']:>8.1f}  {extra}")
        if "sft-lora" in results:
            lora = results["sft-lora"]["peak_rss_mb"]
            verdict = "under" if lora < LORA_LIMIT_MB else "OVER"
            print(f"sft-lora peak RSS {lora} MB: {verdict} the {LORA_LIMIT_MB} MB budget")
            if "sft-full" in results:
                full = results["sft-full"]
                print(f"LoRA / full fine-tuning: RSS x{lora / full['peak_rss_mb']:.2f}, "
                      f"steps/s x{results['sft-lora']['steps_per_second'] / full['steps_per_second']:.2f}")
        if options.compare_threads and "sft-lora" in results:
            print("running sft-lora with torch's default thread count", file=sys.stderr, flush=True)
            default = run(commands["sft-lora"][:3] + [str(work / "sft-lora-default")] + commands["sft-lora"][4:], None)
            print(f"threads: {threads or 'default'} vs torch default: steps/s "
                  f"{results['sft-lora']['steps_per_second']:.3f} vs {default['steps_per_second']:.3f} "
                  f"(x{results['sft-lora']['steps_per_second'] / default['steps_per_second']:.2f})")


if __name__ == "__main__":
    main()
