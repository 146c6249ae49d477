"""Batched generation: order, streaming, and the same text whatever the batching.

llama.cpp's engine gives every sequence a KV stream of its own and never computes a prompt token
on its own (see cai_cli/backends/llama_batch.py), so its logits are bit-identical to running the
prompt alone: greedy text and seeded samples must be *equal* under any --parallel, and equal to
llama-cpp-python's own one-prompt-at-a-time `create_completion` for greedy decoding.
"""

from __future__ import annotations

import json

import pytest

from cai_cli.backends import BackendOptions, GenerationRequest, load_backend
from cai_cli.backends.llama_batch import common_prefix_length, prompt_chunk
from conftest import EXAMPLES, read_jsonl, run_cai, write_jsonl

# Small contexts keep the per-sequence KV streams (n_ctx x parallel cells) cheap in tests.
N_CTX = "512"


def red_team(count: int) -> list[str]:
    lines = (EXAMPLES / "red_team.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines[:count]]


def requests(prompts: list[str], max_tokens: int | list[int], temperature: float, seed: int = 0,
             system: str | None = None) -> list[GenerationRequest]:
    limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    chats = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
             for p in prompts]
    return [GenerationRequest(chat, limit, temperature, 0.95, seed + i) for i, (chat, limit) in enumerate(zip(chats, limits))]


@pytest.fixture(scope="module")
def llama():
    """llama.cpp backends on the embedded model, one per --parallel value, loaded once."""
    loaded = {}

    def backend(parallel: int):
        if parallel not in loaded:
            loaded[parallel] = load_backend(BackendOptions(parallel=parallel, n_ctx=int(N_CTX), threads=1))
        return loaded[parallel]

    return backend


# Pure pieces --------------------------------------------------------------------------------------

def test_prompt_chunks_never_hold_or_leave_a_lone_token_of_a_longer_prompt():
    for remaining in range(0, 40):
        for budget in range(0, 12):
            chunk = prompt_chunk(remaining, budget)
            assert 0 <= chunk <= min(remaining, budget)
            if remaining >= 2:
                assert chunk == 0 or (chunk >= 2 and remaining - chunk != 1)
                if budget >= 3:
                    assert chunk > 0  # always progress when the budget allows
    assert prompt_chunk(1, 5) == 1  # a one-token prompt is its own chunk


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([7, 8], [7, 8]) == 2


# The llama.cpp engine --------------------------------------------------------------------------------

def test_texts_come_back_in_request_order_and_stream_as_soon_as_possible(llama):
    limits = [2, 14, 9, 1, 16, 3, 6, 1]  # finishing out of order
    batch = requests(red_team(8), limits, temperature=0.0)
    alone = list(llama(1).generate(batch))

    pulled = []

    def lazily():
        for request in batch:
            pulled.append(request)
            yield request

    stream = llama(3).generate(lazily())
    first = next(stream)
    assert len(pulled) <= 3 + 1  # the running sequences and at most one waiting
    together = [first, *stream]
    assert together == alone
    backend = llama(1)
    assert all(backend.count_tokens(c.text) <= limit for c, limit in zip(together, limits))


def test_generating_sequences_go_to_llama_cpp_as_one_run_of_consecutive_ids(llama, monkeypatch):
    """llama.cpp splits a batch of non-unified sequences wherever the ids stop counting up by one,
    which made every step two micro-batches (a third slower) once slots refilled out of order."""
    engine = llama(4).batch_engine()
    steps = []
    decode = engine._decode

    def recording_decode():
        batch = engine.batch
        if all(batch.logits[i] for i in range(batch.n_tokens)):  # a generation step, not a prompt chunk
            steps.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        decode()

    monkeypatch.setattr(engine, "_decode", recording_decode)
    list(llama(4).generate(requests(red_team(10), [24, 4, 14, 6, 18, 2, 10, 16, 8, 12], temperature=0.0)))
    full = [ids for ids in steps if len(ids) == 4]
    assert len(full) >= 10
    assert all(ids == list(range(4)) for ids in full), full[:5]
    assert all(ids == sorted(ids) for ids in steps)


def test_greedy_batched_equals_one_at_a_time_and_llama_cpp_pythons_own_loop(llama):
    batch = requests(red_team(8), 32, temperature=0.0)
    alone = list(llama(1).generate(batch))
    assert list(llama(4).generate(batch)) == alone
    assert list(llama(8).generate(batch)) == alone

    backend = llama(1)
    by_hand = []
    for request in batch:
        backend.llm.reset()
        result = backend.llm.create_completion(backend.tokenize(backend.render(request.messages)), max_tokens=32,
                                               temperature=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0)
        by_hand.append(result["choices"][0]["text"])
    assert by_hand == [completion.text for completion in alone]


def test_seeded_samples_do_not_depend_on_parallel(llama):
    batch = requests(red_team(8), 24, temperature=0.9, seed=11)
    alone = list(llama(1).generate(batch))
    assert list(llama(3).generate(batch)) == alone
    assert list(llama(8).generate(batch)) == alone
    reseeded = list(llama(3).generate(requests(red_team(8), 24, temperature=0.9, seed=12)))
    assert sum(a != b for a, b in zip(alone, reseeded)) >= 4  # the seed does matter


