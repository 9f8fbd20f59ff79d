"""ONNX Runtime backend (CPU): FP32 optimized graph, FP16 conversion, INT8 static QDQ quantization."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("entropy", "minmax", "percentile")


def version() -> str:
    """ONNX Runtime's version."""
    import onnxruntime

    return onnxruntime.__version__


def session_options(threads: int, optimized_model_path: str | None = None, level: str = "all"):
    """SessionOptions with explicit, recorded thread counts (0 = let ORT use all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.graph_optimization_level = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if optimized_model_path:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


class OrtRunner:
    """A CPU InferenceSession behind the backend Runner protocol."""

    def __init__(self, engine_path: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(engine_path), session_options(threads), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]
        self.threads = threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class scores for one float32 NHWC batch."""
        return self.session.run(self.output_names, {self.input_name: batch})[0]

    def close(self) -> None:
        """Release the session."""
        self.session = None


def load_runner(engine_path: str | Path, threads: int = 0) -> OrtRunner:
    """Load an engine built by this backend."""
    return OrtRunner(engine_path, threads)


def _build_fp32(onnx_path: Path, out: Path) -> None:
    # ORT writes the graph after its portable (extended) optimizations; level 'all' adds
    # hardware-specific layouts and is applied again at load time anyway.
    import onnxruntime as ort

    ort.InferenceSession(str(onnx_path), session_options(0, str(out), level="extended"), providers=["CPUExecutionProvider"])


def _build_fp16(onnx_path: Path, out: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(onnx_path))
    # Inputs and outputs stay float32 so that every precision takes the same batches.
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(out))


class _BatchReader:
    """CalibrationDataReader over an iterator of batches, one batch per get_next()."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]):
        self.input_name = input_name
        self.batches = batches

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def calibrate_ranges(model_path: Path, calibration_batches: Callable[[], Iterator[np.ndarray]], method: str,
                     percentile: float, symmetric: bool, work_dir: Path):
    """Run calibration one batch at a time (bounded memory) and return ORT's tensor ranges."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    extra = {"symmetric": symmetric}
    if method == "percentile":
        extra["percentile"] = percentile
    calibrator = create_calibrator(str(model_path), augmented_model_path=str(work_dir / "augmented.onnx"),
                                   calibrate_method=methods[method], extra_options=extra)
    seen = 0
    for batch in calibration_batches():
        # Feeding one batch per call keeps only one batch of activations in memory; the
        # histogram and min/max collectors merge across calls.
        calibrator.collect_data(_BatchReader(input_name, iter([batch])))
        seen += len(batch)
    if seen == 0:
        raise ConfigError("calibration received no images; check config key 'calibration.num_images'")
    return calibrator.compute_data(), seen


def quantizable_op_types(exclude_op_types=None) -> list[str] | None:
    """Op types quantize_static should quantize: all it knows (its own default) minus ``exclude_op_types``.

    None (ORT's default set) when nothing is excluded, so the default build is unchanged.
    """
    if not exclude_op_types:
        return None
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    excluded = set(exclude_op_types)
    return sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - excluded)


def _build_int8(onnx_path: Path, out: Path, calibration_batches, options: dict, calibration_dir: Path | None) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.quant_utils import write_calibration_table
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = options.get("method", "entropy")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"config key 'calibration.method' is {method!r}; use one of {CALIBRATION_METHODS}")
    symmetric = bool(options.get("symmetric_activations", False))
    facts: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgeptq-int8-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        prepared = tmp / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=False)
        started = time.perf_counter()
        ranges, seen = calibrate_ranges(prepared, calibration_batches, method, float(options.get("percentile", 99.999)),
                                        symmetric, tmp)
        facts["calibration_s"] = time.perf_counter() - started
        facts["calibration_images"] = seen
        cache = tmp / "ranges.json"
        save_tensors_data(ranges, cache)
        method_enum = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                       "percentile": CalibrationMethod.Percentile}[method]
        quantize_static(
            str(prepared), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            per_channel=bool(options.get("per_channel", True)),
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=method_enum,
            calibration_cache_path=str(cache), extra_options={"ActivationSymmetric": symmetric},
            # Mixed precision: op types and nodes named here stay float (no QDQ around them).
            op_types_to_quantize=quantizable_op_types(options.get("exclude_op_types")),
            nodes_to_exclude=list(options.get("exclude_nodes") or []) or None,
        )
        if calibration_dir is not None:
            table_dir = tmp / "table"
            table_dir.mkdir()
            # ORT logs the whole range table at INFO on the root logger; keep job logs readable.
            logging.disable(logging.INFO)
            try:
                # ORT collects the tensors in set order (string hashes differ per process): sort
                # them so the JSON table is byte-identical across runs (the .cache is sorted by ORT).
                write_calibration_table(dict(sorted(ranges.data.items())), dir=str(table_dir))
            finally:
                logging.disable(logging.NOTSET)
            facts["calibration_json_text"] = (table_dir / "calibration.json").read_text()
            facts["calibration_cache_text"] = (table_dir / "calibration.cache").read_text()
    return facts


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str,
                 calibration_batches: Callable[[], Iterator[np.ndarray]] | None = None,
                 options: dict | None = None, calibration_dir: str | Path | None = None) -> dict:
    """Build the ``precision`` engine of ``onnx_path`` into ``engine_path``; return build facts.

    For int8 the returned dict also holds the calibration table texts (``calibration_json_text``,
    the per-tensor ranges; ``calibration_cache_text``, the TensorRT-readable form) for the caller to store.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    options = options or {}
    started = time.perf_counter()
    if precision == "fp32":
        _build_fp32(onnx_path, engine_path)
        facts = {}
    elif precision == "fp16":
        _build_fp16(onnx_path, engine_path)
        facts = {}
    elif precision == "int8":
        if calibration_batches is None:
            raise ConfigError("int8 needs calibration data; none was given")
        facts = _build_int8(onnx_path, engine_path, calibration_batches, options,
                            Path(calibration_dir) if calibration_dir else None)
    else:
        raise ConfigError(f"config key 'precisions' has {precision!r}; onnxruntime builds fp32, fp16 and int8")
    facts["build_s"] = time.perf_counter() - started
    facts["engine_bytes"] = engine_path.stat().st_size
    return facts


def count_ops(model_path: str | Path) -> dict[str, int]:
    """Operator histogram of an ONNX model (used to check INT8 models hold QDQ nodes)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
