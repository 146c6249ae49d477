"""Inference backends behind one small interface.

A backend renders chat messages with the model's own template, generates text for a stream of
requests (in input order) and reads next-token log-probabilities for multiple-choice scoring. Its
model is loaded once and lives for the whole stream (or, for `openai`, is served by one or more
HTTP servers). Heavy libraries are imported only when a backend is built, so `cai --help` stays
fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cai_cli.errors import CaiError
from cai_cli.flags import MODEL_PANEL, SAMPLING_PANEL, SERVER_PANEL, setting

BACKENDS = ("auto", "llama-cpp", "transformers", "openai")


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to produce: a chat, sampling settings, and the seed for this draw.

    `prompt`, when set, is raw text that the model continues as it is, without the chat template
    (a base model continuing a list, say); `messages` is then unused. Generation ends at the first
    `stop` string, which the text does not include."""

    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    prompt: str | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sampling:
    """How a generating stage samples: the settings every one of them shares (and their flags).

    The seed is a run's; each request's seed is derived from it and the record (`derive_seed`), so
    a record's draw does not depend on the others."""

    max_tokens: int = setting(256, "Most new tokens per completion.", min=1, panel=SAMPLING_PANEL)
    temperature: float = setting(0.7, "0 means greedy.", min=0.0, panel=SAMPLING_PANEL)
    top_p: float = setting(0.95, "Nucleus sampling threshold.", min=0.0, max=1.0, panel=SAMPLING_PANEL)
    seed: int = setting(0, "Seed for sampling and principle draws: same seed, same output.", panel=SAMPLING_PANEL)

    def request(self, messages: list[dict[str, str]], seed: int, **raw: Any) -> GenerationRequest:
        """One completion of `messages` with these settings and a derived `seed`."""
        return GenerationRequest(messages, self.max_tokens, self.temperature, self.top_p, seed, **raw)


@dataclass(frozen=True)
class Completion:
    """A generated text and why generation stopped: "stop" (the model ended its turn) or
    "length" (cut off at the request's `max_tokens`: the text is unfinished)."""

    text: str
    finish_reason: str = "stop"

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class BackendOptions:
    """How to find and run a model; one bundle shared by every command that loads one (and its
    flags: the Model and Server panels of their --help)."""

    model: str | None = setting(
        None, "A .gguf file or a Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct); with "
              "--backend openai, the name the server serves the model under.",
        "-m", "--model", envvar="CAI_MODEL", panel=MODEL_PANEL, show_default=False)
    backend: str = setting(
        "auto", "auto (a --base-url -> openai, GGUF -> llama-cpp, folder -> transformers), llama-cpp, transformers "
                "or openai (any OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, ollama).", panel=MODEL_PANEL)
    chat_format: str | None = setting(
        None, "Override the model's chat template: a Jinja file, or a llama.cpp format name (chatml, ...).",
        panel=MODEL_PANEL, show_default=False)
    n_ctx: int | None = setting(
        None, "Context size in tokens (default: the model's, at most 4096 on llama.cpp).", min=64,
        panel=MODEL_PANEL, show_default=False)
    parallel: int = setting(8, "llama.cpp: sequences generated at once.", min=1, panel=MODEL_PANEL)
    batch_size: int = setting(
        16, "transformers: prompts per batch, generated or scored (compare/eval) together.", min=1, panel=MODEL_PANEL)
    threads: int | None = setting(
        None, "llama.cpp: CPU threads (default: all cores). In a pipe of several cai commands, give each fewer "
              "(e.g. CAI_THREADS=1) so they do not fight over the cores.",
        min=1, envvar="CAI_THREADS", panel=MODEL_PANEL, show_default=False)
    device: str | None = setting(None, "transformers: the torch device (default: CUDA when present).", flag=False)
    repack: str | None = setting(  # None (a library caller's default): CAI_REPACK, or auto
        None, "llama.cpp: repack weights for this CPU's vector units at load. auto: on, except on CPUs with AMX, "
              "where llama.cpp's repacked path crashes (see `cai doctor`).",
        envvar="CAI_REPACK", metavar="auto|on|off", panel=MODEL_PANEL)
    verbose: bool = setting(False, "Show the inference libraries' own logs.", panel=MODEL_PANEL)
    trust_remote_code: bool = setting(
        False, "transformers: run Python code shipped in the model folder. Only for folders you trust.",
        panel=MODEL_PANEL)
    # The OpenAI-compatible server backend (`--backend openai`):
    base_urls: tuple[str, ...] = setting(
        (), "An OpenAI-compatible server, such as http://127.0.0.1:8000/v1; repeat it (or separate URLs with "
            "commas) to spread requests over several. The API key comes from CAI_API_KEY or OPENAI_API_KEY.",
        "--base-url", envvar="CAI_BASE_URL", panel=SERVER_PANEL, show_default=False)
    concurrency: int = setting(
        8, "Requests in flight per server (servers that batch, such as vLLM, want many).", min=1, panel=SERVER_PANEL)
    timeout: float = setting(
        600.0, "Seconds a request may take before it is given up and tried again.", min=1.0, panel=SERVER_PANEL)
    retries: int = setting(
        8, "More attempts for a request that met a timeout, a lost connection, HTTP 429 or 5xx (with backoff, "
           "on another server when there is one) before the run stops with an error.", min=0, panel=SERVER_PANEL)
    tokenizer: str | None = setting(
        None, "A local copy of the served model's tokenizer (.gguf file, Hugging Face folder, or hub id in the "
              "local cache): its chat template lets compare/eval read answer letters, and it counts tokens. "
              "Default: -m when that is a local path.", panel=SERVER_PANEL, show_default=False)


