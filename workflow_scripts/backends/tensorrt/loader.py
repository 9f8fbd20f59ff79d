"""ONNX -> serialized TensorRT engine through Polygraphy's lazy loaders, and the build facts.

The chain is ``EngineBytesFromNetwork(NetworkFromOnnxPath(onnx), CreateConfig(...))``: the bytes
loader, so the timed build ends with the serialized plan and never deserialises and re-serialises
the engine it just built.

Two network typings (see :mod:`.options` for the version policy):

- weak (TensorRT 8.5-10): precision flags; INT8 by entropy calibration (``int8_mode:
  calibration``) or from the Q/DQ model (``int8_mode: qdq``, only the INT8 flag);
- strong (TensorRT >= 10, the only one from 11): no precision flags; FP16 from an FP16 copy of
  the export (float16 weights and activations, float32 inputs/outputs), INT8 from the Q/DQ model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from workflow_scripts.core.errors import ConfigError, EdgePTQError
from workflow_scripts.backends.tensorrt.availability import import_tensorrt
from workflow_scripts.backends.tensorrt.calibrator import CalibrationData, calibration_data_sha256, calibration_identity, file_sha256, make_calibrator, prepare_calibration_cache, read_calibration_metadata, write_calibration_metadata
from workflow_scripts.backends.tensorrt.options import PRECISIONS, check_build_request, check_dla_core, normalize_options, resolve_typing, supports_optimization_level, versioned_timing_cache

LOG = logging.getLogger(__name__)

# Scratch folders beside the engine. engine.remove_stale_work_dirs (the engine stage) removes
# "edgeptq-int8-*" left by a killed int8 build; every precision's scratch is named the same way
# (edgeptq-<precision>-*) and cleaned by remove_stale_scratch before a build of that precision.
LEGACY_SCRATCH_PREFIXES = ("edgeptq-qdq-",)


def scratch_prefix(precision: str) -> str:
    """Prefix of the scratch folder a build of ``precision`` makes beside its engine."""
    return f"edgeptq-{precision}-"


def remove_stale_scratch(folder: "str | os.PathLike", precision: str) -> List[str]:
    """Remove scratch folders a killed build of ``precision`` left in ``folder`` (and legacy ones)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for prefix in (scratch_prefix(precision),) + LEGACY_SCRATCH_PREFIXES:
        for stale in folder.glob(f"{prefix}*"):
            if stale.is_dir():
                LOG.info("removing %s, left by an interrupted build", stale)
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale.name)
    return removed


# --- ONNX input ----------------------------------------------------------------------------------


def onnx_input_spec(onnx_path: "str | os.PathLike") -> Tuple[str, List[Optional[int]]]:
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


