"""`cai compare`: soft preference labels from next-token probabilities.

Pure parts (normalisation, swap averaging, clamping, the ensemble, pairs, the output record) are
unit-tested on hand-made judgements; the command runs for real on the embedded model.
"""

from __future__ import annotations

import math
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_cli.backends import shared_prefix_groups
from cai_cli.constitution import load_constitution
from cai_cli.errors import CaiError
from cai_cli.records import InvalidRecord
from cai_cli.settings import FeedbackSettings, parse_clamp
from cai_cli.stages.compare import CompareStage, PairJob, pair_record_id, record_responses, response_pairs
from cai_cli.stages.feedback import (FeedbackModel, Judgement, Question, normalise_choice_logprobs,
                                     pair_probability, stream_through)
from conftest import read_jsonl, run_cai, write_jsonl

RULES = load_constitution()
# One thread: on a small shared CPU, llama.cpp's threads otherwise wait on each other.
FAST = ["--threads", "1"]


# --- label normalisation -------------------------------------------------------------------

def test_normalise_is_a_softmax_over_the_options_alone():
    probs = normalise_choice_logprobs([math.log(0.3), math.log(0.1)])
    assert probs == pytest.approx([0.75, 0.25])
    assert normalise_choice_logprobs([-2.0, -2.0]) == [0.5, 0.5]


def test_normalise_works_in_log_space_for_tiny_probabilities():
    # exp(-1000) underflows to 0 in plain arithmetic; the ratio e^1 : 1 must survive.
    assert normalise_choice_logprobs([-1000.0, -1001.0]) == pytest.approx([1 / (1 + math.e ** -1), 1 / (1 + math.e)])


def test_a_missing_letter_is_impossible_and_all_missing_is_uniform():
    assert normalise_choice_logprobs([-0.5, None]) == [1.0, 0.0]
    assert normalise_choice_logprobs([float("-inf"), -3.0]) == [0.0, 1.0]
    assert normalise_choice_logprobs([float("nan"), -3.0]) == [0.0, 1.0]
    assert normalise_choice_logprobs([None, float("-inf")]) == [0.5, 0.5]


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=2, max_size=5))
def test_normalised_probabilities_are_always_finite_and_sum_to_one(logprobs):
    probs = normalise_choice_logprobs(logprobs)
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs)
    assert math.fsum(probs) == pytest.approx(1.0)


# --- swap averaging, clamping, the ensemble ---------------------------------------------------

def judgement(principle: str, order: tuple[int, int], p_a: float) -> Judgement:
    question = Question([{"role": "user", "content": "?"}], probs=[p_a, 1.0 - p_a])
    return Judgement(principle, order, question)


def test_swapping_cancels_a_pure_letter_bias():
    # A model that answers (A) with 90% whatever it is shown has no preference at all.
    biased = [judgement("p", (0, 1), 0.9), judgement("p", (1, 0), 0.9)]
    assert pair_probability(biased, 0, None) == pytest.approx(0.5)
    # A real preference for response 1 survives the bias: shown first 0.95, shown second 0.35.
    prefers_second = [judgement("p", (0, 1), 0.65), judgement("p", (1, 0), 0.95)]
    assert pair_probability(prefers_second, 1, None) == pytest.approx(0.65)
    assert pair_probability(prefers_second, 0, None) == pytest.approx(0.35)


def test_clamping_limits_each_judgement_before_averaging():
    overconfident = [judgement("p", (0, 1), 0.99), judgement("p", (1, 0), 0.02)]
    assert pair_probability(overconfident, 0, (0.4, 0.6)) == pytest.approx(0.6)
    # One confident judgement cannot outweigh a doubtful one.
    mixed = [judgement("p", (0, 1), 0.99), judgement("p", (1, 0), 0.55)]
    assert pair_probability(mixed, 0, (0.4, 0.6)) == pytest.approx((0.6 + 0.45) / 2)
    assert pair_probability(mixed, 0, None) == pytest.approx((0.99 + 0.45) / 2)


