"""What this machine's CPU can do, and the llama.cpp settings that follow from it.

llama.cpp can *repack* a model's weights at load time into a layout made for the CPU's vector
units (its "extra buffer types": the AMX buffer on Intel Xeons with AMX, the CPU_REPACK buffer for
Q4_0 and friends elsewhere). On Intel CPUs with AMX the AMX path segfaults at the first
multi-token decode (llama.cpp issue #20824, unfixed in the llama.cpp that llama-cpp-python 0.3.36
ships), so `--repack auto`, the default, turns repacking off there and leaves it on elsewhere.
`--repack on|off` (or CAI_REPACK) overrides the choice in either direction.

torch (the transformers backend, the preference model, training) computes on CUDA when it sees a
GPU and on the CPU otherwise; CAI_DEVICE=cpu|cuda pins the choice (`torch_device`).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

from cai_cli.errors import CaiError

REPACK_CHOICES = ("auto", "on", "off")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Any of these means llama.cpp (built for this CPU) would put weights in its AMX buffer.
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
# The vector-unit features worth showing in `cai doctor`, x86 and Arm spellings.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
              "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (`flags` on x86, `Features` on Arm);
    empty where /proc/cpuinfo does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (`model name` in /proc/cpuinfo), or what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def has_amx(flags: frozenset[str] | None = None) -> bool:
    return bool(AMX_FLAGS & (cpu_flags() if flags is None else flags))


def repack_setting(value: str | None = None) -> str:
    """The --repack choice: the value given, else CAI_REPACK, else 'auto'."""
    value = (value or os.environ.get("CAI_REPACK") or "auto").strip().lower()
    if value not in REPACK_CHOICES:
        raise CaiError(f"unknown repack setting {value!r} (--repack or CAI_REPACK): choose one of "
                       f"{', '.join(REPACK_CHOICES)}")
    return value


def use_weight_repacking(setting: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """Whether llama.cpp may repack weights at load: yes unless turned off, or unless 'auto'
    and the CPU has AMX (where the repacked AMX path crashes)."""
    choice = repack_setting(setting)
    if choice == "auto":
        return not has_amx(flags)
    return choice == "on"


def repack_reason(setting: str | None = None, flags: frozenset[str] | None = None) -> str:
    """One line saying what cai does about repacking here and why (for `cai doctor`)."""
    choice = repack_setting(setting)
    if choice != "auto":
        return f"{choice} (set by --repack/CAI_REPACK)"
    if has_amx(flags):
        return "off: this CPU has AMX, whose repacked path crashes llama.cpp (upstream issue #20824)"
    return "on: no AMX on this CPU, so llama.cpp's repacked kernels are safe"


def torch_device() -> str:
    """Where torch computes, "cuda" or "cpu": CAI_DEVICE when it names one, otherwise CUDA when
    torch sees a GPU. CAI_DEVICE=cuda where torch sees none is an error, not a quiet fall back to
    the CPU (a run planned for minutes on a GPU would take hours). One GPU of several is chosen
    with CUDA_VISIBLE_DEVICES, as the launchers do."""
    import torch

    asked = (os.environ.get("CAI_DEVICE") or "auto").strip().lower()
    if asked not in DEVICE_CHOICES:
        raise CaiError(f"unknown device CAI_DEVICE={asked!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if asked == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if asked == "cuda" and not torch.cuda.is_available():
        raise CaiError("CAI_DEVICE=cuda, but torch sees no CUDA device (a CPU build of torch, or no GPU driver); "
                       "unset CAI_DEVICE to run on the CPU")
    return asked
