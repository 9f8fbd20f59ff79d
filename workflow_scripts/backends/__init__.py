"""Inference backends. What each one is (suffix, source format, precisions, environment, extra)
lives in :mod:`workflow_scripts.core.registry`; this package holds their modules.

Every backend module offers the same calls:

- ``version()``: the runtime's version;
- ``build_engine(source_path, engine_path, precision, calibration_batches, options, calibration_dir)``
  writes one engine file for one precision and returns a dict of build facts; ``source_path`` is
  the artifact named by the registry entry's ``source`` (the ONNX export, or the Keras model);
- ``load_runner(engine_path, threads)`` returns a :class:`Runner`.

:func:`get_backend` hands out the module behind a thin wrapper whose ``load_runner`` first checks
the engine (:func:`workflow_scripts.backends.engine_check.check_engine`: present, non-empty, the digests its
build recorded) and turns a runtime's failure to load it into one clear error naming the file, the
cause and the command that rebuilds it (never a library traceback).

``calibration_batches`` is a zero-argument callable returning an iterator of float32 NHWC
batches in 0..255, produced by ``workflow_scripts.data.data_io.iter_batches``: the same code that
feeds evaluation, so calibration and evaluation can never disagree on layout or range, and every
backend calibrates on the same images.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from workflow_scripts.core import registry
from workflow_scripts.core.errors import BackendUnavailable


class Runner(Protocol):
    """A loaded engine: ``run`` takes a float32 NHWC batch in 0..255 and returns class scores."""

    input_name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def tensorrt_status() -> tuple[bool, str]:
    """Whether TensorRT can run here, and why not when it cannot."""
    return registry.BACKENDS["tensorrt"].available()


def resolve_backend(requested: str) -> str:
    """One backend for ``requested``: a name (checked to be available), or ``auto``: TensorRT where it
    can run, else ONNX Runtime. (The workflow itself takes a list: :func:`registry.resolve_backends`.)"""
    if requested != "auto":
        return registry.resolve_backends([requested])[0]
    return "tensorrt" if tensorrt_status()[0] else "onnxruntime"


class CheckedBackend:
    """A backend module whose ``load_runner`` checks the engine first; every other attribute is the module's."""

    def __init__(self, name: str, module):
        self.name = name
        self.module = module

    def __getattr__(self, attribute: str):
        return getattr(self.module, attribute)

    def check(self, engine_path) -> None:
        """:func:`~workflow_scripts.backends.engine_check.check_engine` alone (once per file version and process;
        a timed load after it only stats the files)."""
        from workflow_scripts.backends.engine_check import check_engine

        check_engine(self.name, engine_path)

    def load_runner(self, engine_path, threads: int = 0):
        """The module's runner for ``engine_path``, after :func:`~workflow_scripts.backends.engine_check.check_engine`."""
        from workflow_scripts.backends.engine_check import check_engine, load_error
        from workflow_scripts.core.errors import EdgePTQError

        check_engine(self.name, engine_path)
        try:
            return self.module.load_runner(engine_path, threads)
        except (EdgePTQError, MemoryError):
            raise
        except Exception as exc:  # each runtime raises its own kinds (RuntimeError, ValueError, Fail, ...)
            raise load_error(self.name, engine_path, exc) from exc


def get_backend(name: str) -> CheckedBackend:
    """Import the backend module ``name`` (heavy imports happen here, not at DAG time); its
    ``load_runner`` checks the engine first (:class:`CheckedBackend`)."""
    return CheckedBackend(name, registry.load(name))


__all__ = ["BackendUnavailable", "Runner", "get_backend", "resolve_backend", "tensorrt_status"]
