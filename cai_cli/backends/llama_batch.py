"""Continuous batching for the llama.cpp backend, on llama.cpp's own batch API.

Up to `parallel` sequences share one llama.cpp context. Each step decodes the next token of every
generating sequence in one `llama_batch` (one `llama_decode` call), then a chunk of the prompt of
each newly admitted sequence, and samples every sequence's next token natively with that
sequence's own sampler chain. A sequence stops at an end-of-generation token, at one of its stop
strings or at its `max_tokens`; its slot is then refilled with the next request at once, as
llama.cpp's server does, and finished texts come out in request order as soon as the ones before
them are done.

Why prompt chunks get decode calls of their own: with a KV stream per sequence (below),
llama.cpp cuts a batch into micro-batches holding the same number of tokens of every sequence,
so a prompt mixed with generating sequences would lose one token to their one-token micro-batch,
and a prompt token computed alone goes through llama.cpp's single-token kernels, whose rounding
differs from the multi-token ones at some positions. Prompt chunks therefore never hold one
token of a longer prompt (`prompt_chunk`); llama_decode runs micro-batches one after another
anyway, so the separate calls cost nothing measurable.

The same splitting keeps only runs of consecutive sequence ids together, so the generating
sequences go into the batch in id order: in request order, once slots had refilled out of order,
every step ran as two micro-batches and took a third longer.

Memory layout: every sequence has a KV cache stream of its own of `n_ctx` cells (llama.cpp's
non-unified cache, `kv_unified = false`), so the context holds `n_ctx x parallel` cells. That
costs memory (SmolLM2-135M: 23 KB per cell, so 8 x 4096 cells take about 740 MB), and it buys
two things:
- the per-prompt limit stays `n_ctx` whatever `--parallel` is (what `check_fits` checks), and
  no sequence ever waits for another's cells;
- a sequence's numbers do not depend on its neighbours. In a unified cache a sequence's cells
  are interleaved with the others', so llama.cpp's attention sums them in a different order and
  the tiny model's near-tied tokens flip: greedy text changed after a few tokens when run beside
  other prompts. With a stream per sequence the logits are bit-identical to running alone
  (checked by tests/test_batching.py), so greedy output equals the unbatched one and a seeded
  sample is the same under any `--parallel`.

Prefix reuse: a new prompt starts from the longest prefix it shares with a sequence held in the
cache. In its own slot that costs nothing (the stale tail is dropped); from another slot the
stream is copied (`llama_memory_seq_cp` copies whole streams between streams), which is worth it
for long shared prefixes such as the few-shot examples in front of every critique prompt. A
prompt whose prefix another sequence is still prefilling waits a step or two for it instead of
computing it again.

Example (what `LlamaCppBackend.generate` does):

    engine = BatchEngine(llm.model, llm.context_params, n_ctx=4096, parallel=8)
    for job in engine.run(SequenceJob(tokens, max_tokens=64, temperature=0.7, top_p=0.95, seed=s)
                          for tokens in prompts):
        print(llm.detokenize(job.generated))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cai_cli.backends.native_logs import quiet_native_logs
from cai_cli.errors import CaiError

# Tokens decoded per step (one per generating sequence, the rest prompt chunks), and the largest
# llama_decode call: the library's own default batch size, which keeps prefill fast without a
# large compute buffer.
DEFAULT_BATCH_TOKENS = 512

# Copying another slot's stream moves all of its cells, so it is only worth it when it saves at
# least this many prompt tokens of prefill.
MIN_COPIED_PREFIX = 64


@dataclass(eq=False)
class SequenceJob:
    """One completion to produce from already tokenized prompt text."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[bytes, ...] = ()  # UTF-8 strings that end the generation (the backend cuts them off)
    generated: list[int] = field(default_factory=list)  # filled by the engine; no end token
    text: bytes = b""  # the generated tokens' text, kept only for jobs with stop strings
    finish_reason: str = ""  # "stop" (end-of-generation token) or "length" (max_tokens reached)
    index: int = -1  # position in the request stream, set by the engine
    next_token: int | None = None  # sampled, not yet decoded: the sequence is generating
    sampler: object = None


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id (and KV stream), the tokens its cache holds, and its job."""

    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens in the KV cache, position by position
    job: SequenceJob | None = None

    @property
    def prefilling(self) -> bool:
        return self.job is not None and self.job.next_token is None


class BatchEngine:
    """A llama.cpp context of its own running up to `parallel` sequences per decode call."""

    def __init__(self, model, context_params, n_ctx: int, parallel: int,
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, verbose: bool = False):
        import llama_cpp

        self.lib, self.ctx, self.busy, self.verbose = llama_cpp, None, False, verbose
        parallel = max(1, min(parallel, llama_cpp.llama_max_parallel_sequences()))
        # Same settings as the model's own context (threads, attention kernel, cache types), so
        # that one sequence here computes exactly what llama-cpp-python's Llama computes.
        params = llama_cpp.llama_context_params.from_buffer_copy(context_params)
        params.n_ctx = n_ctx * parallel
        params.n_seq_max = parallel
        params.kv_unified = False
        params.n_batch = params.n_ubatch = batch_tokens
        params.embeddings = False
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise CaiError(f"llama.cpp could not create a context for {parallel} sequences of {n_ctx} tokens "
                           "(try a smaller --parallel or --n-ctx)")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self.ctx)
        self.batch_tokens = batch_tokens
        self.batch = llama_cpp.llama_batch_init(batch_tokens, 0, 1)
        self.slots = [Slot(seq_id) for seq_id in range(parallel)]
        self.pieces: dict[int, bytes] = {}  # token -> its text, for stop strings
        # Prompt tokens decoded, prompt tokens taken from the cache instead, and cross-slot copies.
        self.prefilled_tokens = self.reused_tokens = self.copied_prefixes = 0

    def close(self) -> None:
        """Free the native context, batch and any samplers still held."""
        if self.ctx:
            for slot in self.slots:
                self._release(slot)
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None

    def __del__(self):
        self.close()

    def run(self, jobs: Iterable[SequenceJob]) -> Iterator[SequenceJob]:
        """Run every job, pulling the next one only when a slot can take it, and yield each
        finished job in input order as soon as the ones before it are done."""
        if self.busy:
            raise CaiError("this llama.cpp backend is already generating; finish one stream before starting another")
        self.busy = True
        pending = iter(jobs)
        waiting: SequenceJob | None = None
        finished: dict[int, SequenceJob] = {}
        pulled = emitted = 0
        try:
            while True:
                while any(slot.job is None for slot in self.slots):
                    if waiting is None:
                        waiting = next(pending, None)
                        if waiting is None:
                            break
                        waiting.index, pulled = pulled, pulled + 1
                    if not self._admit(waiting):
                        break  # its prompt prefix is being computed in another slot
                    waiting = None
                if all(slot.job is None for slot in self.slots):
                    break
                with quiet_native_logs(self.verbose):
                    done = self._step()
                finished.update((job.index, job) for job in done)
                while emitted in finished:
                    yield finished.pop(emitted)
                    emitted += 1
        finally:
            # A consumer that stops early leaves sequences running: free their samplers (their
            # cached tokens stay valid for prefix reuse by the next run).
            self.busy = False
            for slot in self.slots:
                self._release(slot)

    # Admission ------------------------------------------------------------------------------

    def _admit(self, job: SequenceJob) -> bool:
        """Start `job` in a free slot from the longest cached prefix of its prompt; False when
        a running sequence is still prefilling a longer shared prefix (worth waiting for)."""
        if not job.prompt:
            raise CaiError("cannot generate from an empty prompt")
        if len(job.prompt) + job.max_tokens - 1 > self.n_ctx:
            raise CaiError(f"a prompt of {len(job.prompt)} tokens plus {job.max_tokens} new tokens does not fit "
                           f"the context of {self.n_ctx} (use --n-ctx or a shorter prompt)")
        # At least the prompt's last two tokens are decoded again: the last one's logits start the
        # generation, and a lone prompt token would be computed differently (see `prompt_chunk`).
        usable = max(0, len(job.prompt) - 2)
        reuse = {slot: min(common_prefix_length(slot.cached, job.prompt), usable) for slot in self.slots}
        coming = max((min(common_prefix_length(slot.job.prompt, job.prompt), usable)
                      for slot in self.slots if slot.prefilling), default=0)
        if coming - max(reuse.values()) >= MIN_COPIED_PREFIX:
            return False
        free = [slot for slot in self.slots if slot.job is None]
        target = max(free, key=lambda slot: (reuse[slot], -len(slot.cached)))
        source = max(self.slots, key=lambda slot: reuse[slot])
        if reuse[source] - reuse[target] >= MIN_COPIED_PREFIX:
            self.lib.llama_memory_seq_cp(self.memory, source.seq_id, target.seq_id, -1, -1)
            target.cached = list(source.cached)
            self._truncate(target, reuse[source])
            self.copied_prefixes += 1
        else:
            self._truncate(target, reuse[target])
        self.reused_tokens += len(target.cached)
        job.sampler = self._make_sampler(job)
        target.job = job
        return True

    def _truncate(self, slot: Slot, keep: int) -> None:
        if len(slot.cached) > keep:
            self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1)
            del slot.cached[keep:]

    def _release(self, slot: Slot) -> None:
        if slot.job is not None:
            if slot.job.sampler is not None:
                self.lib.llama_sampler_free(slot.job.sampler)
                slot.job.sampler = None
            slot.job = None

    # One decode step --------------------------------------------------------------------------

    def _step(self) -> list[SequenceJob]:
        """Decode the next token of every generating sequence, then a prompt chunk of each
        prefilling one (up to the batch budget), and sample every sequence that has logits;
        return the jobs done."""
        running = sorted((slot for slot in self.slots if slot.job is not None), key=lambda slot: slot.job.index)
        # In sequence id order: llama.cpp puts only consecutive ids in one micro-batch.
        generating = [slot for slot in self.slots if slot.job is not None and not slot.prefilling]
        sampling: list[tuple[Slot, int]] = []
        if generating:
            self.batch.n_tokens = 0
            sampling += [(slot, self._add(slot, [slot.job.next_token])) for slot in generating]
            self._decode()
            done = self._sample(sampling)
        else:
            done = []
        budget = self.batch_tokens - len(generating)
        for slot in running:  # earlier requests finish their prompts first
            if not slot.prefilling:
                continue
            chunk = prompt_chunk(len(slot.job.prompt) - len(slot.cached), budget)
            if not chunk:
                break
            budget -= chunk
            self.prefilled_tokens += chunk
            self.batch.n_tokens = 0
            start = len(slot.cached)
            last = self._add(slot, slot.job.prompt[start:start + chunk])
            complete = len(slot.cached) == len(slot.job.prompt)
            self.batch.logits[last] = complete
            self._decode()
            if complete:
                done += self._sample([(slot, last)])
        return done

    def _decode(self) -> None:
        status = self.lib.llama_decode(self.ctx, self.batch)
        if status != 0:
            self._forget_cache()
            raise CaiError(f"llama.cpp failed to decode a batch of {self.batch.n_tokens} tokens (status {status})")

    def _sample(self, sampling: list[tuple[Slot, int]]) -> list[SequenceJob]:
        """Sample the next token of each (slot, batch index); return the jobs that finished."""
        done = []
        for slot, index in sampling:
            job = slot.job
            token = self.lib.llama_sampler_sample(job.sampler, self.ctx, index)
            if self.lib.llama_vocab_is_eog(self.vocab, token):
                job.next_token, job.finish_reason = None, "stop"
            elif job.stop and self._reaches_stop(job, token):
                job.generated.append(token)
                job.next_token, job.finish_reason = None, "stop"
            else:
                job.generated.append(token)
                job.next_token = token if len(job.generated) < job.max_tokens else None
                if job.next_token is None:
                    job.finish_reason = "length"
            if job.next_token is None:
                self._release(slot)  # the slot's cache stays, for prompts sharing its prefix
                done.append(job)
        return done

    def _reaches_stop(self, job: SequenceJob, token: int) -> bool:
        """Whether `token` completes one of the job's stop strings (checked on bytes: a token may
        hold half of a UTF-8 character)."""
        piece = self.pieces.get(token)
        if piece is None:
            piece = self.pieces[token] = self._piece(token)
        # Only the new tail can complete a stop string that was not there before.
        tail = max(len(s) for s in job.stop) + len(piece)
        job.text += piece
        return any(s in job.text[-tail:] for s in job.stop)

    def _piece(self, token: int) -> bytes:
        import ctypes

        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            written = self.lib.llama_token_to_piece(self.vocab, token, buffer, size, 0, False)
            if written >= 0:
                return buffer.raw[:written]
            size = -written  # llama.cpp says how large the buffer must be

    def _add(self, slot: Slot, tokens: list[int]) -> int:
        """Append `tokens` of one sequence to the batch (logits on the last); return its index."""
        batch, start = self.batch, len(slot.cached)
        for offset, token in enumerate(tokens):
            i = batch.n_tokens + offset
            batch.token[i] = token
            batch.pos[i] = start + offset
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot.seq_id
            batch.logits[i] = False
        batch.n_tokens += len(tokens)
        batch.logits[batch.n_tokens - 1] = True
        slot.cached.extend(tokens)
        return batch.n_tokens - 1

    def _forget_cache(self) -> None:
        """Empty the cache (after a failed decode, whose tokens were not all stored)."""
        self.lib.llama_memory_clear(self.memory, True)
        for slot in self.slots:
            slot.cached = []

    # Sampling ---------------------------------------------------------------------------------

    def _make_sampler(self, job: SequenceJob):
        """llama.cpp's sampler chain for one request: greedy at temperature 0, otherwise
        temperature, then nucleus (top-p), then a draw seeded with the request's own seed; the
        order transformers applies them in, so a setting means the same on both backends."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if job.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(job.temperature))
            if job.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(job.top_p, 1))
            # 0xFFFFFFFF asks llama.cpp for a random seed; keep every seed a fixed one.
            seed = job.seed & 0xFFFFFFFF
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed if seed != 0xFFFFFFFF else 0))
        return chain


def prompt_chunk(remaining: int, budget: int) -> int:
    """How many prompt tokens to decode now: as many as the budget allows, but never a chunk of
    one token out of a longer prompt (see the module docstring), so never leaving one behind."""
    if remaining <= 1:
        return remaining if budget >= 1 else 0
    chunk = min(remaining, budget)
    if remaining - chunk == 1:
        chunk -= 1
    return chunk if chunk >= 2 else 0


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token lists share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length
