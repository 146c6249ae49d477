"""The preference model (PM): a sequence classifier with one output, the reward r(conversation).

Trained on soft AI labels, as the paper does: for a pair with label p = P(chosen is better), the
loss is the cross-entropy between p and the PM's own pairwise probability
sigma(r_chosen - r_rejected). With p = 1 this is the usual Bradley-Terry loss; with p = 0.5 the
PM is only asked not to prefer either. TRL's RewardTrainer takes hard pairs only, so the loss is
our own `compute_loss` on a transformers `Trainer`.

Example (Python):

    from cai_cli.training.config import PMConfig
    from cai_cli.training.preference import PreferenceModel, train_pm
    train_pm(PMConfig(data="prefs.jsonl", out="runs/pm", max_steps=50))
    pm = PreferenceModel("runs/pm")
    pm.score([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError
from cai_cli.training.config import PMConfig
from cai_cli.training.runs import say

COMMAND = "train-pm"
TRAIN_ACCURACY_SAMPLE = 256


def default_learning_rate(lora: bool) -> float:
    return 1e-4 if lora else 1e-5


def soft_preference_loss(chosen_rewards, rejected_rewards, labels):
    """Cross-entropy between the soft labels and sigma(r_chosen - r_rejected), batch mean."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(chosen_rewards - rejected_rewards, labels)


def render_answered(tokenizer, prompt: list[dict[str, str]], response: str) -> str:
    """The conversation with `response` as the assistant's turn, in the model's chat template."""
    return tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)


def encode_pair(tokenizer, example: dict[str, Any]) -> dict[str, Any]:
    """Token ids of both answered conversations of a pair, and its label."""
    def ids(response: str) -> list[int]:
        return tokenizer(render_answered(tokenizer, example["prompt"], response), add_special_tokens=False).input_ids

    return {"chosen_ids": ids(example["chosen"]), "rejected_ids": ids(example["rejected"]), "label": example["label"]}


def fits(encoded: dict[str, Any], max_length: int) -> bool:
    return max(len(encoded["chosen_ids"]), len(encoded["rejected_ids"])) <= max_length


