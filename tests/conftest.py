"""Shared test helpers: run `cai` the way a user does, on real JSONL and the embedded model; a
tiny random model folder built in milliseconds; a scripted stand-in backend for stage logic."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from cai_cli.backends import Completion, GenerationRequest
from forkserver import ForkServer, log_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tiny settings keep the real-model tests fast on a 2-core CPU.
TINY = ["--max-tokens", "8"]


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"<exit {self.returncode}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}>"


def worker_threads() -> int | None:
    """Each pytest-xdist worker's share of the cores (`make test` runs one worker per core), or
    None in a single-process run. A model on every core in every worker would make them fight
    over the cores, and llama.cpp's threads spin while they wait."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None


def cai_env(extra: dict | None = None) -> dict:
    """The environment tests run cai in: offline, no CAI_MODEL/CAI_DEBUG from the caller's shell,
    and under pytest-xdist the worker's share of the cores for llama.cpp and torch."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("CAI_MODEL", "CAI_DEBUG")}
    share = worker_threads()
    threads = {"CAI_THREADS": str(share), "OMP_NUM_THREADS": str(share)} if share else {}
    return {**inherited, **threads, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(extra or {})}


@pytest.fixture(autouse=True, scope="session")
def torch_threads_of_this_worker():
    """In-process models (the library-API tests) keep to the worker's share of the cores too."""
    share = worker_threads()
    if share:
        import torch

        torch.set_num_threads(share)