def test_the_ensemble_averages_over_principles():
    judgements = [judgement("a", (0, 1), 0.8), judgement("a", (1, 0), 0.4),
                  judgement("b", (0, 1), 0.6), judgement("b", (1, 0), 0.6)]
    assert pair_probability(judgements, 0, None) == pytest.approx((0.8 + 0.6 + 0.6 + 0.4) / 4)


def test_clamp_option():
    """--clamp as the settings take it: no flag clamps chain-of-thought labels only, 'none' turns
    clamping off, LO,HI are checked."""
    def clamp(text, cot):
        return FeedbackSettings(cot=cot, clamp=parse_clamp(text)).clamp

    assert clamp(None, cot=False) is None
    assert clamp(None, cot=True) == (0.4, 0.6)
    assert clamp("0.3,0.7", cot=False) == (0.3, 0.7)
    assert clamp("none", cot=True) is None
    for bad in ("0.7,0.3", "0.6,0.9", "0.5,0.5", "x", "0.1,0.2,0.3", "0.3"):
        with pytest.raises(CaiError):
            parse_clamp(bad)


def test_principle_draws_are_seeded_distinct_and_checked():
    model = FeedbackModel(None, RULES, FeedbackSettings(principles=3, seed=1))
    names = [p.name for p in model.principles_for("r1")]
    assert len(set(names)) == 3 and names == [p.name for p in model.principles_for("r1")]
    draws = {tuple(p.name for p in model.principles_for(f"r{i}")) for i in range(20)}
    assert len(draws) > 5
    fixed = FeedbackModel(None, RULES, FeedbackSettings(principle="honesty"))
    assert [p.name for p in fixed.principles_for("any")] == ["honesty"]
    with pytest.raises(CaiError, match="comparison principle"):
        FeedbackModel(None, RULES, FeedbackSettings(principles=len(RULES.comparisons) + 1))
    with pytest.raises(CaiError, match="no comparison principle named"):
        FeedbackModel(None, RULES, FeedbackSettings(principle="nope"))


def test_the_paper_layout_keeps_both_orderings_of_a_principle_together():
    model = FeedbackModel(None, RULES, FeedbackSettings(principles=2, layout="paper"))
    judgements = model.pair_judgements("r", [{"role": "user", "content": "q"}], ["x", "y"], (0, 1))
    assert [j.order for j in judgements] == [(0, 1), (1, 0), (0, 1), (1, 0)]
    assert judgements[0].principle == judgements[1].principle != judgements[2].principle
    content = judgements[0].question.messages[-1]["content"]
    assert content.endswith("Options:\n(A) x\n(B) y")
    assert content.index(RULES.comparison_principle(judgements[0].principle).text) < content.index("(A) x")
    assert "(A) y\n(B) x" in judgements[1].question.messages[-1]["content"]
    unswapped = FeedbackModel(None, RULES, FeedbackSettings(swap=False))
    orders = [[j.order for j in unswapped.pair_judgements(f"r{i}", [], ["x", "y"], (0, 1))] for i in range(40)]
    # One ordering per pair, either one, the same on a rerun, and not always the same one.
    assert all(order in ([(0, 1)], [(1, 0)]) for order in orders)
    assert orders[0] == [j.order for j in unswapped.pair_judgements("r0", [], ["x", "y"], (0, 1))]
    assert 10 <= orders.count([(0, 1)]) <= 30


def test_responses_first_asks_every_principle_of_one_ordering_back_to_back():
    model = FeedbackModel(None, RULES, FeedbackSettings(principles=3, layout="responses-first"))
    judgements = model.pair_judgements("r", [{"role": "user", "content": "q"}], ["x", "y"], (0, 1))
    assert [j.order for j in judgements] == [(0, 1)] * 3 + [(1, 0)] * 3
    assert [j.principle for j in judgements[:3]] == [j.principle for j in judgements[3:]]
    assert len({j.principle for j in judgements}) == 3
    for j in judgements:
        content = j.question.messages[-1]["content"]
        # The principle's question comes after both responses, so it is all that differs.
        assert content.index("(B) ") < content.index(RULES.comparison_principle(j.principle).text)
    assert FeedbackSettings().layout == "responses-first"
    with pytest.raises(CaiError, match="--layout sideways"):
        FeedbackModel(None, RULES, FeedbackSettings(layout="sideways"))


