"""RL-CAI: the policy learns from the preference model, or offline from the AI preferences.

- `rloo` (default) and `grpo`: on-policy. For each prompt the policy samples `num_generations`
  answers; the preference model scores them (TRL calls it as the reward function, rendering each
  conversation with the PM's own chat template); advantages come from comparing the answers of
  one prompt, so no value network is needed. A KL penalty (`beta`) keeps the policy near where
  it started (with LoRA, the starting policy is the base with the adapter switched off).
- `dpo`: offline, on the records `compare` writes, without a preference model (the open
  reproductions' route). DPO takes hard pairs: the answer the label favours is `chosen`, ties
  (label 0.5) are left out.

Example (Python):

    from cai_cli.training.config import RLConfig
    from cai_cli.training.rl import train_rl
    train_rl(RLConfig(data="examples/red_team.jsonl", policy="runs/sl-cai", reward_model="runs/pm",
                      out="runs/rl-cai", max_steps=100))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError
from cai_cli.training.config import RLConfig
from cai_cli.training.runs import say

COMMAND = "train-rl"


def default_learning_rate(lora: bool, algo: str) -> float:
    # RL moves a policy that already works: steps far smaller than SFT's.
    if algo == "dpo":
        return 5e-5 if lora else 5e-7
    return 1e-5 if lora else 1e-6


def train_rl(config: RLConfig) -> dict[str, Any]:
    """Train `config.policy` with `config.algo` on `config.data` (+ `config.mix`); write the
    policy to `config.out` and return the run's summary."""
    from cai_cli.training.data import (oriented_pairs, parse_source, preference_example, prompt_example,
                                       read_training_data, report_left_out, token_length)
    from cai_cli.training.loading import load_for_training, on_gpu, prepare_libraries
    from cai_cli.training.runs import (lora_settings, make_callbacks, plan_run, prepare_trainer, provenance,
                                       run_training, save_run_model, trainer_arguments)

    sources = [parse_source(config.data)] + [parse_source(spec) for spec in config.mix]
    make_example = preference_example if config.algo == "dpo" else prompt_example
    data = read_training_data(sources, make_example, config.skip_invalid, config.keep_flagged)
    if config.algo != "dpo":
        check_reward_model_folder(config.reward_model)
    prepare_libraries(config.verbose, config.threads)  # before plan_run, which may ask transformers about trackers
    plan = plan_run(COMMAND, config)
    from datasets import Dataset

    # Generation appends at the end of each prompt, so prompts are padded on the left.
    loaded = load_for_training(config.policy, "causal-lm", padding_side="left")
    tokenizer = loaded.tokenizer
    if config.algo == "dpo":
        data.keep(lambda e: max(token_length(tokenizer, e["prompt"] + [{"role": "assistant", "content": e[side]}])
                                for side in ("chosen", "rejected")) <= config.max_length, "too_long")
        examples = oriented_pairs(data.resampled(config.seed))
    else:
        # A prompt plus its longest answer must fit what the preference model was trained on.
        from cai_cli.training.preference import trained_max_length

        limit = min(config.max_length, trained_max_length(Path(config.reward_model).expanduser()))
        data.keep(lambda e: token_length(tokenizer, e["prompt"], add_generation_prompt=True)
                  + config.max_completion_length <= limit, "too_long")
        examples = data.resampled(config.seed)
    report_left_out(COMMAND, data)
    peft_config = lora_settings(config, "CAUSAL_LM")
    learning_rate = config.learning_rate or default_learning_rate(peft_config is not None, config.algo)
    common = trainer_arguments(config, plan, learning_rate)
    beta = config.beta_value()
    # A full fine-tune needs a separate frozen copy of the starting policy for the KL term; TRL
    # builds it from these loading arguments (a GGUF needs its file named and dequantised).
    reference_loading = None
    if peft_config is None and loaded.path.suffix == ".gguf":
        import transformers

        reference_loading = {"gguf_file": loaded.path.name, "local_files_only": True,
                             "quantization_config": transformers.GgufConfig(gguf_file=loaded.path.name,
                                                                            dequantize=True)}
    say(f"{COMMAND}: {config.algo}, {len(examples)} {'pairs' if config.algo == 'dpo' else 'prompts'}, "
        f"policy {loaded.path.name}, beta {beta}, "
        f"{'LoRA r=' + str(config.lora_r) if peft_config else 'full fine-tuning'}, "
        f"{'GPU' if on_gpu() else 'CPU'}")
    dataset = Dataset.from_list(examples)
    callbacks = make_callbacks(COMMAND)
    if config.algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        arguments = DPOConfig(**common, beta=beta, max_length=config.max_length,
                              model_init_kwargs=reference_loading)
        trainer = DPOTrainer(model=loaded.model, args=arguments, train_dataset=dataset,
                             processing_class=loaded.tokenizer, peft_config=peft_config, callbacks=callbacks)
    else:
        reward = load_for_training(config.reward_model, "reward", padding_side="right")
        reward.model.eval()
        if on_gpu():
            reward.model.to("cuda")
        trainer_class, config_class = on_policy_classes(config.algo)
        arguments = config_class(**common, beta=beta, num_generations=config.num_generations,
                                 max_completion_length=config.max_completion_length,
                                 temperature=config.temperature, model_init_kwargs=reference_loading,
                                 # An answer cut off at max_completion_length is no example of a
                                 # finished answer: it does not count towards the update.
                                 mask_truncated_completions=True,
                                 # Dropout would make the sampled answers' log-probabilities differ
                                 # between generation and the update: noise in the policy ratio.
                                 disable_dropout=True)
        trainer = trainer_class(model=loaded.model, reward_funcs=reward.model, args=arguments, train_dataset=dataset,
                                processing_class=loaded.tokenizer, reward_processing_classes=reward.tokenizer,
                                peft_config=peft_config, callbacks=callbacks)
    prepare_trainer(trainer)
    figures = run_training(trainer, plan)
    figures.update(last_logged(trainer.state.log_history, ("reward", "reward_std", "kl", "rewards/margins",
                                                            "rewards/accuracies")))
    figures["examples"] = len(examples)
    figures["left_out"] = dict(data.left_out)
    made = provenance(COMMAND, config, loaded.path, loaded.source_gguf, figures)
    save_run_model(trainer, loaded.tokenizer, plan, made, config.keep_adapter,
                   load_base=lambda: load_for_training(config.policy, "causal-lm", padding_side="left").model)
    return {"command": COMMAND, "algo": config.algo, "out": str(plan.out), "policy": str(loaded.path),
            "reward_model": config.reward_model if config.algo != "dpo" else None,
            "source_gguf": str(loaded.source_gguf) if loaded.source_gguf else None,
            "lora": peft_config is not None, "beta": beta, "learning_rate": learning_rate, **figures}


def on_policy_classes(algo: str):
    if algo == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOTrainer, GRPOConfig
    from trl import RLOOConfig, RLOOTrainer

    return RLOOTrainer, RLOOConfig


def check_reward_model_folder(path: str | None) -> None:
    """A readable error before training when --reward-model is not a `train-pm` output."""
    import json
    from pathlib import Path

    folder = Path(path or "").expanduser()
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CaiError(f"--reward-model {path}: not a model folder (no config.json); train one with `cai train-pm`")
    architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise CaiError(f"--reward-model {path} is not a preference model ({', '.join(architectures) or 'unknown'}); "
                       "train one with `cai train-pm`")


def last_logged(history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """The last logged value of each metric the trainer reported (rewards, KL, DPO margins)."""
    found: dict[str, float] = {}
    for entry in history:
        for key in keys:
            if key in entry:
                found[key.replace("/", "_")] = entry[key]
    return found
