"""Safety by default: no code from a model folder, no pickled weights, chat templates in a
sandbox, and no network on the default path.

Hugging Face folders are built here from a tiny LlamaConfig and a word-level tokenizer (a few
kilobytes, no download); llama.cpp runs the embedded model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_cai

PROMPT = json.dumps({"id": "a", "prompt": "Say hello ."}) + "\n"
WORDS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system", "Say", "hello", ".",
         *(f"w{i}" for i in range(40))]
PLAIN_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m.role }} {{ m.content }} <|im_end|> {% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
# Each reaches for Python objects from inside a template; a sandbox must refuse every one. The
# MARKER file would appear if one of them got as far as running a shell command.
ATTACKS = {
    "class-walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "joiner-globals": "{{ joiner.__init__.__globals__['os'].system('touch MARKER') }}",
    "raise-exception-globals": "{{ raise_exception.__globals__['os'].system('touch MARKER') }}",
    "format-string": "{{ '{0.__class__.__mro__}'.format(messages) }}",
    "mutate-messages": "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",
}


def build_tiny_folder(folder: Path, template: str = PLAIN_TEMPLATE) -> Path:
    """A real (random-weight) Llama model folder with safetensors weights and a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="</s>")
    fast.chat_template = template
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return build_tiny_folder(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def no_sockets(tmp_path_factory) -> dict[str, str]:
    """Environment for a subprocess in which every socket connection fails, and the Hugging Face
    libraries are told they are offline (as conftest's run_cai always does)."""
    folder = tmp_path_factory.mktemp("no-network")
    (folder / "sitecustomize.py").write_text(textwrap.dedent("""
        import socket

        def refuse(*args, **kwargs):
            raise OSError("network access attempted: sockets are disabled in this test")

        socket.socket.connect = socket.socket.connect_ex = socket.socket.sendto = refuse
        socket.create_connection = socket.getaddrinfo = refuse
    """))
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def attack_file(folder: Path, name: str) -> tuple[Path, Path]:
    marker = folder / f"{name}.ran"
    template = ATTACKS[name].replace("MARKER", str(marker)) + PLAIN_TEMPLATE
    path = folder / f"{name}.jinja"
    path.write_text(template, encoding="utf-8")
    return path, marker


# --- no network -----------------------------------------------------------------------------

def test_the_socket_blocker_really_blocks(no_sockets):
    """Without this, the tests below would prove nothing: a local server is listening, and the
    blocked subprocess still cannot reach it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        blocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, **no_sockets})
    assert free.returncode == 0, free.stderr
    assert blocked.returncode != 0 and "sockets are disabled" in blocked.stderr


def test_default_sample_runs_without_network(no_sockets):
    result = run_cai("sample", "--max-tokens", "4", "--threads", "1", input=PROMPT, env=no_sockets)
    assert result.returncode == 0, result
    assert isinstance(result.records[0]["response"], str)


def test_transformers_folder_runs_without_network(tiny_folder, no_sockets):
    result = run_cai("sample", "-m", tiny_folder, "--max-tokens", "3", input=PROMPT, env=no_sockets)
    assert result.returncode == 0, result
    assert result.records[0]["response"]  # the tiny folder is a working model: refusals below mean something


# --- no code and no pickles from a model folder ---------------------------------------------

def test_pickled_weights_are_refused(tiny_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    from cai_cli.backends import BackendOptions
    from cai_cli.backends.transformers import load_model_and_tokenizer
    from cai_cli.errors import CaiError

    pickled = Path(shutil.copytree(tiny_folder, tmp_path / "pickled"))
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(CaiError, match=r"only pickled PyTorch weights .* safetensors weights only"):
        load_model_and_tokenizer(pickled, BackendOptions())


def test_a_model_folder_code_is_not_run_without_the_flag(tiny_folder, tmp_path):
    from cai_cli.backends import BackendOptions
    from cai_cli.backends.transformers import load_model_and_tokenizer
    from cai_cli.errors import CaiError

    folder = Path(shutil.copytree(tiny_folder, tmp_path / "custom-code"))
    marker = tmp_path / "folder-code.ran"
    (folder / "custom_model.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("ran")  # what any code in a model folder could do
        from transformers import LlamaConfig, LlamaForCausalLM

        class CustomConfig(LlamaConfig):
            model_type = "custom-llama"

        class CustomModel(LlamaForCausalLM):
            config_class = CustomConfig
    """))
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom-llama", auto_map={"AutoConfig": "custom_model.CustomConfig",
                                                       "AutoModelForCausalLM": "custom_model.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))

    assert BackendOptions().trust_remote_code is False
    with pytest.raises(CaiError, match="does not run a model folder's code unless you pass --trust-remote-code"):
        load_model_and_tokenizer(folder, BackendOptions())
    assert not marker.exists()


