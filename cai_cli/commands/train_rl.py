"""cai train-rl: RL against the preference model (RLOO, GRPO) or offline DPO (RL-CAI).

The flags are those of every method; `--algo` picks the method, through RL_ALGORITHMS in
`cai_cli/training/algorithms.py`.
"""

from __future__ import annotations

from cai_cli.training.config import RLConfig
from cai_cli.training.options import training_command

@training_command(RLConfig)
def train_rl(*, settings: RLConfig) -> None:
    """RL against the preference model (RLOO, GRPO) or offline DPO (RL-CAI).

    `--algo rloo` (default) or `grpo` sample answers to the prompts in DATA and reward them with
    `--reward-model`, with a KL penalty (`--beta`) to the starting policy; `--algo dpo` learns
    offline from `cai compare` records (no preference model). Writes a Hugging Face folder to
    --out and a JSON summary to stdout.

    Examples:

        cai train-rl examples/red_team.jsonl --policy runs/sl-cai --reward-model runs/pm --out runs/rl-cai

        cai train-rl prompts.jsonl --algo grpo --policy runs/sl-cai --pm runs/pm --num-generations 8 --out runs/grpo

        cai train-rl prefs.jsonl --algo dpo --policy runs/sl-cai --beta 0.1 --min-margin 0.1 --out runs/dpo

        cai train-rl prompts.jsonl --policy runs/sl-cai --pm runs/pm --max-completion-length 256 --out runs/rl-cai

        accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml -m cai_cli train-rl prefs.jsonl --algo dpo --full --out runs/dpo
    """
    from cai_cli.training.algorithms import algorithm_for
    from cai_cli.training.runs import print_summary, stdout_to_stderr

    config, run = algorithm_for(settings)
    with stdout_to_stderr():
        summary = run(config)
    print_summary(summary)
