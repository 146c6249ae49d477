"""Opening a GGUF with llama-cpp-python, weight repacking decided for this CPU.

The llama.cpp backend loads its model here, the OpenAI backend a served model's tokenizer (vocab
only), and the server launcher sets its model's parameters here: a module of its own so that
none of them imports another for it. Whether to repack is `cai_cli/hardware.py`'s to say.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


def load_llama(path: Path | str, repack: bool | None = None, **kwargs):
    """`llama_cpp.Llama(path, **kwargs)` with weight repacking on or off (None: what `--repack
    auto` picks for this CPU). Every Llama that cai or its tests open goes through here, so none
    takes the repacked path on a CPU where it crashes."""
    import llama_cpp

    if repack is None:
        from cai_cli.hardware import use_weight_repacking

        repack = use_weight_repacking()
    with model_params_overridden(use_extra_bufts=repack):
        return llama_cpp.Llama(model_path=str(path), **kwargs)


@contextmanager
def model_params_overridden(**fields):
    """Let `Llama(...)` load its model with some `llama_model_params` fields set. llama-cpp-python
    builds those params from `llama_model_default_params()` and exposes no argument for fields
    such as `use_extra_bufts`, so the defaults it asks for are amended while it loads."""
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def amended():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    native.llama_model_default_params = amended
    try:
        yield
    finally:
        native.llama_model_default_params = original
