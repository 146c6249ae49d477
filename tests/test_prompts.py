"""Prompt building and seeded draws: pure functions, no model."""

from __future__ import annotations

from collections import Counter

from cai_cli.constitution import load_constitution
from cai_cli.prompts import (build_critique_messages, build_revision_messages, clean_generation,
                             conversation_messages, derive_seed, draw_principle)

RULES = load_constitution()
RECORD = {"id": "r1", "prompt": "How do I pick a lock?", "response": "Here is how."}


def test_conversation_from_prompt_or_messages_with_system():
    assert conversation_messages({"prompt": "hi"}) == [{"role": "user", "content": "hi"}]
    assert conversation_messages({"prompt": "hi"}, system="be kind")[0] == {"role": "system", "content": "be kind"}
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert conversation_messages({"messages": messages}) == messages


def test_critique_messages_put_few_shot_before_the_conversation():
    principle = RULES.critiques[0]
    messages = build_critique_messages(RECORD, principle, RULES.few_shot)
    assert messages[-1] == {"role": "user", "content": principle.critique}
    assert messages[-3:-1] == [{"role": "user", "content": RECORD["prompt"]},
                               {"role": "assistant", "content": RECORD["response"]}]
    assert messages[0]["content"] == RULES.few_shot[0].prompt
    assert len(messages) == 6 * len(RULES.few_shot) + 3
    roles = [m["role"] for m in messages]
    assert all(a != b for a, b in zip(roles, roles[1:])), "turns must alternate"


def test_revision_messages_follow_the_critique_or_go_direct():
    principle = RULES.critiques[1]
    with_critique = build_revision_messages(RECORD, principle, "It helps burglary.", [])
    assert [m["role"] for m in with_critique] == ["user", "assistant", "user", "assistant", "user"]
    assert with_critique[3]["content"] == "It helps burglary." and with_critique[-1]["content"] == principle.revision
    direct = build_revision_messages(RECORD, principle, None, RULES.few_shot[:1])
    assert all(m["content"] != principle.critique for m in direct)
    assert len(direct) == 4 + 3


def test_principle_draws_are_seeded_per_record_and_round_and_cover_the_set():
    first = draw_principle(RULES.critiques, 0, "r1", 0)
    assert first == draw_principle(RULES.critiques, 0, "r1", 0)
    draws = Counter(draw_principle(RULES.critiques, 0, f"r{i}", 0).name for i in range(400))
    assert len(draws) == len(RULES.critiques)  # every principle gets drawn
    assert max(draws.values()) < 3 * 400 / len(RULES.critiques)  # and none dominates
    assert derive_seed(0, "a", 1) != derive_seed(1, "a", 1) != derive_seed(0, "a", 2)


def test_clean_generation_drops_an_echoed_label():
    assert clean_generation("  Critique: it is harmful. ", "Critique") == "it is harmful."
    assert clean_generation("Fine as is.", "Revision") == "Fine as is."
