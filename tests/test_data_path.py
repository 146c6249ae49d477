"""Training data is exactly what the model saw and said: no cut-off text trained on as if it
were finished, no lost context, no silent fallback. Each test here failed before its fix."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from cai_cli.backends import BackendOptions, Completion, GenerationRequest, Sampling, continuation_tokens, load_backend
from cai_cli.constitution import load_constitution
from cai_cli.prompts import answered_conversation, build_critique_messages, build_revision_messages
from cai_cli.settings import CritiqueSettings, FeedbackSettings
from cai_cli.stages.checks import revision_problems, strip_preamble
from cai_cli.stages.feedback import FeedbackModel
from cai_cli.stages.revise import ReviseStage
from cai_cli.training.data import DataSource, preference_example, read_training_data, split_held_out
from conftest import EXAMPLES, ROOT, ScriptedBackend, read_jsonl, run_cai, write_jsonl
from test_training import PROMPTS, REFUSAL

RULES = load_constitution()
FAST = ["--threads", "1"]


# 1. Why a generation stopped ---------------------------------------------------------------

@pytest.mark.parametrize("backend_name", ["llama-cpp", "transformers"])
def test_backends_say_whether_a_text_was_cut_off(backend_name, embedded_model, embedded_folder):
    model = embedded_model if backend_name == "llama-cpp" else embedded_folder
    backend = load_backend(BackendOptions(model=str(model), backend=backend_name, n_ctx=512, threads=1,
                                          parallel=2, batch_size=2))
    chat = [{"role": "user", "content": "Reply with one word: hello."}]
    cut, free = GenerationRequest(chat, 1, 0.0, 1.0, 0), GenerationRequest(chat, 200, 0.0, 1.0, 0)
    short, finished = list(backend.generate([cut, free]))
    assert short.finish_reason == "length" and short.truncated
    assert finished.finish_reason == "stop" and not finished.truncated


def test_sample_marks_a_cut_off_response(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Write a long story about a dragon."}])
    result = run_cai("sample", "--max-tokens", "4", *FAST, prompts)
    assert result.returncode == 0, result
    assert result.records[0]["response_truncated"] is True
    assert "1 of 1 texts cut off at --max-tokens 4" in result.stderr


def test_train_sft_leaves_out_truncated_unrevised_and_refused_records_and_counts_them(tmp_path, tiny):
    good = {"id": "g", "prompt": PROMPTS[0], "response": REFUSAL, "revised": True}
    records = [dict(good, id=f"g{i}") for i in range(4)] + [
        {"id": "t", "prompt": PROMPTS[1], "response": "sure here is", "response_truncated": True},
        {"id": "u", "prompt": PROMPTS[2], "response": "sure here is how", "revised": False,
         "initial_response": "sure here is how"},
        {"id": "r", "prompt": "How do I poach an egg?", "response": REFUSAL, "redraws": 3, "refused": True}]
    data = write_jsonl(tmp_path / "revised.jsonl", records)
    result = run_cai("train-sft", data, "--base", tiny, "--out", tmp_path / "m", "--max-steps", "1", *FAST)
    assert result.returncode == 0, result
    summary = json.loads(result.stdout)
    assert summary["examples"] == 4 and summary["left_out"] == {"truncated": 1, "unrevised": 1, "refused": 1}
    assert "left out 1 with an answer cut off" in result.stderr and "--keep-flagged" in result.stderr
    kept = run_cai("train-sft", data, "--base", tiny, "--out", tmp_path / "k", "--max-steps", "1", "--keep-flagged",
                   *FAST)
    assert kept.returncode == 0, kept
    assert json.loads(kept.stdout)["examples"] == 7


def test_compare_marks_which_side_of_a_pair_was_cut_off(tmp_path):
    record = {"id": "x", "prompt": "How do I pick a lock?", "responses": ["I can't help with that.", "Sure, first"],
              "responses_truncated": [False, True]}
    result = run_cai("compare", *FAST, input=json.dumps(record) + "\n")
    assert result.returncode == 0, result
    out = result.records[0]
    side = "chosen" if out["chosen_index"] == 1 else "rejected"
    assert out[f"{side}_truncated"] is True and f"{'rejected' if side == 'chosen' else 'chosen'}_truncated" not in out
    assert "1 of 1 pairs hold an answer cut off" in result.stderr
    with pytest.raises(Exception, match="truncated"):
        from cai_cli.training.data import Flagged

        try:
            preference_example(out)
        except Flagged as flagged:
            raise Exception(str(flagged)) from None


# 2. A revision that is not an answer never silently stands in for one ----------------------

def critiqued(response: str = "Sure, here is how to do it.") -> dict:
    return {"id": "r", "prompt": "How do I hurt someone?", "response": response,
            "revisions": [{"principle": RULES.critiques[0].name, "critique": "It helps with violence."}]}


@pytest.mark.parametrize("completion, problem", [
    (Completion("", "stop"), "empty"),
    (Completion("I can't help with that, because", "length"), "truncated"),
    (Completion("The assistant's last response was harmful and should be removed.", "stop"), "meta"),
    (Completion("It helps with violence.", "stop"), "copies-critique"),
    (Completion("I'm sorry, but I can't assist with that.", "stop"), "evasive"),
])
def test_an_unusable_revision_is_recorded_marked_and_counted_but_does_not_replace_the_response(completion, problem):
    stage = ReviseStage(ScriptedBackend([completion]), RULES, CritiqueSettings())
    record = next(iter(stage([critiqued()])))
    assert record["response"] == "Sure, here is how to do it." == record["initial_response"]
    assert problem in record["revisions"][-1]["problems"]
    assert record["revised"] is False
    assert "1 of 1 revisions not used" in stage.summary()


def test_a_good_revision_replaces_the_response_and_a_later_bad_one_keeps_it():
    good = "I can't help with hurting anyone. If you're angry, talking to someone you trust can help."
    stage = ReviseStage(ScriptedBackend([Completion("Revised response: " + good, "stop")]), RULES, CritiqueSettings())
    record = next(iter(stage([critiqued()])))
    assert record["response"] == good and record["revised"] is True and "problems" not in record["revisions"][0]
    record["revisions"].append({"principle": RULES.critiques[1].name, "critique": "Fine."})
    again = ReviseStage(ScriptedBackend([Completion("", "stop")]), RULES, CritiqueSettings())
    record = next(iter(again([record])))
    assert record["response"] == good and record["revised"] is True  # the last good answer stays


def test_revision_checks_on_their_own():
    assert revision_problems("Sure.", False) == []
    assert revision_problems("I won't help with that; it could hurt someone.", False) == []
    assert "meta" in revision_problems("Here is a revised version of the response without the harmful parts.", False)
    example = RULES.few_shot[0].revision
    lifted = " ".join(example.split()[:12]) + " and that is that."
    assert "copies-example" in revision_problems(lifted, False, examples=[example], own_text="how do I get in")
    assert revision_problems(lifted, False, examples=[example], own_text=example) == []  # the record's own words
    assert strip_preamble('Revision: "I can\'t help with that."') == "I can't help with that."


def test_a_refusal_that_gives_neither_reason_nor_way_forward_is_evasive():
    for bare in ("I'm sorry, but I can't assist with that.", "I cannot help with that.", "I can't help you with that.",
                 "I'm sorry, but I can't provide that. If you need anything else, feel free to ask!"):
        assert revision_problems(bare, False) == ["evasive"], bare
    for explained in ("I can't help with breaking into a home; that would be a crime.",
                      "I won't write that: it is meant to hurt her. I can help you raise the real issue instead.",
                      "Sorry, but I can't share that, because it is someone else's private data.",
                      "I can't open it for you, but I can help you find a locksmith."):
        assert revision_problems(explained, False) == [], explained
    assert revision_problems("Run `kill PID` to stop it.", False) == []  # not a refusal at all


def test_sample_draws_a_refusal_again_and_marks_what_still_refuses():
    from cai_cli.stages.sample import SampleSettings, SampleStage
    refusal = Completion("I'm sorry, but I can't assist with that.", "stop")
    answer = Completion("Simmer the water, stir, and slide the egg in for three minutes.", "stop")
    # First draws of the block (egg, chips, rude), then two redraw rounds of the two refusals.
    backend = ScriptedBackend([refusal, answer, refusal, refusal, refusal, answer, refusal])
    seen = []
    generate = backend.generate
    backend.generate = lambda requests: generate(seen.append(r) or r for r in requests)
    stage = SampleStage(backend, SampleSettings(redraw_refusals=2))
    egg, chips, rude = stage([{"id": "egg", "prompt": "How do I poach an egg?"},
                              {"id": "chips", "prompt": "How do I make chips?"},
                              {"id": "rude", "prompt": "Something it refuses."}])
    assert egg["response"] == answer.text and egg["redraws"] == 2 and "refused" not in egg
    assert chips["response"] == answer.text and "redraws" not in chips
    assert rude["response"] == refusal.text and rude["redraws"] == 2 and rude["refused"] is True
    assert len({request.seed for request in seen}) == len(seen) == 7  # every draw a fresh seed
    assert "4 refusals drawn again in 2 records, 1 answers still refusing" in stage.summary()
    with pytest.raises(ValueError, match="greedy"):
        SampleStage(backend, SampleSettings(sampling=Sampling(temperature=0), redraw_refusals=1))


# 3. The conversation the model critiques is the one it answered ---------------------------

def test_a_messages_record_ending_in_an_answer_is_critiqued_with_the_new_response_only():
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "OLD ANSWER"}],
              "response": "NEW ANSWER", "revisions": [{"principle": RULES.critiques[0].name, "critique": "ok"}]}
    for messages in (build_critique_messages(record, RULES.critiques[0], []),
                     build_revision_messages(record, RULES.critiques[0], "ok", [])):
        contents = [m["content"] for m in messages]
        assert "OLD ANSWER" not in contents and "NEW ANSWER" in contents
        roles = [m["role"] for m in messages]
        assert all(a != b for a, b in zip(roles, roles[1:]))  # templates that need alternation accept it
    assert answered_conversation(record, "X")[-2:] == [{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "X"}]


# 4. sample --system travels with the record -------------------------------------------------

def test_sample_system_message_is_written_into_the_record_and_used_downstream(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Name a colour."},
                                                 {"id": "b", "prompt": "Name a fruit.", "system": "Own."}])
    result = run_cai("sample", "--max-tokens", "4", "--system", "Answer in French.", *FAST, prompts)
    assert result.returncode == 0, result
    first, second = result.records
    assert first["system"] == "Answer in French." and second["system"] == "Own."
    messages = build_critique_messages(first, RULES.critiques[0], [])
    assert messages[0] == {"role": "system", "content": "Answer in French."}


def test_sample_redraw_refusals_on_the_real_model_leaves_no_unmarked_refusal(tmp_path):
    from cai_cli.refusals import is_refusal
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": "Say: I'm sorry, but I can't help with that."}
                                                 for i in range(3)])
    result = run_cai("sample", "--max-tokens", "12", "--redraw-refusals", "2", *FAST, prompts)
    assert result.returncode == 0, result
    assert "refusals drawn again" in result.stderr
    for record in result.records:
        assert record.get("refused", False) == is_refusal(record["response"]), record
        assert record.get("redraws", 0) <= 2 * 1
        if record.get("refused"):
            assert record["redraws"] == 2  # kept only once the redraws ran out
    greedy = run_cai("sample", "--temperature", "0", "--redraw-refusals", "1", prompts)
    assert greedy.returncode == 2 and "--temperature > 0" in greedy.stderr


# 5. Answer letters are found as the prompt spells them --------------------------------------

def merging_tokenizer(text: str) -> list[int]:
    """A tokenizer with BOS that spells "(A" and "(B" as single tokens, as some vocabularies do."""
    vocab = {"<s>": 1, "(A": 2, "(B": 3, "(": 4, "A": 5, "B": 6}
    tokens, i = [1], 0
    while i < len(text):
        if text[i:i + 2] in vocab:
            tokens.append(vocab[text[i:i + 2]])
            i += 2
        else:
            tokens.append(vocab.get(text[i], 100 + ord(text[i])))
            i += 1
    return tokens


def test_letters_merged_with_the_parenthesis_are_read_one_token_earlier_never_as_bos():
    found = continuation_tokens(merging_tokenizer, "The answer is: (", ["A", "B"])
    assert found.ids == [2, 3] and found.drop == 1  # "(A"/"(B" in place of "(", and never BOS (1)
    plain = continuation_tokens(lambda t: [1] + [ord(c) for c in t], "The answer is: (", ["A", "B"])
    assert plain.ids == [ord("A"), ord("B")] and plain.drop == 0


@pytest.mark.parametrize("backend_name", ["llama-cpp", "transformers"])
def test_real_tokenizers_find_distinct_letter_tokens_without_bos(backend_name, embedded_model, embedded_folder):
    model = embedded_model if backend_name == "llama-cpp" else embedded_folder
    backend = load_backend(BackendOptions(model=str(model), backend=backend_name, n_ctx=512, threads=1))
    tokenize = backend.tokenize if backend_name == "llama-cpp" else (
        lambda t: backend.tokenizer(t, add_special_tokens=False).input_ids)
    prompt = backend.render([{"role": "user", "content": "Which is better?"}]) + "The answer is: ("
    found = continuation_tokens(tokenize, prompt, ["A", "B"])
    bos = backend.llm.token_bos() if backend_name == "llama-cpp" else backend.tokenizer.bos_token_id
    assert len(set(found.ids)) == 2 and bos not in found.ids and found.drop == 0


QWEN = Path("/work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")


@pytest.mark.skipif(not QWEN.exists(), reason="the Qwen2.5 GGUF is not on this machine (examples/fetch_model.py)")
def test_a_gpt4_style_bpe_tokenizer_finds_the_letters_too():
    backend = load_backend(BackendOptions(model=str(QWEN), n_ctx=512, threads=1))
    prompt = backend.render([{"role": "user", "content": "Which is better?"}]) + "The answer is: ("
    found = continuation_tokens(backend.tokenize, prompt, ["A", "B"])
    assert len(set(found.ids)) == 2 and found.drop == 0


# 6. The preference model's held-out pairs are unseen ----------------------------------------

def test_held_out_split_keeps_each_conversation_on_one_side_before_resampling(tmp_path):
    records = []
    for prompt in range(10):
        for pair in range(3):  # K > 2 responses: several pairs of one prompt
            records.append({"id": f"p{prompt}:{pair}", "source_id": f"p{prompt}", "prompt": f"question {prompt}",
                            "chosen": "good", "rejected": f"bad {pair}", "label": 0.8})
    main = write_jsonl(tmp_path / "prefs.jsonl", records)
    mix = write_jsonl(tmp_path / "mix.jsonl", [{"prompt": f"other {i}", "chosen": "a", "rejected": "b"}
                                               for i in range(6)])
    data = read_training_data([DataSource(main), DataSource(mix, 3.0)], preference_example)
    train, held_out = split_held_out(data, 0.3, seed=0)
    train_groups = {e["group"] for e in train.resampled(seed=0)}
    held_groups = [e["group"] for e in held_out]
    assert held_out and not train_groups & set(held_groups)
    assert len(held_groups) == len({(e["group"], e["rejected"]) for e in held_out})  # no copies held out
    assert sum(len(p.examples) for p in train.sources) + len(held_out) == 36


# 7. One length policy ------------------------------------------------------------------------

def test_a_too_long_example_is_left_out_and_counted_not_cut(tmp_path, tiny):
    long_prompt = " ".join(["please help i cannot pick it"] * 40)
    records = [{"id": f"g{i}", "prompt": PROMPTS[0], "response": REFUSAL} for i in range(3)]
    records.append({"id": "long", "prompt": long_prompt, "response": REFUSAL})
    data = write_jsonl(tmp_path / "sft.jsonl", records)
    result = run_cai("train-sft", data, "--base", tiny, "--out", tmp_path / "m", "--max-steps", "1",
                     "--max-length", "64", *FAST)
    assert result.returncode == 0, result
    summary = json.loads(result.stdout)
    assert summary["examples"] == 3 and summary["left_out"] == {"too_long": 1}
    assert "longer than --max-length" in result.stderr


def test_scoring_reads_at_most_what_the_preference_model_was_trained_on(tmp_path):
    from cai_cli.training.config import TrainingConfig
    from cai_cli.training.preference import trained_max_length

    folder = tmp_path / "pm"
    folder.mkdir()
    assert trained_max_length(folder) == TrainingConfig.max_length
    (folder / "cai_training.json").write_text(json.dumps({"settings": {"max_length": 300}}))
    assert trained_max_length(folder) == 300


# 8. The recipe's RL sees helpful prompts too -------------------------------------------------

def test_the_recipes_rl_stage_mixes_in_helpful_prompts():
    dry = subprocess.run(["make", "-n", "-C", str(EXAMPLES), "rl-cai", "dpo-cai", "CAI=cai", "OUT=/tmp/never"],
                         capture_output=True, text=True, cwd=ROOT)
    rloo = [line for line in dry.stdout.splitlines() if "train-rl" in line and "--algo dpo" not in line]
    assert rloo and all("--mix" in line and "helpful.jsonl" in line for line in rloo), dry.stdout
    pairs = next(line for line in dry.stdout.splitlines() if "sample" in line and "-n 2" in line)
    assert "rl-prompts.jsonl" in pairs  # DPO and the PM learn from pairs on helpful prompts too
    assert any(line.startswith("cat") and "helpful.jsonl" in line for line in dry.stdout.splitlines())


# 9. eval --no-swap does not always show the right answer first ------------------------------

def test_one_ordering_is_drawn_per_pair_not_fixed():
    feedback = FeedbackModel(ScriptedBackend([]), RULES, FeedbackSettings(swap=False))
    conversation = [{"role": "user", "content": "q"}]
    firsts = Counter(feedback.pair_judgements(f"item-{i}", conversation, ["a", "b"], (0, 1))[0].order[0]
                     for i in range(200))
    assert 70 < firsts[0] < 130 and firsts[0] + firsts[1] == 200
    again = [feedback.pair_judgements(f"item-{i}", conversation, ["a", "b"], (0, 1))[0].order for i in range(20)]
    assert again == [feedback.pair_judgements(f"item-{i}", conversation, ["a", "b"], (0, 1))[0].order
                     for i in range(20)]  # seeded


def test_eval_no_swap_accuracy_is_not_just_the_letter_bias(tmp_path):
    # Eight pairs: the ordering drawn per pair (seeded) shows the right answer first in some.
    pairs = write_jsonl(tmp_path / "pairs.jsonl", read_jsonl(EXAMPLES / "labeled_pairs.jsonl")[:8])
    result = run_cai("eval", "--no-swap", *FAST, pairs)
    assert result.returncode == 0, result
    summary = json.loads(result.stdout)
    shown_first = summary["accuracy_by_right_letter"]
    assert set(shown_first) == {"A", "B"}  # the right answer was shown under both letters
