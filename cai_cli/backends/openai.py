"""The OpenAI-compatible HTTP backend: any server speaking the OpenAI API (vLLM, SGLang, TGI,
llama.cpp's llama-server, ollama, llama-cpp-python's server), one or many.

Generation goes to `/v1/chat/completions`, so the server renders each chat with the model's own
template, with the request's seed (servers that honour `seed` then give the same text for the
same seed); a request with raw `prompt` text (a base model continuing a list) goes to
`/v1/completions` as it is. Stop strings are the servers' own `stop`. Requests are spread over the servers (`--base-url`, repeated or comma-separated), at
most `--concurrency` in flight per server, retried on faults and returned in request order: see
`servers.ServerPool`.

Multiple-choice scoring (`compare`, `eval`) needs the log-probabilities of the answer letters
right after an answer prefix that follows the chat ("<chat> assistant: The answer is: ("). Not
every server can start the assistant's turn with given text, so the prompt is rendered here with
the model's chat template and sent to `/v1/completions` for one token and its top
log-probabilities. The template comes from a local copy of the served model's tokenizer:
`--tokenizer` (a GGUF file, a Hugging Face folder, or a hub id already in the local Hugging Face
cache), or `-m` itself when it names a local file or folder (vLLM serves a folder under the path
it was given), or `--chat-format` (a Jinja file or a llama.cpp format name), and renders as it
does in-process (`chat_templates`). The same copy counts prompt tokens for the context check;
without it the count is a low estimate and the server refuses what does not fit.

A letter's log-probability is that of the top tokens spelling the start of its text (summed, so
"A" and, where a vocabulary has it, "A)" both count for "A)"); a letter absent from the top
`TOP_LOGPROBS` is impossible, as `normalise_choice_logprobs` treats it.

The API key comes from CAI_API_KEY or OPENAI_API_KEY, is sent only in the Authorization header,
and is never printed, logged or written: it is cut out of any server message shown in an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cai_cli.backends import BackendOptions, Completion, GenerationRequest, RequestFailed
from cai_cli.errors import CaiError

# Next-token candidates asked for when reading answer letters: vLLM's default ceiling
# (--max-logprobs 20) and the most OpenAI's own chat API returns.
TOP_LOGPROBS = 20
# Without a local tokenizer, one token is counted per this many bytes of prompt: a low estimate
# (English text runs at about four), so only prompts that surely do not fit are refused here.
BYTES_PER_TOKEN_ESTIMATE = 6
# A context size for servers that do not say theirs: the server itself refuses a prompt too long.
UNKNOWN_CONTEXT = 1 << 30
# Listing a server's models is quick when it is up; a start-up check does not wait long.
MODELS_TIMEOUT = 30.0

NO_TEMPLATE = ("compare and eval through a server render the question with the model's chat template and read "
               "the answer letters' log-probabilities from /v1/completions; give a local copy of the served "
               "model's tokenizer with --tokenizer (a .gguf file, a Hugging Face folder, or a hub id in the local "
               "cache) or its template with --chat-format FILE.jinja")


@dataclass
class LocalChat:
    """The served model's chat template (and tokenizer, when there is one), loaded locally."""

    render: Callable[[list[dict[str, str]], bool], str]
    tokenize: Callable[[str], list[int]] | None
    n_ctx: int | None
    source: str


