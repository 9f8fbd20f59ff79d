"""The engine build stage (second PTQ stage): one precision of one model, timed and monitored."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from workflow_scripts.core.artifacts import write_parquet, write_text
from workflow_scripts.backends import get_backend
from workflow_scripts.measure.compression import timed_stage
from workflow_scripts.data.data_io import calibration_indices, iter_batches, open_split, read_meta
from workflow_scripts.backends.engine_check import engine_digests
from workflow_scripts.core.errors import EdgePTQError
from workflow_scripts.stages.latency import engine_mb
from workflow_scripts.measure.monitor import make_monitor, summarize_resources
from workflow_scripts.core.provenance import with_provenance

log = logging.getLogger(__name__)


def calibration_source(data_dir: str | Path, num_images: int, batch_size: int, seed: int):
    """A zero-argument callable yielding the calibration batches: a seeded sample of the train split."""
    _, labels = open_split(data_dir, "train")
    chosen = calibration_indices(len(labels), num_images, seed)

    def batches():
        for images, _ in iter_batches(data_dir, "train", batch_size, indices=chosen):
            yield images

    return batches


class InvalidOnnxModel(EdgePTQError):
    """The ONNX file an engine is built from is unreadable or fails onnx.checker."""


def check_onnx_model(onnx_path: str | Path) -> None:
    """Refuse an ONNX file that does not load or fails ``onnx.checker`` before any build work starts."""
    import onnx

    try:
        # The path form also checks models over 2 GB (external data) without loading them whole.
        onnx.checker.check_model(str(onnx_path), full_check=False)
    except Exception as exc:  # ValidationError, DecodeError, OSError: all mean an unusable file
        raise InvalidOnnxModel(
            f"{onnx_path} is not a valid ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]}); "
            f"delete it and rerun its export_onnx rule (snakemake {onnx_path})"
        ) from exc


def source_input_hw(source_path: str | Path) -> tuple[int, int] | None:
    """(height, width) of the model's NHWC input, read from the file without building it (None if dynamic)."""
    path = Path(source_path)
    if path.suffix == ".onnx":
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        hw = [d.dim_value if d.HasField("dim_value") else 0 for d in dims][1:3]
    else:
        import json
        import zipfile

        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        shape = _keras_input_shape(config)
        hw = list(shape[1:3]) if shape else []
    return (int(hw[0]), int(hw[1])) if len(hw) == 2 and all(hw) else None


def _keras_input_shape(node):
    """The first InputLayer's batch shape found in a Keras model's config.json."""
    if isinstance(node, dict):
        if node.get("class_name") == "InputLayer":
            config = node.get("config", {})
            return config.get("batch_shape") or config.get("batch_input_shape")
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _keras_input_shape(child)
        if found:
            return found
    return None


def check_input_size(source_path: str | Path, size: int) -> None:
    """Refuse a model whose input is not ``size`` x ``size`` (config key input_size) before building."""
    hw = source_input_hw(source_path)
    if hw is not None and hw != (size, size):
        raise InvalidOnnxModel(
            f"{source_path} takes {hw[0]}x{hw[1]} images but config key 'input_size' (and the prepared data) is "
            f"{size}x{size}; re-export it for this size (delete it and run snakemake {source_path}) or set "
            f"input_size: {hw[0]}")


