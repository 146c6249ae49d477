"""Running on every CPU: weight repacking off where the CPU has AMX, `cai doctor`, and native
crashes that say where they happened instead of exiting 139 in silence."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cai_cli import hardware
from cai_cli.errors import CaiError
from conftest import ROOT, cai_env, run_cai

SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"})
EPYC = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})


def test_auto_turns_repacking_off_only_where_the_cpu_has_amx(monkeypatch):
    monkeypatch.delenv("CAI_REPACK", raising=False)
    assert hardware.use_weight_repacking("auto", SAPPHIRE_RAPIDS) is False
    assert hardware.use_weight_repacking("auto", EPYC) is True
    assert hardware.use_weight_repacking(None, frozenset({"asimd", "sve"})) is True  # Arm
    assert "AMX" in hardware.repack_reason("auto", SAPPHIRE_RAPIDS)


def test_repack_can_be_forced_either_way_by_option_or_environment(monkeypatch):
    assert hardware.use_weight_repacking("on", SAPPHIRE_RAPIDS) is True
    assert hardware.use_weight_repacking("off", EPYC) is False
    monkeypatch.setenv("CAI_REPACK", "off")
    assert hardware.use_weight_repacking(None, EPYC) is False
    monkeypatch.setenv("CAI_REPACK", "sometimes")
    with pytest.raises(CaiError, match="auto, on, off"):
        hardware.use_weight_repacking(None, EPYC)


def test_the_backend_loads_without_repacking_on_an_amx_cpu_and_decodes(monkeypatch, embedded_model):
    """CPU features injected: the backend must pick the safe setting, and a multi-token decode
    of two sequences must run with it on the real embedded model."""
    from cai_cli.backends import BackendOptions, GenerationRequest
    from cai_cli.backends.llama_cpp import LlamaCppBackend

    monkeypatch.delenv("CAI_REPACK", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    backend = LlamaCppBackend(embedded_model, BackendOptions(n_ctx=256, parallel=2, threads=1))
    assert backend.repack is False
    assert backend.llm.model_params.use_extra_bufts is False
    chat = [{"role": "user", "content": "Name three rivers in Europe and say which is longest."}]
    texts = list(backend.generate([GenerationRequest(chat, 8, 0.0, 1.0, 0), GenerationRequest(chat, 8, 0.7, 0.95, 1)]))
    assert len(texts) == 2 and all(t.text.strip() for t in texts)

    monkeypatch.setattr(hardware, "cpu_flags", lambda: EPYC)
    assert LlamaCppBackend(embedded_model, BackendOptions(n_ctx=256, threads=1)).llm.model_params.use_extra_bufts


def test_a_multi_token_decode_on_the_embedded_model_runs_here():
    """The crash this guards against killed every llama.cpp command at its first multi-token
    decode; run it as a user does, in a child process, so a crash fails this test with a reason."""
    result = run_cai("sample", "--max-tokens", "12", "--threads", "1",
                     input=json.dumps({"prompt": "Write two sentences about the sea and the wind."}) + "\n")
    assert result.returncode == 0, f"exit {result.returncode} (negative: killed by a signal, a native crash)\n{result}"
    assert result.records[0]["response"].strip()


def test_doctor_reports_the_machine_and_self_tests_both_backends():
    result = run_cai("doctor", "--json", timeout=900)
    assert result.returncode == 0, result
    report = json.loads(result.stdout)
    assert report["cpu"]["model"] and report["cpu"]["cores"] >= 1
    assert report["cpu"]["amx"] == hardware.has_amx()
    assert report["settings"]["repack"]["enabled"] == (not hardware.has_amx())
    assert report["packages"]["llama-cpp-python"] and report["packages"]["torch"]
    assert report["embedded_model"]["bytes"] > 50_000_000
    tests = {test["backend"]: test for test in report["self_test"]}
    assert set(tests) == {"llama-cpp", "transformers"}
    assert all(test["ok"] for test in tests.values()), tests
    assert "CPU" in tests["llama-cpp"]["llama_cpp_system_info"]
    assert tests["transformers"]["device"] in ("cpu", "cuda", "cuda:0")


def test_doctor_human_report_without_self_test():
    result = run_cai("doctor", "--no-self-test", env={"CAI_REPACK": "off"})
    assert result.returncode == 0, result
    assert "weight repacking" in result.stdout and "off (set by --repack/CAI_REPACK)" in result.stdout
    assert "self-test" not in result.stdout


def test_a_crash_is_described_as_a_sentence():
    from cai_cli.doctor import describe_failure

    sentence = describe_failure("llama-cpp", -11, "")
    assert sentence.startswith("llama.cpp crashed with SIGSEGV on this CPU")
    assert "failed (exit status 1): boom" in describe_failure("transformers", 1, "Traceback\nboom\n")


def test_a_native_crash_prints_where_it_happened_even_while_native_logs_are_silenced():
    crash = ("from cai_cli.cli import report_native_crashes; report_native_crashes()\n"
             "from cai_cli.backends.native_logs import quiet_native_logs\n"
             "import ctypes\n"
             "with quiet_native_logs(False):\n"
             "    ctypes.string_at(0)\n")
    child = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, cwd=ROOT, env=cai_env())
    assert child.returncode == -11
    assert "Fatal Python error: Segmentation fault" in child.stderr
    assert "string_at" in child.stderr  # the Python stack it happened under
