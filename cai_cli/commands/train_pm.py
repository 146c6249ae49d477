"""cai train-pm: a preference model trained on the soft labels `cai compare` writes (RL-CAI)."""

from __future__ import annotations

from cai_cli.training.config import PMConfig
from cai_cli.training.options import training_command


@training_command(PMConfig)
def train_pm(*, settings: PMConfig) -> None:
    """Train a preference model on the soft labels of `cai compare`.

    Reads preference records: `prompt` (or `messages`), `chosen`, `rejected` and the soft
    `label` = P(chosen is better) (1.0 when absent). The model is a sequence classifier giving
    one score; the loss is the cross-entropy between the label and
    sigma(score(chosen) - score(rejected)). Reports the held-out pairwise accuracy; writes a
    Hugging Face folder to --out and a JSON summary to stdout.

    Examples:

        cai train-pm prefs.jsonl --out runs/pm

        cai train-pm prefs.jsonl --mix examples/labeled_pairs.jsonl --base runs/sl-cai --out runs/pm

        cai train-pm prefs.jsonl --out runs/pm --max-steps 100 --save-steps 20 --resume

        accelerate launch --config_file examples/accelerate/fsdp.yaml -m cai_cli train-pm prefs.jsonl --out runs/pm
    """
    from cai_cli.training.preference import train_pm as run
    from cai_cli.training.runs import print_summary, stdout_to_stderr

    with stdout_to_stderr():
        summary = run(settings)
    print_summary(summary)
