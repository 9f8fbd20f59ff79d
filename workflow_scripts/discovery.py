"""Finding the per-engine tables of every device and backend under ``results/``.

Light on purpose (no pandas): rules/common.smk fingerprints the results folder while Snakemake
builds the DAG. Paths are read with the one path scheme, :func:`workflow_scripts.paths.parse`.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

from . import paths

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


def discover_results(results_dir: str | Path) -> dict[str, list[str]]:
    """Every per-engine table under ``results_dir``, of every device and backend, by input kind."""
    found: dict[str, list[str]] = {key: [] for key in FILE_KEYS}
    root = str(results_dir)
    # Fixed-depth globs: device/backend/dataset_size/model/file and models/dataset_size/model/file.
    for path in sorted(glob.glob(f"{root}/*/*/*/*/*.parquet") + glob.glob(f"{root}/models/*/*/accuracy.parquet")):
        labels = parse_result_path(path, root)
        if labels is not None:
            found[input_key(labels)].append(path)
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
    from .errors import CorruptArtifact

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


def other_results(results_dir: str | Path, current: dict[str, list[str]]) -> list[str]:
    """Tables under ``results_dir`` that ``current`` does not list, each as 'path size mtime'.

    Used as a Snakemake param: when another device's results arrive or change, the param changes
    and the summary reruns, while those files never become inputs (no rule would rebuild them here).
    """
    known = {os.path.normpath(p) for files in current.values() for p in (files or [])}
    out = []
    for found in discover_results(results_dir).values():
        for path in found:
            if os.path.normpath(path) not in known:
                # Checked while planning: a truncated table of another device fails here, before
                # Snakemake removes the summary's old outputs to rerun it.
                check_parquet_file(path, results_dir)
                stat = os.stat(path)
                out.append(f"{path} {stat.st_size} {stat.st_mtime_ns}")
    return sorted(out)


def results_fingerprint(results_dir: str | Path, current: dict[str, list[str]]) -> str:
    """A short stable digest of :func:`other_results`, so the rule's param (and rerun message) stays small."""
    others = other_results(results_dir, current)
    digest = hashlib.sha256("\n".join(others).encode()).hexdigest()[:16]
    return f"{len(others)} tables beyond the current config, sha256 {digest}"
