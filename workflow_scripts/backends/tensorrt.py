"""TensorRT backend: ONNX -> TensorRT engine through Polygraphy's lazy loaders, and a runner.

Engines are built with Polygraphy (``NetworkFromOnnxPath`` -> ``CreateConfig`` ->
``EngineFromNetwork``) at FP32, FP16 or INT8. INT8 comes in two modes (config key ``int8_mode``):

- ``calibration``: implicit quantization, scales found by TensorRT's IInt8EntropyCalibrator2 fed
  with the very batches that evaluation uses (``calibration_batches``);
- ``qdq``: explicit quantization; ``onnx_path`` is then a Q/DQ ONNX produced elsewhere and the
  build only needs the INT8 flag.

The runner talks to the TensorRT runtime API directly (tensor-address API, ``execute_async_v3``,
so TensorRT >= 8.5, the version JetPack 5 ships) and uses Polygraphy's CUDA wrapper for memory,
streams and copies. See :func:`load_runner` for why it does not wrap Polygraphy's ``TrtRunner``.

``tensorrt`` and ``polygraphy`` are imported inside functions only, so this module imports on a
CPU-only machine and :func:`is_available` can say why TensorRT cannot run there.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import BackendUnavailable, ConfigError, EdgePTQError

LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("calibration", "qdq")
DEFAULT_OPTIONS: dict[str, Any] = {
    "workspace_mb": 1024,
    "builder_optimization_level": 3,
    "dla_core": None,
    "gpu_fallback": True,
    "timing_cache": None,
    "int8_mode": "calibration",
    "batch_size": 1,
    "max_batch_size": None,  # None: same as batch_size
    "input_shape": None,  # [H, W, 3]; only needed when the ONNX leaves spatial dims dynamic
    "device": "unknown",
    "calibration_cache": None,  # None: <calibration_dir>/<onnx stem>.int8.cache
}


# --- availability -----------------------------------------------------------------------------


def is_available() -> tuple[bool, str]:
    """(True, what was found) when TensorRT and an NVIDIA GPU are present, else (False, why not)."""
    try:
        try:
            spec = importlib.util.find_spec("tensorrt")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return False, (
                "the Python package 'tensorrt' is not installed "
                "(x86: pip install -e .[tensorrt]; Jetson: use JetPack's TensorRT, see docs/tensorrt.md)"
            )
        from ..device import jetson_model, nvidia_gpu_name

        gpu = jetson_model() or nvidia_gpu_name()
        if gpu is None:
            return False, (
                "no NVIDIA GPU was found (NVML reports none and /proc/device-tree/model "
                "names no Jetson)"
            )
        return True, f"tensorrt is installed and an NVIDIA GPU was found: {gpu}"
    except Exception as exc:  # availability must never raise: it is asked at DAG-planning time
        return False, f"checking for TensorRT failed: {exc}"


def _import_tensorrt():
    """Import tensorrt or raise BackendUnavailable naming the fix."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend 'tensorrt' needs the 'tensorrt' Python package, which cannot be imported ({exc}); "
            "see docs/tensorrt.md or run with --config backend=onnxruntime"
        ) from exc
    return trt


# --- options ----------------------------------------------------------------------------------


def normalize_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``options``, each value checked; raises ConfigError naming the key."""
    opts = dict(DEFAULT_OPTIONS)
    # A null in the config means "use the default" (dla_core's default is null anyway).
    opts.update({k: v for k, v in (options or {}).items() if v is not None})

    def need_int(key: str, low: int, high: int | None = None) -> int:
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high
        ):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise ConfigError(f"config key {key!r} is {value!r}; use an integer {bounds}")
        return value

    need_int("workspace_mb", 1)
    need_int("builder_optimization_level", 0, 5)
    need_int("batch_size", 1)
    if opts["max_batch_size"] is None:
        opts["max_batch_size"] = opts["batch_size"]
    need_int("max_batch_size", opts["batch_size"])
    if opts["dla_core"] is not None:
        need_int("dla_core", 0)
    if not isinstance(opts["gpu_fallback"], bool):
        raise ConfigError(f"config key 'gpu_fallback' is {opts['gpu_fallback']!r}; use true or false")
    if opts["int8_mode"] not in INT8_MODES:
        raise ConfigError(
            f"config key 'int8_mode' is {opts['int8_mode']!r}; use one of {list(INT8_MODES)}"
        )
    shape = opts["input_shape"]
    if shape is not None:
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in shape)
        ):
            raise ConfigError(f"config key 'input_shape' is {shape!r}; use [height, width, channels]")
        opts["input_shape"] = [int(d) for d in shape]
    if opts["timing_cache"]:
        # Timing caches are specific to a GPU and TensorRT version: let the path name the device.
        opts["timing_cache"] = str(opts["timing_cache"]).replace("{device}", str(opts["device"]))
    return opts


# --- ONNX input -------------------------------------------------------------------------------


def onnx_input_spec(onnx_path: str | os.PathLike) -> tuple[str, list[int | None]]:
    """Name and shape (None for dynamic dims) of the ONNX model's single graph input."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ConfigError(
            f"{onnx_path} has {len(inputs)} graph inputs ({[i.name for i in inputs]}); "
            "the TensorRT backend expects exactly one image input"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    return inputs[0].name, shape


