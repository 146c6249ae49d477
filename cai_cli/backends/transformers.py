"""The transformers + torch backend: Hugging Face folders, or a GGUF dequantised by transformers.

CUDA when present, CPU otherwise (CAI_DEVICE=cpu|cuda pins it). Generation is batched (`--batch-size`) with left padding; the
prompts of a window are sorted by length so that a batch pads as little as possible, and results
come back in input order. Multiple-choice scoring (`next_token_logprobs`, for compare and eval)
is batched too, and computes the prefix that consecutive questions share (one pair's
conversation and responses) once per batch, as llama.cpp's KV cache reuse does one at a time.
The chat template is the tokenizer's own, or a Jinja file given with `--chat-format`, rendered
in transformers' sandbox (see `chat_templates`).
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

from cai_cli.backends import (BackendOptions, Completion, GenerationRequest, continuation_tokens, cut_at_stop,
                              shared_prefix_groups)
from cai_cli.backends.chat_templates import read_template_file, render_with_tokenizer
from cai_cli.errors import CaiError

# A window of this many batches is read ahead and sorted by prompt length: enough to group
# similar lengths, small enough that records still stream out steadily.
SORT_WINDOW_BATCHES = 4


def load_model_and_tokenizer(path: Path, options: BackendOptions, model_class: str = "AutoModelForCausalLM",
                             **model_kwargs):
    """Load a tokenizer and model from a folder or a GGUF file, never running the folder's
    code unless asked and preferring safetensors weights."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    if not options.verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    where, extra = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
    if extra:
        from cai_cli.models import read_ggufs_once

        read_ggufs_once()
    if path.is_dir() and not any(path.glob("*.safetensors")) and any(path.glob("pytorch_model*.bin")):
        raise CaiError(f"{path} has only pickled PyTorch weights (pytorch_model*.bin), and loading a pickle "
                       "can run code: cai loads safetensors weights only (convert the folder with "
                       "save_pretrained in an environment you trust)")
    from cai_cli.hardware import torch_device

    device = options.device or torch_device()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    common = {"trust_remote_code": options.trust_remote_code, "local_files_only": True, **extra}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **common)
        loader = getattr(transformers, model_class)
        model = loader.from_pretrained(where, dtype=dtype, use_safetensors=None if extra else True,
                                       **common, **model_kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if "trust_remote_code" in str(exc):
            raise CaiError(f"{path} ships its own Python code to load it; cai does not run a model folder's "
                           "code unless you pass --trust-remote-code (only for folders you trust)") from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaiError(f"cannot load {path} with transformers: {first_line}") from None
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer, device


class TransformersBackend:
    name = "transformers"
    can_batch = True

    def __init__(self, path: Path, options: BackendOptions):
        self.model_path = str(path)
        self.options = options
        self.model, self.tokenizer, self.device = load_model_and_tokenizer(path, options)
        if options.chat_format:
            self.tokenizer.chat_template = read_template_file(options.chat_format)
        self.n_ctx = options.n_ctx or min(getattr(self.model.config, "max_position_embeddings", 4096), 8192)
        self.batch_size = max(1, options.batch_size)
        # Only the last position's logits are read when scoring: a model that can compute just
        # those saves a (rows x tokens x vocabulary) tensor.
        accepts = inspect.signature(self.model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        # The KV cache argument was renamed from past_key_values to cache in transformers 5.x.
        self._cache_name = "cache" if "cache" in accepts else "past_key_values"
        self.tokens_read = 0  # prompt tokens computed by next_token_logprobs (the benchmarks read it)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        # Checked here, not at load: a base model without a template can still continue raw text.
        if not self.tokenizer.chat_template:
            raise CaiError(f"{self.model_path} has no chat template; give one with --chat-format FILE.jinja")
        return render_with_tokenizer(self.tokenizer, messages, add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @functools.cached_property
    def raw_prefix(self) -> str:
        """What raw text (a request's `prompt`) starts with: the BOS token, for tokenizers that
        put one in front of every text. Rendered chats spell out their own."""
        bos = self.tokenizer.bos_token
        if bos and self.tokenizer("x").input_ids[:1] == [self.tokenizer.bos_token_id]:
            return bos
        return ""

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[Completion]:
        """Batches of `--batch-size` prompts, sorted by length within a read-ahead window so a
        batch pads little; texts come back in request order, each as soon as the ones before it
        are done."""
        requests = iter(requests)
        while window := list(itertools.islice(requests, self.batch_size * SORT_WINDOW_BATCHES)):
            prompts = [self.raw_prefix + r.prompt if r.prompt is not None else self.render(r.messages)
                       for r in window]
            order = sorted(range(len(window)), key=lambda i: len(prompts[i]))
            results: dict[int, Completion] = {}
            emitted = 0
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                texts = self._generate_batch([prompts[i] for i in batch], [window[i] for i in batch])
                results.update(zip(batch, texts))
                while emitted in results:
                    yield results.pop(emitted)
                    emitted += 1

    def _generate_batch(self, prompts: list[str], requests: list[GenerationRequest]) -> list[Completion]:
        import torch

        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        stops = {r.stop for r in requests}
        # A row that reaches its stop string ends there (and pads); with different stop strings
        # in one batch, rows run on and are cut afterwards.
        stopping = ({"stop_strings": list(requests[0].stop), "tokenizer": self.tokenizer}
                    if len(stops) == 1 and requests[0].stop else {})
        with torch.inference_mode():
            # Greedy decoding over scores in which the per-row sampler has already made each
            # row's draw: every request samples with its own seed, temperature and top-p.
            output = self.model.generate(
                **encoded,
                max_new_tokens=max(r.max_tokens for r in requests),
                do_sample=False, temperature=None, top_p=None, top_k=None,
                logits_processor=[SeededRowSampler(requests, self.device)],
                pad_token_id=self.tokenizer.pad_token_id,
                **stopping,
            )
        new_tokens = output[:, encoded.input_ids.shape[1]:]
        ends = self.end_token_ids()
        completions = []
        for row, request in zip(new_tokens.tolist(), requests):
            own = row[:request.max_tokens]
            # A row that ended its turn holds an end token; the rest ran out of tokens.
            end = next((i for i, token in enumerate(own) if token in ends), None)
            text, stopped = cut_at_stop(self.tokenizer.decode(own[:end], skip_special_tokens=True), request.stop)
            completions.append(Completion(text, "stop" if stopped or end is not None else "length"))
        return completions

    def end_token_ids(self) -> set[int]:
        """The tokens that end a turn: the generation config's end tokens and the tokenizer's."""
        ends = getattr(self.model.generation_config, "eos_token_id", None)
        ends = set(ends if isinstance(ends, list) else [ends] if ends is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ends.add(self.tokenizer.eos_token_id)
        return ends

    def next_token_logprobs(self, prompts: Iterable[str], candidates: list[str]) -> Iterator[list[float]]:
        """Batches of `--batch-size` prompts, one forward pass each; within a batch, consecutive
        prompts that share a token prefix (the questions about one pair) have that prefix
        computed once (`shared_prefix_groups`, `_last_logits_shared_prefix`)."""
        import torch

        def tokenize(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False).input_ids

        found = None
        prompts = iter(prompts)
        while batch := list(itertools.islice(prompts, self.batch_size)):
            if found is None:
                found = continuation_tokens(tokenize, batch[0], candidates)
            rows = [tokenize(prompt) for prompt in batch]
            rows = [row[:len(row) - found.drop] for row in rows]
            groups = shared_prefix_groups(rows)
            with torch.inference_mode():
                if len(groups) < len(rows):
                    logits = self._last_logits_shared_prefix(rows, groups)
                else:
                    logits = self._last_logits(rows)
            for row in torch.log_softmax(logits.float(), dim=-1):
                yield [row[i].item() for i in found.ids]

    def _last_logits(self, rows: list[list[int]]):
        """Next-token logits after each row, the rows left-padded into one batch."""
        encoded = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)
        # Left padding: count positions from each row's first real token, as generate() does,
        # for models whose position embeddings are absolute.
        positions = (encoded.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.tokens_read += sum(map(len, rows))
        return self.model(**encoded, position_ids=positions, **self._last_only).logits[:, -1, :]

    def _last_logits_shared_prefix(self, rows: list[list[int]], groups: list[tuple[int, int, int]]):
        """Next-token logits after each row, computing each group's shared prefix once: the
        prefixes as one left-padded batch, whose KV cache is then repeated for every row of its
        group, and the rows' own tails as a second batch on top of it. The tails are left-padded
        too, so a row reads [pad.., prefix, pad.., tail] with the pads masked out and positions
        counted over its real tokens only, the same positions it has alone."""
        import torch

        prefixes = [rows[start][:length] for start, _, length in groups]
        encoded = self.tokenizer.pad({"input_ids": prefixes}, return_tensors="pt").to(self.device)
        positions = (encoded.attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = getattr(self.model(**encoded, position_ids=positions, use_cache=True, **self._last_only),
                        self._cache_name)
        owner = [g for g, (start, end, _) in enumerate(groups) for _ in range(start, end)]
        index = torch.tensor(owner, device=self.device)
        cache.batch_select_indices(index)
        tails = [row[groups[g][2]:] for row, g in zip(rows, owner)]
        padded = self.tokenizer.pad({"input_ids": tails}, return_tensors="pt").to(self.device)
        prefix_mask = encoded.attention_mask[index]
        starts = prefix_mask.sum(-1, keepdim=True)
        tail_positions = (starts + padded.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.tokens_read += sum(map(len, prefixes)) + sum(map(len, tails))
        return self.model(input_ids=padded.input_ids, attention_mask=torch.cat([prefix_mask, padded.attention_mask], -1),
                          position_ids=tail_positions, **{self._cache_name: cache}, **self._last_only).logits[:, -1, :]


class SeededRowSampler:
    """A logits processor drawing each row's next token with that request's own generator,
    temperature and top-p (greedy at temperature 0), and leaving only the drawn token, so that
    `generate(do_sample=False)` takes it. One generator per request, seeded with the request's
    seed, makes a record's sample independent of the other prompts in its batch, as on llama.cpp;
    transformers' own sampling draws the whole batch from one global generator."""

    def __init__(self, requests: list[GenerationRequest], device):
        import torch

        self.requests = requests
        self.generators = [torch.Generator(device=device).manual_seed(r.seed) for r in requests]

    def __call__(self, input_ids, scores):
        import torch

        chosen = scores.argmax(dim=-1)
        for row, (request, generator) in enumerate(zip(self.requests, self.generators)):
            if request.temperature > 0:
                chosen[row] = sample_top_p(scores[row].float() / request.temperature, request.top_p, generator)
        only_chosen = torch.full_like(scores, float("-inf"))
        only_chosen.scatter_(1, chosen.unsqueeze(1), 0.0)
        return only_chosen


def sample_top_p(logits, top_p: float, generator) -> int:
    """Draw one token from the smallest set of most likely tokens whose probability reaches
    `top_p` (nucleus sampling; the most likely token is always kept)."""
    import torch

    probs, ids = torch.softmax(logits, dim=-1).sort(descending=True)
    keep = probs.cumsum(dim=-1) - probs < top_p  # the mass before a token is still short of top_p
    keep[0] = True
    kept = probs * keep
    return int(ids[torch.multinomial(kept / kept.sum(), 1, generator=generator)])
