"""Blind labels: what a person says about two models' answers to one prompt."""

from __future__ import annotations

# The classes an answer is labeled with (by a person, or by `cai classify`), in this order.
ANSWER_CLASSES = ("complies", "complies-caveats", "explained-refusal", "bare-refusal", "off-topic")
