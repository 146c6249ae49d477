"""cai export-gguf: write a trained model as a GGUF for the llama.cpp backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def export_gguf(
    model: Annotated[Path, typer.Argument(help="Hugging Face folder to export (a train-sft or train-rl output).",
                                          show_default=False)],
    out: Annotated[Path, typer.Option("--out", show_default=False, help="The .gguf file to write.")],
    type: Annotated[str, typer.Option("--type", help="Weight format: f16, or q8_0 (half the size).")] = "q8_0",
    tokenizer_from: Annotated[Optional[Path], typer.Option(
        "--tokenizer-from", show_default=False,
        help="GGUF whose tokenizer and chat template to carry over (default: the GGUF the model was trained "
             "from, as recorded in its folder).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Write a trained model folder as a GGUF for the llama.cpp backend.

    Llama architecture, f16 or q8_0, with the tokenizer and chat template of the GGUF the model
    was trained from, so the laptop loop closes: sample quantized -> train -> export -> sample
    the trained model quantized. Prints a JSON summary on stdout.

    Examples:

        cai export-gguf runs/sl-cai --out runs/sl-cai.gguf

        cai export-gguf runs/rl-cai --out rl-cai-f16.gguf --type f16

        cai sample -m runs/sl-cai.gguf < examples/red_team.jsonl
    """
    from cai_cli.errors import console
    from cai_cli.training.gguf_export import export_gguf as run
    from cai_cli.training.runs import print_summary

    summary = run(model, out, type, tokenizer_from, overwrite)
    console.print(f"export-gguf: wrote {summary['out']} ({summary['bytes'] / 1e6:.0f} MB, {type})",
                  soft_wrap=True, markup=False, highlight=False)
    print_summary(summary)
