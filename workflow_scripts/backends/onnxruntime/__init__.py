"""ONNX Runtime backend (CPU): FP32 optimized graph, FP16 conversion, INT8 static QDQ quantization."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from workflow_scripts.core.errors import ConfigError
from workflow_scripts.backends.onnxruntime.fast_quantize import fast_quantize_static

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
# onnxruntime.int8_cpu_policy: detect the CPU (auto), or force the choice for a CPU with (vnni) or
# without (no_vnni) 8-bit dot-product instructions.
INT8_CPU_POLICIES = ("auto", "vnni", "no_vnni")
INT8_TYPES = ("uint8", "int8")
# /proc/cpuinfo flags of x86 8-bit dot products that accumulate u8 x s8 in 32 bits (no int16 saturation).
X86_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# ARM: SDOT/UDOT (asimddp) and the int8 matrix multiply (i8mm).
ARM_DOT_FLAGS = ("asimddp", "i8mm")


def read_cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU feature flags of the first processor in ``cpuinfo`` ("flags" on x86, "Features" on ARM); "" if unreadable."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return value.strip()
    return ""


def _arch(machine: str) -> str:
    machine = (machine or "").lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if machine.startswith(("aarch64", "arm64", "armv8", "arm")):
        return "arm"
    return "other"


def int8_cpu_policy(cpu_flags: str, machine: str, policy: str = "auto") -> dict:
    """The ONNX Runtime INT8 settings that fit a CPU, following ONNX Runtime's quantization guidance.

    On x86 ONNX Runtime computes U8S8 products with VPMADDUBSW where the CPU lacks VNNI: pairs of
    u8 x s8 products are summed into int16 with saturation (255 * 127 * 2 > 32767), which loses
    accuracy; 7-bit weights (``reduce_range``) keep the sum in range (255 * 64 * 2 < 32767). With
    AVX512-VNNI, AVX-VNNI or AMX the products accumulate in int32 and full-range weights are exact.
    ARM kernels widen before accumulating (and SDOT/UDOT, I8MM accumulate in int32): no saturation,
    so no range reduction. ``policy`` "vnni"/"no_vnni" force the x86 choice whatever the flags say.

    Returns ``reduce_range``, ``activation_type`` (for asymmetric activations; symmetric ones are
    int8), ``weight_type``, ``cpu_dot_product`` (the flag found, or "none"), ``policy`` and a
    ``reason``.
    """
    if policy not in INT8_CPU_POLICIES:
        raise ConfigError(f"config key 'onnxruntime.int8_cpu_policy' is {policy!r}; use one of {INT8_CPU_POLICIES}")
    flags = set((cpu_flags or "").lower().split())
    arch = _arch(machine)
    found = [f for f in (X86_DOT_FLAGS if arch == "x86" else ARM_DOT_FLAGS) if f in flags]
    base = {"activation_type": "uint8", "weight_type": "int8", "policy": policy,
            "cpu_dot_product": found[0] if found else "none"}
    if policy == "vnni" or (policy == "auto" and arch == "x86" and found):
        why = "forced by policy vnni" if policy == "vnni" else f"x86 CPU with {found[0]}"
        return {**base, "reduce_range": False,
                "reason": f"{why}: u8s8 products accumulate in int32, full 8-bit weights"}
    if policy == "no_vnni" or (policy == "auto" and arch == "x86"):
        why = "forced by policy no_vnni" if policy == "no_vnni" else "x86 CPU without VNNI/AMX"
        return {**base, "reduce_range": True,
                "reason": f"{why}: u8s8 pair sums saturate int16 (VPMADDUBSW), 7-bit weights (reduce_range)"}
    if arch == "arm":
        return {**base, "reduce_range": False,
                "reason": f"ARM CPU ({'dot product ' + found[0] if found else 'no dot product'}): "
                          "products widen before accumulating, full 8-bit weights"}
    return {**base, "reduce_range": False, "reason": f"{machine or 'unknown'} CPU: no known saturation, full 8-bit weights"}


def resolve_int8_settings(options: dict, cpu_flags: str | None = None, machine: str | None = None) -> dict:
    """The INT8 type settings one build uses: the CPU policy, overridden by explicit option keys.

    Option keys read: ``int8_cpu_policy`` (auto|vnni|no_vnni, default auto), ``reduce_range``
    (bool), ``activation_type`` and ``weight_type`` ("uint8"|"int8"), ``symmetric_activations``
    (bool: activations default to int8 when true). Explicit keys win over the policy.
    """
    import platform

    policy = int8_cpu_policy(read_cpu_flags() if cpu_flags is None else cpu_flags,
                             platform.machine() if machine is None else machine,
                             str(options.get("int8_cpu_policy") or "auto"))
    symmetric = bool(options.get("symmetric_activations", False))
    settings = {
        "reduce_range": bool(options["reduce_range"]) if options.get("reduce_range") is not None
        else policy["reduce_range"],
        "activation_type": options.get("activation_type") or ("int8" if symmetric else policy["activation_type"]),
        "weight_type": options.get("weight_type") or policy["weight_type"],
        "int8_cpu_policy": policy["policy"], "cpu_dot_product": policy["cpu_dot_product"],
        "reason": policy["reason"],
    }
    for key in ("activation_type", "weight_type"):
        if settings[key] not in INT8_TYPES:
            raise ConfigError(f"onnxruntime INT8 option {key!r} is {settings[key]!r}; use one of {INT8_TYPES}")
    if settings["activation_type"] == "int8" and settings["weight_type"] == "uint8":
        raise ConfigError("onnxruntime INT8 cannot combine int8 activations with uint8 weights (S8U8); "
                          "use weight_type int8, or activation_type uint8 (U8U8)")
    return settings


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


CALIBRATORS = ("edgeptq", "onnxruntime")


def calibrate_ranges(model_path: Path, calibration_batches: Callable[[], Iterator[np.ndarray]], method: str,
                     percentile: float, symmetric: bool, work_dir: Path):
    """ONNX Runtime's own calibrator, one batch at a time (bounded memory): its tensor ranges and the image count.

    The reference the fast calibrator (:mod:`workflow_scripts.backends.onnxruntime.calibrate`) is checked and timed against.
    """
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


def fast_ranges(model_path: Path, calibration_batches, method: str, percentile: float, symmetric: bool,
                statistics_path: str | Path | None = None, threads: int = 0):
    """Ranges from :mod:`workflow_scripts.backends.onnxruntime.calibrate`: measured now, or read from a saved statistics artifact."""
    from workflow_scripts.backends.onnxruntime import calibrate

    if statistics_path:
        stats = calibrate.load_statistics(statistics_path, model_path)
        if method != "minmax" and not stats.has_histograms:
            raise ConfigError(f"calibration statistics {statistics_path} hold no histograms; method {method} needs them")
    else:
        stats = calibrate.collect_statistics(model_path, calibration_batches, histograms=method != "minmax",
                                             threads=threads)
    ranges = calibrate.tensor_ranges(stats, method, percentile, symmetric)
    return calibrate.tensors_data(ranges, method), stats.images


def prepare_for_quantization(onnx_path: str | Path, out: str | Path) -> Path:
    """The pre-processed model quantize_static quantizes (symbolic shapes, ORT's basic optimizations)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(onnx_path), str(out), skip_symbolic_shape=False)
    return Path(out)


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

    method = options.get("method", "entropy")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"config key 'calibration.method' is {method!r}; use one of {CALIBRATION_METHODS}")
    symmetric = bool(options.get("symmetric_activations", False))
    types = resolve_int8_settings(options)
    log.info("INT8 types: reduce_range=%s activations %s weights %s (%s)", types["reduce_range"],
             types["activation_type"], types["weight_type"], types["reason"])
    facts: dict = {f"int8_{k}" if not k.startswith("int8_") else k: v for k, v in types.items()}
    calibrator = options.get("calibrator") or "edgeptq"
    if calibrator not in CALIBRATORS:
        raise ConfigError(f"onnxruntime option 'calibrator' is {calibrator!r}; use one of {CALIBRATORS}")
    percentile = float(options.get("percentile", 99.999))
    with tempfile.TemporaryDirectory(prefix="edgeptq-int8-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        # A pre-processed model (and statistics measured on it) may be shared by several builds.
        prepared = Path(options["prepared_model"]) if options.get("prepared_model") else \
            prepare_for_quantization(onnx_path, tmp / "prepared.onnx")
        facts["preprocess_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if calibrator == "onnxruntime":
            ranges, seen = calibrate_ranges(prepared, calibration_batches, method, percentile, symmetric, tmp)
        else:
            ranges, seen = fast_ranges(prepared, calibration_batches, method, percentile, symmetric,
                                       options.get("calibration_statistics"), int(options.get("calibration_threads", 0)))
        facts["calibration_s"] = time.perf_counter() - started
        facts["calibrator"] = calibrator
        facts["calibration_images"] = seen
        cache = tmp / "ranges.json"
        save_tensors_data(ranges, cache)
        method_enum = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                       "percentile": CalibrationMethod.Percentile}[method]
        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        started = time.perf_counter()
        with fast_quantize_static() if options.get("fast_rewrites", True) else contextlib.nullcontext():
            quantize_static(
                str(prepared), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                per_channel=bool(options.get("per_channel", True)), reduce_range=types["reduce_range"],
                activation_type=qtype[types["activation_type"]],
                weight_type=qtype[types["weight_type"]], calibrate_method=method_enum,
                calibration_cache_path=str(cache), extra_options={"ActivationSymmetric": symmetric},
                # Mixed precision: op types and nodes named here stay float (no QDQ around them).
                op_types_to_quantize=quantizable_op_types(options.get("exclude_op_types")),
                nodes_to_exclude=list(options.get("exclude_nodes") or []) or None,
            )
        facts["quantize_s"] = time.perf_counter() - started
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
