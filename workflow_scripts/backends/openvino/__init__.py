"""OpenVINO backend (CPU): ONNX -> OpenVINO IR at FP32, FP16 (compressed weights) or INT8 (NNCF).

The engine is an IR pair: ``<name>.xml`` (the graph; this is ``engine_path``) and ``<name>.bin``
beside it (the weights). Both are written under temporary names, then the ``.bin`` is renamed into
place before the ``.xml``, so an ``.xml`` at its final name always has its weights beside it.
:func:`companion_paths` names the ``.bin`` of an engine and :func:`publish_engine` moves a finished
pair from a temporary ``.xml`` name to its final one (``.bin`` first), for callers that build under a
scratch name.

- FP32: the ONNX model read by OpenVINO's ONNX frontend, saved with ``compress_to_fp16=False``.
- FP16: the same, saved with ``compress_to_fp16=True`` (float16 weights in the ``.bin``).
- BF16: the FP32 IR (float32 weights, ``compress_to_fp16=False``) recording precision ``bf16``: IR files
  hold no bf16 weights, so what makes it a BF16 engine is its compilation with inference precision bf16
  (like FP16, whose f16 compute is likewise the compile-time hint). Where the CPU lacks BF16 arithmetic
  (``avx512_bf16``/``amx_bf16``; the plugin's OPTIMIZATION_CAPABILITIES has no BF16) the runner refuses
  it rather than let the plugin fall back to f32 under a bf16 label; planning refuses it earlier
  (``registry.precision_support``).
- INT8: ``nncf.quantize`` on the FP32 model with an ``nncf.Dataset`` over the calibration images
  (one image per item, ``subset_size`` = number of images), default preset (``performance``:
  symmetric int8 weights and activations), saved uncompressed.

What the CPU *executes* is decided when the engine is compiled, by ``INFERENCE_PRECISION_HINT``, not
by the IR's weight type: OpenVINO's CPU plugin defaults to bf16 on CPUs with AVX512-BF16/AMX and f16
on ARM, which would make an "FP32" engine compute in 16 bits. The runner therefore sets the hint
explicitly from the precision recorded in the IR's ``rt_info`` (see :func:`inference_precision`):
fp32 -> f32; fp16 -> f16 where the CPU reports FP16 arithmetic, else f32 (fp16 weights, f32 compute);
bf16 -> bf16 (refused where the CPU reports no BF16); int8 -> f32 for the layers NNCF left in float (quantized layers run in int8 whatever the hint).
The chosen hint and what the compiled model reports are in the runner's ``facts``.

Timing: each ``run`` records the runtime's own time of its ``infer()`` call (``InferRequest.latency``,
the clock OpenVINO's benchmark_app reports); :meth:`OpenVINORunner.runtime_latency_s` hands it to the
latency harness, which keeps the wall time around ``run`` beside it (``wall_*`` columns).

Telemetry: ``openvino.convert_model`` (the ovc Python tool) and NNCF send usage telemetry unless the
user opted out with ``opt_in_out --opt_out`` (a file under ``$HOME/intel``). This backend reads ONNX
with ``Core.read_model`` (the same ONNX frontend, no telemetry code) and imports/runs NNCF under
``CI=true`` / ``NNCF_CI=1`` (see :func:`_telemetry_off`), which both telemetry paths honour as
"declined"; nothing is written to ``$HOME``. Model caching stays off (no ``CACHE_DIR``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from workflow_scripts.core.errors import ConfigError, EdgePTQError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ENGINE_SUFFIX = "xml"
SOURCE_FORMAT = "onnx"
# NNCF estimates activation ranges from min/max statistics of the calibration images (its default
# range estimators); it has no entropy (KL) calibrator, and percentile would need other estimators.
CALIBRATION_METHODS = ("minmax",)
PRESETS = ("performance", "mixed")
DEFAULT_OPTIONS = {"method": "minmax", "per_channel": True, "preset": "performance", "fast_bias_correction": True}
PRECISION_KEY = ["edgeptq", "precision"]  # rt_info path where the build records the engine's precision


def is_available() -> tuple[bool, str]:
    """(True, what was found) when openvino and nncf are installed; cheap (no import)."""
    try:
        missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
    except (ImportError, ValueError) as exc:
        return False, f"looking for openvino failed ({type(exc).__name__}: {exc})"
    if missing:
        return False, (
            f"the Python package(s) {', '.join(repr(m) for m in missing)} are not installed "
            "(pip install -e .[openvino])"
        )
    return True, "openvino and nncf are installed"


def version() -> str:
    """OpenVINO's version (short form, e.g. 2026.4.1)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("openvino")
    except PackageNotFoundError:
        import openvino

        return openvino.__version__


