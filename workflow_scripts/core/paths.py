"""The one path scheme: every artifact of the workflow is addressable as a single target.

results/
  data/{dataset}_{size}px/{split}_images.npy, {split}_labels.npy, meta.json
  models/{dataset}_{size}px/{model}/model.keras, history.parquet, accuracy.parquet, predictions.parquet
  {device}/onnx/{dataset}_{size}px/{model}/model.onnx, export.parquet, export_resources.parquet
  {device}/{backend}/{dataset}_{size}px/{model}/{precision}.{ext}     (ext: the backend's suffix)
      {precision}_build.parquet, {precision}_build_resources.parquet,
      {precision}_calibration.json, {precision}_calibration.cache   (int8 only)
      {precision}_latency.parquet, {precision}_latency_samples.parquet, {precision}_latency_resources.parquet
      {precision}_accuracy.parquet, {precision}_predictions.parquet
      calibration/   (the INT8 calibration study: prepared.onnx, statistics-n<images>.npz, <variant>.onnx, ...)
  summary/*.parquet, claims.md, figures/*.png|svg   (every device and backend found under results/)
  logs/<rule>/...

The patterns below are Snakemake patterns (``{results}``, ``{device}``, ... are wildcards) and
``str.format`` templates at once; :func:`parse` reads a path back into its fields. Rules, the
summary, the on-device runner (``fleet/device_run.py``) and the tests use these and nothing else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SPLITS = ("train", "val", "test")

DATA_DIR = "{results}/data/{dataset}_{size}px"
MODEL_DIR = "{results}/models/{dataset}_{size}px/{model}"
ONNX_DIR = "{results}/{device}/onnx/{dataset}_{size}px/{model}"
ENGINE_DIR = "{results}/{device}/{backend}/{dataset}_{size}px/{model}"
ENGINE = ENGINE_DIR + "/{precision}.{ext}"
# The INT8 calibration study's files of one model (rules/calibration_study.smk): prepared.onnx,
# statistics-n<images>.npz, and per variant <variant>.onnx with its tables.
CALIBRATION_DIR = ENGINE_DIR + "/calibration"

# Per-engine tables: {precision}_<kind>.parquet in the engine folder.
ENGINE_TABLES = ("build", "build_resources", "latency", "latency_samples", "latency_resources",
                 "accuracy", "predictions")
ONNX_TABLES = ("export", "export_resources")
MODEL_TABLES = ("history", "accuracy", "predictions")

# Folders directly under results/ that are the workflow's own, never a device.
RESERVED = ("data", "models", "summary", "logs", "benchmarks")


def data_file(name: str) -> str:
    """A prepared dataset's file pattern."""
    return f"{DATA_DIR}/{name}"


def model_file(name: str) -> str:
    """A trained model's file pattern (model.keras or a table)."""
    return f"{MODEL_DIR}/{name}"


def onnx_file(name: str) -> str:
    """An ONNX export's file pattern (model.onnx or a table)."""
    return f"{ONNX_DIR}/{name}"


def engine_table(kind: str, precision: str = "{precision}") -> str:
    """The pattern of one per-engine table (``kind`` from :data:`ENGINE_TABLES`)."""
    if kind not in ENGINE_TABLES:
        raise ValueError(f"unknown engine table {kind!r}; one of {ENGINE_TABLES}")
    return f"{ENGINE_DIR}/{precision}_{kind}.parquet"


def engine_side_file(name: str, precision: str = "{precision}") -> str:
    """Another file of one engine: ``{precision}_<name>`` (e.g. calibration.json)."""
    return f"{ENGINE_DIR}/{precision}_{name}"


def engine_pattern(precision: str = "{precision}", ext: str = "{ext}") -> str:
    """The engine pattern with ``precision`` and/or ``ext`` (the backend's suffix) filled in."""
    return ENGINE.replace("{precision}", precision).replace("{ext}", ext)


def calibration_file(name: str) -> str:
    """A file of the calibration study in one model's engine folder (``calibration/<name>``)."""
    return f"{CALIBRATION_DIR}/{name}"


# What a log is named after, below logs/<rule>/: the artifact it explains, without the workflow's
# own folder names and file suffixes.
LOG_OF = {
    "data": "{dataset}_{size}px",
    "model": "{dataset}_{size}px/{model}",
    "onnx": "{device}/{dataset}_{size}px/{model}",
    # One model's engine folder (the calibration study's logs: one file per step in it).
    "engine_dir": "{device}/{backend}/{dataset}_{size}px/{model}",
    "engine": "{device}/{backend}/{dataset}_{size}px/{model}/{precision}",
}