class RequestFailed(CaiError):
    """A request the backend gave up on (after its retries, if it retries). A backend raises it at
    that request's place in its output order, after yielding every result before it, so the
    caller knows which record it belonged to and everything before it is written."""

    def naming(self, what: str) -> CaiError:
        return CaiError(f"{what}: {self}")


class Backend(Protocol):
    """What the stages need from a model."""

    name: str
    model_path: str
    n_ctx: int

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The chat as the model sees it, through its own chat template."""

    def count_tokens(self, text: str) -> int:
        """Tokens in already-rendered text."""

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[Completion]:
        """One completion per request (its `prompt_text`, continued up to a `stop` string), in
        request order; requests are consumed lazily. A request that fails for good raises
        `RequestFailed` in its place."""

    def next_token_logprobs(self, prompts: Iterable[str], candidates: list[str]) -> Iterator[list[float]]:
        """For each rendered prompt, the log-probability of each candidate continuation's first
        token (e.g. 'A', 'B') at the next position; no text is generated. The prompts of one call
        end alike (an answer prefix such as "The answer is: ("): the candidates' tokens are found
        once, from the first prompt (`continuation_tokens`)."""


def prompt_text(backend: Backend, request: GenerationRequest) -> str:
    """The text a request's generation continues: its raw `prompt`, or its chat rendered with
    the model's template."""
    return request.prompt if request.prompt is not None else backend.render(request.messages)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first of the `stop` strings, and whether one was there."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(ends)], True) if ends else (text, False)


@dataclass(frozen=True)
class ContinuationTokens:
    """How to read candidates' probabilities after a prompt: the token each candidate starts
    with, and how many tokens at the prompt's end to leave off first. That is 0, unless the
    tokenizer merges a candidate with the prompt's last characters ("(" + "A" -> one token
    "(A"): then the probabilities are read one token earlier, where "(A" and "(B" are the
    alternatives."""

    ids: list[int]
    drop: int = 0


