"""The methods `cai train-rl --algo` runs, each in a module of its own: its settings class and its
train function. A new method (KTO, PPO) is its module and its line in RL_ALGORITHMS.

Read when a run starts, not by `cai --help`. The modules import their training libraries inside
their functions, so reading this imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cai_cli.errors import CaiError
from cai_cli.training import dpo, rl
from cai_cli.training.config import RLConfig, config_as_dict

TrainFunction = Callable[[Any], dict[str, Any]]

# --algo -> (the class its settings are read as, the function that trains with them).
RL_ALGORITHMS: dict[str, tuple[type[RLConfig], TrainFunction]] = {
    "rloo": (RLConfig, rl.train_rl),
    "grpo": (RLConfig, rl.train_rl),
    "dpo": (dpo.DPOConfig, dpo.train_dpo),
}


def algorithm_for(settings: RLConfig) -> tuple[RLConfig, TrainFunction]:
    """`settings` as the method `settings.algo` reads them, checked, and its train function. The
    settings keep every value (the run records them all), in the method's own class."""
    if settings.algo not in RL_ALGORITHMS:
        raise CaiError(f"unknown --algo {settings.algo!r}: choose one of {', '.join(RL_ALGORITHMS)}")
    config_class, train = RL_ALGORITHMS[settings.algo]
    config = config_class(**config_as_dict(settings))
    config.check()
    return config, train