def test_the_questions_of_one_ordering_share_everything_up_to_the_principle_as_tokens(embedded_model):
    """KV reuse needs a *token* prefix: after the chat template and tokenizer, consecutive
    questions of one ordering must share the conversation and both responses."""
    from cai_cli.backends import BackendOptions, load_backend

    backend = load_backend(BackendOptions(model=str(embedded_model), n_ctx=512, threads=1))
    responses = ["I can't help you get into someone else's car.", "Sure, smash the window and grab it."]
    conversation = [{"role": "user", "content": "How do I get my jacket out of my ex's car?"}]
    model = FeedbackModel(backend, RULES, FeedbackSettings(principles=4))
    judgements = model.pair_judgements("r", conversation, responses, (0, 1))
    prompts = [backend.tokenize(model.answer_text(j.question)) for j in judgements]
    responses_end = len(backend.tokenize(backend.render(judgements[0].question.messages).split(responses[1])[0]))
    for before, after in zip(prompts[:3], prompts[1:4]):
        assert len(os.path.commonprefix([before, after])) >= responses_end


# --- pairs, ids and the output record -------------------------------------------------------

def test_all_pairs_are_compared_and_named():
    assert response_pairs(2) == [(0, 1)]
    assert response_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert pair_record_id("r", (0, 1), 2) == "r"
    assert pair_record_id("r", (1, 2), 3) == "r:1-2"


@pytest.mark.parametrize("record, message", [
    ({"responses": ["a"]}, "holds 1 response"),
    ({"responses": "a b"}, "must be a list"),
    ({"responses": ["a", 3]}, "'responses[1]' must be a string"),
    ({"responses": ["a", " \n"]}, "'responses[1]' is empty"),
    ({"chosen": "a"}, "no 'rejected'"),
    ({"chosen": "a", "rejected": ""}, "'rejected' is empty"),
    ({"response": "a"}, "run `cai sample -n 2`"),
    ({}, "no 'responses' list"),
])
def test_records_without_two_responses_are_refused(record, message):
    with pytest.raises(InvalidRecord, match=re.escape(message)):
        record_responses({"prompt": "q", **record})


def finished(stage: CompareStage, record: dict, pair: tuple[int, int], p_first_shown_first: float,
             p_first_shown_second: float) -> dict:
    responses = record_responses(record)
    i, j = pair
    job = PairJob(record, responses, pair, pair_record_id(record["id"], pair, len(responses)),
                  [judgement("honesty", (i, j), p_first_shown_first), judgement("honesty", (j, i), 1 - p_first_shown_second)])
    return stage.finish(job)


def test_output_record_contract():
    stage = CompareStage(None, RULES, FeedbackSettings())
    record = {"id": "r", "prompt": "q", "responses": ["worse", "better"], "meta": {"k": 1}}
    out = finished(stage, dict(record), (0, 1), 0.3, 0.2)  # response 0 gets 0.25: response 1 wins
    assert {k: out[k] for k in record} == record and list(out)[:4] == list(record)
    assert (out["chosen"], out["rejected"], out["chosen_index"], out["rejected_index"]) == ("better", "worse", 1, 0)
    assert out["label"] == pytest.approx(0.75)
    assert out["principles"] == ["honesty"]
    assert out["orderings"] == [{"principle": "honesty", "a": 0, "b": 1, "p_a": 0.3, "p_b": 0.7},
                                {"principle": "honesty", "a": 1, "b": 0, "p_a": 0.8, "p_b": 0.2}]
    tie = finished(stage, dict(record), (0, 1), 0.5, 0.5)
    assert (tie["label"], tie["chosen"]) == (0.5, "worse")  # a tie keeps the input order
    pair = finished(stage, {"id": "p", "prompt": "q", "chosen": "a", "rejected": "b"}, (0, 1), 0.1, 0.1)
    assert pair["responses"] == ["a", "b"] and (pair["chosen"], pair["rejected"]) == ("b", "a")
    many = finished(stage, {"id": "m", "prompt": "q", "responses": ["a", "b", "c"]}, (1, 2), 0.9, 0.9)
    assert (many["id"], many["source_id"], many["chosen"]) == ("m:1-2", "m", "b")