def continuation_tokens(tokenize: Callable[[str], list[int]], prompt: str, candidates: list[str]) -> ContinuationTokens:
    """Find each candidate's first token by tokenizing the prompt with and without it: the
    first token where the two differ. This spells a candidate as it is spelled after the prompt
    (SentencePiece writes "▁A" alone and "A" after "("), never adds a BOS of its own, and notices
    merges with the prompt's end. Candidates that cannot be told apart are an error."""
    before = tokenize(prompt)
    ids, drops = [], set()
    for candidate in candidates:
        after = tokenize(prompt + candidate)
        shared = 0
        for a, b in zip(before, after):
            if a != b:
                break
            shared += 1
        if shared >= len(after):
            raise CaiError(f"the answer option {candidate!r} encodes to no tokens after the prompt")
        ids.append(after[shared])
        drops.add(len(before) - shared)
    if len(drops) > 1:
        raise CaiError(f"the answer options {candidates} merge differently with the end of the prompt, so their "
                       "probabilities cannot be read at one position")
    if len(set(ids)) < len(ids):
        raise CaiError(f"the answer options {candidates} start with the same token, so their "
                       "probabilities cannot be told apart")
    return ContinuationTokens(ids, drops.pop())


# Consecutive prompts are computed as one shared prefix plus their own tails only when they share
# at least this many tokens: below it the second model call costs more than it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix_groups(rows: list[list[int]], min_shared: int = MIN_SHARED_PREFIX) -> list[tuple[int, int, int]]:
    """Runs of consecutive token rows that share a prefix, as (first row, end row, prefix
    length), covering every row in order. A row joins the run before it when it shares at least
    `min_shared` tokens with the run's first row and does not shorten the run's prefix (the
    questions about one pair: the same conversation and responses, different principles). Every
    row keeps at least its last token out of the prefix, where its next-token logits are read;
    a row alone has all but its last token as its prefix."""
    groups: list[tuple[int, int, int]] = []
    for index, row in enumerate(rows):
        if groups:
            start, end, prefix = groups[-1]
            shared = min(len(os.path.commonprefix([rows[start], row])), len(row) - 1)
            alone = end - start == 1
            if shared >= min_shared and (alone or shared >= prefix):
                groups[-1] = (start, index + 1, min(shared, prefix))
                continue
        groups.append((index, index + 1, len(row) - 1))
    return groups


def load_backend(options: BackendOptions) -> Backend:
    """Build the backend the options ask for, loading the model once. `auto` picks `openai` when
    a server URL is given (--base-url or CAI_BASE_URL), else by the model's kind."""
    from cai_cli.models import resolve_model

    kind = options.backend
    if kind not in BACKENDS:
        raise CaiError(f"unknown backend {kind!r}: choose one of {', '.join(BACKENDS)}")
    if kind == "openai" or (kind == "auto" and options.base_urls):
        from cai_cli.backends.openai import OpenAIBackend

        return OpenAIBackend(options)
    model = resolve_model(options.model)
    if kind == "auto":
        kind = "llama-cpp" if model.suffix == ".gguf" else "transformers"
    if kind == "llama-cpp":
        if model.is_dir() or model.suffix != ".gguf":
            raise CaiError(f"the llama-cpp backend needs a .gguf file, not {model} "
                           "(use --backend transformers for a Hugging Face folder)")
        from cai_cli.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(model, options)
    from cai_cli.backends.transformers import TransformersBackend

    return TransformersBackend(model, options)


def check_fits(backend: Backend, prompt: str, max_tokens: int) -> None:
    """Raise `InvalidRecord` when a rendered prompt plus the answer cannot fit the context."""
    from cai_cli.records import InvalidRecord

    needed = backend.count_tokens(prompt)
    if needed + max_tokens > backend.n_ctx:
        raise InvalidRecord(f"prompt is {needed} tokens; with {max_tokens} new tokens it exceeds the "
                            f"model's context of {backend.n_ctx} (use --n-ctx or a shorter prompt)")


def model_label(path: Path) -> str:
    return path.name if path.is_file() else str(path)
