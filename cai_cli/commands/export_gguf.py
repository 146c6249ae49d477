"""cai export-gguf: write a trained model as a GGUF for the llama.cpp backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def export_gguf(
    model: Annotated[Path, typer.Argument(
        help="What to export: a Hugging Face folder (a train-* output), a LoRA adapter folder (with --base), "
             "or a GGUF (re-exported through full precision, as the trained models are).",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", show_default=False, help="The .gguf file to write.")],
    type: Annotated[str, typer.Option("--type", help="Weight format: f16, or q8_0 (half the size).")] = "q8_0",
    tokenizer_from: Annotated[Optional[Path], typer.Option(
        "--tokenizer-from", show_default=False,
        help="GGUF whose tokenizer and chat template to carry over (default: the GGUF the model was trained "
             "from, as recorded in its folder).")] = None,
    base: Annotated[Optional[Path], typer.Option(
        "--base", show_default=False,
        help="The model a LoRA adapter was trained from (a GGUF or a folder); the adapter is merged onto it.")] = None,
    base_adapter: Annotated[Optional[list[Path]], typer.Option(
        "--base-adapter", show_default=False,
        help="A LoRA adapter merged onto --base before MODEL's, when MODEL was trained from a fine-tune of "
             "--base (RL-CAI's adapter from SL-CAI's); repeat it for a longer chain, oldest first.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Write a trained model folder as a GGUF for the llama.cpp backend.

    Llama or Qwen2 architecture, f16 or q8_0, with the tokenizer and chat template of the GGUF the
    model was trained from, so the laptop loop closes: sample quantized -> train -> export ->
    sample the trained model quantized. A LoRA adapter is merged onto --base first; a GGUF goes
    through the same full-precision path, so a base model and its fine-tune can be compared at
    the same quantisation. Prints a JSON summary on stdout.

    Examples:

        cai export-gguf runs/sl-cai --out runs/sl-cai.gguf

        cai export-gguf runs/rl-cai --out rl-cai-f16.gguf --type f16

        cai sample -m runs/sl-cai.gguf < examples/red_team.jsonl

        cai export-gguf docs/results/sl-cai-adapter --base models/policy.gguf --out sl-cai.gguf

        cai export-gguf models/policy.gguf --out base-q8_0.gguf

        cai export-gguf docs/results/rl-cai-adapter --base models/policy.gguf --base-adapter docs/results/sl-cai-adapter --out rl-cai.gguf
    """
    from cai_cli.errors import console
    from cai_cli.training.gguf_export import export_gguf as run
    from cai_cli.training.runs import print_summary

    summary = run(model, out, type, tokenizer_from, overwrite, base, base_adapter or [])
    console.print(f"export-gguf: wrote {summary['out']} ({summary['bytes'] / 1e6:.0f} MB, {type})",
                  soft_wrap=True, markup=False, highlight=False)
    print_summary(summary)
