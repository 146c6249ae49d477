"""Inference backends behind one small interface.

A backend renders chat messages with the model's own template, generates text for a stream of
requests (in input order) and reads next-token log-probabilities for multiple-choice scoring. Its
model is loaded once and lives for the whole stream (or, for `openai`, is served by one or more
HTTP servers). Heavy libraries are imported only when a backend is built, so `cai --help` stays
fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cai_cli.errors import CaiError

BACKENDS = ("auto", "llama-cpp", "transformers", "openai")


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to produce: a chat, sampling settings, and the seed for this draw."""

    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0


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
    """How to find and run a model; one bundle shared by every command that loads one."""

    model: str | None = None
    backend: str = "auto"
    chat_format: str | None = None
    n_ctx: int | None = None
    parallel: int = 8
    batch_size: int = 16
    threads: int | None = None
    device: str | None = None
    repack: str | None = None  # llama.cpp weight repacking: auto/on/off (None: CAI_REPACK or auto)
    verbose: bool = False
    trust_remote_code: bool = False
    # The OpenAI-compatible server backend (`--backend openai`):
    base_urls: tuple[str, ...] = ()  # one or more servers; requests are spread over them
    concurrency: int = 8  # requests in flight per server
    timeout: float = 600.0  # seconds one request may take before it is retried
    retries: int = 8  # further attempts of a request that failed (on another server when there is one)
    tokenizer: str | None = None  # a local copy of the served model's tokenizer (chat template, counts)


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
        """One completion per request, in request order; requests are consumed lazily. A request
        that fails for good raises `RequestFailed` in its place."""

    def next_token_logprobs(self, prompts: Iterable[str], candidates: list[str]) -> Iterator[list[float]]:
        """For each rendered prompt, the log-probability of each candidate continuation's first
        token (e.g. 'A', 'B') at the next position; no text is generated. The prompts of one call
        end alike (an answer prefix such as "The answer is: ("): the candidates' tokens are found
        once, as they are spelled after the first prompt's last character."""


def continuation_token_ids(tokenize: Callable[[str], list[int]], context: str, candidates: list[str]) -> list[int]:
    """The token each candidate starts with when it follows `context`: a tokenizer may spell a
    word differently at the start of a text (SentencePiece's leading space: "▁A" alone, "A"
    after "("). Candidates that would share their first token cannot be told apart: an error."""
    before = tokenize(context)
    ids = []
    for candidate in candidates:
        after = tokenize(context + candidate)
        if len(after) > len(before) and after[:len(before)] == before:
            ids.append(after[len(before)])
        elif alone := tokenize(candidate):
            ids.append(alone[0])
        else:
            raise CaiError(f"the answer option {candidate!r} encodes to no tokens")
    if len(set(ids)) < len(ids):
        raise CaiError(f"the answer options {candidates} start with the same token, so their "
                       "probabilities cannot be told apart")
    return ids


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