def nncf_version() -> str:
    """NNCF's version, or '' when it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("nncf")
    except PackageNotFoundError:
        return ""


@contextlib.contextmanager
def _telemetry_off():
    """Environment under which openvino_telemetry (used by NNCF) declines to collect or write anything.

    ``openvino_telemetry`` treats ``CI=true`` as "declined" for tools that pass ``disable_in_ci``
    (NNCF and ovc do), and NNCF swaps in its no-op telemetry when ``NNCF_CI`` is set at import.
    Both are restored afterwards so nothing else in the process sees them.
    """
    saved = {key: os.environ.get(key) for key in ("CI", "NNCF_CI")}
    os.environ["CI"] = "true"
    os.environ["NNCF_CI"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def companion_paths(engine_path: str | Path) -> list[Path]:
    """Files that belong to the engine besides ``engine_path`` itself: the IR's ``.bin``."""
    return [Path(engine_path).with_suffix(".bin")]


def publish_engine(tmp_xml: str | Path, final_xml: str | Path) -> None:
    """Move a finished IR pair from ``tmp_xml`` (+ its .bin) to ``final_xml`` (+ its .bin), .bin first."""
    tmp_xml, final_xml = Path(tmp_xml), Path(final_xml)
    os.replace(tmp_xml.with_suffix(".bin"), final_xml.with_suffix(".bin"))
    os.replace(tmp_xml, final_xml)


def _save_pair(model, engine_path: Path, compress_to_fp16: bool) -> None:
    """save_model into a temporary folder beside ``engine_path``, then rename .bin, then .xml."""
    import openvino as ov

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    # Named after the final engine's stem (fp32, int8; a scratch name .tmp-<random>-fp32 gives fp32):
    # the next build of this engine removes one a killed build left behind
    # (engine.remove_stale_engine_scratch).
    stem = re.sub(r"^\.tmp-[^-]+-", "", engine_path.stem)
    with tempfile.TemporaryDirectory(prefix=f".tmp-ir-{stem}-", dir=engine_path.parent) as tmp_name:
        tmp_xml = Path(tmp_name) / "model.xml"
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        except RuntimeError as exc:  # a failed write reads 'basic_ios::clear: iostream error'
            raise write_error(engine_path.with_name(f"{stem}.xml"), Path(tmp_name), exc) from exc
        publish_engine(tmp_xml, engine_path)


class EngineWriteError(EdgePTQError):
    """OpenVINO could not write an IR (not for lack of space: that is DiskFull)."""


def write_error(engine_path: Path, tmp_dir: Path, exc: BaseException) -> EdgePTQError:
    """The error for a failed ``save_model``: DiskFull (naming the folder, what was written and what is
    free) when the disk holding the engine is (nearly) full, else the file, OpenVINO's message and the fix."""
    import shutil

    from workflow_scripts.core.artifacts import disk_full_error

    written = sum(p.stat().st_size for p in tmp_dir.glob("*") if p.is_file())
    free = shutil.disk_usage(engine_path.parent).free
    if free < max(written, 1 << 20):
        error = disk_full_error(engine_path)
        return type(error)(f"{error} (OpenVINO had written {written / 1e6:.1f} MB of {engine_path.name} and its "
                           f".bin when the disk filled; then rebuild it: snakemake --cores all -f {engine_path})")
    cause = " ".join(str(exc).split())[:300]
    return EngineWriteError(f"OpenVINO could not write {engine_path} and its .bin ({cause}); check that "
                            f"{engine_path.parent} is writable, then rebuild it: snakemake --cores all -f {engine_path}")