def profile_shapes(onnx_shape: List[Optional[int]], opts: Dict[str, Any], static: bool = False):
    """(min, opt, max) input shapes: batch 1..max_batch_size optimised for batch_size.

    A static batch dimension in the ONNX wins over the config; dynamic spatial dimensions are taken
    from ``input_shape`` (NHWC), which is then required. ``static`` (DLA) pins min = opt = max at
    the optimum batch: DLA has no dynamic shapes.
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
        # An NCHW input ([N, C, H, W]) has its channel count second: fill H and W there, not C.
        nchw = input_layout(onnx_shape, channels=hwc[2]) == "NCHW"
        fill = [hwc[2], hwc[0], hwc[1]] if nchw else hwc
        rest = [d if d is not None else f for d, f in zip(rest, fill)]
    if onnx_shape[0] is not None:
        fixed = (onnx_shape[0], *rest)
        return fixed, fixed, fixed
    opt = (opts["batch_size"], *rest)
    if static:
        return opt, opt, opt
    return (1, *rest), opt, (opts["max_batch_size"], *rest)


def input_layout(shape: List[Optional[int]], channels: int = 3) -> str:
    """'NCHW' for a [N, C, H, W] input (H, W fixed or dynamic), else 'NHWC' (what tf2onnx writes for Keras)."""
    return "NCHW" if len(shape) == 4 and shape[1] == channels and shape[3] != channels else "NHWC"


def uses_dla(precision: str, opts: Dict[str, Any]) -> bool:
    """DLA runs FP16 and INT8 only: an FP32 or BF16 engine stays on the GPU."""
    return opts.get("dla_core") is not None and precision in ("fp16", "int8")


# --- DLA placement -----------------------------------------------------------------------------------


def dla_placement(network: Any, config: Any) -> Tuple[int, int]:
    """(layers DLA can run, all layers) of ``network`` under ``config`` (IBuilderConfig.can_run_on_DLA)."""
    total = int(network.num_layers)
    on_dla = sum(1 for i in range(total) if config.can_run_on_DLA(network.get_layer(i)))
    return on_dla, total


def make_dla_postprocess(dla_core: int, gpu_fallback: bool, record: Dict[str, Any]) -> Callable:
    """A PostprocessConfig callback: select the DLA core, count DLA layers, refuse an all-GPU 'DLA' build.

    With GPU fallback a network of which DLA can run nothing would build and run on the GPU alone
    while its rows say DLA: that is refused. Counts land in ``record`` (the build facts).
    """

    def postprocess(builder: Any, network: Any, config: Any) -> None:
        check_dla_core(dla_core, getattr(builder, "num_DLA_cores", None))
        config.DLA_core = int(dla_core)
        on_dla, total = dla_placement(network, config)
        record.update(dla_layers=on_dla, network_layers=total)
        if on_dla == 0:
            raise EdgePTQError(
                f"DLA core {dla_core} can run none of the {total} layers of this network, so with "
                "gpu_fallback every layer would run on the GPU while the results say DLA; "
                "set tensorrt.dla_core: null"
            )
        if on_dla < total:
            LOG.warning(
                "DLA core %s runs %d of %d layers; the other %d %s", dla_core, on_dla, total,
                total - on_dla, "fall back to the GPU" if gpu_fallback else "make the build fail",
            )

    return postprocess


# --- loader chain ----------------------------------------------------------------------------------


def timing_cache_path(opts: Dict[str, Any], trt_version: str) -> Optional[str]:
    """The tactic timing cache to load and save, or None (the default: every build times afresh)."""
    if not opts.get("reuse_timing_cache") or not opts.get("timing_cache"):
        return None
    return versioned_timing_cache(opts["timing_cache"], opts["device"], trt_version)


def make_loader_chain(
    onnx_path: "str | os.PathLike",
    precision: str,
    options: Optional[Dict[str, Any]],
    calibrator: Any = None,
    trt_module: Any = None,
    input_spec: Optional[Tuple[str, List[Optional[int]]]] = None,
    record: Optional[Dict[str, Any]] = None,
):
    """Polygraphy's lazy ``EngineBytesFromNetwork`` chain for one precision; nothing runs until called.

    ``onnx_path`` is the model TensorRT parses: the export, or (strong typing / qdq) the FP16 or
    Q/DQ copy made from it. ``trt_module`` (default: ``import tensorrt``) supplies the version and
    the memory-pool enum; ``input_spec`` (default: read from the ONNX) the input name and shape.
    ``record`` receives what the chain decided (typing, profile, timing cache, DLA layer counts).
    """
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    opts = normalize_options(options)
    trt = trt_module if trt_module is not None else import_tensorrt()
    version = str(getattr(trt, "__version__", "10.0.0"))
    typing = resolve_typing(opts, version)
    record = record if record is not None else {}
    name, shape = input_spec if input_spec is not None else onnx_input_spec(onnx_path)
    dla = uses_dla(precision, opts)
    if opts.get("dla_core") is not None and not dla:
        LOG.warning("dla_core=%s ignored for %s: DLA runs FP16 and INT8 only", opts["dla_core"], precision)
    lo, opt, hi = profile_shapes(shape, opts, static=dla)

    int8 = precision == "int8"
    calibrating = int8 and typing == "weak" and opts["int8_mode"] == "calibration"
    if calibrating and calibrator is None:
        raise ConfigError("int8_mode 'calibration' needs a calibrator; none was given")
    if not calibrating:
        if calibrator is not None and not int8:
            raise ConfigError(f"a calibrator was given for precision {precision!r}; only int8 uses one")
        calibrator = None  # explicit Q/DQ scales (or strong typing): TensorRT must not calibrate

    opt_level = opts["builder_optimization_level"]
    if not supports_optimization_level(trt):
        # TensorRT 8.5 (JetPack 5) has no optimization levels; Polygraphy would abort on the setting.
        LOG.warning(
            "builder_optimization_level=%s ignored: TensorRT %s predates optimization levels",
            opt_level, version,
        )
        opt_level = None

    cache = timing_cache_path(opts, version)
    # BuilderFlag.BF16 (TensorRT 10, compute capability >= 8.0) through CreateConfig(bf16=True); passed only
    # for a BF16 build, so a Polygraphy older than its bf16 argument (JetPack 5) builds every other precision.
    bf16 = {"bf16": True} if precision == "bf16" and typing == "weak" else {}
    config = CreateConfig(
        fp16=precision == "fp16" and typing == "weak",
        int8=int8 and typing == "weak",
        **bf16,
        tf32=False,  # FP32 means IEEE FP32: TF32 would blur the FP32 baseline on Ampere/Orin
        calibrator=calibrator,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: opts["workspace_mb"] * 2**20},
        builder_optimization_level=opt_level,
        load_timing_cache=cache,
        profiles=[Profile().add(name, min=lo, opt=opt, max=hi)],
        use_dla=dla,
        allow_gpu_fallback=opts["gpu_fallback"] if dla else None,
    )
    if dla:
        config = PostprocessConfig(config, make_dla_postprocess(opts["dla_core"], opts["gpu_fallback"], record))
    record.update(
        network_typing=typing,
        profile_min=list(lo), profile_opt=list(opt), profile_max=list(hi),
        profile_static_for_dla=dla and onnx_shape_is_dynamic(shape),
        timing_cache=cache,
        timing_cache_used=cache is not None,
        builder_optimization_level=opt_level,
        dla_core=opts["dla_core"] if dla else None,
    )
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True) if typing == "strong" else (
        NetworkFromOnnxPath(str(onnx_path))
    )
    return EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)


def onnx_shape_is_dynamic(shape: List[Optional[int]]) -> bool:
    return bool(shape) and shape[0] is None


# --- derived models (Q/DQ, FP16) ----------------------------------------------------------------------


def make_qdq_model(onnx_path, qdq_path, calibration_batches, options: dict) -> dict:
    """Write a TensorRT-compatible Q/DQ model (symmetric int8 activations, per-channel weights)."""
    from workflow_scripts.backends.onnxruntime import build_engine as build_ort_engine

    qdq_options = {**options, "symmetric_activations": True, "per_channel": True}
    facts = build_ort_engine(onnx_path, qdq_path, "int8", calibration_batches, qdq_options, None)
    return {k: v for k, v in facts.items() if not k.endswith("_text")}


def make_fp16_model(onnx_path, fp16_path) -> None:
    """Write an FP16 copy of the model for a strongly typed build (float32 inputs and outputs)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(onnx_path))
    onnx.save(float16.convert_float_to_float16(model, keep_io_types=True), str(fp16_path))


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
        if tmp.exists():
            tmp.unlink()


