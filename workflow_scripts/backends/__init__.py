"""Inference backends: ONNX Runtime on CPU, TensorRT (via Polygraphy) on NVIDIA GPUs.

Every backend offers the same two calls:

- ``build_engine(onnx_path, engine_path, precision, calibration_batches, options, calibration_dir)``
  writes one engine file for one precision and returns a dict of build facts;
- ``load_runner(engine_path, threads)`` returns a :class:`Runner`.

``calibration_batches`` is a zero-argument callable returning an iterator of float32 NHWC
batches in 0..255, produced by ``workflow_scripts.data_io.iter_batches``: the same code that
feeds evaluation, so calibration and evaluation can never disagree on layout or range.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Protocol

import numpy as np

from ..errors import BackendUnavailable, ConfigError

BACKENDS = ("onnxruntime", "tensorrt")
ENGINE_SUFFIX = {"onnxruntime": "onnx", "tensorrt": "engine"}
PRECISIONS = {"onnxruntime": ("fp32", "fp16", "int8"), "tensorrt": ("fp32", "fp16", "int8")}


class Runner(Protocol):
    """A loaded engine: ``run`` takes a float32 NHWC batch in 0..255 and returns class scores."""

    input_name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def tensorrt_status() -> tuple[bool, str]:
    """Whether TensorRT can run here, and why not when it cannot."""
    from . import tensorrt as trt_backend

    return trt_backend.is_available()


def resolve_backend(requested: str) -> str:
    """Map the config's ``backend`` (auto, onnxruntime, tensorrt) to the backend that will run."""
    if requested not in ("auto",) + BACKENDS:
        raise ConfigError(
            f"config key 'backend' is {requested!r}; use one of auto, onnxruntime, tensorrt"
        )
    if requested == "onnxruntime":
        return requested
    available, reason = tensorrt_status()
    if requested == "tensorrt":
        if not available:
            raise BackendUnavailable(
                f"config key 'backend' asks for tensorrt, but {reason}. "
                "Install TensorRT on a machine with an NVIDIA GPU (see README, 'TensorRT backend'), "
                "or run with --config backend=onnxruntime"
            )
        return requested
    return "tensorrt" if available else "onnxruntime"


def check_precisions(backend: str, precisions: list[str]) -> None:
    """Fail early, naming the config key, when a backend cannot build a requested precision."""
    allowed = PRECISIONS[backend]
    bad = [p for p in precisions if p not in allowed]
    if bad:
        raise ConfigError(
            f"config key 'precisions' has {bad} which backend {backend!r} cannot build; "
            f"use a subset of {list(allowed)}"
        )


# INT8 calibration methods each backend implements. ONNX Runtime has entropy (KL), min-max and
# percentile calibrators. TensorRT's implicit calibrators are entropy (IInt8EntropyCalibrator2) and
# min-max (IInt8MinMaxCalibrator), with no percentile one; this workflow's TensorRT backend wires
# only IInt8EntropyCalibrator2, so any other method would be silently replaced by entropy.
CALIBRATION_METHODS = {"onnxruntime": ("entropy", "minmax", "percentile"), "tensorrt": ("entropy",)}


def check_backend_options(backend: str, config: dict) -> None:
    """Fail at planning time when ``backend`` cannot do what ``config`` asks (precisions, calibration)."""
    check_precisions(backend, config["precisions"])
    calibration = config.get("calibration", {})
    method = calibration.get("method", "entropy")
    calibrates = "int8" in config["precisions"] and (
        backend != "tensorrt" or config.get("tensorrt", {}).get("int8_mode", "calibration") == "calibration"
    )
    allowed = CALIBRATION_METHODS[backend]
    if calibrates and method not in allowed:
        other = [b for b, methods in CALIBRATION_METHODS.items() if method in methods and b != backend]
        raise ConfigError(
            f"config key 'calibration.method' is {method!r}, which backend {backend!r} cannot do "
            f"(it calibrates INT8 with {', '.join(allowed)} only); set calibration.method to one of "
            f"{list(allowed)}" + (f", or use backend {other[0]!r}" if other else "")
        )


def get_backend(name: str):
    """Import and return the backend module ``name`` (heavy imports happen here, not at DAG time)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; use one of {BACKENDS}")
    module = {"onnxruntime": "onnxruntime_backend", "tensorrt": "tensorrt"}[name]
    return importlib.import_module(f"{__name__}.{module}")