class _ImageDataset:
    """Re-iterable sequence of single images (1, H, W, 3) over the calibration batches, counting them."""

    def __init__(self, calibration_batches: Callable[[], Iterator[np.ndarray]]):
        self.calibration_batches = calibration_batches
        self.images = 0

    def __iter__(self):
        seen = 0
        for batch in self.calibration_batches():
            for image in np.asarray(batch, dtype=np.float32):
                seen += 1
                yield image[None]
        self.images = max(self.images, seen)


def _count_images(calibration_batches) -> int:
    return sum(len(batch) for batch in calibration_batches())


def _quantize(model, calibration_batches, options: dict) -> tuple[object, dict]:
    method = options.get("method") or "minmax"
    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"config key 'calibration.method' is {method!r}, which backend 'openvino' cannot do: NNCF calibrates "
            f"with min/max statistics; set calibration.method to 'minmax'"
        )
    preset_name = str(options.get("preset", "performance"))
    if preset_name not in PRESETS:
        raise ConfigError(f"openvino option 'preset' is {preset_name!r}; use one of {list(PRESETS)}")
    per_channel = bool(options.get("per_channel", True))
    fast_bias_correction = bool(options.get("fast_bias_correction", True))
    images = _count_images(calibration_batches)
    if images == 0:
        raise ConfigError("calibration received no images; check config key 'calibration.num_images'")
    with _telemetry_off():
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

        preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[preset_name]
        advanced = AdvancedQuantizationParameters(
            weights_quantization_params=QuantizationParameters(per_channel=per_channel))
        dataset = _ImageDataset(calibration_batches)
        started = time.perf_counter()
        # NNCF logs progress bars and INFO lines per statistic; the build logs one summary instead.
        nncf_logger = logging.getLogger("nncf")
        level = nncf_logger.level
        nncf_logger.setLevel(logging.WARNING)
        try:
            quantized = nncf.quantize(model, nncf.Dataset(dataset), preset=preset, subset_size=images,
                                      fast_bias_correction=fast_bias_correction,
                                      target_device=nncf.TargetDevice.CPU, advanced_parameters=advanced)
        finally:
            nncf_logger.setLevel(level)
    facts = {"calibration_s": time.perf_counter() - started, "calibration_images": images,
             "calibration_method": "minmax (NNCF default range estimators)", "nncf_version": nncf_version(),
             "preset": preset_name, "per_channel": per_channel, "fast_bias_correction": fast_bias_correction,
             "target_device": "CPU", "overflow_fix": advanced.overflow_fix.value if advanced.overflow_fix else "nncf default",
             "subset_size": images}
    return quantized, facts


def count_ops(model) -> dict[str, int]:
    """Operation-type histogram of an ov.Model (or of the IR at a path)."""
    if isinstance(model, (str, Path)):
        import openvino as ov

        model = ov.Core().read_model(str(model))
    counts: dict[str, int] = {}
    for op in model.get_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return dict(sorted(counts.items()))