# --- build -------------------------------------------------------------------------------------------


def build_engine(
    onnx_path: "str | os.PathLike",
    engine_path: "str | os.PathLike",
    precision: str,
    calibration_batches: Callable[[], Iterable[np.ndarray]],
    options: Optional[Dict[str, Any]],
    calibration_dir: "str | os.PathLike | None",
    trt_module: Any = None,
) -> Dict[str, Any]:
    """Build one TensorRT engine, write it atomically to ``engine_path``, return build facts.

    ``build_s`` covers what a user waits for: deriving the FP16/Q/DQ model where needed, ONNX
    parsing, INT8 calibration and the build, ending with the serialized plan in memory.
    """
    trt = trt_module if trt_module is not None else import_tensorrt()
    version = str(trt.__version__)
    opts = normalize_options(options)
    # BF16 needs compute capability >= 8.0: the probe (a child, cached) reads it from the CUDA driver.
    capability = None
    if precision == "bf16" and trt_module is None:
        from workflow_scripts.backends.tensorrt.availability import probe

        capability = probe().get("compute_capability")
    typing = check_build_request([precision], opts, version, compute_capability=capability)
    name, shape = onnx_input_spec(onnx_path)
    layout = input_layout(shape)
    engine_dir = Path(engine_path).parent
    engine_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(engine_dir, precision)

    facts: Dict[str, Any] = {
        "backend": "tensorrt",
        "precision": precision,
        "tensorrt_version": version,
        "device": opts["device"],
        "input_name": name,
        "workspace_mb": opts["workspace_mb"],
        "gpu_fallback": opts["gpu_fallback"],
        "int8_mode": opts["int8_mode"] if precision == "int8" else None,
    }

    calibrating = precision == "int8" and typing == "weak" and opts["int8_mode"] == "calibration"
    calibrator = loader = cache_path = identity = None
    reused = False
    if calibrating:
        cache_path = Path(
            opts["calibration_cache"] or Path(calibration_dir or engine_dir) / f"{Path(onnx_path).stem}.int8.cache"
        )
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # The profile's optimum batch is the calibration batch: opt of profile_shapes (DLA or not).
        opt_batch = profile_shapes(shape, opts, static=uses_dla(precision, opts))[1][0]
        identity = calibration_identity(
            version, opts["device"], file_sha256(onnx_path), opt_batch, method=opts.get("method", "entropy"),
            num_images=opts.get("num_images"), seed=opts.get("seed"),
        )
        reused = prepare_calibration_cache(cache_path, identity, lambda: calibration_data_sha256(calibration_batches))
        loader = CalibrationData(calibration_batches, name, batch_size=opt_batch, layout=layout)
        calibrator = make_calibrator(loader, cache_path, trt)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=scratch_prefix(precision), dir=engine_dir) as scratch:
        source = onnx_path
        if precision == "int8" and not calibrating:
            # Explicit quantization: ONNX Runtime's quantizer writes a symmetric, per-channel Q/DQ
            # model from the same calibration batches; TensorRT then only honours its scales.
            source = Path(scratch) / "qdq.onnx"
            facts["qdq"] = make_qdq_model(onnx_path, source, calibration_batches, options or {})
        elif precision == "fp16" and typing == "strong":
            source = Path(scratch) / "fp16.onnx"
            make_fp16_model(onnx_path, source)
        record: Dict[str, Any] = {}
        chain = make_loader_chain(
            source, precision, opts, calibrator=calibrator, trt_module=trt, input_spec=(name, shape),
            record=record,
        )
        if record.get("timing_cache_used"):
            LOG.warning(
                "reuse_timing_cache is on: this build loads tactic timings from %s, so its build time "
                "is cache-warm and depends on the builds before it", record["timing_cache"],
            )
        data = chain()  # parse, calibrate if needed, build: the serialized plan
        build_s = time.perf_counter() - start
    if not data:
        raise EdgePTQError(f"TensorRT returned an empty engine for {onnx_path} ({precision})")
    data = bytes(data)
    if loader is not None:
        # Before the engine is written: an engine calibrated on nothing must not land on disk.
        facts.update(calibration_facts(loader, cache_path, identity, reused, onnx_path))
    _write_atomically(Path(engine_path), data)
    facts.update(record)
    facts.update(build_s=build_s, engine_bytes=len(data))
    return facts


