"""TensorRT backend: ONNX -> TensorRT engine through Polygraphy's lazy loaders, and a runner.

Split along Polygraphy's own seams:

- :mod:`.options`: option defaults and bounds (read from config/schema.yaml's ``tensorrt``
  block), the TensorRT version policy and the planning-time check :func:`check_build_request`;
- :mod:`.availability`: :func:`is_available` (can this machine build?) and :func:`version`;
- :mod:`.calibrator`: the INT8 calibration data loader (re-chunked to the profile's optimum
  batch) and the calibration cache with its provenance JSON;
- :mod:`.loader`: the ``EngineBytesFromNetwork`` chain, DLA placement, timing cache policy and
  :func:`build_engine`;
- :mod:`.runner`: :func:`load_runner`, with a bare ``run`` for latency samples and
  ``timed_infer`` for the H2D/compute/D2H breakdown.

``tensorrt`` and ``polygraphy`` are imported inside functions only, so this package imports on a
CPU-only machine (and under Python 3.8, for JetPack 5) and :func:`is_available` can say why
TensorRT cannot run there.
"""

from __future__ import annotations

from .availability import import_tensorrt, is_available, probe, version
from .calibrator import (
    CalibrationData,
    calibration_cache_is_valid,
    calibration_metadata_path,
    file_sha256,
    make_calibrator,
    prepare_calibration_cache,
    write_calibration_metadata,
)
from .loader import (
    build_engine,
    dla_placement,
    input_layout,
    make_fp16_model,
    make_loader_chain,
    make_qdq_model,
    onnx_input_spec,
    profile_shapes,
    remove_stale_scratch,
    scratch_prefix,
)
from .options import (
    DEFAULTS,
    PRECISIONS,
    SCHEMA_DEFAULTS,
    check_build_request,
    normalize_options,
    parse_version,
    resolve_typing,
    supports_optimization_level,
    version_problem,
    versioned_timing_cache,
)
from .runner import TensorRTRunner, TimedResult, load_runner, numpy_dtype

INT8_MODES = ("calibration", "qdq")

__all__ = [
    "CalibrationData", "DEFAULTS", "INT8_MODES", "PRECISIONS", "SCHEMA_DEFAULTS", "TensorRTRunner",
    "TimedResult", "build_engine", "calibration_cache_is_valid", "calibration_metadata_path",
    "check_build_request", "dla_placement", "file_sha256", "import_tensorrt", "input_layout",
    "is_available", "load_runner", "make_calibrator", "make_fp16_model", "make_loader_chain",
    "make_qdq_model", "normalize_options", "numpy_dtype", "onnx_input_spec", "parse_version", "probe",
    "prepare_calibration_cache", "profile_shapes", "remove_stale_scratch", "resolve_typing",
    "scratch_prefix", "supports_optimization_level", "version", "version_problem",
    "versioned_timing_cache", "write_calibration_metadata",
]