def constant_types(model) -> dict[str, int]:
    """How many Constant nodes hold each element type (i8 weights show NNCF's compression)."""
    if isinstance(model, (str, Path)):
        import openvino as ov

        model = ov.Core().read_model(str(model))
    counts: dict[str, int] = {}
    for op in model.get_ops():
        if op.get_type_name() == "Constant":
            name = op.get_output_element_type(0).get_type_name()
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def build_engine(source_path: str | Path, engine_path: str | Path, precision: str,
                 calibration_batches: Callable[[], Iterator[np.ndarray]] | None = None,
                 options: dict | None = None, calibration_dir: str | Path | None = None) -> dict:
    """Convert the ONNX model ``source_path`` into the ``precision`` IR at ``engine_path`` (.xml, .bin beside).

    Options read (all optional): ``method`` (only ``minmax``), ``per_channel`` (default true),
    ``preset`` (``performance`` default, or ``mixed``: asymmetric activations), ``fast_bias_correction``
    (default true). ``calibration_dir`` is unused: the scales live in the IR's FakeQuantize nodes.
    Returns build facts (scalars, JSON-serializable).
    """
    source_path, engine_path = Path(source_path), Path(engine_path)
    options = {**DEFAULT_OPTIONS, **(options or {})}
    if precision not in PRECISIONS:
        raise ConfigError(f"config key 'precisions' has {precision!r}; openvino builds {', '.join(PRECISIONS)}")
    if engine_path.suffix != ".xml":
        raise ConfigError(f"an openvino engine is an IR .xml (with its .bin beside it); got {engine_path}")
    import openvino as ov

    started = time.perf_counter()
    # Core.read_model runs the same ONNX frontend as openvino.convert_model, without ovc's telemetry.
    model = ov.Core().read_model(str(source_path))
    facts: dict = {"source_format": SOURCE_FORMAT, "openvino_version": version(),
                   "weights_dtype": {"fp32": "f32", "fp16": "f16", "bf16": "f32", "int8": "i8"}[precision],
                   "compress_to_fp16": precision == "fp16", "io_dtype": "float32",
                   "inference_precision": {"bf16": "bf16"}.get(precision, "set by the runner")}
    if precision == "int8":
        if calibration_batches is None:
            raise ConfigError("int8 needs calibration data; none was given")
        model, quant_facts = _quantize(model, calibration_batches, options)
        facts.update(quant_facts)
        ops = count_ops(model)
        facts["fake_quantize_ops"] = ops.get("FakeQuantize", 0)
        facts["int8_constants"] = constant_types(model).get("i8", 0)
    model.set_rt_info(precision, PRECISION_KEY)
    _save_pair(model, engine_path, compress_to_fp16=precision == "fp16")
    facts["build_s"] = time.perf_counter() - started
    facts["engine_bytes"] = engine_path.stat().st_size + sum(p.stat().st_size for p in companion_paths(engine_path))
    facts["weights_bytes"] = companion_paths(engine_path)[0].stat().st_size
    log.info("openvino %s: %s -> %s (+.bin), %.1f MB, %.1f s%s", precision, source_path.name, engine_path.name,
             facts["engine_bytes"] / 1e6, facts["build_s"],
             f", NNCF {facts['preset']} preset, {facts['calibration_images']} calibration images"
             if precision == "int8" else "")
    return facts


# --- running ---------------------------------------------------------------------------------


def _text(value) -> str:
    """An rt_info value as text (``str()`` of an OVAny gives its class name, not its value)."""
    return value.astype(str) if hasattr(value, "astype") else str(value)


def inference_precision(engine_precision: str, capabilities: list[str]) -> str:
    """The INFERENCE_PRECISION_HINT for an engine of ``engine_precision`` on a CPU with ``capabilities``.

    fp32 -> f32 (never the plugin's bf16 default); fp16 -> f16 where the CPU reports FP16 arithmetic,
    else f32; bf16 -> bf16, refused (ConfigError naming the missing CPU flag) where the CPU reports no
    BF16, since the plugin would silently compute in f32; int8 -> f32 for the layers left in float
    (int8 layers run in int8 regardless).
    """
    if engine_precision == "fp16" and "FP16" in capabilities:
        return "f16"
    if engine_precision == "bf16":
        if "BF16" not in capabilities:
            from workflow_scripts.core.device import cpu_bf16_support

            _, why = cpu_bf16_support()
            raise ConfigError(f"this is a bf16 engine, but OpenVINO's CPU plugin reports no BF16 arithmetic here "
                              f"(OPTIMIZATION_CAPABILITIES: {' '.join(capabilities) or 'none'}): {why}")
        return "bf16"
    return "f32"


def _plain(value) -> str:
    """A property value as plain text: 'f32' for an element type, 'LATENCY' for an enum, else str()."""
    if hasattr(value, "to_string"):
        return value.to_string()
    if hasattr(value, "name") and not isinstance(value, str):
        return str(value.name)
    return str(value)


# Where compiled models are cached between loads in this process (None: no cache); set by compile_cache.
_CACHE_DIR: str | None = None


@contextlib.contextmanager
def compile_cache(directory: str | Path):
    """Inside: runners loaded in this process cache their compiled model in ``directory`` (OpenVINO's
    ``CACHE_DIR``), so a later load of the same IR with the same settings imports the compiled blob instead
    of compiling again (DenseNet169: ~0.66 s a load). The latency runoff loads every engine fresh in each
    of its rounds; the runner, its memory and its infer request are still new each time."""
    global _CACHE_DIR
    previous, _CACHE_DIR = _CACHE_DIR, str(directory)
    try:
        yield
    finally:
        _CACHE_DIR = previous