def profile_shapes(
    onnx_shape: list[int | None], opts: dict[str, Any]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes: batch 1..max_batch_size optimised for batch_size.

    A static batch dimension in the ONNX wins over the config; dynamic spatial dimensions are taken
    from ``input_shape`` (NHWC), which is then required.
    """
    if len(onnx_shape) != 4:
        raise ConfigError(f"expected a 4-D image input, the ONNX input has shape {onnx_shape}")
    rest = list(onnx_shape[1:])
    if any(d is None for d in rest):
        if opts.get("input_shape") is None:
            raise ConfigError(
                f"the ONNX input shape {onnx_shape} has dynamic spatial dimensions; "
                "set config key 'input_shape' to [height, width, channels]"
            )
        hwc = list(opts["input_shape"])
        # An NCHW input ([N, 3, H, W]) has its channel count second.
        fill = hwc if rest[-1] in (None, hwc[2]) else [hwc[2], hwc[0], hwc[1]]
        rest = [d if d is not None else f for d, f in zip(rest, fill)]
    if onnx_shape[0] is not None:
        static = (onnx_shape[0], *rest)
        return static, static, static
    return (
        (1, *rest),
        (opts["batch_size"], *rest),
        (opts["max_batch_size"], *rest),
    )


# --- calibration data and cache ---------------------------------------------------------------


class CalibrationData:
    """Re-iterable data loader for Polygraphy's Calibrator: ``{input_name: batch}`` per batch.

    Each iteration calls ``calibration_batches()`` afresh (a plain generator could not be rewound
    when the calibrator resets). Batches of a batch size other than ``batch_size`` are skipped and
    counted in ``skipped``: TensorRT calibrates at the profile's optimum shape and would otherwise
    read past the end of a short last batch.
    """

    def __init__(
        self,
        calibration_batches: Callable[[], Iterable[np.ndarray]],
        input_name: str,
        batch_size: int | None = None,
        layout: str = "NHWC",
    ) -> None:
        self.calibration_batches = calibration_batches
        self.input_name = input_name
        self.batch_size = batch_size
        self.layout = layout
        self.yielded = 0
        self.skipped = 0
        self.input_metadata = None  # set by Polygraphy; unused here

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.yielded = 0
        self.skipped = 0
        for batch in self.calibration_batches():
            batch = np.asarray(batch, dtype=np.float32)
            if self.batch_size is not None and batch.shape[0] != self.batch_size:
                self.skipped += 1
                LOG.info(
                    "calibration: skipping a batch of %d images (profile batch is %d)",
                    batch.shape[0],
                    self.batch_size,
                )
                continue
            if self.layout == "NCHW":
                batch = batch.transpose(0, 3, 1, 2)
            self.yielded += 1
            yield {self.input_name: np.ascontiguousarray(batch)}


def calibration_metadata_path(cache_path: str | os.PathLike) -> Path:
    """The JSON beside a calibration cache that records who wrote it (``<cache>.json``)."""
    return Path(f"{cache_path}.json")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_calibration_metadata(
    cache_path: str | os.PathLike,
    trt_version: str,
    device: str,
    onnx_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Record the TensorRT version, device tag (and model hash) that produced a calibration cache."""
    meta = {"tensorrt_version": trt_version, "device": device, "onnx_sha256": onnx_sha256}
    meta.update(extra or {})
    path = calibration_metadata_path(cache_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def calibration_cache_is_valid(
    cache_path: str | os.PathLike,
    trt_version: str,
    device: str,
    onnx_sha256: str | None = None,
) -> tuple[bool, str]:
    """Whether a calibration cache may be reused here, and why (pure: reads, never deletes).

    Valid only when the cache and its ``<cache>.json`` exist and the JSON records this TensorRT
    version and device tag (and, when given, this ONNX model's hash).
    """
    cache = Path(cache_path)
    if not cache.is_file() or cache.stat().st_size == 0:
        return False, f"no calibration cache at {cache}"
    meta_path = calibration_metadata_path(cache)
    if not meta_path.is_file():
        return False, (
            f"calibration cache {cache} has no {meta_path.name}, so the TensorRT version and "
            "device that wrote it are unknown"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return False, f"calibration cache metadata {meta_path} is unreadable ({exc})"
    if not isinstance(meta, dict):
        return False, f"calibration cache metadata {meta_path} is not a JSON object"
    if meta.get("tensorrt_version") != trt_version:
        return False, (
            f"calibration cache {cache} was written by TensorRT {meta.get('tensorrt_version')}, "
            f"this is TensorRT {trt_version}"
        )
    if meta.get("device") != device:
        return False, (
            f"calibration cache {cache} was written on device {meta.get('device')!r}, "
            f"this is {device!r}"
        )
    if onnx_sha256 is not None and meta.get("onnx_sha256") not in (None, onnx_sha256):
        return False, f"calibration cache {cache} was written for a different ONNX model"
    return True, f"calibration cache {cache} matches TensorRT {trt_version} on {device!r}"


def prepare_calibration_cache(
    cache_path: str | os.PathLike,
    trt_version: str,
    device: str,
    onnx_sha256: str | None = None,
) -> bool:
    """Keep a valid cache (returns True) or delete an invalid one with a warning (returns False)."""
    valid, reason = calibration_cache_is_valid(cache_path, trt_version, device, onnx_sha256)
    cache = Path(cache_path)
    if valid:
        LOG.info("reusing %s", reason)
        return True
    if cache.exists() or calibration_metadata_path(cache).exists():
        LOG.warning("deleting calibration cache and recalibrating: %s", reason)
        cache.unlink(missing_ok=True)
        calibration_metadata_path(cache).unlink(missing_ok=True)
    else:
        LOG.info("%s; calibrating", reason)
    return False


def make_calibrator(data_loader: CalibrationData, cache_path: str | os.PathLike):
    """Polygraphy Calibrator on IInt8EntropyCalibrator2 that reads/writes ``cache_path``."""
    trt = _import_tensorrt()
    from polygraphy.backend.trt import Calibrator

    return Calibrator(
        data_loader=data_loader, cache=str(cache_path), BaseClass=trt.IInt8EntropyCalibrator2
    )


# --- loader chain -----------------------------------------------------------------------------


def supports_optimization_level(trt_module: Any) -> bool:
    """Whether this TensorRT has IBuilderConfig.builder_optimization_level (added in 8.6)."""
    version = getattr(trt_module, "__version__", None)
    if not version:
        return True
    try:
        major, minor = (int(part) for part in str(version).split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (8, 6)



def make_loader_chain(
    onnx_path: str | os.PathLike,
    precision: str,
    options: dict[str, Any] | None,
    calibrator: Any = None,
    trt_module: Any = None,
    input_spec: tuple[str, list[int | None]] | None = None,
):
    """Polygraphy's lazy ``EngineFromNetwork`` chain for one precision; nothing is built until called.

    ``trt_module`` (default: ``import tensorrt``) supplies the memory-pool enum; ``input_spec``
    (default: read from the ONNX) gives the input name and shape for the optimisation profile.
    """
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    opts = normalize_options(options)
    trt = trt_module if trt_module is not None else _import_tensorrt()
    name, shape = input_spec if input_spec is not None else onnx_input_spec(onnx_path)
    lo, opt, hi = profile_shapes(shape, opts)

    int8 = precision == "int8"
    if int8 and opts["int8_mode"] == "calibration" and calibrator is None:
        raise ConfigError("int8_mode 'calibration' needs a calibrator; none was given")
    if int8 and opts["int8_mode"] == "qdq":
        calibrator = None  # explicit Q/DQ scales: TensorRT must not calibrate over them
    if not int8 and calibrator is not None:
        raise ConfigError(f"a calibrator was given for precision {precision!r}; only int8 uses one")

    dla_core = opts["dla_core"]
    if dla_core is not None and precision == "fp32":
        # DLA runs FP16 and INT8 only; an FP32 engine stays on the GPU.
        LOG.warning("dla_core=%s ignored for fp32: DLA has no FP32 support", dla_core)
        dla_core = None

    opt_level = opts["builder_optimization_level"]
    if not supports_optimization_level(trt):
        # TensorRT 8.5 (JetPack 5) has no optimization levels; Polygraphy would abort on the setting.
        LOG.warning(
            "builder_optimization_level=%s ignored: TensorRT %s predates optimization levels",
            opt_level, trt.__version__,
        )
        opt_level = None

    config = CreateConfig(
        fp16=precision == "fp16",
        int8=int8,
        tf32=False,  # FP32 means IEEE FP32: TF32 would blur the FP32 baseline on Ampere/Orin
        calibrator=calibrator if int8 else None,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: opts["workspace_mb"] * 2**20},
        builder_optimization_level=opt_level,
        load_timing_cache=opts["timing_cache"],
        profiles=[Profile().add(name, min=lo, opt=opt, max=hi)],
        use_dla=dla_core is not None,
        allow_gpu_fallback=opts["gpu_fallback"] if dla_core is not None else None,
    )
    if dla_core is not None and dla_core != 0:
        # CreateConfig always selects DLA core 0; pick the configured core afterwards.
        def select_dla_core(builder, network, cfg, core=dla_core):
            cfg.DLA_core = core

        config = PostprocessConfig(config, select_dla_core)

    return EngineFromNetwork(
        NetworkFromOnnxPath(str(onnx_path)),
        config=config,
        save_timing_cache=opts["timing_cache"],
    )


# --- build ------------------------------------------------------------------------------------


def make_qdq_model(onnx_path, qdq_path, calibration_batches, options: dict) -> dict:
    """Write a TensorRT-compatible Q/DQ model (symmetric int8 activations, per-channel weights)."""
    from .onnxruntime_backend import build_engine as build_ort_engine

    qdq_options = {**options, "symmetric_activations": True, "per_channel": True}
    facts = build_ort_engine(onnx_path, qdq_path, "int8", calibration_batches, qdq_options, None)
    return {k: v for k, v in facts.items() if not k.endswith("_text")}


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    precision: str,
    calibration_batches: Callable[[], Iterable[np.ndarray]],
    options: dict[str, Any] | None,
    calibration_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Build one TensorRT engine, write it atomically to ``engine_path``, return build facts."""
    trt = _import_tensorrt()
    opts = normalize_options(options)
    name, shape = onnx_input_spec(onnx_path)
    lo, opt, hi = profile_shapes(shape, opts)
    layout = "NCHW" if len(shape) == 4 and shape[1] == 3 and shape[3] != 3 else "NHWC"

    facts: dict[str, Any] = {
        "backend": "tensorrt",
        "precision": precision,
        "tensorrt_version": trt.__version__,
        "device": opts["device"],
        "input_name": name,
        "profile_min": list(lo),
        "profile_opt": list(opt),
        "profile_max": list(hi),
        "workspace_mb": opts["workspace_mb"],
        "builder_optimization_level": (
            opts["builder_optimization_level"] if supports_optimization_level(trt) else None
        ),
        "dla_core": opts["dla_core"] if precision != "fp32" else None,
        "gpu_fallback": opts["gpu_fallback"],
        "timing_cache": opts["timing_cache"],
        "int8_mode": opts["int8_mode"] if precision == "int8" else None,
    }

    calibrator = None
    loader = None
    cache_path = None
    onnx_hash = None
    if precision == "int8" and opts["int8_mode"] == "calibration":
        cache_path = Path(
            opts["calibration_cache"]
            or Path(calibration_dir) / f"{Path(onnx_path).stem}.int8.cache"
        )
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        onnx_hash = file_sha256(onnx_path)
        reused = prepare_calibration_cache(cache_path, trt.__version__, opts["device"], onnx_hash)
        loader = CalibrationData(calibration_batches, name, batch_size=opt[0], layout=layout)
        calibrator = make_calibrator(loader, cache_path)
        facts.update(calibration_cache=str(cache_path), calibration_cache_reused=reused)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeptq-qdq-", dir=Path(engine_path).parent) as scratch:
        source = onnx_path
        if precision == "int8" and opts["int8_mode"] == "qdq":
            # Explicit quantization: ONNX Runtime's quantizer writes a symmetric, per-channel Q/DQ
            # model from the same calibration batches; TensorRT then only honours its scales.
            source = Path(scratch) / "qdq.onnx"
            facts["qdq"] = make_qdq_model(onnx_path, source, calibration_batches, options or {})
        chain = make_loader_chain(
            source, precision, opts, calibrator=calibrator, trt_module=trt, input_spec=(name, shape)
        )
        engine = chain()  # parses the ONNX, calibrates if needed, builds, deserialises once
    build_s = time.perf_counter() - start
    try:
        data = bytes(engine.serialize())
    finally:
        del engine
    _write_atomically(Path(engine_path), data)

    if loader is not None:
        facts.update(calibration_batches=loader.yielded, calibration_batches_skipped=loader.skipped)
        if cache_path is not None and cache_path.is_file():
            write_calibration_metadata(
                cache_path, trt.__version__, opts["device"], onnx_hash,
                extra={"batches": loader.yielded, "batch_size": opt[0]},
            )
    facts.update(build_s=build_s, engine_bytes=len(data))
    return facts


# --- runner -----------------------------------------------------------------------------------


class _CudaEvents:
    """CUDA events through the CUDA runtime that Polygraphy already loaded (ctypes, no extra deps)."""

    def __init__(self, count: int) -> None:
        from polygraphy import cuda

        self._cuda = cuda.wrapper()
        self.events = []
        for _ in range(count):
            ptr = ctypes.c_void_p()
            self._cuda.check(self._cuda.handle.cudaEventCreate(ctypes.byref(ptr)))
            self.events.append(ptr.value)

    def record(self, index: int, stream_ptr: int) -> None:
        self._cuda.check(
            self._cuda.handle.cudaEventRecord(
                ctypes.c_void_p(self.events[index]), ctypes.c_void_p(stream_ptr)
            )
        )

    def synchronize(self, index: int) -> None:
        self._cuda.check(self._cuda.handle.cudaEventSynchronize(ctypes.c_void_p(self.events[index])))

    def elapsed_ms(self, start: int, end: int) -> float:
        ms = ctypes.c_float()
        self._cuda.check(
            self._cuda.handle.cudaEventElapsedTime(
                ctypes.byref(ms),
                ctypes.c_void_p(self.events[start]),
                ctypes.c_void_p(self.events[end]),
            )
        )
        return float(ms.value)

    def free(self) -> None:
        for ev in self.events:
            self._cuda.handle.cudaEventDestroy(ctypes.c_void_p(ev))
        self.events = []


class _PinnedBuffer:
    """Page-locked host memory (cudaMallocHost): lets cudaMemcpyAsync run truly asynchronously."""

    def __init__(self) -> None:
        from polygraphy import cuda

        self._cuda = cuda.wrapper()
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        ptr = ctypes.c_void_p()
        self._cuda.check(self._cuda.handle.cudaMallocHost(ctypes.byref(ptr), ctypes.c_size_t(nbytes)))
        self.ptr, self.nbytes = ptr.value, nbytes

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._cuda.handle.cudaFreeHost(ctypes.c_void_p(self.ptr))
        self.ptr, self.nbytes = 0, 0


@dataclass
class TimedResult:
    """Scores of one batch and where its time went on the GPU (CUDA-event milliseconds)."""

    scores: np.ndarray
    h2d_ms: float
    compute_ms: float
    d2h_ms: float

    @property
    def total_ms(self) -> float:
        """Copy in + compute + copy out."""
        return self.h2d_ms + self.compute_ms + self.d2h_ms


class TensorRTRunner:
    """One deserialised engine with its execution context, CUDA stream and reusable buffers."""

    def __init__(self, engine_path: str | os.PathLike, threads: int | None = None) -> None:
        trt = _import_tensorrt()
        from polygraphy import cuda

        self._trt = trt
        self._cuda = cuda
        self.threads = threads  # TensorRT inference does not use CPU threads; kept for the record
        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EdgePTQError(
                f"TensorRT could not deserialise {engine_path}; an engine only loads with the "
                "TensorRT version and GPU that built it: rebuild it on this device"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgePTQError(
                f"{engine_path} has inputs {inputs} and outputs {outputs}; expected one of each"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        in_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self._nchw = len(in_shape) == 4 and in_shape[1] == 3 and in_shape[3] != 3
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._stream = cuda.Stream()
        self._d_in = cuda.DeviceArray.raw((0,))
        self._d_out = cuda.DeviceArray.raw((0,))
        self._h_in = _PinnedBuffer()
        self._h_out = _PinnedBuffer()
        self._events = _CudaEvents(4)
        self._shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] = ()

    def _prepare(self, shape: tuple[int, ...]) -> None:
        if shape == self._shape:
            return
        if not self.context.set_input_shape(self.input_name, shape):
            raise EdgePTQError(
                f"input shape {shape} is outside the engine's optimisation profile; rebuild with a "
                "larger max_batch_size"
            )
        self._out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        in_bytes = int(np.prod(shape)) * self._in_dtype.itemsize
        out_bytes = int(np.prod(self._out_shape)) * self._out_dtype.itemsize
        self._d_in.resize((in_bytes,))
        self._d_out.resize((out_bytes,))
        self._h_in.ensure(in_bytes)
        self._h_out.ensure(out_bytes)
        self.context.set_tensor_address(self.input_name, self._d_in.ptr)
        self.context.set_tensor_address(self.output_name, self._d_out.ptr)
        self._shape = shape

    def timed_infer(self, batch: np.ndarray) -> TimedResult:
        """Run one NHWC float32 batch; times copy-in, compute and copy-out with CUDA events."""
        x = np.asarray(batch, dtype=self._in_dtype)
        if self._nchw:
            x = x.transpose(0, 3, 1, 2)
        self._prepare(tuple(int(d) for d in x.shape))
        host_in = self._h_in.array(x.shape, self._in_dtype)
        np.copyto(host_in, x)  # into pinned memory, outside the timed region
        kind = self._cuda.MemcpyKind
        wrapper = self._cuda.wrapper()
        stream = self._stream.ptr
        ev = self._events
        ev.record(0, stream)
        wrapper.memcpy(self._d_in.ptr, self._h_in.ptr, host_in.nbytes, kind.HostToDevice, stream)
        ev.record(1, stream)
        if not self.context.execute_async_v3(stream):
            raise EdgePTQError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        ev.record(2, stream)
        out_bytes = int(np.prod(self._out_shape)) * self._out_dtype.itemsize
        wrapper.memcpy(self._h_out.ptr, self._d_out.ptr, out_bytes, kind.DeviceToHost, stream)
        ev.record(3, stream)
        ev.synchronize(3)
        scores = self._h_out.array(self._out_shape, self._out_dtype).astype(np.float32, copy=True)
        return TimedResult(
            scores=scores,
            h2d_ms=ev.elapsed_ms(0, 1),
            compute_ms=ev.elapsed_ms(1, 2),
            d2h_ms=ev.elapsed_ms(2, 3),
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class scores for one float32 NHWC batch in 0..255."""
        return self.timed_infer(batch).scores

    def close(self) -> None:
        """Free device and pinned memory, events, stream, context and engine; safe to call twice."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._events.free()
        self._d_in.free()
        self._d_out.free()
        self._h_in.free()
        self._h_out.free()
        self._stream.free()
        # Destroy the context before the engine and the engine before the runtime.
        self.context = None
        self.engine = None
        self._runtime = None


def load_runner(engine_path: str | os.PathLike, threads: int | None = None) -> TensorRTRunner:
    """Load an engine into a :class:`TensorRTRunner` (``.run``, ``.timed_infer``, ``.close``).

    Not Polygraphy's ``TrtRunner``: that one marks every tensor for debugging on TensorRT 10 and
    allocates outputs through a callback at every call, overhead that would land in the latency
    being measured, and it cannot time the copies separately. Events and pinned memory come from
    the CUDA runtime Polygraphy already loads, so neither pycuda nor cuda-python is needed:
    pycuda must be compiled against the local CUDA toolkit (painful on Jetson) and adds nothing.
    """
    return TensorRTRunner(engine_path, threads)