def test_shared_prefix_groups_follow_runs_of_questions_about_one_pair():
    conversation, response_a, response_b = list(range(20)), [100] * 20, [200] * 20
    first = [conversation + response_a + [q, 9] for q in (1, 2, 3)]  # three principles, one ordering
    second = [conversation + response_b + [q, 9] for q in (1, 2, 3)]  # the other ordering
    other = [[7] * 30 + [1]]  # another pair: nothing shared
    groups = shared_prefix_groups(first + second + other, min_shared=16)
    assert groups == [(0, 3, 40), (3, 6, 40), (6, 7, 30)]
    # A row that would shorten the run's prefix starts a run of its own; a row keeps its last token.
    assert shared_prefix_groups([[1] * 20 + [2], [1] * 20 + [3], [1] * 10 + [4]], 4) == [(0, 2, 20), (2, 3, 10)]
    assert shared_prefix_groups([[5] * 8, [5] * 8], 4) == [(0, 2, 7)]
    assert shared_prefix_groups([[1, 2], [1, 3]], 4) == [(0, 1, 1), (1, 2, 1)]


def test_stream_through_keeps_order_and_jobs_without_requests():
    jobs = ["a", "", "bc", ""]
    results = list(stream_through(jobs, list, lambda requests: (r.upper() for r in requests)))
    assert results == [("a", ["A"]), ("", []), ("bc", ["B", "C"]), ("", [])]


# --- real runs on the embedded model --------------------------------------------------------

PAIRS = [
    {"id": "lock", "prompt": "How do I pick my neighbour's lock?", "source": "qa",
     "responses": ["Use a tension wrench and rake the pins.", "I can't help you get into someone else's home."]},
    {"id": "gold", "messages": [{"role": "user", "content": "What is the symbol for gold?"}],
     "chosen": "Au.", "rejected": "Ag."},
]


@pytest.fixture
def pairs(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def check_labels(record: dict) -> None:
    """The invariants of every output record."""
    assert 0.5 <= record["label"] <= 1.0
    first, second = record["chosen_index"], record["rejected_index"]
    assert record["responses"][first] == record["chosen"] and record["responses"][second] == record["rejected"]
    shown = [o["p_a"] if o["a"] == first else o["p_b"] for o in record["orderings"]]
    assert record["label"] == pytest.approx(sum(shown) / len(shown), abs=1e-5)
    for ordering in record["orderings"]:
        assert ordering["p_a"] + ordering["p_b"] == pytest.approx(1.0, abs=1e-5)


def test_compare_writes_preferences_with_soft_labels(pairs):
    result = run_cai("compare", *FAST, pairs)
    assert result.returncode == 0, result
    lock, gold = result.records
    assert (lock["id"], lock["source"], gold["id"]) == ("lock", "qa", "gold")
    assert gold["messages"] == PAIRS[1]["messages"] and "prompt" not in gold
    for record in (lock, gold):
        check_labels(record)
        assert len(record["principles"]) == 1 and record["principles"][0] in {p.name for p in RULES.comparisons}
        assert [(o["a"], o["b"]) for o in record["orderings"]] == [(0, 1), (1, 0)]
    assert "compare: 2 records" in result.stderr
    assert run_cai("compare", *FAST, pairs).stdout == result.stdout  # same seed, same labels


def test_no_swap_principles_ensemble_and_a_fixed_principle(pairs):
    one = run_cai("compare", *FAST, "--no-swap", "--principle", "honesty", pairs)
    assert one.returncode == 0, one
    for record in one.records:
        check_labels(record)
        assert record["principles"] == ["honesty"] and len(record["orderings"]) == 1
    ensemble = run_cai("compare", *FAST, "--principles", "3", pairs)
    assert ensemble.returncode == 0, ensemble
    for record in ensemble.records:
        check_labels(record)
        assert len(set(record["principles"])) == 3 and len(record["orderings"]) == 6
    bad = run_cai("compare", *FAST, "--principles", "99", pairs)
    assert bad.returncode == 1 and "Error: --principles 99" in bad.stderr and not bad.stdout


def test_identical_responses_tie_at_one_half(tmp_path):
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "Say hello.", "responses": ["Hello!", "Hello!"]}])
    result = run_cai("compare", *FAST, same)
    assert result.returncode == 0, result
    # Both orderings are the same text; the second reads all but its last token from the cache,
    # whose one-token step takes other kernels than the first's full read: equal up to ~1e-2.
    assert result.records[0]["label"] == pytest.approx(0.5, abs=0.01)


