"""Keeping native libraries' writes to stderr out of the way.

llama.cpp writes its loading and context messages straight to file descriptor 2, below Python's
`sys.stderr`, so they can only be silenced there. A module of its own because the llama.cpp
backend, its batching engine, the OpenAI backend's tokenizer load and the server launcher all
need it, and none of them should import another for it.
"""

from __future__ import annotations

import os


class quiet_native_logs:
    """Silence llama.cpp's C-level writes to stderr (model loading, context warnings) unless
    --verbose: stdout must carry records only and stderr what a person needs."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def __enter__(self):
        if self.verbose:
            return self
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc_info):
        if not self.verbose:
            os.dup2(self._saved, 2)
            os.close(self._saved)
