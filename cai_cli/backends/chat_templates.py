"""Chat templates: a chat rendered through a model's own template, and template files.

Every backend renders a chat with the model's template, and the OpenAI backend does it locally,
from a copy of the served model's tokenizer, to score answer letters. The pieces they share live
here, so that no backend borrows from another:

- GGUF models (llama.cpp): the template in the file's metadata, or `--chat-format` (a
  llama-cpp-python format name such as chatml, or a Jinja template file), rendered by
  llama-cpp-python's `Jinja2ChatFormatter` (`make_chat_formatter`, `chat_formatter`); the
  rendered text tokenized as llama.cpp reads it (`tokenize_rendered`).
- Hugging Face tokenizers (transformers): the tokenizer's own template, or a Jinja file given with
  `--chat-format` (`read_template_file`), rendered by `apply_chat_template`
  (`render_with_tokenizer`).

Both libraries render in a sandboxed Jinja environment: a template that reaches for Python
objects fails there, and any failure of a template is one clean `Error:` line. llama_cpp and
transformers are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

from cai_cli.errors import CaiError


# GGUF models (llama.cpp) ----------------------------------------------------------------------


def tokenize_rendered(llm, text: str) -> list[int]:
    """Token ids of rendered chat text as llama.cpp reads it: the template spells out its own
    special tokens; BOS is added only where the model asks for it."""
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if llm.metadata.get("tokenizer.ggml.add_bos_token") == "true" and tokens[:1] != [llm.token_bos()]:
        tokens.insert(0, llm.token_bos())
    return tokens


def make_chat_formatter(llm, chat_format: str | None):
    """A function rendering messages to prompt text: the GGUF's own template, a
    llama-cpp-python format name, or a Jinja template file."""

    def token_text(token_id: int) -> str:
        return llm._model.token_get_text(token_id) if token_id >= 0 else ""

    return chat_formatter(chat_format, llm.metadata.get("tokenizer.chat_template"),
                          token_text(llm.token_bos()), token_text(llm.token_eos()))


def chat_formatter(chat_format: str | None, model_template: str | None, bos: str = "", eos: str = ""):
    """A function rendering messages to prompt text: `chat_format` (a Jinja template file or a
    llama-cpp-python format name) or else the model's own Jinja template, whose `bos_token` and
    `eos_token` are `bos` and `eos`."""
    from llama_cpp import llama_chat_format

    if chat_format and Path(chat_format).is_file():
        template = Path(chat_format).read_text(encoding="utf-8")
    elif chat_format:
        names = {chat_format.replace("-", "_"), chat_format.replace("-", "")}
        formatter = next((getattr(llama_chat_format, f"format_{n}") for n in names
                          if hasattr(llama_chat_format, f"format_{n}")), None)
        if formatter is None:
            known = sorted(n[len("format_"):] for n in dir(llama_chat_format) if n.startswith("format_"))
            raise CaiError(f"unknown --chat-format {chat_format!r}: give a Jinja template file or one of "
                           f"{', '.join(known)}")

        def render_named(messages, add_generation_prompt=True):
            # llama-cpp-python's named formats always end ready for the assistant's turn.
            return formatter(messages=messages).prompt

        return render_named
    else:
        template = model_template
        if not template:
            raise CaiError("this GGUF carries no chat template; give one with --chat-format "
                           "(a name such as chatml, or a Jinja template file)")
    formatters = {flag: llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                                              add_generation_prompt=flag)
                  for flag in (True, False)}

    def render(messages, add_generation_prompt=True):
        try:
            return formatters[add_generation_prompt](messages=messages).prompt
        except Exception as exc:  # a template error is the template's, whatever Jinja raised
            raise CaiError(f"the chat template failed to render: {exc}") from None

    return render


# Hugging Face tokenizers (transformers) --------------------------------------------------------


def read_template_file(spec: str) -> str:
    """The text of the Jinja template file that `--chat-format` names (a Hugging Face tokenizer
    takes no llama-cpp-python format names)."""
    path = Path(spec)
    if not path.is_file():
        raise CaiError(f"--chat-format for transformers must be a Jinja template file; {spec} is not a file")
    return path.read_text(encoding="utf-8")


def render_with_tokenizer(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The chat rendered by a Hugging Face tokenizer's template. transformers renders chat
    templates in a sandboxed Jinja environment; a template that reaches for Python objects raises
    a SecurityError there, shown as a clean Error."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # a template error is the template's, whatever Jinja raised
        raise CaiError(f"the chat template failed to render: {exc}") from None
