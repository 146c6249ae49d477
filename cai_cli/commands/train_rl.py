"""cai train-rl: RL against the preference model (RLOO, GRPO) or offline DPO (RL-CAI).

The flags are those of every method; `--algo` picks the method, through RL_ALGORITHMS in
`cai_cli/training/algorithms.py`.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cai_cli.training.config import RLConfig, field_help
from cai_cli.training.options import training_command

RL_PANEL = "RL"
D = RLConfig


def _option(*flags: str, name: str, **kwargs):
    return typer.Option(*flags, help=field_help(RLConfig, name), rich_help_panel=RL_PANEL, **kwargs)


@training_command(RLConfig)
def train_rl(
    data: Annotated[Optional[str], typer.Argument(help=field_help(RLConfig, "data"), show_default=False)] = None,
    algo: Annotated[str, _option("--algo", name="algo")] = D.algo,
    policy: Annotated[Optional[str], _option("--policy", name="policy", show_default=False)] = None,
    reward_model: Annotated[Optional[str], _option("--reward-model", "--pm", name="reward_model",
                                                   show_default=False)] = None,
    beta: Annotated[Optional[float], _option("--beta", name="beta", min=0.0, show_default=False)] = None,
    num_generations: Annotated[int, _option("--num-generations", name="num_generations", min=2)] = D.num_generations,
    max_completion_length: Annotated[int, _option("--max-completion-length", name="max_completion_length",
                                                  min=1)] = D.max_completion_length,
    temperature: Annotated[float, _option("--temperature", name="temperature", min=0.0)] = D.temperature,
    min_margin: Annotated[float, _option("--min-margin", name="min_margin", min=0.0)] = D.min_margin,
    *,
    settings: RLConfig,
) -> None:
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
