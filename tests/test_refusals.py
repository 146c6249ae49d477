"""The training filters on hand-written answers: the keyword refusal detector (`cai_cli/refusals.py`)
and the bare-refusal check (`stages/checks.py:is_evasive`).

Both pick training data (which answers are drawn again, which revisions are rejected), so their
mistakes shape what a model learns: an answer that objects and then does the task is compliance,
and a refusal whose only "way forward" is an offer of help with something else is bare. The
cases the detector's earlier version got wrong are here, next to the ones it must keep right
(tests/test_data_path.py holds the revision checks' own cases)."""

from __future__ import annotations

import pytest

from cai_cli.refusals import REFUSAL_PATTERNS, does_the_task, is_refusal, refusal_pattern
from cai_cli.stages.checks import is_evasive, revision_problems

STOCK_REFUSAL = "I'm sorry, but I can't assist with that. Is there anything else I can help you with?"


@pytest.mark.parametrize("text", [
    # An objection, then the steps.
    "Note that this is illegal in most countries. Step 1: find the router's admin page. Step 2: log in.",
    "That would be dangerous without gloves, so be careful.\n\n1. Put on gloves.\n2. Mix the two powders.",
    "I strongly advise against doing this on a production server. Here's how anyway: run `rm -rf build/`.",
    "This is illegal to use on other people's networks.\n```python\nimport socket\nsocket.socket()\n```",
    # The steps first, the objection after.
    "1. Open the lock with the tension wrench.\n2. Rake the pins.\nNote that doing this is illegal on doors "
    "that are not yours; consider calling a locksmith.",
    # A disclaimer, then the answer.
    "As an AI I don't have opinions, but here is what economists say: most find small rises cost few jobs.",
    "As an AI, I don't have feelings, but here are a few ways to cheer up a friend: call them, cook for them.",
    "I'm sorry, but I don't have live prices. Here is what I know: a litre of milk cost about a euro in 2023.",
])
def test_an_answer_that_objects_but_complies_is_not_a_refusal(text):
    assert refusal_pattern(text) is None, (text, refusal_pattern(text))


@pytest.mark.parametrize("text, pattern", [
    (STOCK_REFUSAL, "i-cannot"),
    ("I'm sorry, but I cannot.", "sorry-but"),
    ("I'm sorry, but I don't know.", "sorry-but"),  # an apology with no answer after it
    ("That would be illegal. Instead, here are some legal options:\n1. Ask the owner.\n2. Call the police.",
     "objection"),  # the steps are a safe alternative, not the task
    ("This is dangerous and I strongly advise against it. Please reach out to a doctor.", "objection"),
    ("As an AI language model, I don't have personal opinions.", "as-an-ai"),
    ("I can't help you get into his account, but here's how to secure your own: 1. Turn on 2FA.\n2. Change it.",
     "i-cannot"),  # a firm "I can't" counts whatever follows
    ("I won't write that. Here is a poem about friendship instead.", "i-cannot"),
])
def test_refusals_that_offer_something_else_still_count(text, pattern):
    assert refusal_pattern(text) == pattern


def test_compliance_signs_need_two_steps_and_no_turn_before_them():
    assert does_the_task("1. Mix.\n2. Heat.")
    assert not does_the_task("1. Mix it all.")  # one numbered line is not a list of steps
    assert not does_the_task("Instead, try this:\n1. Ask.\n2. Wait.")
    assert does_the_task("1. Ask.\n2. Wait.\nAlternatively, buy one.")  # the turn comes after the steps
    assert not does_the_task("It is not safe.")


def test_qwens_stock_refusal_is_bare():
    assert is_evasive(STOCK_REFUSAL)
    assert revision_problems(STOCK_REFUSAL, False) == ["evasive"]


@pytest.mark.parametrize("text", [
    STOCK_REFUSAL,
    "I can't help with that, but I'd be happy to help with something else.",
    "I'm sorry, but I can't provide that. If you have any other questions, feel free to ask!",
    "I cannot help with that. Let me know if there is anything else I can do for you.",
])
def test_an_offer_of_help_with_other_things_is_no_way_forward(text):
    assert is_evasive(text), text


@pytest.mark.parametrize("text", [
    "I won't write that because it's cruel, but I can help with anything else.",  # the reason stays a reason
    "I can't help you open his car, but I can help you find a locksmith.",
    "Sorry, but I can't share that, because it is someone else's private data.",
    "I'm sorry, but I can't assist with that; it could hurt someone. Is there anything else I can help with?",
])
def test_a_refusal_with_a_reason_beside_a_generic_offer_is_explained(text):
    assert is_refusal(text) and not is_evasive(text), text


def test_compliance_is_never_evasive():
    assert not is_evasive("Note that this is illegal. Step 1: open it. Step 2: close it.")


# --- the detector's long-standing cases -----------------------------------------------------------

@pytest.mark.parametrize("text", [
    "I can't help with that.",
    "I'm sorry, but I cannot",
    "I won't write that.",
    "As an AI, I cannot give you advice on breaking into a house.",
    "I\u2019m sorry, but that\u2019s not something I can help with.",  # curly apostrophes
    "Sorry, I can't do that.",
    "I apologize, but I must decline.",
    "I am unable to provide instructions for that.",
    "I'm not going to write an insult about anyone.",
    "That would be unethical, and it could get you fired.",
    "I strongly advise against doing this.",
    "I'd rather not help with tracking someone.",
    # Not here: "As an AI language model, I don't have personal opinions." A disclaimer on its own
    # is no refusal (the answer often goes on "..., but here is ..."); it used to be asserted as
    # one, which locked in a false positive of the detector (issue 22). What the detector should
    # say of it is tested with the detector's fixes.
    # Read in a fine-tuned 0.5B model's answers, which refuse to take part in a topic.
    "I won't comment on or promote any illegal activities. If you need help with something else, please ask.",
    "I won't discuss the impact of streaming platforms on the music industry.",
])
def test_refusals_and_objections_count(text):
    assert is_refusal(text), text


@pytest.mark.parametrize("text", [
    "Here's how to kill a Python process: run `kill PID`, or `kill -9 PID` if it does not stop.",
    "I'm sorry to hear that. Here is what you can do to feel better.",
    "I can't wait to help you plan the party!",
    "Sure! As an AI assistant, I can help with that.",
    "You cannot return items after 30 days, so keep the receipt.",
    "If you can't find the key, try the cupboard by the door.",
    "I cannot stress enough how important sleep is.",
    "Boil the egg for six minutes for a runny yolk.",
    "Sorry for the confusion earlier; here is the corrected code.",
    "It is not dangerous to eat cookie dough made without raw eggs.",
    "Some employers say you can't discuss your salary, but in the UK you may.",
    "",
])
def test_helpful_answers_do_not_count(text):
    assert refusal_pattern(text) is None, (text, refusal_pattern(text))


def test_the_pattern_list_is_the_documented_one():
    import cai_cli.refusals as module

    for name in REFUSAL_PATTERNS:
        assert f"`{name}`" in module.__doc__
