"""cai train-sft: supervised fine-tuning on the final revisions (SL-CAI)."""

from __future__ import annotations

from cai_cli.training.config import SFTConfig
from cai_cli.training.options import training_command


@training_command(SFTConfig)
def train_sft(*, settings: SFTConfig) -> None:
    """Supervised fine-tuning on prompt -> final revision (SL-CAI).

    Trains on `prompt` (or `messages`) -> `response` records, which is what `cai revise` writes
    (the final revision is the `response`), with the loss on the response tokens only and the
    base model's chat template. Writes a Hugging Face folder (safetensors; LoRA merged) to --out
    and a JSON summary to stdout.

    Examples:

        cai train-sft revised.jsonl --out runs/sl-cai

        cai train-sft revised.jsonl --mix helpful.jsonl:0.5 --max-steps 200 --out runs/sl-cai

        cai train-sft revised.jsonl --base my-model/ --full --lr 1e-5 --out runs/sl-cai --overwrite

        cai train-sft --config sft.yaml --resume

        accelerate launch --config_file examples/accelerate/ddp.yaml -m cai_cli train-sft revised.jsonl --out runs/sl-cai
    """
    from cai_cli.training.runs import print_summary, stdout_to_stderr
    from cai_cli.training.sft import train_sft as run

    with stdout_to_stderr():
        summary = run(settings)
    print_summary(summary)
