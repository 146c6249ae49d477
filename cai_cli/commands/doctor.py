"""cai doctor: the machine, the libraries, the settings cai uses here, and a self-test."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    self_test: Annotated[bool, typer.Option(
        "--self-test/--no-self-test",
        help="Decode a few tokens of the embedded model on each backend, each in a child process.")] = True,
) -> None:
    """Show the platform, CPU features, library versions, the embedded model and the settings cai
    uses on this machine (threads, weight repacking), then decode a few tokens on each backend.

    Each self-test runs in a child process, so a native crash is reported as a
    sentence (which library, which signal, what to try) instead of an empty
    exit 139. Exit status 1 when a self-test fails.

    Examples:

        cai doctor

        cai doctor --json | jq .cpu

        CAI_REPACK=off cai doctor --no-self-test
    """
    from cai_cli.doctor import BACKENDS, machine_report, self_test as run_self_test

    report = machine_report()
    if self_test:
        report["self_test"] = [run_self_test(backend) for backend in BACKENDS]
    if as_json:
        print(json.dumps(report, indent=2), flush=True)
    else:
        show(report)
    if any(not test["ok"] for test in report.get("self_test", [])):
        raise typer.Exit(1)


def show(report: dict[str, Any]) -> None:
    """The report as tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="cai doctor", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    cpu = report["cpu"]
    table.add_row("platform", f"{report['platform']} (Python {report['python']})")
    table.add_row("CPU", f"{cpu['model']} ({cpu['machine']}, {cpu['cores']} cores)")
    table.add_row("vector units", " ".join(cpu["simd"]) or "none reported")
    table.add_row("AMX", "yes" if cpu["amx"] else "no")
    for name, found in report["packages"].items():
        table.add_row(name, found or "not installed")
    embedded = report["embedded_model"]
    table.add_row("embedded model", f"{embedded['path']} ({embedded['bytes'] / 1e6:.1f} MB)"
                  if embedded.get("path") else embedded["error"])
    settings = report["settings"]
    table.add_row("model used", settings["model"])
    table.add_row("threads", f"{settings['threads']} ({settings['threads_from']})")
    repack = settings["repack"]
    table.add_row("weight repacking", repack.get("why") or repack.get("error", ""))
    console.print(table)
    for test in report.get("self_test", []):
        if test["ok"]:
            detail = f"[green]ok[/]: {test['decode_seconds']} s to decode, {test['load_seconds']} s to load"
            if "device" in test:
                detail += f", device {test['device']}"
                if test.get("cuda_devices"):
                    detail += f" (CUDA: {', '.join(test['cuda_devices'])})"
            console.print(f"self-test {test['backend']}: {detail}")
            if test.get("llama_cpp_system_info"):
                console.print(f"  llama.cpp: {test['llama_cpp_system_info']}", markup=False, soft_wrap=True)
        else:
            console.print(f"self-test {test['backend']}: [bold red]FAILED[/]: {test['error']}", soft_wrap=True)
            for line in test.get("stderr_tail", []):
                console.print(f"  {line}", markup=False, soft_wrap=True)