def calibration_facts(
    loader: CalibrationData, cache_path: Path, identity: Dict[str, Any], reused: bool, onnx_path: Any,
) -> Dict[str, Any]:
    """What calibrated this engine; refuses a calibration that fed TensorRT nothing.

    A fresh calibration records what it fed and writes ``<cache>.json``. A build that reused a
    valid cache (TensorRT read it and asked for no batch) records what calibrated that cache, from
    its JSON, and ``calibration_batches_fed: 0``; the JSON is left as it is.
    """
    if loader.yielded == 0:
        meta = read_calibration_metadata(cache_path) if reused else None
        if meta is None:
            raise EdgePTQError(
                f"INT8 calibration of {onnx_path} fed TensorRT no batches (from {loader.images} images); "
                "check calibration.num_images and the train split"
            )
        return {
            "calibration_cache": str(cache_path), "calibration_cache_reused": True, "calibration_batches_fed": 0,
            "calibration_batches": meta.get("batches"), "calibration_batch_size": meta.get("batch_size"),
            "calibration_images": meta.get("images"), "calibration_images_padded": meta.get("padded"),
        }
    facts = {
        "calibration_cache": str(cache_path), "calibration_cache_reused": False,
        "calibration_batches_fed": loader.yielded, "calibration_batches": loader.yielded,
        "calibration_batch_size": loader.batch_size, "calibration_images": loader.images,
        "calibration_images_padded": loader.padded,
    }
    if reused:
        LOG.warning("TensorRT did not use the calibration cache %s and calibrated afresh", cache_path)
    if cache_path.is_file():
        write_calibration_metadata(
            cache_path, {**identity, "data_sha256": loader.data_sha256},
            {"batches": loader.yielded, "images": loader.images, "padded": loader.padded},
        )
    return facts
