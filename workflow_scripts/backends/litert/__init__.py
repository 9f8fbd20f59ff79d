"""LiteRT backend (CPU): Keras -> ``.tflite`` at FP32, FP16 (float16 weights) or full-integer INT8.

Conversion uses ``tf.lite.TFLiteConverter`` from the TensorFlow the workflow already installs; the
engines run in the LiteRT interpreter (``ai_edge_litert``) with its default XNNPACK delegate.

Unlike the ONNX-based backends, the source is the Keras model file (``.keras``), loaded in safe mode
by :func:`workflow_scripts.models.zoo.load_keras_model`: converting from Keras lets the TFLite converter
see the original graph instead of a second conversion of the ONNX export.

Inputs and outputs stay float32 at every precision (``inference_input_type`` /
``inference_output_type`` float32, the converter's default). The INT8 model therefore starts with one
QUANTIZE op (whose scale comes from the same calibration as every other tensor) and ends with one
DEQUANTIZE op; everything between is int8. This keeps one input contract for every backend and
precision (float32 NHWC in 0..255, as produced by ``workflow_scripts.data.data_io``), so evaluation and
latency feed every engine the same batches; the two boundary ops are measured as part of the engine.
On the digits data the input quantization is exact: 0..255 maps to int8 with scale 1 (see the facts
``input_quantization``).

FP16 models store float16 weights with DEQUANTIZE ops in front of their consumers. The XNNPACK CPU
delegate folds those into float32 weights when the interpreter is created, so FP16 *computes* in
float32 on CPU; it differs from FP32 by the rounding of the weights and by the file size (recorded as
``compute_precision`` in the build facts).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from workflow_scripts.core.errors import ConfigError
from workflow_scripts.core.stderr_filter import stderr_filtered

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = "tflite"
SOURCE_FORMAT = "keras"
# The converter's post-training quantizer records min/max of every tensor over the representative
# dataset; it has no entropy or percentile calibrator.
CALIBRATION_METHODS = ("minmax",)
DEFAULT_OPTIONS = {"method": "minmax", "per_channel": True}


def is_available() -> tuple[bool, str]:
    """(True, what was found) when the LiteRT interpreter and TensorFlow's converter are installed."""
    try:
        missing = [name for name in ("ai_edge_litert", "tensorflow") if importlib.util.find_spec(name) is None]
    except (ImportError, ValueError) as exc:  # a broken package must not break planning
        return False, f"looking for ai_edge_litert failed ({type(exc).__name__}: {exc})"
    if missing:
        return False, (
            f"the Python package(s) {', '.join(repr(m) for m in missing)} are not installed "
            "(pip install -e .[litert])"
        )
    return True, "ai_edge_litert (interpreter) and tensorflow (converter) are installed"