def test_a_long_shared_prefix_is_computed_once_and_changes_nothing(llama):
    system = ("You are a careful assistant. " * 20).strip()  # ~120 tokens in front of every prompt
    batch = requests(red_team(6), 12, temperature=0.9, seed=3, system=system)
    alone = list(llama(1).generate(batch))
    engine = llama(4).batch_engine()
    before = (engine.prefilled_tokens, engine.reused_tokens, engine.copied_prefixes)
    assert list(llama(4).generate(batch)) == alone
    prefilled, reused, copied = (now - then for now, then in zip(
        (engine.prefilled_tokens, engine.reused_tokens, engine.copied_prefixes), before))
    assert copied >= 1 and reused >= 5 * 100  # the other prompts took the prefix from the first
    assert prefilled < reused


def test_generation_and_scoring_interleave_without_disturbing_each_other(llama):
    backend = llama(3)
    batch = requests(red_team(5), 12, temperature=0.0)
    question = backend.render([{"role": "user", "content": "Answer A or B. The answer is: ("}])
    expected_texts = list(backend.generate(batch))
    expected_scores = next(backend.next_token_logprobs([question], ["A", "B"]))
    texts = []
    for text in backend.generate(batch):
        texts.append(text)
        assert next(backend.next_token_logprobs([question], ["A", "B"])) == pytest.approx(expected_scores)
    assert texts == expected_texts


def test_a_consumer_that_stops_early_leaves_the_engine_ready(llama):
    backend = llama(3)
    batch = requests(red_team(6), 10, temperature=0.8, seed=5)
    expected = list(llama(1).generate(batch))
    stream = backend.generate(batch)
    assert [next(stream), next(stream)] == expected[:2]
    stream.close()
    assert list(backend.generate(batch)) == expected


def test_a_short_input_gets_an_engine_of_its_size_and_a_longer_one_a_larger_engine(llama):
    """Every KV stream is allocated and cleared up front (740 MB and 0.4 s for 8 x 4096 cells of
    the embedded model): a stream of two requests gets two, a later longer one up to --parallel."""
    backend = load_backend(BackendOptions(parallel=4, n_ctx=int(N_CTX), threads=1))
    two, five = requests(red_team(2), 6, temperature=0.0), requests(red_team(5), 6, temperature=0.0)
    assert list(backend.generate(two)) == list(llama(1).generate(two))
    assert len(backend.batch_engine(2).slots) == 2
    assert list(backend.generate(five)) == list(llama(1).generate(five))
    assert len(backend.batch_engine(2).slots) == 4
    assert list(backend.generate([])) == []


def test_a_prompt_too_long_for_a_sequence_is_an_error_not_a_crash(llama):
    from cai_cli.errors import CaiError

    with pytest.raises(CaiError, match="does not fit"):
        list(llama(2).generate(requests(["word " * 600], 8, temperature=0.0)))


# Real runs, as a user types them -----------------------------------------------------------------------

def test_cai_sample_gives_the_same_records_under_any_parallel(tmp_path):
    records = [json.loads(line) for line in (EXAMPLES / "red_team.jsonl").read_text().splitlines()[:5]]
    records[1]["tags"] = ["kept", {"as": "is"}]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", records)
    common = ["--max-tokens", "12", "--temperature", "0.9", "--seed", "5", "-n", "2", "--n-ctx", N_CTX, "--threads", "1"]
    one, three = (run_cai("sample", *common, "--parallel", p, prompts) for p in ("1", "3"))
    assert one.returncode == 0 and three.returncode == 0, (one, three)
    assert three.stdout == one.stdout
    out = three.records
    assert [r["id"] for r in out] == [r["id"] for r in records]
    assert out[1]["tags"] == ["kept", {"as": "is"}]
    assert all(len(r["responses"]) == 2 and r["responses"][0] != r["responses"][1] for r in out)


def test_cai_sample_greedy_streams_in_order_with_parallel(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl",
                          [json.loads(line) for line in (EXAMPLES / "helpful.jsonl").read_text().splitlines()[:6]])
    common = ["--max-tokens", "10", "--temperature", "0", "--n-ctx", N_CTX, "--threads", "1"]
    one, four = (run_cai("sample", *common, "--parallel", p, prompts) for p in ("1", "4"))
    assert one.returncode == 0 and four.returncode == 0, (one, four)
    assert four.records == one.records
    assert [r["id"] for r in four.records] == [r["id"] for r in read_jsonl(prompts)]


# The transformers backend ------------------------------------------------------------------------------

def test_transformers_batches_keep_order_and_per_record_samples(embedded_folder):
    backend = load_backend(BackendOptions(model=str(embedded_folder), backend="transformers", batch_size=3))
    prompts = red_team(5)
    for temperature in (0.0, 0.9):
        batch = requests(prompts, [8, 3, 8, 5, 8], temperature=temperature, seed=21)
        backend.batch_size = 3
        together = list(backend.generate(batch))
        backend.batch_size = 1
        alone = list(backend.generate(batch))
        assert together == alone, temperature
    reseeded = list(backend.generate(requests(prompts, 8, temperature=0.9, seed=22)))
    assert reseeded != together
