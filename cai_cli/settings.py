"""The settings of the inference stages that commands share, with their flags.

Each is a frozen dataclass whose fields carry their flags (`cai_cli.flags.setting`); a command
takes them whole with `with_settings`. This module imports nothing heavy, as `cai --help`
builds every command's flags from it: the stages that use these settings import them from here.
The model's settings (`BackendOptions`) and the sampling every generating stage shares
(`Sampling`) are in `cai_cli.backends`, beside the requests they shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from cai_cli.backends import Sampling
from cai_cli.errors import CaiError
from cai_cli.flags import FEEDBACK_PANEL, SAMPLING_PANEL, setting
from cai_cli.prompts import COMPARISON_LAYOUTS, DEFAULT_COMPARISON_LAYOUT

# The paper clamps chain-of-thought labels to 40-60%: they come out near 0 or 1.
DEFAULT_COT_CLAMP = (0.4, 0.6)

# `cai redteam` writes short prompts, and variety matters more there than in answers.
REDTEAM_SAMPLING = Sampling(max_tokens=96, temperature=1.0)


@dataclass(frozen=True)
class CritiqueSettings:
    """Settings shared by `critique` and `revise`."""

    principle: str | None = setting(
        None, "Always use this principle instead of drawing one at random.", show_default=False)
    few_shot: bool = setting(
        True, "Put the constitution's worked examples in front of the conversation.", "--few-shot/--no-few-shot")
    sampling: Sampling = Sampling()


def parse_clamp(text: str | None) -> tuple[float, ...] | None:
    """`--clamp LO,HI` as numbers, 'none' as () (off), and no flag as None (the default of
    `FeedbackSettings`: clamped with --cot, not without)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CaiError(f"--clamp takes two numbers LO,HI such as 0.4,0.6 (or 'none'), not {text!r}") from None
    if not 0.0 <= low <= 0.5 <= high <= 1.0 or low == high:
        raise CaiError(f"--clamp {text}: need 0 <= LO <= 0.5 <= HI <= 1 and LO < HI")
    return low, high


@dataclass(frozen=True)
class Reasoning(Sampling):
    """How a chain of thought is sampled (`--cot`); each question's seed is derived from the
    feedback settings' own, so this one has no flag."""

    max_tokens: int = setting(128, "--cot: most tokens of reasoning.", min=1, panel=FEEDBACK_PANEL)
    temperature: float = setting(0.0, "--cot: sampling temperature; 0 is greedy.", min=0.0, panel=FEEDBACK_PANEL)
    seed: int = setting(0, "Unused: each question's seed comes from FeedbackSettings.seed.", flag=False)


@dataclass(frozen=True)
class FeedbackSettings:
    """How the feedback model is asked (shared by `compare`, `eval` and `elo`), and their flags."""

    principle: str | None = setting(
        None, "Judge every pair under this comparison principle instead of drawing at random.",
        panel=FEEDBACK_PANEL, show_default=False)
    principles: int = setting(
        1, "Draw K different principles per pair (seeded) and average their labels: the ensemble.",
        min=1, panel=FEEDBACK_PANEL)
    swap: bool = setting(
        True, "Ask each question in both orderings, (A)/(B) and (B)/(A), and average: cancels letter bias.",
        "--swap/--no-swap", panel=FEEDBACK_PANEL)
    layout: str = setting(
        DEFAULT_COMPARISON_LAYOUT, "Where the principle's question goes. responses-first: after both responses, so "
        "the principles of a pair share one read of them (--principles K costs little more than 1); paper: before "
        "them.", metavar="|".join(COMPARISON_LAYOUTS), panel=FEEDBACK_PANEL)
    cot: bool = setting(
        False, "Chain of thought: the model reasons step by step (generated), then the letter is scored.",
        panel=FEEDBACK_PANEL)
    # Bounds for each judgement's probability. None is the default (DEFAULT_COT_CLAMP with cot,
    # off without) and () turns clamping off; both are resolved when the settings are made.
    clamp: tuple[float, ...] | None = setting(
        None, "Clamp each judgement's probability to [LO, HI] ('none': off). Default: 0.4,0.6 with --cot, off "
              "without.", metavar="LO,HI", panel=FEEDBACK_PANEL, show_default=False, cli_type=Optional[str],
        parse=parse_clamp)
    reasoning: Sampling = Reasoning()
    seed: int = setting(0, "Seed for sampling and principle draws: same seed, same output.", panel=SAMPLING_PANEL)

    def __post_init__(self) -> None:
        if self.clamp is None and self.cot:
            object.__setattr__(self, "clamp", DEFAULT_COT_CLAMP)
        elif self.clamp is not None and len(self.clamp) == 0:
            object.__setattr__(self, "clamp", None)
        elif self.clamp is not None:
            object.__setattr__(self, "clamp", tuple(self.clamp))

    def key_fields(self) -> dict[str, Any]:
        """Every setting a judgement depends on, flat, under the names kept judgements were
        keyed by before reasoning had a settings object of its own (so they are still reused)."""
        return {"principle": self.principle, "principles": self.principles, "swap": self.swap, "cot": self.cot,
                "clamp": self.clamp, "max_tokens": self.reasoning.max_tokens,
                "temperature": self.reasoning.temperature, "top_p": self.reasoning.top_p, "seed": self.seed,
                "layout": self.layout}



# `cai elo` asks each pair under K principles of the dimension's constitution, averaged.
ELO_JUDGE = FeedbackSettings(principles=4)
