"""The llama.cpp backend (llama-cpp-python): quantized GGUF models on a CPU, the default.

The chat template comes from the GGUF's metadata and renders in a sandboxed Jinja environment
(llama-cpp-python's `Jinja2ChatFormatter`); `--chat-format` overrides it with a llama-cpp-python
format name (chatml, llama-3, ...) or a Jinja template file (see `chat_templates`). The model is
opened by `llama_loading.load_llama`; native logs stay quiet unless `--verbose` (`native_logs`).
Generation runs on the continuous-batching engine of `llama_batch`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from pathlib import Path

from cai_cli.backends import (BackendOptions, Completion, GenerationRequest, continuation_tokens, cut_at_stop,
                              prompt_text)
from cai_cli.backends.chat_templates import make_chat_formatter, tokenize_rendered
from cai_cli.backends.llama_loading import load_llama
from cai_cli.backends.native_logs import quiet_native_logs
from cai_cli.errors import CaiError

# The library's own default context (512) is too small for few-shot critique prompts; the
# model's training context can be far larger than a laptop wants to allocate.
DEFAULT_MAX_CTX = 4096


class LlamaCppBackend:
    name = "llama-cpp"
    can_batch = True

    def __init__(self, path: Path, options: BackendOptions):
        from cai_cli.hardware import use_weight_repacking

        self.model_path = str(path)
        self.options = options
        threads = options.threads or max(1, os.cpu_count() or 1)
        self.repack = use_weight_repacking(options.repack)
        try:
            with quiet_native_logs(options.verbose):
                probe_ctx = options.n_ctx or DEFAULT_MAX_CTX
                self.llm = load_llama(path, repack=self.repack, n_ctx=probe_ctx, n_threads=threads,
                                      n_threads_batch=threads, n_batch=512, verbose=options.verbose)
        except (ValueError, RuntimeError, OSError) as exc:
            raise CaiError(f"cannot load {path} with llama.cpp: {exc}") from None
        trained = int(self.llm.metadata.get(f"{self.llm.metadata.get('general.architecture', 'llama')}.context_length", 0) or 0)
        # llama.cpp rounds a small context up (64 -> 256), but the Llama object's token buffer
        # keeps the size asked for: prompts must fit both.
        self.n_ctx = min(self.llm.n_ctx(), probe_ctx)
        if options.n_ctx is None and trained and trained < self.n_ctx:
            self.n_ctx = trained  # a model is not trained for positions past this
        self._format = make_chat_formatter(self.llm, options.chat_format)
        self._engine, self._engine_size = None, 0
        self.tokens_read = 0  # prompt tokens evaluated by next_token_logprobs (the benchmarks read it)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._format(messages, add_generation_prompt)

    def tokenize(self, text: str) -> list[int]:
        return tokenize_rendered(self.llm, text)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[Completion]:
        """Continuous batching (see `llama_batch`): up to `--parallel` requests decode together,
        each with its own seeded sampler, and texts come back in request order."""
        from cai_cli.backends.llama_batch import SequenceJob

        # The engine would take this many requests at once anyway; fewer means the stream is that
        # short, and the engine is built with only as many KV streams as it can use.
        requests = iter(requests)
        first = list(islice(requests, self.options.parallel))
        if not first:
            return
        jobs = (SequenceJob(self.tokenize(prompt_text(self, r)), r.max_tokens, r.temperature, r.top_p, r.seed,
                            stop=tuple(s.encode("utf-8") for s in r.stop if s))
                for r in chain(first, requests))
        for job in self.batch_engine(len(first)).run(jobs):
            text = self.llm.detokenize(job.generated).decode("utf-8", errors="ignore")
            text, stopped = cut_at_stop(text, tuple(s.decode("utf-8") for s in job.stop))
            yield Completion(text, "stop" if stopped else job.finish_reason)

    def batch_engine(self, sequences: int | None = None):
        """The generation engine: a llama.cpp context of its own (a KV stream of `n_ctx` cells
        per parallel sequence), so generation never disturbs the cache that `prompt_logits`
        keeps in the Llama object's context, even when the two interleave. It holds `sequences`
        streams (default and at most `--parallel`): each stream's cells are allocated and cleared
        up front (8 x 4096 cells of the embedded model: 740 MB, 0.4 s), which a short input
        never uses. It is built on first use and rebuilt, larger, when a later stream needs more."""
        wanted = min(sequences or self.options.parallel, self.options.parallel)
        if self._engine is None or (self._engine_size < wanted and not self._engine.busy):
            from cai_cli.backends.llama_batch import BatchEngine

            if self._engine is not None:
                self._engine.close()
            self._engine_size = wanted
            with quiet_native_logs(self.options.verbose):
                self._engine = BatchEngine(self.llm.model, self.llm.context_params, n_ctx=self.n_ctx,
                                           parallel=wanted, verbose=self.options.verbose)
            # A context must be freed before its model, whatever order Python collects them in.
            self.llm._model._exit_stack.callback(self._engine.close)
        return self._engine

    def next_token_logprobs(self, prompts: Iterable[str], candidates: list[str]) -> Iterator[list[float]]:
        import numpy as np

        found = None
        for prompt in prompts:
            if found is None:
                found = continuation_tokens(self.tokenize, prompt, candidates)
            tokens = self.tokenize(prompt)
            logits = self.prompt_logits(tokens[:len(tokens) - found.drop])
            top = logits.max()
            log_normaliser = top + np.log(np.exp(logits - top).sum())
            yield [float(logits[i] - log_normaliser) for i in found.ids]

    def prompt_logits(self, tokens: list[int]):
        """Next-token logits after `tokens`, reusing the KV cache for the prefix shared with the
        previous prompt (so the questions of one pair, streamed in the order `FeedbackModel`
        gives them, cost little more than their differing tails)."""
        import numpy as np

        llm = self.llm
        if len(tokens) >= self.n_ctx:
            raise CaiError(f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}")
        cached = llm.input_ids[: llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(tokens) - 1)  # the last token must be evaluated to get logits
        llm.n_tokens = shared
        self.tokens_read += len(tokens) - shared
        with quiet_native_logs(self.options.verbose):
            llm.eval(tokens[shared:])
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
