"""Supervised fine-tuning (SL-CAI): the model learns to give the final revision to each prompt.

TRL's `SFTTrainer` on prompt-completion pairs in conversational form: the conversation is
rendered with the base model's own chat template and the loss covers the response tokens only
(`completion_only_loss`), so the model is not taught to write red-team prompts.

Example (Python):

    from cai_cli.training.config import SFTConfig
    from cai_cli.training.sft import train_sft
    summary = train_sft(SFTConfig(data="revised.jsonl", out="runs/sl-cai", max_steps=20))
"""

from __future__ import annotations

from typing import Any

from cai_cli.training.config import SFTConfig
from cai_cli.training.runs import say

COMMAND = "train-sft"


def default_learning_rate(lora: bool) -> float:
    # Adapters start at zero and need a larger step than the full weights, which move easily.
    return 2e-4 if lora else 2e-5


def train_sft(config: SFTConfig) -> dict[str, Any]:
    """Fine-tune `config.base` on the records in `config.data` (+ `config.mix`); write the model
    to `config.out` and return the run's summary."""
    from cai_cli.training.data import parse_source, read_training_data, report_left_out, sft_example, token_length
    from cai_cli.training.loading import load_for_training, on_gpu, prepare_libraries
    from cai_cli.training.runs import (lora_settings, make_callbacks, plan_run, prepare_trainer, provenance,
                                       run_training, save_run_model, trainer_arguments)

    sources = [parse_source(config.data)] + [parse_source(spec) for spec in config.mix]
    data = read_training_data(sources, sft_example, config.skip_invalid, config.keep_flagged)
    prepare_libraries(config.verbose, config.threads)  # before plan_run, which may ask transformers about trackers
    plan = plan_run(COMMAND, config)
    from datasets import Dataset
    from trl import SFTConfig as TrlSFTConfig, SFTTrainer

    loaded = load_for_training(config.base, "causal-lm", padding_side="right")
    data.keep(lambda e: token_length(loaded.tokenizer, e["prompt"] + e["completion"]) <= config.max_length, "too_long")
    report_left_out(COMMAND, data)
    examples = data.resampled(config.seed)
    peft_config = lora_settings(config, "CAUSAL_LM")
    learning_rate = config.learning_rate or default_learning_rate(peft_config is not None)
    say(f"{COMMAND}: {len(examples)} examples, base {loaded.path.name}, "
        f"{'LoRA r=' + str(config.lora_r) if peft_config else 'full fine-tuning'}, "
        f"{'GPU' if on_gpu() else 'CPU'}")
    arguments = TrlSFTConfig(
        **trainer_arguments(config, plan, learning_rate),
        max_length=config.max_length,
        completion_only_loss=True,
    )
    trainer = SFTTrainer(model=loaded.model, args=arguments, train_dataset=Dataset.from_list(examples),
                         processing_class=loaded.tokenizer, peft_config=peft_config,
                         callbacks=make_callbacks(COMMAND))
    prepare_trainer(trainer)
    figures = run_training(trainer, plan)
    figures["examples"] = len(examples)
    figures["left_out"] = dict(data.left_out)
    out = plan.out
    made = provenance(COMMAND, config, loaded.path, loaded.source_gguf, figures)
    save_run_model(trainer, loaded.tokenizer, plan, made, config.keep_adapter,
                   load_base=lambda: load_for_training(config.base, "causal-lm", padding_side="right").model)
    return {"command": COMMAND, "out": str(out), "base": str(loaded.path),
            "source_gguf": str(loaded.source_gguf) if loaded.source_gguf else None,
            "lora": peft_config is not None, "learning_rate": learning_rate, **figures}
