"""`cai doctor`: what this machine is, what cai will do on it, and whether each backend runs.

The self-test decodes a few tokens of the embedded model on each backend in a child process, so
that a native crash (llama.cpp's AMX path on some Intel Xeons dies with SIGSEGV and prints
nothing) becomes a sentence in the report instead of an empty exit 139.

Example (Python):

    from cai_cli.doctor import machine_report, self_test
    report = machine_report()
    report["self_test"] = [self_test("llama-cpp")]
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cai_cli import hardware

PACKAGES = ("cai-cli", "llama-cpp-python", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
            "gguf", "typer", "rich")
BACKENDS = ("llama-cpp", "transformers")
PROBE_PROMPT = "Name three colours of the rainbow, separated by commas."
PROBE_TOKENS = 8
PROBE_TIMEOUT_S = 300


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine_report() -> dict[str, Any]:
    """Platform, CPU, packages, the embedded model and the settings cai uses here."""
    from cai_cli.errors import CaiError
    from cai_cli.models import embedded_model_path

    flags = hardware.cpu_flags()
    try:
        model = embedded_model_path()
        embedded = {"path": str(model), "bytes": model.stat().st_size}
    except CaiError as exc:
        embedded = {"path": None, "error": str(exc)}
    try:
        repack = {"setting": hardware.repack_setting(), "enabled": hardware.use_weight_repacking(),
                  "why": hardware.repack_reason()}
    except CaiError as exc:
        repack = {"setting": os.environ.get("CAI_REPACK"), "error": str(exc)}
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "cpu": {"model": hardware.cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
                "simd": [flag for flag in hardware.SIMD_FLAGS if flag in flags], "amx": hardware.has_amx(flags)},
        "packages": package_versions(),
        "embedded_model": embedded,
        "settings": {
            "threads": int(os.environ["CAI_THREADS"]) if os.environ.get("CAI_THREADS", "").isdigit()
            else os.cpu_count(),
            "threads_from": "CAI_THREADS" if os.environ.get("CAI_THREADS") else "all cores (default)",
            "repack": repack,
            "model": os.environ.get("CAI_MODEL") or "embedded",
        },
    }


def self_test(backend: str, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Decode a few tokens of the embedded model on `backend` in a child process; report what
    happened, as data. A crash, a timeout or an error is described, never raised."""
    code = "import sys; from cai_cli.doctor import probe; probe(sys.argv[1])"
    started = time.perf_counter()
    try:
        child = subprocess.run([sys.executable, "-c", code, backend], capture_output=True, text=True,
                               timeout=timeout, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired:
        return {"backend": backend, "ok": False, "error": f"no answer within {timeout:.0f} s"}
    result: dict[str, Any] = {"backend": backend, "ok": child.returncode == 0,
                              "seconds": round(time.perf_counter() - started, 2)}
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode == 0 and lines:
        result.update(json.loads(lines[-1]))
        return result
    result["ok"] = False
    result["exit_status"] = child.returncode
    result["error"] = describe_failure(backend, child.returncode, child.stderr)
    result["stderr_tail"] = child.stderr.strip().splitlines()[-12:]
    return result


def describe_failure(backend: str, returncode: int, stderr: str) -> str:
    """One sentence about a failed self-test, naming a native crash for what it is."""
    library = "llama.cpp" if backend == "llama-cpp" else "torch/transformers"
    if returncode < 0 or returncode in (128 + signal.SIGSEGV, 128 + signal.SIGILL, 128 + signal.SIGBUS):
        number = -returncode if returncode < 0 else returncode - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        cpu = f"{hardware.cpu_model()}{', with AMX' if hardware.has_amx() else ''}"
        advice = ("try CAI_REPACK=off (weight repacking is llama.cpp's usual crash site on new CPUs)"
                  if backend == "llama-cpp" and hardware.use_weight_repacking()
                  else "a library built for another CPU can do this: reinstall it on this machine "
                       "(`pip install --force-reinstall --no-cache-dir llama-cpp-python`)"
                  if name == "SIGILL" else "please report it with the output of `cai doctor --json`")
        return f"{library} crashed with {name} on this CPU ({cpu}); {advice}"
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    return f"{library} failed (exit status {returncode}): {last or 'no message'}"


def probe(backend: str) -> None:
    """The child side of `self_test`: load the embedded model on `backend`, decode a few greedy
    tokens of a multi-token prompt, print one JSON line. Native crashes show where they happened
    (faulthandler) on stderr."""
    import faulthandler

    faulthandler.enable(file=os.fdopen(os.dup(2), "w"))
    from cai_cli.backends import BackendOptions, GenerationRequest, load_backend

    options = BackendOptions(backend=backend, n_ctx=512, parallel=2, batch_size=2)
    loaded = time.perf_counter()
    model = load_backend(options)
    load_seconds = time.perf_counter() - loaded
    request = GenerationRequest([{"role": "user", "content": PROBE_PROMPT}], PROBE_TOKENS, 0.0, 1.0, 0)
    started = time.perf_counter()
    completion = next(iter(model.generate([request, request])))  # two sequences: a real batched decode
    seconds = time.perf_counter() - started
    found: dict[str, Any] = {"load_seconds": round(load_seconds, 2), "decode_seconds": round(seconds, 2),
                             "text": completion.text, "finish_reason": completion.finish_reason}
    if backend == "llama-cpp":
        import llama_cpp

        found["repack"] = model.repack
        found["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    else:
        import torch

        found["device"] = str(model.device)
        found["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        found["torch_threads"] = torch.get_num_threads()
    print(json.dumps(found), flush=True)
