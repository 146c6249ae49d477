"""RL-CAI on-policy: the policy learns from the preference model's scores of its own answers.

`cai train-rl --algo rloo` (default) or `--algo grpo`. For each prompt the policy samples
`num_generations` answers; the preference model scores them (TRL calls it as the reward function,
rendering each conversation with the PM's own chat template); advantages come from comparing the
answers of one prompt, so no value network is needed. A KL penalty (`beta`) keeps the policy
near where it started (with LoRA, the starting policy is the base with the adapter switched off).
A completion cut off at `max_completion_length` stays in the update (a masked one would get no
gradient while its score still set its siblings' baseline, so only short answers, often
refusals, would learn). It is scored as the PM learnt cut-off answers when the PM was trained on
them (`train-pm --keep-flagged`); otherwise the PM never saw one (`compare` marks them and
train-pm leaves them out), so it scores one unit of the PM's log-odds below the worst finished
completion of its batch: a finished answer always beats a cut-off one.

Offline DPO, the other `--algo`, is in `cai_cli/training/dpo.py`; `cai_cli/training/algorithms.py`
says which module runs which `--algo`.

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
from cai_cli.training.policy import COMMAND


def default_learning_rate(lora: bool) -> float:
    # RL moves a policy that already works: steps far smaller than SFT's.
    return 1e-5 if lora else 1e-6


def train_rl(config: RLConfig) -> dict[str, Any]:
    """Train `config.policy` with `config.algo` (rloo or grpo) against `config.reward_model` on
    the prompts in `config.data` (+ `config.mix`); write the policy to `config.out` and return
    the run's summary."""
    from cai_cli.training.data import parse_source, prompt_example, read_training_data, report_left_out, token_length
    from cai_cli.training.loading import load_for_training, prepare_libraries
    from cai_cli.training.policy import save_policy, set_up_policy
    from cai_cli.training.runs import last_logged, make_callbacks, plan_run, prepare_trainer, run_training

    sources = [parse_source(config.data)] + [parse_source(spec) for spec in config.mix]
    data = read_training_data(sources, prompt_example, config.skip_invalid, config.keep_flagged)
    check_reward_model_folder(config.reward_model)
    prepare_libraries(config.verbose, config.threads)  # before plan_run, which may ask transformers about trackers
    plan = plan_run(COMMAND, config)
    from datasets import Dataset

    # Generation appends at the end of each prompt, so prompts are padded on the left.
    loaded = load_for_training(config.policy, "causal-lm", padding_side="left")
    tokenizer = loaded.tokenizer
    # A prompt plus its longest answer must fit what the preference model was trained on.
    from cai_cli.training.preference import trained_max_length

    limit = min(config.max_length, trained_max_length(Path(config.reward_model).expanduser()))
    data.keep(lambda e: token_length(tokenizer, e["prompt"], add_generation_prompt=True)
              + config.max_completion_length <= limit, "too_long")
    examples = data.resampled(config.seed)
    report_left_out(COMMAND, data)
    setup = set_up_policy(config, plan, loaded, default_learning_rate, f"{len(examples)} prompts")
    dataset = Dataset.from_list(examples)
    from cai_cli.training.preference import PreferenceModel

    reward = PreferenceReward(PreferenceModel(config.reward_model, batch_size=config.batch_size,
                                              verbose=config.verbose))
    trainer_class, config_class = on_policy_classes(config.algo)
    arguments = config_class(**setup.arguments, beta=setup.beta, num_generations=config.num_generations,
                             max_completion_length=config.max_completion_length,
                             temperature=config.temperature, model_init_kwargs=setup.reference_loading,
                             # A cut-off completion still learns, from the score the reward
                             # gives it (see PreferenceReward), not masked out of the loss.
                             mask_truncated_completions=False,
                             # Dropout would make the sampled answers' log-probabilities differ
                             # between generation and the update: noise in the policy ratio.
                             disable_dropout=True)
    trainer = trainer_class(model=loaded.model, reward_funcs=reward, args=arguments, train_dataset=dataset,
                            processing_class=tokenizer, peft_config=setup.peft_config, callbacks=make_callbacks(COMMAND))
    # A completion that ends without one of these tokens ran into max_completion_length.
    reward.end_ids = {*trainer.eos_token_ids, tokenizer.pad_token_id}
    prepare_trainer(trainer)
    figures = run_training(trainer, plan)
    figures.update(last_logged(trainer.state.log_history, ("reward", "reward_std", "kl", "completions/clipped_ratio")))
    figures["examples"] = len(examples)
    figures["cut_off"] = {"completions": reward.cut_off, "of": reward.scored,
                          "scored_by": "pm" if reward.pm_knows_cut_off else "below the batch's finished ones"}
    figures["left_out"] = dict(data.left_out)
    return save_policy(trainer, config, plan, loaded, setup, figures, reward_model=config.reward_model)


class PreferenceReward:
    """TRL's reward function for RLOO/GRPO: the preference model's score of each prompt and
    completion, with a cut-off completion (one that ran into max_completion_length, so it ends
    without an end token) scored as `cut_off_rewards` says."""

    def __init__(self, preference_model):
        self.preference_model = preference_model
        self.pm_knows_cut_off = trained_on_cut_off_answers(preference_model.path)
        self.end_ids: set[int] = set()  # set once the trainer knows its end-of-sequence tokens
        self.scored = self.cut_off = 0

    def __call__(self, prompts, completions, completion_ids, **_ignored) -> list[float]:
        conversations = [prompt + completion for prompt, completion in zip(prompts, completions)]
        scores = list(self.preference_model.score(conversations))
        cut = [bool(ids) and ids[-1] not in self.end_ids for ids in completion_ids]
        self.scored += len(cut)
        self.cut_off += sum(cut)
        return scores if self.pm_knows_cut_off else cut_off_rewards(scores, cut)


# How far below the worst finished completion a cut-off one scores, in the PM's units: a score
# difference d is P(better) = sigmoid(d) to the PM, so 1.0 is 73% against.
CUT_OFF_PENALTY = 1.0


def cut_off_rewards(scores: list[float], cut: list[bool]) -> list[float]:
    """Rewards for a batch where the PM never saw a cut-off answer: finished completions keep
    their scores; every cut-off one gets the same low score, CUT_OFF_PENALTY below the worst
    finished completion (below the worst completion when none finished), so no cut-off answer
    beats a finished one and none is preferred to another for what its unfinished text says."""
    if not any(cut):
        return list(scores)
    finished = [score for score, was_cut in zip(scores, cut) if not was_cut] or scores
    floor = min(finished) - CUT_OFF_PENALTY
    return [floor if was_cut else score for score, was_cut in zip(scores, cut)]


def trained_on_cut_off_answers(path: Path) -> bool:
    """Whether a preference model was trained with its cut-off pairs kept (train-pm
    --keep-flagged), so its score of a cut-off answer was learnt from labels."""
    import json

    from cai_cli.training.loading import PROVENANCE_FILE

    try:
        settings = json.loads((Path(path) / PROVENANCE_FILE).read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return settings.get("keep_flagged") is True


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