def log_file(rule: str, of: str, precision: str = "{precision}") -> str:
    """The log of a job of ``rule`` about one artifact (``of``: a key of :data:`LOG_OF`)."""
    return f"{{results}}/logs/{rule}/{LOG_OF[of].replace('{precision}', precision)}.log"


def log_in(rule: str, of: str, name: str) -> str:
    """A log named ``name`` in the log folder of ``rule`` about one artifact (``of``: a key of :data:`LOG_OF`)."""
    return f"{{results}}/logs/{rule}/{LOG_OF[of]}/{name}"


# --- plain functions for code outside Snakemake ----------------------------------------------

def data_dir(results: str, dataset: str, size: int | str) -> str:
    """Folder of one prepared dataset."""
    return DATA_DIR.format(results=results, dataset=dataset, size=size)


def model_dir(results: str, dataset: str, size: int | str, model: str) -> str:
    """Folder of one trained Keras model and its base accuracy."""
    return MODEL_DIR.format(results=results, dataset=dataset, size=size, model=model)


def onnx_dir(results: str, device: str, dataset: str, size: int | str, model: str) -> str:
    """Folder of one ONNX export, timed on the device."""
    return ONNX_DIR.format(results=results, device=device, dataset=dataset, size=size, model=model)


def engine_dir(results: str, device: str, backend: str, dataset: str, size: int | str, model: str) -> str:
    """Folder of one model's engines and their measurements."""
    return ENGINE_DIR.format(results=results, device=device, backend=backend, dataset=dataset, size=size, model=model)


def engine_file(results: str, device: str, backend: str, dataset: str, size: int | str, model: str,
                precision: str) -> str:
    """The engine of one precision, with its backend's suffix (:data:`registry.ENGINE_SUFFIX`)."""
    from workflow_scripts.core.registry import ENGINE_SUFFIX

    return ENGINE.format(results=results, device=device, backend=backend, dataset=dataset, size=size, model=model,
                         precision=precision, ext=ENGINE_SUFFIX[backend])


def ensure_parent(path: str | Path) -> Path:
    """Create the parent folder of ``path``; return ``path`` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- reading a path back ----------------------------------------------------------------------

def _regex(pattern: str, last: str) -> re.Pattern:
    """A regex of ``pattern`` (without ``{results}/``) followed by ``last``, each field a named group."""
    body = re.escape(pattern.replace("{results}/", "", 1))
    body = body.replace(r"\{size\}", r"(?P<size>\d+)")
    body = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+?)", body)
    return re.compile(f"^{body}/{last}$")


_PRECISION = "(?P<precision>[^/_]+)"
_PARSERS = (
    ("engine_table", _regex(ENGINE_DIR, f"{_PRECISION}_(?P<kind>{'|'.join(ENGINE_TABLES)})\\.parquet")),
    ("onnx_table", _regex(ONNX_DIR, f"(?P<kind>{'|'.join(ONNX_TABLES)})\\.parquet")),
    ("model_table", _regex(MODEL_DIR, f"(?P<kind>{'|'.join(MODEL_TABLES)})\\.parquet")),
)


def parse(path: str | Path, results_dir: str | Path) -> dict | None:
    """The fields a result table's path encodes, or None for a path outside the scheme.

    Returns ``{"where": engine_table|onnx_table|model_table, "kind": ..., "device": ...,
    "backend": ..., "dataset": ..., "input_size": int, "model": ..., "precision": ...}`` (the fields
    the path has). ``onnx`` is the export folder, never an engine backend; the workflow's own
    folders (:data:`RESERVED`) are never devices.
    """
    try:
        rel = Path(os.path.relpath(path, results_dir)).as_posix()
    except ValueError:
        return None
    for where, regex in _PARSERS:
        match = regex.match(rel)
        if not match:
            continue
        fields = match.groupdict()
        if where != "model_table" and fields["device"] in RESERVED:
            return None
        if where == "engine_table" and fields["backend"] == "onnx":
            return None
        if where == "model_table" and rel.split("/", 1)[0] != "models":
            return None
        fields["input_size"] = int(fields.pop("size"))
        return {"where": where, **fields}
    return None