class OpenAIBackend:
    name = "openai"
    can_batch = True

    def __init__(self, options: BackendOptions):
        from cai_cli.backends.servers import ServerPool, api_key_from_environment, parse_base_urls

        self.options = options
        self.pool = ServerPool(parse_base_urls(options.base_urls), concurrency=options.concurrency,
                               timeout=options.timeout, retries=options.retries, api_key=api_key_from_environment())
        listings = self.check_servers()
        self.model = choose_served_model(options.model, listings)
        self.model_path = self.model
        self.local = load_local_chat(options)
        served_context = min((entry.get("max_model_len") for entries in listings.values() if entries
                              for entry in entries if entry.get("id") == self.model
                              and isinstance(entry.get("max_model_len"), int)), default=None)
        self.n_ctx = options.n_ctx or served_context or (self.local and self.local.n_ctx) or UNKNOWN_CONTEXT

    def check_servers(self) -> dict[str, list[dict[str, Any]] | None]:
        """Each server's model list (None where it has no /models); servers that do not answer
        are left to back off, and none answering is an error."""
        from cai_cli.backends.servers import Retryable

        listings: dict[str, list[dict[str, Any]] | None] = {}
        down = []
        for server in self.pool.servers:
            try:
                answer = self.pool.get(server, "/models", timeout=min(MODELS_TIMEOUT, self.options.timeout))
            except Retryable as exc:
                down.append((server, str(exc)))
                continue
            except RequestFailed as exc:
                if " HTTP 404" not in str(exc) and " HTTP 405" not in str(exc):
                    raise CaiError(str(exc)) from None
                listings[server.label] = None  # a server without a model list: -m is taken on trust
                continue
            data = answer.get("data")
            if not isinstance(data, list):
                raise CaiError(f"{server.label}/models did not list models as the OpenAI API does; "
                               "is this the API's root URL (such as http://host:8000/v1)?")
            listings[server.label] = [entry for entry in data if isinstance(entry, dict)]
        if not listings:
            reasons = "; ".join(reason for _, reason in down)
            raise CaiError(f"no server answers: {reasons}")
        for server, reason in down:
            self.pool.mark_down(server, reason)
        return listings

    # The Backend protocol --------------------------------------------------------------------

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self.local is None:
            return plain_transcript(messages, add_generation_prompt)  # only ever counted, never sent
        return self.local.render(messages, add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        if self.local is not None and self.local.tokenize is not None:
            return len(self.local.tokenize(text))
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE)

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[Completion]:
        """Chat completions, spread over the servers, in request order."""
        return self.pool.run(partial(self.complete, request) for request in requests)

    def next_token_logprobs(self, prompts: Iterable[str], candidates: list[str]) -> Iterator[list[float]]:
        if self.local is None:
            raise CaiError(NO_TEMPLATE)
        return self.pool.run(partial(self.letter_logprobs, prompt, candidates) for prompt in prompts)

    # One request each -------------------------------------------------------------------------

    def complete(self, request: GenerationRequest, post) -> Completion:
        """One completion of a chat (or, for a request with raw `prompt` text, of that text)."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens,
                                "temperature": request.temperature, "top_p": request.top_p, "seed": request.seed}
        stop = [s for s in request.stop if s]
        if stop:
            body["stop"] = stop  # the servers cut the text before the stop string, as cut_at_stop does
        if request.prompt is not None:
            choice = first_choice(post("/completions", {**body, "prompt": request.prompt}), "/completions")
            text = choice.get("text")
        else:
            choice = first_choice(post("/chat/completions", {**body, "messages": request.messages}),
                                  "/chat/completions")
            text = (choice.get("message") or {}).get("content")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise RequestFailed("the server's completion holds no text; is it an OpenAI-compatible API?")
        return Completion(text, "length" if choice.get("finish_reason") == "length" else "stop")

    def letter_logprobs(self, prompt: str, candidates: list[str], post) -> list[float]:
        """The candidates' log-probabilities as the next token after `prompt` (rendered text)."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                "logprobs": TOP_LOGPROBS,
                # The rendered template holds its own special tokens (vLLM would add a second BOS).
                "add_special_tokens": False}
        top = top_logprobs(first_choice(post("/completions", body), "/completions"))
        if not top:
            raise RequestFailed("the server returned no log-probabilities for /v1/completions, and compare/eval "
                                "read the answer letters from them (vLLM allows up to --max-logprobs, 20 by "
                                "default; llama-cpp-python's server needs logits_all)")
        return [candidate_logprob(top, candidate) for candidate in candidates]


def choose_served_model(name: str | None, listings: dict[str, list[dict[str, Any]] | None]) -> str:
    """The model to ask for: `-m` when every server that lists its models serves it, or the one
    model the servers serve when `-m` is not given."""
    listed = {label: [str(entry.get("id")) for entry in entries] for label, entries in listings.items()
              if entries is not None}
    if name is None:
        names = {model for models in listed.values() for model in models}
        if len(names) == 1 and all(len(models) == 1 for models in listed.values()):
            return names.pop()
        if not listed:
            raise CaiError("the server does not list its models: give the served model's name with -m")
        raise CaiError(f"the servers serve {', '.join(sorted(names)) or 'no model'}: choose one with -m")
    for label, models in listed.items():
        if name not in models:
            raise CaiError(f"{label} does not serve a model named {name!r}; it serves: {', '.join(models) or 'none'} "
                           "(-m takes the name the server lists)")
    return name