# The longest files first (per-file times of `make test`): pytest-xdist's --dist loadfile hands
# files to workers in collection order, and a long file handed out last keeps one worker busy
# while the other has finished (longest-first evens out the two workers' totals).
LONGEST_FILES = ("test_sl_cai.py", "test_training.py", "test_redteam.py", "test_openai_backend.py",
                 "test_resume.py", "test_batching.py", "test_report.py", "test_compare.py", "test_eval.py",
                 "test_distributed_training.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: same order within a file


_fork_server: ForkServer | None = None


def fork_server(args: list[str], env: dict) -> ForkServer | None:
    """This worker's fork server (started on first use), when it can run `cai ARGS` in `env`;
    None with CAI_TEST_FORK=0, which runs every command as a fresh `python -m cai_cli`."""
    global _fork_server
    if os.environ.get("CAI_TEST_FORK") == "0":
        return None
    if _fork_server is None:
        _fork_server = ForkServer(cai_env())
        atexit.register(_fork_server.close)
    return _fork_server if _fork_server.can_run(args, env) else None


FORKED_CAI = Path(__file__).with_name("forked_cai.py")


def forked_cai_env(env: dict) -> dict:
    """`env` with the address of this worker's fork server, for `tests/forked_cai.py`, which
    forks each command from it (or runs it fresh, as `run_cai` would, with no server to ask)."""
    server = fork_server([], env)
    return {**env, "CAI_TEST_FORK_SERVER": server.address} if server else dict(env)


def recipe_cai(env: dict) -> tuple[str, dict]:
    """What a recipe test gives make as CAI, and its environment: `tests/forked_cai.py`."""
    return f"{sys.executable} {FORKED_CAI}", forked_cai_env(env)


def placed(args, env: dict | None, cwd: Path | None) -> tuple[list[str], dict, Path, ForkServer | None]:
    """`cai ARGS` as `run_cai` and `start_cai` run it: its arguments as strings, its environment,
    its working directory, and the fork server that takes it (None: a fresh process)."""
    args, full_env = [str(a) for a in args], cai_env(env)
    return args, full_env, cwd or ROOT, fork_server(args, full_env)


def run_cai(*args: str | Path, input: str | bytes | None = None, env: dict | None = None,
            cwd: Path | None = None, timeout: float = 600) -> Result:
    """Run `cai ARGS` as its own process with `input` on stdin: forked from this worker's fork
    server (`forkserver.py`: a process with cai's libraries imported), or where `env` changes
    what those imports read, a fresh `python -m cai_cli`."""
    args, full_env, cwd, server = placed(args, env, cwd)
    data = input.encode("utf-8") if isinstance(input, str) else input
    started = time.monotonic()
    if server is not None:
        code, out, err = server.run(args, data, full_env, cwd, timeout)
    else:
        proc = subprocess.run([sys.executable, "-m", "cai_cli", *args], input=data, capture_output=True,
                              env=full_env, cwd=cwd, timeout=timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    log_command("forked" if server else "fresh", time.monotonic() - started, args)
    out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if not isinstance(input, bytes):  # as subprocess's text mode reads it
        out, err = (text.replace("\r\n", "\n").replace("\r", "\n") for text in (out, err))
    return Result(code, out, err)


def start_cai(*args: str | Path, env: dict | None = None, cwd: Path | None = None):
    """Start `cai ARGS` on an empty stdin and return at once, as `subprocess.Popen` does (the
    tests that kill a command mid-run): forked where `run_cai` would fork it, else a fresh
    `python -m cai_cli`. Either has `pid`, `poll`, `send_signal` and `communicate`."""
    args, full_env, cwd, server = placed(args, env, cwd)
    if server is not None:
        return server.start(args, b"", full_env, cwd)
    return subprocess.Popen([sys.executable, "-m", "cai_cli", *args], cwd=cwd, env=full_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    from cai_cli.models import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def embedded_folder(tmp_path_factory, embedded_model) -> Path:
    """The embedded model as the transformers backend reads its GGUF, saved once per test run as
    a Hugging Face folder (float32 safetensors, tokenizer, chat template) that the pytest-xdist
    workers share. Reading a GGUF converts its tokenizer and dequantizes its weights on every
    load (about 6 s here); the folder loads in about a second. The tests of the transformers
    backend's behaviour load the folder; the GGUF path itself is tested from the command line,
    and `test_sl_cai.py` checks that the folder is the same model (weights, template, outputs)."""
    from filelock import FileLock

    from cai_cli.backends import BackendOptions
    from cai_cli.backends.transformers import load_model_and_tokenizer

    # One folder per run, made by whichever pytest-xdist worker asks first.
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "embedded-hf"
    with FileLock(f"{folder}.lock"):
        if folder.is_dir():
            return folder
        model, tokenizer, _ = load_model_and_tokenizer(embedded_model, BackendOptions(device="cpu"))
        # Loaded from a GGUF, the model counts as quantized and refuses to save; its weights are
        # plain float32 tensors by now.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        partial = folder.with_name("embedded-hf.partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(folder)
    return folder


def write_prompts(folder: Path) -> Path:
    """Three red-team prompts from the examples, one with an extra key that must pass through."""
    records = [json.loads(line) for line in (EXAMPLES / "red_team.jsonl").read_text().splitlines()[:3]]
    records[0]["source"] = {"team": "qa", "tags": ["x"]}
    return write_jsonl(folder / "prompts.jsonl", records)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return write_prompts(tmp_path)


# --- a tiny random model ----------------------------------------------------------------------

WORDS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system",
         "how", "do", "i", "pick", "a", "lock", "write", "an", "insult", "hide", "cash", "sorry", "cannot",
         "help", "sure", "here", "is", "it", "call", "locksmith", "no", "yes", "please", "ok"]
SPECIAL_TOKENS = WORDS[:5]
TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m.role }} {{ m.content }} <|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def build_tiny_folder(folder: Path, byte_level: bool = False) -> Path:
    """A real random-weight Llama folder (safetensors, tokenizer, chat template) in milliseconds.

    By default its tokenizer knows only WORDS, one token per word (what the training tests
    write). `byte_level=True` gives it one token per byte instead, so that it reads any text:
    `cai compare`'s long prompts and its answer letters "(A" / "(B" (a word-level tokenizer
    reads both as one unknown word), with room for them (4096 positions), and weights drawn
    ten times wider than the default, so that its next-token distributions are far from uniform
    (log-probabilities compared across devices must be able to differ)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if byte_level:
        vocabulary = SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet())
        tokenizer = Tokenizer(models.BPE({w: i for i, w in enumerate(vocabulary)}, [], unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens(SPECIAL_TOKENS)  # the template's markers stay one token each
    else:
        vocabulary = WORDS
        tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocabulary), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096 if byte_level else 128,
                         initializer_range=0.2 if byte_level else 0.02,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The word-level tiny model folder, built once per test module."""
    return build_tiny_folder(tmp_path_factory.mktemp("tiny-llama"))


# --- a scripted backend -----------------------------------------------------------------------

class ScriptedBackend:
    """A stand-in model for pure-logic tests of a stage: request i, in the order requests
    arrive, is answered with script[i] (a Completion, or a string that ended normally). The
    requests are kept in `requests`. Real-model tests of the same stages run the embedded model."""

    name, model_path, n_ctx = "scripted", "scripted", 4096

    def __init__(self, script: list[str | Completion]):
        self.script, self.requests = list(script), []

    def render(self, messages, add_generation_prompt=True):
        return "\n".join(m["content"] for m in messages)

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[Completion]:
        for request in requests:
            self.requests.append(request)
            answer = self.script[len(self.requests) - 1]
            yield answer if isinstance(answer, Completion) else Completion(answer)
