"""Lines a C library writes to file descriptor 2 (below Python's ``sys.stderr``), filtered by content.

TensorFlow's absl/oneDNN start-up notices and LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
are written by C++ code straight to fd 2, once per process or per interpreter; no logging level reaches
them. :class:`stderr_filtered` catches fd 2 inside a block and passes every other line on.
"""

from __future__ import annotations

import os
import sys


class stderr_filtered:
    """File descriptor 2 goes to a temporary file inside the block; on leaving, its lines go to stderr,
    those containing any of ``noise`` left out."""

    def __init__(self, noise):
        self.noise = tuple(noise)

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self.caught = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.caught.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.caught.seek(0)
        kept = [line for line in self.caught.read().splitlines(keepends=True)
                if not any(n.encode() in line for n in self.noise)]
        self.caught.close()
        if kept:
            os.write(2, b"".join(kept))
        return False