def load_local_chat(options: BackendOptions) -> LocalChat | None:
    """The served model's chat template from `--tokenizer`, a local `-m`, or `--chat-format`."""
    source = options.tokenizer
    if source is None and options.model and Path(options.model).expanduser().exists():
        source = options.model
    if source is None:
        if not options.chat_format:
            return None
        from cai_cli.backends.chat_templates import chat_formatter

        return LocalChat(chat_formatter(options.chat_format, None), None, None, options.chat_format)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return gguf_chat(path, options)
    if path.is_file():
        raise CaiError(f"--tokenizer {source}: give a .gguf file, a Hugging Face folder or a hub id")
    return hugging_face_chat(source, options)


def gguf_chat(path: Path, options: BackendOptions) -> LocalChat:
    """A GGUF's template and tokenizer, read without its weights (llama.cpp's vocab-only load)."""
    from cai_cli.backends.chat_templates import make_chat_formatter, tokenize_rendered
    from cai_cli.backends.llama_loading import load_llama
    from cai_cli.backends.native_logs import quiet_native_logs

    try:
        with quiet_native_logs(options.verbose):
            llm = load_llama(path, vocab_only=True, verbose=options.verbose)
    except (ValueError, RuntimeError, OSError) as exc:
        raise CaiError(f"cannot read the tokenizer of {path}: {exc}") from None
    architecture = llm.metadata.get("general.architecture", "llama")
    trained = int(llm.metadata.get(f"{architecture}.context_length", 0) or 0)
    return LocalChat(make_chat_formatter(llm, options.chat_format), partial(tokenize_rendered, llm),
                     trained or None, str(path))


def hugging_face_chat(source: str, options: BackendOptions) -> LocalChat:
    """A Hugging Face tokenizer's template: a local folder, or a hub id in the local cache (no
    download)."""
    from cai_cli.backends.chat_templates import read_template_file, render_with_tokenizer

    import transformers
    from transformers.utils import logging as hf_logging

    if not options.verbose:
        hf_logging.set_verbosity_error()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(Path(source).expanduser()) if Path(source).expanduser().exists() else source,
            local_files_only=True, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaiError(f"--tokenizer {source}: no tokenizer found there ({first}); give a .gguf file, a "
                       "Hugging Face folder, or a hub id already in the local Hugging Face cache") from None
    if options.chat_format:
        tokenizer.chat_template = read_template_file(options.chat_format)
    if not tokenizer.chat_template:
        raise CaiError(f"--tokenizer {source} has no chat template; give one with --chat-format FILE.jinja")

    limit = getattr(tokenizer, "model_max_length", None)
    n_ctx = limit if isinstance(limit, int) and 0 < limit < 10_000_000 else None  # huge means "not set"
    return LocalChat(partial(render_with_tokenizer, tokenizer),
                     lambda text: tokenizer(text, add_special_tokens=False).input_ids, n_ctx, source)


def plain_transcript(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """A stand-in for a rendered chat, about as long, for counting when no template is known."""
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def first_choice(answer: dict[str, Any], path: str) -> dict[str, Any]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RequestFailed(f"the server's answer to {path} has no choices; is it an OpenAI-compatible API?")
    return choices[0]


def top_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]]:
    """The first generated position's top (token text, log-probability) pairs, from the shapes
    servers use: the completions API's `top_logprobs: [{token: logprob}]` (OpenAI, vLLM,
    llama-cpp-python), a list of `{token, logprob}` there, or the chat API's
    `content: [{top_logprobs: [{token, logprob}]}]` (llama.cpp's server, SGLang)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return []
    first: Any = None
    if isinstance(logprobs.get("top_logprobs"), list) and logprobs["top_logprobs"]:
        first = logprobs["top_logprobs"][0]
    elif isinstance(logprobs.get("content"), list) and logprobs["content"]:
        entry = logprobs["content"][0]
        first = entry.get("top_logprobs") if isinstance(entry, dict) else None
    pairs: list[tuple[str, float]] = []
    if isinstance(first, dict):
        pairs = [(str(token), value) for token, value in first.items()]
    elif isinstance(first, list):
        pairs = [(str(item.get("token")), item.get("logprob")) for item in first if isinstance(item, dict)]
    return [(token, float(value)) for token, value in pairs
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)]


def candidate_logprob(top: list[tuple[str, float]], candidate: str) -> float:
    """The log-probability that the next token starts `candidate`: the log of the summed
    probabilities of the top tokens that spell its beginning; -inf when none does."""
    matching = [value for token, value in top if token and candidate.startswith(token)]
    if not matching:
        return float("-inf")
    peak = max(matching)
    return peak + math.log(math.fsum(math.exp(value - peak) for value in matching))