def remove_stale_work_dirs(folder: str | Path) -> None:
    """Remove INT8 work folders a killed build left behind (one int8 build per folder runs at a time)."""
    for stale in Path(folder).glob("edgeptq-int8-*"):
        if stale.is_dir():
            log.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def remove_stale_engine_scratch(engine_path: str | Path, companions: tuple[str, ...] = ()) -> None:
    """Remove what a killed build of this engine left beside it: its OpenVINO IR folders
    (``.tmp-ir-<precision>-*``, and the unnamed ``.tmp-ir-*`` of older versions) and the companion
    scratch files (``.tmp-<random>-<precision>.bin``) of :func:`compression.timed_stage`.

    Only this engine's job writes these names (Snakemake runs one job per output at a time), so no
    running build can own them; other precisions' builds use other names.
    """
    engine = Path(engine_path)
    folder = engine.parent
    if not folder.is_dir():
        return
    stale = [p for p in folder.glob(f".tmp-ir-{engine.stem}-*") if p.is_dir()]
    # Older versions named the IR folder .tmp-ir-<8 random characters>, without the precision.
    stale += [p for p in folder.glob(".tmp-ir-*") if p.is_dir() and len(p.name) == len(".tmp-ir-") + 8
              and "-" not in p.name[len(".tmp-ir-"):]]
    for ext in companions:
        stale += [p for p in folder.glob(f".tmp-*-{engine.stem}.{ext}")
                  if p.is_file() and "-" not in p.name[len(".tmp-"):-len(engine.stem) - len(ext) - 2]]
    for path in stale:
        log.info("removing %s, left by an interrupted build", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def build_engine_benchmark(backend: str, source_path: str | Path, engine_path: str | Path, precision: str,
                           data_dir: str | Path, calibration: dict, backend_options: dict,
                           build_table: str | Path, resources_table: str | Path,
                           calibration_json: str | Path | None, calibration_cache: str | Path | None,
                           warmup: int, repeats: int, monitor_interval_s: float, seed: int,
                           provenance: dict, threads: int = 0) -> pd.DataFrame:
    """Build ``precision`` warmup+repeats times (calibration included for int8), keep the last engine.

    ``source_path`` is what the backend builds from (registry entry ``source``): the ONNX export
    or the Keras model. ``threads`` reaches backends that take a thread count for their build.
    """
    from workflow_scripts.core.registry import backend as backend_entry

    if backend_entry(backend).source == "onnx":
        check_onnx_model(source_path)
    check_input_size(source_path, int(read_meta(data_dir)["input_size"]))
    module = get_backend(backend)
    remove_stale_engine_scratch(engine_path, backend_entry(backend).companions)
    batches = None
    if precision == "int8":
        remove_stale_work_dirs(Path(engine_path).parent)
        batches = calibration_source(data_dir, calibration["num_images"], calibration["batch_size"], seed)
    options = {**calibration, **backend_options, "threads": int(threads)}
    calibration_dir = Path(engine_path).parent if precision == "int8" else None
    if precision == "int8":
        options["calibration_cache"] = str(calibration_cache)

    def produce(tmp: Path) -> dict:
        if precision == "int8" and calibration_cache and Path(calibration_cache).exists():
            # Each measured build calibrates afresh, as the study timed it; a reused cache
            # would hide the calibration cost.
            Path(calibration_cache).unlink()
        return module.build_engine(source_path, tmp, precision, batches, options, calibration_dir)

    monitor = make_monitor(monitor_interval_s)
    with monitor:
        runs, facts = timed_stage("engine_build", produce, engine_path, warmup, repeats, monitor,
                                  companions=backend_entry(backend).companions)
    samples = monitor.frame()
    if precision == "int8":
        # The kept engine's calibration: ONNX Runtime returns the tables as text (per-tensor
        # ranges as JSON, and TensorRT's text form); TensorRT writes its cache itself.
        if "calibration_cache_text" in facts:
            write_text(facts["calibration_cache_text"], calibration_cache)
        elif calibration_cache and not Path(calibration_cache).exists():
            write_text(f"# {backend} keeps its INT8 scales inside {Path(engine_path).name}; it writes no "
                       "separate calibration cache.\n", calibration_cache)
        scalars = {k: v for k, v in facts.items() if not k.endswith("_text")}
        write_text(facts.get("calibration_json_text") or json.dumps(scalars, indent=2, default=str), calibration_json)
    runs["precision"] = precision
    runs["engine_mb"] = engine_mb(backend, engine_path)
    # What the later jobs and the summary check the engine against (engine_check.check_engine).
    for column, digest in engine_digests(backend, engine_path).items():
        runs[column] = digest
    runs["onnx_mb"] = Path(source_path).stat().st_size / 1e6
    # The method the backend really used (LiteRT and NNCF: their own min/max), else the configured one.
    runs["calibration_method"] = (str(facts.get("calibration_method") or calibration.get("method", ""))
                                  if precision == "int8" else "")
    runs["calibration_images"] = calibration["num_images"] if precision == "int8" else 0
    for key, value in summarize_resources(samples).items():
        runs[key] = value
    runs = with_provenance(runs, provenance)
    write_parquet(runs, build_table)
    samples["precision"] = precision
    write_parquet(with_provenance(samples, provenance), resources_table)
    return runs
