"""A restricted unpickler for the CIFAR-100 "python version" files.

Those files are Python 2 pickles of dicts with bytes keys, lists of ints and uint8 numpy
arrays. A pickle can name any importable callable and have it called; this unpickler resolves
only the few numpy globals that array reconstruction needs and refuses every other one before
anything is imported or called.
"""

from __future__ import annotations

import io
import pickle
from typing import BinaryIO

from workflow_scripts.core.errors import DatasetUnavailable


class UnsafePickleError(DatasetUnavailable, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (or is not a pickle at all)."""


def _reconstruct():
    # numpy >= 2 keeps the implementation in numpy._core; older numpy only has numpy.core.
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _resolve_allowed(module: str, name: str):
    """The object for an allowed (module, name), or None. Nothing named by the pickle is imported."""
    import numpy

    if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
        return _reconstruct()
    if (module, name) == ("numpy", "ndarray"):
        return numpy.ndarray
    if (module, name) == ("numpy", "dtype"):
        return numpy.dtype
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        obj = _resolve_allowed(module, name)
        if obj is None:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only numpy array reconstruction "
                f"(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) is allowed in dataset "
                f"pickles. The file is not an official CIFAR-100 file: delete the archive and download it again."
            )
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing to unpickle persistent id {pid!r}: dataset pickles have none")


def safe_load_pickle(fileobj: BinaryIO | bytes):
    """Unpickle ``fileobj`` (a binary file or bytes) with ``encoding='bytes'``, allowing only the
    numpy globals that array reconstruction needs; raises UnsafePickleError for anything else."""
    if isinstance(fileobj, (bytes, bytearray, memoryview)):
        fileobj = io.BytesIO(bytes(fileobj))
    try:
        return _RestrictedUnpickler(fileobj, encoding="bytes").load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        # Truncated or malformed data (no code runs: every global went through find_class).
        raise UnsafePickleError(f"cannot unpickle dataset file: it is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