def version() -> str:
    """The LiteRT interpreter's version (the package ``ai-edge-litert``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("ai-edge-litert")
    except PackageNotFoundError:
        import ai_edge_litert

        return getattr(ai_edge_litert, "__version__", "unknown")


def resolve_threads(threads: int) -> int:
    """The interpreter's thread count: ``threads``, or every usable core for 0 (ONNX Runtime's meaning of 0)."""
    threads = int(threads)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0 (0 = every core); got {threads}")
    if threads == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return threads


# --- conversion ------------------------------------------------------------------------------


def _quiet_tensorflow() -> None:
    """Silence TensorFlow's and the MLIR converter's INFO/WARNING chatter (the build logs one summary line).

    ``TF_CPP_MIN_LOG_LEVEL`` only takes effect if set before TensorFlow's C++ runtime loads; in a
    process that imported TensorFlow already, the Python loggers are still quieted.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _converter(keras_path: Path):
    """A TFLiteConverter for the Keras model (dynamic batch, inference mode, weights frozen in).

    Keras 3 models have no TF-Keras save spec, so ``from_keras_model`` fails on them. The converter is
    given a concrete function of the model and no trackable object: it then freezes the function's
    variables into constants itself (``_freeze_concrete_function``). Given a trackable object it would
    instead round-trip through a SavedModel, whose weights stay resource variables that the converted
    model does not hold (FP32 then scores at chance and INT8 calibration fails with READ_VARIABLE).
    Freezing the function first, as this backend did before, gives the same bytes (every quickstart
    engine compared) but freezes twice: about 8% of a DenseNet169 build. The converter keeps a reference to
    the model, so its variables outlive the conversion's freezing.
    """
    _quiet_tensorflow()
    import tensorflow as tf

    from workflow_scripts.models.zoo import load_keras_model

    model = load_keras_model(keras_path)
    if len(model.inputs) != 1:
        raise ConfigError(f"{keras_path} has {len(model.inputs)} inputs; the LiteRT backend converts single-input models")
    shape = [None, *model.inputs[0].shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
    def serve(images):
        return model(images, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    converter.edgeptq_source = (model, serve)  # the variables' owner, alive until the converter is dropped
    return converter


def _one_image_samples(calibration_batches: Callable[[], Iterator[np.ndarray]], counter: dict):
    """Representative dataset: one image per sample, float32 NHWC in 0..255, counting images seen."""

    def samples():
        counter["images"] = 0
        for batch in calibration_batches():
            for image in np.asarray(batch, dtype=np.float32):
                counter["images"] += 1
                # The calibrator runs the float model sample by sample at the converted input
                # shape, which has batch 1.
                yield [image[None]]

    return samples


def op_histogram(model_path: str | Path) -> dict[str, int]:
    """Operator histogram of a ``.tflite`` file (read without delegates, so no op is hidden in one)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(model_path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # the only public-ish listing of a model's operators
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def compute_ops_dtypes(model_path: str | Path) -> dict[str, dict[str, int]]:
    """For each compute op (convolutions, fully connected), how many take int8, float16 or float32 inputs.

    The input activation's type is what the kernel computes in; used to check that an INT8 model
    really runs its convolutions in int8.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(model_path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    result: dict[str, dict[str, int]] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        dtype = np.dtype(tensors[op["inputs"][0]]["dtype"]).name
        per_op = result.setdefault(op["op_name"], {})
        per_op[dtype] = per_op.get(dtype, 0) + 1
    return result


def _io_facts(model_content: bytes) -> dict:
    """Input/output types and the input's quantization, read from the converted flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_content,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = interpreter.get_tensor_details()
    first_in = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    facts = {"input_dtype": np.dtype(first_in["dtype"]).name, "output_dtype": np.dtype(out["dtype"]).name,
             "int8_tensors": sum(1 for t in tensors if np.dtype(t["dtype"]) == np.int8),
             "float16_tensors": sum(1 for t in tensors if np.dtype(t["dtype"]) == np.float16),
             "float32_tensors": sum(1 for t in tensors if np.dtype(t["dtype"]) == np.float32)}
    # The tensor the float input is quantized into (the QUANTIZE op's output) tells how the 0..255 range maps.
    for op in interpreter._get_ops_details():
        if op["op_name"] == "QUANTIZE" and first_in["index"] in list(op["inputs"]):
            detail = next(t for t in tensors if t["index"] == op["outputs"][0])
            scale, zero_point = detail["quantization"]
            facts["input_quantization"] = f"int8 scale {scale:.6g} zero point {zero_point}"
            break
    return facts


def build_engine(source_path: str | Path, engine_path: str | Path, precision: str,
                 calibration_batches: Callable[[], Iterator[np.ndarray]] | None = None,
                 options: dict | None = None, calibration_dir: str | Path | None = None) -> dict:
    """Convert the Keras model ``source_path`` (.keras) into the ``precision`` ``.tflite`` at ``engine_path``.

    Options read (all optional): ``method`` (only ``minmax``: the converter's calibration),
    ``per_channel`` (default true: per-output-channel int8 weights of convolutions). ``calibration_dir``
    is unused: the converter keeps no calibration table apart from the model, whose tensors carry
    the scales. Returns build facts (scalars, JSON-serializable).
    """
    source_path, engine_path = Path(source_path), Path(engine_path)
    options = {**DEFAULT_OPTIONS, **(options or {})}
    if precision not in PRECISIONS:
        raise ConfigError(f"config key 'precisions' has {precision!r}; litert builds {', '.join(PRECISIONS)}")
    if source_path.suffix != ".keras":
        raise ConfigError(f"the litert backend converts a Keras model (.keras); got {source_path}")
    if precision == "int8":
        method = options.get("method") or "minmax"
        if method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"config key 'calibration.method' is {method!r}, which backend 'litert' cannot do: the TFLite "
                f"converter calibrates with min/max only; set calibration.method to 'minmax'"
            )
        if calibration_batches is None:
            raise ConfigError("int8 needs calibration data; none was given")
    started = time.perf_counter()
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    content, facts = _convert(source_path, precision, calibration_batches, options)
    facts.update(_io_facts(content))
    tmp = engine_path.with_name(f".tmp-{os.getpid()}-{engine_path.name}")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, engine_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    facts["build_s"] = time.perf_counter() - started
    facts["engine_bytes"] = engine_path.stat().st_size
    log.info("litert %s: %s -> %s, %.1f MB, %.1f s%s", precision, source_path.name, engine_path.name,
             facts["engine_bytes"] / 1e6, facts["build_s"],
             f", {facts['calibration_images']} calibration images" if precision == "int8" else "")
    return facts


def _convert(source_path: Path, precision: str, calibration_batches, options: dict) -> tuple[bytes, dict]:
    """The converted flatbuffer and the conversion's facts."""
    converter = _converter(source_path)
    import tensorflow as tf

    facts: dict = {"source_format": SOURCE_FORMAT, "converter": f"tf.lite.TFLiteConverter (TensorFlow {tf.__version__})",
                   "weights_dtype": {"fp32": "float32", "fp16": "float16", "int8": "int8"}[precision],
                   "compute_precision": {"fp32": "float32", "fp16": "float32 (XNNPACK dequantizes float16 weights at load)",
                                         "int8": "int8"}[precision],
                   "io_dtype": "float32"}
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        counter: dict = {"images": 0}
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _one_image_samples(calibration_batches, counter)
        # Full integer: conversion fails rather than leaving a float op behind.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
        per_channel = bool(options.get("per_channel", True))
        # The converter's only switch for per-tensor weights is this experimental attribute.
        converter._experimental_disable_per_channel = not per_channel
        facts.update(calibration_method="minmax", per_channel=per_channel, activations="int8 asymmetric",
                     weights="int8 symmetric")
    converted_started = time.perf_counter()
    content = converter.convert()
    facts["convert_s"] = time.perf_counter() - converted_started
    if precision == "int8":
        facts["calibration_images"] = counter["images"]
        if counter["images"] == 0:
            raise ConfigError("calibration received no images; check config key 'calibration.num_images'")
    return content, facts


# --- running ---------------------------------------------------------------------------------


# LiteRT's C++ code prints this to fd 2 whenever an interpreter applies its default delegate (every
# latency round, every evaluation); the delegate in use is recorded in the row (``facts["delegate"]``).
XNNPACK_NOTICE = ("Created TensorFlow Lite XNNPACK delegate for CPU",)


class LiteRTRunner:
    """A LiteRT interpreter (XNNPACK delegate, explicit thread count) behind the Runner protocol."""

    def __init__(self, engine_path: str | Path, threads: int = 0):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.threads = resolve_threads(threads)
        # BUILTIN is the resolver that applies the default delegates, i.e. XNNPACK on CPU.
        with stderr_filtered(XNNPACK_NOTICE):
            self.interpreter = Interpreter(model_path=str(engine_path), num_threads=self.threads,
                                           experimental_op_resolver_type=OpResolverType.BUILTIN)
        details = self.interpreter.get_input_details()[0]
        self.input_index = details["index"]
        self.input_name = details["name"]
        self.input_dtype = np.dtype(details["dtype"])
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch_size: int | None = None
        self.facts = {"threads": self.threads, "delegate": "XNNPACK (default)", "input_dtype": self.input_dtype.name}

    def _ensure_batch(self, batch_size: int) -> None:
        if batch_size != self.batch_size:
            shape = list(self.interpreter.get_input_details()[0]["shape"])
            shape[0] = batch_size
            self.interpreter.resize_tensor_input(self.input_index, shape, strict=True)
            with stderr_filtered(XNNPACK_NOTICE):  # once per batch size, in the warm-up
                self.interpreter.allocate_tensors()
            self.batch_size = batch_size

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class scores for one float32 NHWC batch in 0..255."""
        self._ensure_batch(len(batch))
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(batch, dtype=self.input_dtype))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def close(self) -> None:
        """Release the interpreter."""
        self.interpreter = None


def load_runner(engine_path: str | Path, threads: int = 0) -> LiteRTRunner:
    """Load a ``.tflite`` engine built by this backend."""
    return LiteRTRunner(engine_path, threads)
