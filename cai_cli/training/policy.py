"""What every `cai train-rl` method does the same way around its own TRL trainer: set up the
policy's training (LoRA or full weights, the learning rate, TRL's shared arguments, the KL weight,
the frozen reference for full fine-tuning) before it, and save the policy with the run's summary
after it. `rl.py` and `dpo.py` differ only in what lies between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cai_cli.training.config import RLConfig
from cai_cli.training.runs import RunPlan, say

COMMAND = "train-rl"


@dataclass(frozen=True)
class PolicySetup:
    peft_config: Any  # None: full fine-tuning
    learning_rate: float
    arguments: dict[str, Any]  # TRL's arguments shared by every trainer (trainer_arguments)
    beta: float
    reference_loading: dict[str, Any] | None  # how the frozen reference loads, for full fine-tuning


def set_up_policy(config: RLConfig, plan: RunPlan, loaded, default_learning_rate: Callable[[bool], float],
                  examples: str) -> PolicySetup:
    """The run's training settings for the policy in `loaded`; says on stderr what will train on
    `examples` (e.g. "35 pairs")."""
    from cai_cli.training.loading import on_gpu, reference_model_loading
    from cai_cli.training.runs import lora_settings, trainer_arguments

    peft_config = lora_settings(config, "CAUSAL_LM")
    learning_rate = config.learning_rate or default_learning_rate(peft_config is not None)
    setup = PolicySetup(peft_config, learning_rate, trainer_arguments(config, plan, learning_rate), config.beta_value(),
                        reference_model_loading(loaded) if peft_config is None else None)
    say(f"{COMMAND}: {config.algo}, {examples}, policy {loaded.path.name}, beta {setup.beta}, "
        f"{'LoRA r=' + str(config.lora_r) if peft_config else 'full fine-tuning'}, "
        f"{'GPU' if on_gpu() else 'CPU'}")
    return setup


def save_policy(trainer, config: RLConfig, plan: RunPlan, loaded, setup: PolicySetup, figures: dict[str, Any],
                reward_model: str | None) -> dict[str, Any]:
    """Save the trained policy and its provenance in the run folder; return the run's summary
    (the same keys whichever method trained it)."""
    from cai_cli.training.loading import load_for_training
    from cai_cli.training.runs import provenance, save_run_model

    made = provenance(COMMAND, config, loaded.path, loaded.source_gguf, figures)
    save_run_model(trainer, loaded.tokenizer, plan, made, config.keep_adapter,
                   load_base=lambda: load_for_training(config.policy, "causal-lm", padding_side="left").model)
    return {"command": COMMAND, "algo": config.algo, "out": str(plan.out), "policy": str(loaded.path),
            "reward_model": reward_model, "source_gguf": str(loaded.source_gguf) if loaded.source_gguf else None,
            "lora": setup.peft_config is not None, "beta": setup.beta, "learning_rate": setup.learning_rate,
            **figures}
