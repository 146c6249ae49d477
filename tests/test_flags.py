"""Flags declared on settings dataclasses (`cai_cli.flags`): one field, one flag, for inference
and training commands alike."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from cai_cli.backends import BackendOptions, Sampling
from cai_cli.flags import Some, setting, with_settings
from cai_cli.records import content_key
from cai_cli.settings import REDTEAM_SAMPLING, FeedbackSettings, Reasoning
from conftest import run_cai


@dataclass(frozen=True)
class Inner:
    depth: int = setting(3, "How deep.", min=1)


@dataclass(frozen=True)
class Outer:
    name: str = setting("x", "A name.", "-N", "--name")
    tags: tuple[str, ...] = setting((), "Tags; repeatable.", "--tag")
    hidden: int = setting(7, "Not a flag.", flag=False)
    inner: Inner = Inner()


def invoke(command, *args: str):
    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)  # two commands, so the probe is addressed by name
    return CliRunner().invoke(app, ["probe", *args])


def test_a_command_gets_each_settings_object_whole_with_nested_fields_and_its_own_defaults():
    seen = []

    @with_settings(outer=Outer(name="default-name"))
    def probe(own: int = typer.Option(1, "--own"), *, outer: Outer) -> None:
        seen.append((own, outer))

    assert invoke(probe).exit_code == 0
    assert invoke(probe, "-N", "y", "--tag", "a", "--tag", "b", "--depth", "5", "--own", "2").exit_code == 0
    assert seen == [(1, Outer(name="default-name")), (2, Outer("y", ("a", "b"), 7, Inner(5)))]
    bad = invoke(probe, "--depth", "0")  # the bound declared on the field
    assert bad.exit_code == 2 and "--depth" in bad.output
    assert invoke(probe, "--hidden", "1").exit_code == 2  # flag=False: no flag


def test_some_leaves_flags_out_and_a_flag_declared_twice_is_refused():
    @with_settings(outer=Some(Outer, without=("tags",)))
    def probe(*, outer: Outer) -> None:
        pass

    assert invoke(probe, "--tag", "a").exit_code == 2
    with pytest.raises(TypeError, match="declared twice: name"):
        with_settings(outer=Outer)(lambda name=None, *, outer=None: None)


def test_kept_judgements_keep_their_keys():
    """A judgement's content key hashes the feedback settings; reasoning now has a settings
    object of its own, and the keys of judgements kept before must not change (or a --resume
    would judge everything again). The hashes are those of the flat settings before the move."""
    assert content_key(FeedbackSettings().key_fields()) == "d1a520d4b76fa041"
    cot = FeedbackSettings(principles=2, cot=True, reasoning=Reasoning(max_tokens=64, temperature=0.5), seed=3,
                           layout="paper")
    assert content_key(cot.key_fields()) == "9058546dcec19edc"


def test_sampling_defaults_and_requests():
    request = REDTEAM_SAMPLING.request([{"role": "user", "content": "hi"}], seed=11, stop=("\n",))
    assert (request.max_tokens, request.temperature, request.top_p, request.seed, request.stop) == (96, 1.0, 0.95, 11,
                                                                                                   ("\n",))
    assert Sampling().max_tokens == 256 and Reasoning().max_tokens == 128 and Reasoning().temperature == 0.0


def test_every_command_shows_its_settings_flags_with_their_defaults():
    """The flags come from the fields: the model options on every model command, the sampling
    defaults of each command (redteam's own), the feedback flags with the reasoning's defaults,
    training flags from the config class."""
    expected = {
        "sample": ["--max-tokens", "[default: 256]", "--trust-remote-code", "CAI_MODEL"],
        "redteam": ["[default: 96]", "[default: 1.0]"],
        "compare": ["--principles", "--clamp", "--cot: most tokens of reasoning", "[default: 128]"],
        "elo": ["--principles", "[default: 4]"],
        "train-rl": ["--reward-model", "--pm", "--lora-targets", "--config", "--min-margin"],
    }
    for command, shown in expected.items():
        help_text = run_cai(command, "--help", env={"COLUMNS": "250"}).stdout
        for text in shown:
            assert text in help_text, (command, text)
    elo_help = run_cai("elo", "--help", env={"COLUMNS": "250"}).stdout
    assert "--layout" not in elo_help and "--principle " not in elo_help  # one constitution per dimension
    assert BackendOptions().repack is None  # a library caller's default: CAI_REPACK, or auto
