"""The one error policy: expected failures are `CaiError`s, printed as one `Error: ...` line."""

from __future__ import annotations

from rich.console import Console

# Everything meant for a person goes to stderr; stdout carries records and nothing else.
console = Console(stderr=True, highlight=False)


class CaiError(Exception):
    """An expected failure (bad input, missing model, ...): shown as `Error: <message>`, exit 1."""
