"""RL-CAI by DPO: the policy learns offline from the AI preferences, with no preference model.

`cai train-rl --algo dpo` reads the records `compare` writes (the open reproductions' route).
DPO takes hard pairs: the answer the label favours is `chosen`; a label within `min_margin` of
0.5 (ties included) is left out, since DPO would train on it as certain. The KL term (`beta`)
keeps the policy near where it started (with LoRA, the base with the adapter switched off).

Example (Python):

    from cai_cli.training.dpo import DPOConfig, train_dpo
    train_dpo(DPOConfig(data="runs/prefs.jsonl", policy="runs/sl-cai", out="runs/dpo-cai", max_steps=100))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cai_cli.flags import RL_PANEL, setting, setting_help
from cai_cli.training.config import RLConfig
from cai_cli.training.policy import COMMAND


@dataclass
class DPOConfig(RLConfig):
    """`cai train-rl --algo dpo`: DPO on `cai compare` records, without a preference model.

    The settings of `cai train-rl` as DPO reads them: data, mix, policy, beta, min_margin and the
    ones every training command takes. The on-policy settings stay (unused), so that a run
    records the same settings whichever method it ran."""

    algo: str = setting("dpo", setting_help(RLConfig, "algo"), panel=RL_PANEL)

    def beta_value(self) -> float:
        # TRL's own default for DPO.
        return 0.1 if self.beta is None else self.beta

    def check_method(self) -> None:
        """DPO needs no preference model and samples nothing: no setting of its own to check."""


def default_learning_rate(lora: bool) -> float:
    # DPO moves a policy that already works: steps far smaller than SFT's.
    return 5e-5 if lora else 5e-7


def train_dpo(config: DPOConfig) -> dict[str, Any]:
    """Train `config.policy` by DPO on the preference records in `config.data` (+ `config.mix`);
    write the policy to `config.out` and return the run's summary."""
    from cai_cli.training.data import (decisive, oriented_pairs, parse_source, preference_example, read_training_data,
                                       report_left_out, token_length)
    from cai_cli.training.loading import load_for_training, prepare_libraries
    from cai_cli.training.policy import save_policy, set_up_policy
    from cai_cli.training.runs import last_logged, make_callbacks, plan_run, prepare_trainer, run_training

    sources = [parse_source(config.data)] + [parse_source(spec) for spec in config.mix]
    data = read_training_data(sources, preference_example, config.skip_invalid, config.keep_flagged)
    data.keep(lambda e: decisive(e["label"], config.min_margin), "undecided")
    prepare_libraries(config.verbose, config.threads)  # before plan_run, which may ask transformers about trackers
    plan = plan_run(COMMAND, config)
    from datasets import Dataset

    # Padded on the left, as the on-policy methods need for generating: the tokenizer saved with
    # the policy is the same whichever method trained it.
    loaded = load_for_training(config.policy, "causal-lm", padding_side="left")
    tokenizer = loaded.tokenizer
    data.keep(lambda e: max(token_length(tokenizer, e["prompt"] + [{"role": "assistant", "content": e[side]}])
                            for side in ("chosen", "rejected")) <= config.max_length, "too_long")
    examples = oriented_pairs(data.resampled(config.seed))
    report_left_out(COMMAND, data)
    setup = set_up_policy(config, plan, loaded, default_learning_rate, f"{len(examples)} pairs")
    from trl import DPOConfig as TrlDPOConfig, DPOTrainer

    arguments = TrlDPOConfig(**setup.arguments, beta=setup.beta, max_length=config.max_length,
                             model_init_kwargs=setup.reference_loading)
    trainer = DPOTrainer(model=loaded.model, args=arguments, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, peft_config=setup.peft_config, callbacks=make_callbacks(COMMAND))
    prepare_trainer(trainer)
    figures = run_training(trainer, plan)
    figures.update(last_logged(trainer.state.log_history, ("rewards/margins", "rewards/accuracies")))
    figures["examples"] = len(examples)
    figures["left_out"] = dict(data.left_out)
    # `reward_model` stays, None, so that every train-rl summary has the same keys.
    return save_policy(trainer, config, plan, loaded, setup, figures, reward_model=None)