class PairCollator:
    """Pads a batch of pairs into one tensor: the chosen sequences, then the rejected ones, so a
    single forward pass scores both."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        sequences = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):  # right padding
            input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[row, : len(sequence)] = 1
        labels = torch.tensor([float(f["label"]) for f in features], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "preference": labels}


def make_trainer_class():
    """A transformers Trainer whose loss is the soft-label preference loss."""
    from transformers import Trainer

    class SoftPreferenceTrainer(Trainer):
        # The loss is a per-batch mean: the Trainer must still divide it for gradient accumulation.
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("preference")
            rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, 0]
            pairs = labels.shape[0]
            loss = soft_preference_loss(rewards[:pairs], rewards[pairs:], labels.to(rewards.dtype))
            return (loss, {"rewards": rewards}) if return_outputs else loss

    return SoftPreferenceTrainer


def pairwise_metrics(model, collator: PairCollator, encoded: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """Held-out figures: pairwise accuracy (the PM ranks the label's favourite first; ties in the
    label don't count, a tie in the scores counts half), the soft-label loss, and the mean
    reward margin."""
    import torch

    if not encoded:
        return {"pairs": 0, "accuracy": None, "loss": None}
    model.eval()
    device = next(model.parameters()).device
    margins, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = collator(encoded[start:start + batch_size])
            rewards = model(input_ids=batch["input_ids"].to(device),
                            attention_mask=batch["attention_mask"].to(device)).logits[:, 0].float().cpu()
            pairs = batch["preference"].shape[0]
            margins += (rewards[:pairs] - rewards[pairs:]).tolist()
            labels += batch["preference"].tolist()
    loss = soft_preference_loss(torch.tensor(margins), torch.zeros(len(margins)), torch.tensor(labels)).item()
    accuracy = pairwise_accuracy(margins, labels)
    return {"pairs": len(encoded), "accuracy": round(accuracy, 4) if accuracy is not None else None,
            "loss": round(loss, 4), "mean_margin": round(sum(margins) / len(margins), 4)}


def pairwise_accuracy(margins: list[float], labels: list[float]) -> float | None:
    """Share of the pairs whose label picks a side (not 0.5) that the PM ranks the same way
    (margin = r_chosen - r_rejected). A zero margin ranks neither answer first: it counts half,
    as a coin toss would, whichever side the label picks. None when no label picks a side."""
    decided = [(margin, label) for margin, label in zip(margins, labels) if label != 0.5]
    if not decided:
        return None
    right = sum(0.5 if margin == 0 else float((margin > 0) == (label > 0.5)) for margin, label in decided)
    return right / len(decided)


def train_pm(config: PMConfig) -> dict[str, Any]:
    """Train a preference model on `config.data` (+ `config.mix`), hold out `eval_fraction` of
    the pairs for pairwise accuracy, write the model to `config.out` and return the summary."""
    from cai_cli.training.data import (parse_source, preference_example, read_training_data, report_left_out,
                                       split_held_out)
    from cai_cli.training.loading import load_for_training, on_gpu, prepare_libraries
    from cai_cli.training.runs import (lora_settings, make_callbacks, plan_run, prepare_trainer, provenance,
                                       run_training, save_run_model, trainer_arguments)

    sources = [parse_source(config.data)] + [parse_source(spec) for spec in config.mix]
    data = read_training_data(sources, preference_example, config.skip_invalid, config.keep_flagged)
    # Split by conversation before resampling (`--mix FILE:2` copies), so no held-out pair has a
    # copy, or a sibling from the same prompt, among the training pairs.
    data, held_out = split_held_out(data, config.eval_fraction, config.seed)
    prepare_libraries(config.verbose, config.threads)  # before plan_run, which may ask transformers about trackers
    plan = plan_run(COMMAND, config)
    from datasets import Dataset
    from transformers import TrainingArguments

    loaded = load_for_training(config.base, "reward", padding_side="right")
    tokenizer = loaded.tokenizer
    for part in data.sources:
        for example in part.examples:
            example["encoded"] = encode_pair(tokenizer, example)
    data.keep(lambda e: fits(e["encoded"], config.max_length), "too_long")
    held_out_encoded = [encoded for encoded in (encode_pair(tokenizer, e) for e in held_out)
                        if fits(encoded, config.max_length)]
    if len(held_out_encoded) < len(held_out):
        data.left_out["too_long"] += len(held_out) - len(held_out_encoded)
    report_left_out(COMMAND, data)
    train_examples = data.resampled(config.seed)
    train_encoded = [e["encoded"] for e in train_examples]
    peft_config = lora_settings(config, "SEQ_CLS")
    model = loaded.model
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)  # SEQ_CLS keeps the new score head fully trainable
        if config.gradient_checkpointing:
            # With the embeddings frozen, checkpointed blocks would see an input without gradients.
            model.enable_input_require_grads()
    learning_rate = config.learning_rate or default_learning_rate(peft_config is not None)
    say(f"{COMMAND}: {len(train_examples)} pairs ({len(held_out_encoded)} held out), base {loaded.path.name}, "
        f"{'LoRA r=' + str(config.lora_r) if peft_config else 'full fine-tuning'}, "
        f"{'GPU' if on_gpu() else 'CPU'}")
    collator = PairCollator(tokenizer.pad_token_id)
    arguments = TrainingArguments(**trainer_arguments(config, plan, learning_rate), remove_unused_columns=False)
    trainer = make_trainer_class()(model=model, args=arguments, train_dataset=Dataset.from_list(train_encoded),
                                   data_collator=collator, callbacks=make_callbacks(COMMAND))
    prepare_trainer(trainer)
    figures = run_training(trainer, plan)
    figures["pairs"] = len(train_examples)
    figures["left_out"] = dict(data.left_out)
    figures["held_out"] = pairwise_metrics(trainer.model, collator, held_out_encoded, config.batch_size)
    # A sample of the training pairs is enough to see whether the PM fits them at all.
    figures["train_accuracy"] = pairwise_metrics(trainer.model, collator, train_encoded[:TRAIN_ACCURACY_SAMPLE],
                                                 config.batch_size)["accuracy"]
    if figures["held_out"]["accuracy"] is not None:
        say(f"{COMMAND}: held-out pairwise accuracy {figures['held_out']['accuracy']:.3f} "
            f"on {figures['held_out']['pairs']} pairs")
    made = provenance(COMMAND, config, loaded.path, loaded.source_gguf, figures)
    save_run_model(trainer, tokenizer, plan, made, config.keep_adapter,
                   load_base=lambda: load_for_training(config.base, "reward", padding_side="right").model)
    return {"command": COMMAND, "out": str(plan.out), "base": str(loaded.path),
            "lora": peft_config is not None, "learning_rate": learning_rate, **figures}


def trained_max_length(path: Path) -> int:
    """The --max-length a preference model was trained with (its `cai_training.json`), so that
    scoring reads at most what training showed it; the shared default for other folders."""
    import json

    from cai_cli.training.config import TrainingConfig
    from cai_cli.training.loading import PROVENANCE_FILE

    try:
        settings = json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8"))["settings"]
        return int(settings["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return TrainingConfig.max_length


class PreferenceModel:
    """A trained PM that scores answered conversations; loaded once, used for a whole stream."""

    def __init__(self, path: str | Path, batch_size: int = 8, max_length: int | None = None, verbose: bool = False):
        from cai_cli.training.loading import prepare_libraries

        prepare_libraries(verbose)
        import torch
        import transformers

        from cai_cli.hardware import torch_device

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise CaiError(f"{path} is not a preference model folder (no config.json); train one with `cai train-pm`")
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])) \
                or config.num_labels != 1:
            raise CaiError(f"{path} is not a preference model (a one-output sequence classifier from `cai train-pm`)")
        self.device = torch_device()
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CaiError(f"cannot load the preference model {path}: {str(exc).strip().splitlines()[0]}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval()
        self.batch_size = max(1, batch_size)
        self.max_length = max_length or trained_max_length(path)
        self.cut = 0  # conversations scored without their start (longer than max_length)
        self.path = path

    def score(self, conversations: Iterable[list[dict[str, str]]]) -> Iterator[float]:
        """The reward of each conversation (ending with the assistant's answer), in order."""
        import torch

        texts = (self.tokenizer.apply_chat_template(c, tokenize=False) for c in conversations)
        while batch := list(itertools.islice(texts, self.batch_size)):
            lengths = [len(ids) for ids in self.tokenizer(batch, add_special_tokens=False).input_ids]
            self.cut += sum(length > self.max_length for length in lengths)
            # The start goes, not the end: the score is read at the answer's last token.
            encoded = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                rewards = self.model(**encoded).logits[:, 0].float().cpu().tolist()
            for reward in rewards:
                if not math.isfinite(reward):
                    raise CaiError("the preference model gave a non-finite score")
                yield reward