def test_trust_remote_code_is_an_explicit_flag_of_every_model_command():
    import typer
    from typer.testing import CliRunner

    from cai_cli.flags import with_settings
    from cai_cli.options import MODEL_OPTIONS

    seen = []

    @with_settings(model_options=MODEL_OPTIONS)
    def probe(*, model_options) -> None:
        seen.append(model_options.trust_remote_code)

    app = typer.Typer()
    app.command()(probe)
    app.command("other")(lambda: None)  # two commands, so `probe` is addressed by name
    assert CliRunner().invoke(app, ["probe"]).exit_code == 0
    assert CliRunner().invoke(app, ["probe", "--trust-remote-code"]).exit_code == 0
    assert seen == [False, True]
    for command in ("sample", "critique", "revise"):
        assert "--trust-remote-code" in run_cai(command, "--help", env={"COLUMNS": "200"}).stdout


# --- chat templates render in a sandbox -----------------------------------------------------

@pytest.mark.parametrize("attack", ATTACKS)
def test_llama_cpp_template_cannot_reach_python(attack, embedded_model, tmp_path):
    from cai_cli.backends import BackendOptions
    from cai_cli.backends.llama_cpp import LlamaCppBackend
    from cai_cli.errors import CaiError

    template, marker = attack_file(tmp_path, attack)
    backend = LlamaCppBackend(embedded_model, BackendOptions(chat_format=str(template), threads=1))
    with pytest.raises(CaiError, match=r"the chat template failed to render: access to .* is unsafe"):
        backend.render([{"role": "user", "content": "hi"}])
    assert not marker.exists()


@pytest.mark.parametrize("attack", ATTACKS)
def test_transformers_template_from_the_model_folder_cannot_reach_python(attack, tiny_folder, tmp_path):
    from cai_cli.backends import BackendOptions
    from cai_cli.backends.transformers import TransformersBackend
    from cai_cli.errors import CaiError

    template, marker = attack_file(tmp_path, attack)
    folder = Path(shutil.copytree(tiny_folder, tmp_path / "folder"))
    (folder / "chat_template.jinja").write_text(template.read_text(), encoding="utf-8")
    backend = TransformersBackend(folder, BackendOptions())
    assert backend.tokenizer.chat_template == template.read_text()  # the folder's own template is the one used
    with pytest.raises(CaiError, match=r"the chat template failed to render: access to .* is unsafe"):
        backend.render([{"role": "user", "content": "hi"}])
    assert not marker.exists()


@pytest.mark.parametrize("backend_args", [[], ["-m", "TINY"]], ids=["llama-cpp", "transformers"])
def test_a_malicious_template_is_a_clean_error_on_the_command_line(backend_args, tiny_folder, tmp_path):
    template, marker = attack_file(tmp_path, "cycler-globals")
    args = [str(tiny_folder) if a == "TINY" else a for a in backend_args]
    result = run_cai("sample", *args, "--max-tokens", "2", "--threads", "1", "--chat-format", template, input=PROMPT)
    assert result.returncode == 1, result
    assert result.stderr.startswith("Error: the chat template failed to render: access to attribute"), result
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not marker.exists()
