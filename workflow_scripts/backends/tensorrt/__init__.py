"""TensorRT backend: ONNX -> TensorRT engine through Polygraphy's lazy loaders, and a runner.

Split along Polygraphy's own seams:

- :mod:`.options`: option defaults and bounds (read from config/schema.yaml's ``tensorrt``
  block), the TensorRT version policy and the planning-time check :func:`check_build_request`;
- :mod:`.availability`: :func:`is_available` (can this machine build?) and :func:`version`;
- :mod:`.calibrator`: the INT8 calibration data loader (re-chunked to the profile's optimum
  batch) and the calibration cache with its provenance JSON;
- :mod:`.loader`: the ``EngineBytesFromNetwork`` chain, DLA placement, timing cache policy and
  :func:`build_engine`;
- :mod:`.runner`: :func:`load_runner`, with ``run`` for latency samples (and evaluation batches
  of any size, split or padded to the engine's profile) and ``timed_infer`` for the
  H2D/compute/D2H breakdown;
- :mod:`.cudart`: finding ``libcudart`` for Polygraphy's CUDA wrapper (older Polygraphy versions
  do not search the ``nvidia-cuda-runtime-cu12`` wheel).

``tensorrt`` and ``polygraphy`` are imported inside functions only, so this package imports on a
CPU-only machine (and under Python 3.8, for JetPack 5) and :func:`is_available` can say why
TensorRT cannot run there.
"""

from __future__ import annotations

from workflow_scripts.backends.tensorrt.availability import bf16_support, import_tensorrt, is_available, probe, version
from workflow_scripts.backends.tensorrt.calibrator import CalibrationData, calibration_cache_is_valid, calibration_data_sha256, calibration_identity, calibration_metadata_path, file_sha256, make_calibrator, prepare_calibration_cache, read_calibration_metadata, write_calibration_metadata
from workflow_scripts.backends.tensorrt.cudart import import_cuda, prepare_cuda_runtime
from workflow_scripts.backends.tensorrt.loader import build_engine, dla_placement, input_layout, make_fp16_model, make_loader_chain, make_qdq_model, onnx_input_spec, profile_shapes, remove_stale_scratch, scratch_prefix
from workflow_scripts.backends.tensorrt.options import DEFAULTS, PRECISIONS, bf16_problem, SCHEMA_DEFAULTS, check_build_request, check_config_options, check_dla_core, normalize_options, parse_version, resolve_typing, supports_optimization_level, version_problem, versioned_timing_cache
from workflow_scripts.backends.tensorrt.runner import TensorRTRunner, TimedResult, load_runner, numpy_dtype

INT8_MODES = ("calibration", "qdq")

__all__ = [
    "CalibrationData", "DEFAULTS", "INT8_MODES", "PRECISIONS", "SCHEMA_DEFAULTS", "TensorRTRunner",
    "bf16_problem", "bf16_support",
    "TimedResult", "build_engine", "calibration_cache_is_valid", "calibration_data_sha256",
    "calibration_identity", "calibration_metadata_path", "check_build_request", "check_config_options",
    "check_dla_core", "dla_placement", "file_sha256", "import_cuda", "import_tensorrt", "input_layout",
    "is_available", "load_runner", "make_calibrator", "make_fp16_model", "make_loader_chain",
    "make_qdq_model", "normalize_options", "numpy_dtype", "onnx_input_spec", "parse_version", "probe",
    "prepare_calibration_cache", "prepare_cuda_runtime", "profile_shapes", "read_calibration_metadata",
    "remove_stale_scratch", "resolve_typing", "scratch_prefix", "supports_optimization_level",
    "version", "version_problem", "versioned_timing_cache", "write_calibration_metadata",
]