def test_more_than_two_responses_give_every_pair_and_resume_by_pair_id(tmp_path):
    record = {"id": "k", "prompt": "Name a fruit.", "responses": ["Apple.", "Pear.", "A rock."]}
    source = write_jsonl(tmp_path / "three.jsonl", [record])
    out = tmp_path / "prefs.jsonl"
    full = run_cai("compare", *FAST, source, "-o", out)
    assert full.returncode == 0, full
    written = read_jsonl(out)
    assert [r["id"] for r in written] == ["k:0-1", "k:0-2", "k:1-2"]
    assert all(r["source_id"] == "k" and r["responses"] == record["responses"] for r in written)
    for r in written:
        check_labels(r)
    # A run cut short after one pair, then resumed: the missing pairs only, nothing twice.
    out.write_text(out.read_text().splitlines(keepends=True)[0] + '{"id": "k:0-2", "tor')
    resumed = run_cai("compare", *FAST, source, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed
    assert [r["id"] for r in read_jsonl(out)] == ["k:0-1", "k:0-2", "k:1-2"]
    assert read_jsonl(out) == written
    again = run_cai("compare", *FAST, source, "-o", out, "--resume")
    assert again.returncode == 0 and len(read_jsonl(out)) == 3


def test_chain_of_thought_reasons_then_clamps(pairs):
    result = run_cai("compare", *FAST, "--cot", "--max-tokens", "8", "--principle", "honesty", pairs)
    assert result.returncode == 0, result
    for record in result.records:
        assert all(isinstance(o["reasoning"], str) for o in record["orderings"])
        assert 0.5 <= record["label"] <= 0.6  # clamped to 0.4-0.6 by default with --cot
    wide = run_cai("compare", *FAST, "--cot", "--no-swap", "--max-tokens", "8", "--clamp", "0.45,0.55", pairs)
    assert wide.returncode == 0 and all(r["label"] <= 0.55 for r in wide.records)


BAD = [
    {"id": "good", "prompt": "Say hi.", "responses": ["Hi!", "Hello."]},
    {"id": "one", "prompt": "Say hi.", "responses": ["Hi!"]},
    {"id": "blank", "prompt": "Say hi.", "responses": ["Hi!", " "]},
    {"id": "good2", "prompt": "Say bye.", "chosen": "Bye!", "rejected": "Later."},
]


def test_bad_records_stop_with_their_line_or_are_skipped(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", BAD)
    strict = run_cai("compare", *FAST, source)
    assert strict.returncode == 1, strict
    assert f"Error: {source}:2: 'responses' holds 1 response(s)" in strict.stderr
    assert [r["id"] for r in strict.records] == ["good"] and "Traceback" not in strict.stderr
    lenient = run_cai("compare", *FAST, "--skip-invalid", source)
    assert lenient.returncode == 0, lenient
    assert [r["id"] for r in lenient.records] == ["good", "good2"]
    assert f"Skipped {source}:3: 'responses[1]' is empty" in lenient.stderr


def test_a_prompt_longer_than_the_context_is_a_record_error(tmp_path):
    long = dict(BAD[0], responses=["Hi! " * 40, "Hello."])
    source = write_jsonl(tmp_path / "long.jsonl", [BAD[0], long])
    result = run_cai("compare", *FAST, "--n-ctx", "128", source)
    assert result.returncode == 1, result
    assert f"Error: {source}:2: the comparison prompt is about" in result.stderr
    assert "context of 128" in result.stderr and "Traceback" not in result.stderr
    skipped = run_cai("compare", *FAST, "--n-ctx", "128", "--skip-invalid", source)
    assert skipped.returncode == 0 and [r["id"] for r in skipped.records] == ["good"]


@pytest.mark.slow
def test_both_backends_give_the_same_labels_up_to_noise(pairs, embedded_folder):
    """llama.cpp multiplies the Q4_1 weights with 8-bit quantized activations; transformers
    dequantises them to float32. Same prompt tokens, same model: on 10 labeled pairs the
    probabilities differed by 0.02 on average, 0.05 at most (0.07 once on a 2-word answer)."""
    llama = run_cai("compare", *FAST, "--principle", "least-harmful", pairs)
    torch = run_cai("compare", "-m", embedded_folder, "--principle", "least-harmful", pairs)
    assert llama.returncode == 0 and torch.returncode == 0, (llama, torch)
    for a, b in zip(llama.records, torch.records):
        check_labels(b)
        for x, y in zip(a["orderings"], b["orderings"]):
            assert (x["a"], x["b"]) == (y["a"], y["b"])
            assert x["p_a"] == pytest.approx(y["p_a"], abs=0.1)
        # The label's pick can flip near a tie, so compare P(response 0 is better).
        assert first_wins(a) == pytest.approx(first_wins(b), abs=0.05)


def test_transformers_scores_comparisons_in_batches_with_the_same_labels_as_one_at_a_time(embedded_folder):
    """--batch-size 16 computes each ordering's shared prefix (conversation and responses) once
    for its four principles, then the four questions on top of it: the labels must be those of
    one question per forward pass, up to float rounding."""
    from cai_cli.backends import BackendOptions, load_backend

    backend = load_backend(BackendOptions(model=str(embedded_folder), backend="transformers", batch_size=16))
    stage = CompareStage(backend, RULES, FeedbackSettings(principles=4))
    batched = list(stage(dict(record) for record in PAIRS))
    assert backend.tokens_read < 0.75 * sum(backend.count_tokens(stage.feedback.answer_text(j.question))
                                           for record in PAIRS for job in stage.jobs(record) for j in job.judgements)
    backend.batch_size = 1
    alone = list(stage(dict(record) for record in PAIRS))
    for a, b in zip(batched, alone):
        assert (a["chosen_index"], a["principles"]) == (b["chosen_index"], b["principles"])
        assert a["label"] == pytest.approx(b["label"], abs=1e-4)
        for x, y in zip(a["orderings"], b["orderings"]):
            assert (x["a"], x["principle"]) == (y["a"], y["principle"])
            assert x["p_a"] == pytest.approx(y["p_a"], abs=1e-4)


def first_wins(record: dict) -> float:
    return record["label"] if record["chosen_index"] == 0 else 1.0 - record["label"]


def test_sample_then_compare_pipeline(prompts):
    sampled = run_cai("sample", "-n", "2", "--max-tokens", "6", "--temperature", "1", *FAST, prompts)
    assert sampled.returncode == 0, sampled
    # A sampled answer can be empty; compare would refuse that record, so it is skipped here.
    compared = run_cai("compare", *FAST, "--skip-invalid", input=sampled.stdout)
    assert compared.returncode == 0, compared
    expected = [r["id"] for r in sampled.records if all(text.strip() for text in r["responses"])]
    assert expected and [r["id"] for r in compared.records] == expected
    for record in compared.records:
        check_labels(record)
