"""Finding the per-engine tables of every device and backend under ``results/``.

Light on purpose (no pandas): rules/common.smk fingerprints the results folder while Snakemake
builds the DAG. Paths are read with the one path scheme, :func:`workflow_scripts.core.paths.parse`.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from pathlib import Path

from workflow_scripts.core import paths
from workflow_scripts.core.registry import BACKENDS

log = logging.getLogger(__name__)

# Input kinds of the summary job, by what the path parser calls the file.
ENGINE_KINDS = {
    "build": "build_files",
    "build_resources": "build_resource_files",
    "latency": "latency_files",
    "latency_samples": "latency_samples_files",
    "accuracy": "accuracy_files",
    "predictions": "prediction_files",
}
ONNX_KINDS = {"export": "export_files", "export_resources": "export_resource_files"}
FILE_KEYS = ["export_files", "export_resource_files", "build_files", "build_resource_files", "latency_files",
             "latency_samples_files", "accuracy_files", "prediction_files", "keras_accuracy_files"]


def parse_result_path(path: str | Path, results_dir: str | Path) -> dict | None:
    """The labels a summary input's path encodes (device, backend, dataset, input_size, model, precision,
    kind), or None for a file the summary does not read."""
    fields = paths.parse(path, results_dir)
    if fields is None:
        return None
    where = fields.pop("where")
    if where == "model_table":
        if fields["kind"] != "accuracy":
            return None
        fields["kind"] = "keras_accuracy"
    elif where == "onnx_table":
        fields["backend"] = "onnx"
    elif fields["kind"] == "latency_resources":
        return None
    return fields


def input_key(labels: dict) -> str:
    """The summary input (a FILE_KEYS entry) a parsed path belongs to."""
    kind = labels["kind"]
    if kind == "keras_accuracy":
        return "keras_accuracy_files"
    return ONNX_KINDS.get(kind) or ENGINE_KINDS[kind]


def unknown_backend_message(folders: list[str], results_dir: str | Path) -> str:
    """The warning about backend folders the registry does not know (a copy such as onnxruntime-backup)."""
    return (f"left out of the summary: {', '.join(f'{results_dir}/{f}' for f in folders)} "
            f"{'is not a backend folder' if len(folders) == 1 else 'are not backend folders'} (known backends: "
            f"{', '.join(BACKENDS)}, and onnx for the exports); a copy would count its engines twice. Move "
            f"{'it' if len(folders) == 1 else 'them'} out of {results_dir}/ to silence this warning")


def split_known_backends(results_dir: str | Path) -> tuple[dict[str, list[str]], list[str]]:
    """Every per-engine table under ``results_dir`` by input kind, and the folders left out: a
    ``<device>/<folder>`` whose name is no backend of the registry (nor ``onnx``)."""
    found: dict[str, list[str]] = {key: [] for key in FILE_KEYS}
    unknown: set[str] = set()
    root = str(results_dir)
    # Fixed-depth globs: device/backend/dataset_size/model/file and models/dataset_size/model/file.
    for path in sorted(glob.glob(f"{root}/*/*/*/*/*.parquet") + glob.glob(f"{root}/models/*/*/accuracy.parquet")):
        labels = parse_result_path(path, root)
        if labels is None:
            continue
        backend = labels.get("backend")
        if backend is not None and backend != "onnx" and backend not in BACKENDS:
            unknown.add(f"{labels['device']}/{backend}")
            continue
        found[input_key(labels)].append(path)
    return found, sorted(unknown)


def discover_results(results_dir: str | Path) -> dict[str, list[str]]:
    """Every per-engine table under ``results_dir``, of every device and known backend, by input kind.

    A folder beside the backends that is none (``onnxruntime-backup``) is left out with a warning
    naming it: its tables would otherwise be summarized as a backend of their own, counted twice.
    """
    found, unknown = split_known_backends(results_dir)
    if unknown:
        log.warning(unknown_backend_message(unknown, results_dir))
    return found


def merge_file_lists(*lists: dict[str, list[str]]) -> dict[str, list[str]]:
    """Union of several ``{input kind: [paths]}`` maps, without repeats (paths compared normalized)."""
    out: dict[str, list[str]] = {key: [] for key in FILE_KEYS}
    seen: dict[str, set[str]] = {key: set() for key in FILE_KEYS}
    for files in lists:
        for key in FILE_KEYS:
            for path in files.get(key, []) or []:
                norm = os.path.normpath(path)
                if norm not in seen[key]:
                    seen[key].add(norm)
                    out[key].append(path)
    return out


# The rule that writes each kind of table (the engine rules exist per backend: build_engine_<backend>).
REMAKING_RULE = {"build": "build_engine", "build_resources": "build_engine", "latency": "benchmark_latency",
                 "latency_samples": "benchmark_latency", "accuracy": "evaluate_engine",
                 "predictions": "evaluate_engine", "export": "export_onnx", "export_resources": "export_onnx",
                 "keras_accuracy": "evaluate_keras"}


def remaking_rule(labels: dict) -> str:
    """The rule whose job writes the table ``labels`` (from :func:`parse_result_path`) describe."""
    rule = REMAKING_RULE[labels["kind"]]
    if rule == "build_engine":
        int8 = "int8_" if labels.get("precision") == "int8" else ""
        return f"build_{int8}engine_{labels['backend']}"
    return rule


def corrupt_table_message(path: str | Path, results_dir: str | Path, why: str) -> str:
    """What to say about an unreadable table: its path, why, and how to remake it."""
    labels = parse_result_path(path, results_dir) or {}
    rule = remaking_rule(labels) if labels.get("kind") in REMAKING_RULE else "its rule"
    device = labels.get("device")
    where = (f" on the device that measured it ({device})" if device else "")
    return (f"{path} is not a readable Parquet table ({why}). Remake it{where} with "
            f"snakemake --forcerun {rule} {path}, or move the folder holding it out of {results_dir}/")


def check_parquet_file(path: str | Path, results_dir: str | Path) -> None:
    """Refuse a truncated Parquet file cheaply (its header and footer magic), naming it and its rule."""
    from workflow_scripts.core.errors import CorruptArtifact

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(size - 4, 0))
            tail = handle.read(4)
    except OSError as exc:
        raise CorruptArtifact(corrupt_table_message(path, results_dir, str(exc))) from exc
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise CorruptArtifact(corrupt_table_message(path, results_dir, f"{size} bytes, truncated or not Parquet"))


def engine_files_of(table: str | Path, results_dir: str | Path) -> list[Path]:
    """The engine file (and its companions, OpenVINO's .bin) a per-engine table under ``results_dir``
    belongs to; [] for a table of no engine (exports, Keras accuracy)."""
    labels = parse_result_path(table, results_dir)
    if not labels or labels.get("backend") not in BACKENDS or "precision" not in labels:
        return []
    engine = Path(paths.engine_file(str(results_dir), labels["device"], labels["backend"], labels["dataset"],
                                    labels["input_size"], labels["model"], labels["precision"]))
    return [engine] + [engine.with_suffix(f".{ext}") for ext in BACKENDS[labels["backend"]].companions]


def _stat_line(path: str | Path) -> str:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return f"{path} missing"
    return f"{path} {stat.st_size} {stat.st_mtime_ns}"


def other_results(results_dir: str | Path, current: dict[str, list[str]]) -> list[str]:
    """Tables under ``results_dir`` that ``current`` does not list, each as 'path size mtime', and the
    engine files their build tables describe ('path size mtime' or 'path missing').

    Used as a Snakemake param: when another device's results arrive or change (or one of its engines
    is deleted or replaced), the param changes and the summary reruns, while those files never become
    inputs (no rule would rebuild them here).
    """
    known = {os.path.normpath(p) for files in current.values() for p in (files or [])}
    out = []
    for key, found in split_known_backends(results_dir)[0].items():
        for path in found:
            if os.path.normpath(path) not in known:
                # Checked while planning: a truncated table of another device fails here, before
                # Snakemake removes the summary's old outputs to rerun it.
                check_parquet_file(path, results_dir)
                out.append(_stat_line(path))
                if key == "build_files":
                    out += [_stat_line(engine) for engine in engine_files_of(path, results_dir)]
    return sorted(out)


def results_fingerprint(results_dir: str | Path, current: dict[str, list[str]]) -> str:
    """A short stable digest of :func:`other_results`, so the rule's param (and rerun message) stays small.

    Backend folders the registry does not know are named in a warning here, while planning."""
    others = other_results(results_dir, current)
    unknown = split_known_backends(results_dir)[1]
    if unknown:
        import sys

        print(f"WARNING: {unknown_backend_message(unknown, results_dir)}", file=sys.stderr)
    digest = hashlib.sha256("\n".join(others).encode()).hexdigest()[:16]
    tables = sum(1 for line in others if line.endswith(".parquet") or ".parquet " in line)
    return f"{tables} tables beyond the current config, sha256 {digest}"