class OpenVINORunner:
    """A CPU-compiled IR behind the Runner protocol; recompiled at a static batch size when it changes."""

    def __init__(self, engine_path: str | Path, threads: int = 0):
        import openvino as ov

        engine_path = Path(engine_path)
        missing = [p for p in companion_paths(engine_path) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{engine_path} has no weights file {missing[0]} beside it; rebuild the engine")
        self.core = ov.Core()
        if _CACHE_DIR is not None:
            self.core.set_property({"CACHE_DIR": _CACHE_DIR})
        self.model = self.core.read_model(str(engine_path))
        self.input_name = self.model.inputs[0].get_any_name()
        self.threads = int(threads)
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = OpenVINO's default); got {self.threads}")
        precision = (_text(self.model.get_rt_info(PRECISION_KEY))
                     if self.model.has_rt_info(PRECISION_KEY) else "fp32")
        capabilities = list(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": inference_precision(precision, capabilities),
            "EXECUTION_MODE_HINT": "PERFORMANCE",
        }
        self.facts = {"engine_precision": precision, "device": "CPU", "cpu_capabilities": " ".join(capabilities),
                      **{k.lower(): v for k, v in self.config.items()}}
        self.batch_size: int | None = None
        self.compiled = None
        self.request = None
        self._bound: np.ndarray | None = None
        self._bound_data: np.ndarray | None = None

    def _compile(self, batch_size: int) -> None:
        import openvino as ov

        dims = list(self.model.inputs[0].get_partial_shape())
        self.model.reshape({self.model.inputs[0]: ov.PartialShape([ov.Dimension(batch_size)] + dims[1:])})
        self.compiled = self.core.compile_model(self.model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        self._bound = None  # the new request has no input bound yet
        self.batch_size = batch_size
        # What the plugin actually applied (the hint may be refused on a CPU without the type).
        for key in ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "NUM_STREAMS", "PERFORMANCE_HINT"):
            self.facts[f"compiled_{key.lower()}"] = _plain(self.compiled.get_property(key))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class scores for one float32 NHWC batch in 0..255.

        The input is bound to the request as a tensor sharing the batch's memory, and bound again only
        when another array arrives (or the batch had to be converted, so its memory is not the one
        bound): repeated calls on the latency benchmark's fixed batch pass nothing but ``infer()``, as
        OpenVINO's benchmark_app does, instead of copying a numpy dict into a new tensor every call.
        """
        import openvino as ov

        if len(batch) != self.batch_size:
            self._compile(len(batch))
        if batch is not self._bound:
            data = np.ascontiguousarray(batch, dtype=np.float32)
            self.request.set_input_tensor(0, ov.Tensor(data, shared_memory=True))
            # Keep the array alive while the request reads it; reuse it only if it is the caller's memory.
            self._bound = batch if data is batch else None
            self._bound_data = data
        self.request.infer()
        return self.request.get_output_tensor(0).data.copy()

    def runtime_latency_s(self) -> float:
        """The runtime's own time (s) of the last ``run``'s ``infer()``: ``InferRequest.latency`` (OpenVINO
        times the call in C++, without the Python call around it), what benchmark_app reports per call."""
        return self.request.latency / 1e3

    def runtime_precisions(self) -> dict[str, int]:
        """Executed layers per runtime precision (e.g. {'I8': 40, 'FP32': 12}) of the compiled model."""
        if self.compiled is None:
            raise RuntimeError("run a batch first: the model is compiled at the first batch size")
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "layerType" in info and _text(info["layerType"]) in ("Convolution", "FullyConnected", "MatMul"):
                key = _text(info["runtimePrecision"]) if "runtimePrecision" in info else "unknown"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def close(self) -> None:
        """Release the compiled model."""
        self.request = None
        self.compiled = None
        self._bound = self._bound_data = None


def load_runner(engine_path: str | Path, threads: int = 0) -> OpenVINORunner:
    """Load an IR engine built by this backend."""
    return OpenVINORunner(engine_path, threads)
