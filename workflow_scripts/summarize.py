"""Summary tables across every device and backend found under ``results/``, with interval statistics.

The per-engine tables follow the path scheme of :mod:`workflow_scripts.paths`; the summary step
reads the current config's tables (real Snakemake inputs, so they are built first) and, at run
time, every other device's and backend's tables found under the same results folder. It writes
only ``results/summary/``, never another device's folder.

Rows of one experiment cell (device, backend, dataset, model, precision) produced under
different settings (``config_hash``) are never mixed: the newest by ``timestamp`` is kept and the
dropped ones are logged (an older run of the cell, e.g. at another input size, is superseded).

Across cells, the rows that remain must agree on every setting that determines what they measure
(the ``settings`` provenance column, ``config.comparable_settings``): :func:`check_settings` flattens
each row's settings to dotted keys, and a key with more than one value among the rows that carry it
is a conflict. Conflicts raise :class:`~workflow_scripts.errors.ConfigError` before anything is
written, unless config key ``summary.allow_mixed_configs`` is true: then they are logged as a
warning, the rows are kept and every summary table carries ``settings_hash`` to tell them apart.
Rows without a ``settings`` column (results written before it existed) are logged as of unknown
settings and take no part in the comparison.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import statistics as st
from .artifacts import write_parquet, write_text
from .config import flatten_settings
from .device import cuda_cores as cuda_cores_of
from .errors import ConfigError

log = logging.getLogger(__name__)
KEYS = ["device", "backend", "dataset", "model"]
CELL = KEYS + ["precision"]
PRECISIONS = ("fp32", "fp16", "int8")

# Folders directly under results/ that are not devices.
NOT_DEVICES = {"summary", "models", "data", "logs", "benchmarks"}
_ENGINE_KINDS = {
    "build": "build_files",
    "build_resources": "build_resource_files",
    "latency": "latency_files",
    "latency_samples": "latency_samples_files",
    "accuracy": "accuracy_files",
    "predictions": "prediction_files",
}
_ENGINE_RE = re.compile(r"^(?P<device>[^/]+)/(?P<backend>[^/]+)/(?P<dataset>[^/]+)_(?P<size>\d+)px/(?P<model>[^/]+)/"
                        r"(?P<precision>fp32|fp16|int8)_(?P<kind>" + "|".join(_ENGINE_KINDS) + r")\.parquet$")
_ONNX_RE = re.compile(r"^(?P<device>[^/]+)/onnx/(?P<dataset>[^/]+)_(?P<size>\d+)px/(?P<model>[^/]+)/"
                      r"(?P<kind>export|export_resources)\.parquet$")
_KERAS_RE = re.compile(r"^models/(?P<dataset>[^/]+)_(?P<size>\d+)px/(?P<model>[^/]+)/accuracy\.parquet$")
FILE_KEYS = ["export_files", "export_resource_files", "build_files", "build_resource_files", "latency_files",
             "latency_samples_files", "accuracy_files", "prediction_files", "keras_accuracy_files"]


# --- finding the per-engine tables -------------------------------------------------------------

def parse_result_path(path: str | Path, results_dir: str | Path) -> dict | None:
    """The labels a per-engine table's path encodes (device, backend, dataset, input_size, model, ...)."""
    try:
        rel = Path(os.path.relpath(path, results_dir)).as_posix()
    except ValueError:
        return None
    for regex, fixed in ((_ENGINE_RE, {}), (_ONNX_RE, {"backend": "onnx"}), (_KERAS_RE, {"kind": "keras_accuracy"})):
        m = regex.match(rel)
        if m:
            labels = {**m.groupdict(), **fixed}
            if labels.get("device") in NOT_DEVICES or labels.get("backend") in NOT_DEVICES:
                return None
            if regex is _ENGINE_RE and labels["backend"] == "onnx":
                return None
            labels["input_size"] = int(labels.pop("size"))
            return labels
    return None


def discover_results(results_dir: str | Path) -> dict[str, list[str]]:
    """Every per-engine table under ``results_dir``, of every device and backend, by input kind."""
    found: dict[str, list[str]] = {key: [] for key in FILE_KEYS}
    root = str(results_dir)
    # Fixed-depth globs: device/backend/dataset_size/model/file and models/dataset_size/model/file.
    for path in sorted(glob.glob(f"{root}/*/*/*/*/*.parquet") + glob.glob(f"{root}/models/*/*/accuracy.parquet")):
        labels = parse_result_path(path, root)
        if labels is None:
            continue
        kind = labels["kind"]
        key = {"export": "export_files", "export_resources": "export_resource_files",
               "keras_accuracy": "keras_accuracy_files"}.get(kind) or _ENGINE_KINDS[kind]
        found[key].append(path)
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


def other_results(results_dir: str | Path, current: dict[str, list[str]]) -> list[str]:
    """Tables under ``results_dir`` that ``current`` does not list, each as 'path size mtime'.

    Used as a Snakemake param: when another device's results arrive or change, the param changes
    and the summary reruns, while those files never become inputs (no rule would rebuild them here).
    """
    known = {os.path.normpath(p) for paths in current.values() for p in (paths or [])}
    out = []
    for paths in discover_results(results_dir).values():
        for path in paths:
            if os.path.normpath(path) not in known:
                stat = os.stat(path)
                out.append(f"{path} {stat.st_size} {stat.st_mtime_ns}")
    return sorted(out)


def results_fingerprint(results_dir: str | Path, current: dict[str, list[str]]) -> str:
    """A short stable digest of :func:`other_results`, so the rule's param (and rerun message) stays small."""
    others = other_results(results_dir, current)
    digest = hashlib.sha256("\n".join(others).encode()).hexdigest()[:16]
    return f"{len(others)} tables beyond the current config, sha256 {digest}"


# --- reading and de-duplicating ----------------------------------------------------------------

def read_all(paths, results_dir: str | Path | None = None) -> pd.DataFrame:
    """Concatenate Parquet files; labels their path encodes fill columns the rows lack (input_size)."""
    frames = []
    for path in paths:
        frame = pd.read_parquet(path)
        labels = parse_result_path(path, results_dir) if results_dir is not None else None
        for key, value in (labels or {}).items():
            if key in ("kind", "backend"):
                continue  # export rows say backend 'tf2onnx'; the folder says 'onnx'
            if key not in frame.columns:
                frame[key] = value
        if labels and "backend" not in frame.columns:
            frame["backend"] = labels["backend"]
        frames.append(frame)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def keep_newest_config(frame: pd.DataFrame, keys: list[str], table: str) -> pd.DataFrame:
    """Per group of ``keys``, keep only the rows of the newest ``config_hash`` (by ``timestamp``); log drops."""
    if not len(frame) or "config_hash" not in frame.columns or "timestamp" not in frame.columns:
        return frame
    keys = [k for k in keys if k in frame.columns]
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    keep = pd.Series(True, index=frame.index)
    for key, group in frame.groupby(keys, dropna=False, sort=False):
        if group["config_hash"].nunique(dropna=False) < 2:
            continue
        newest = stamps[group.index].groupby(group["config_hash"], dropna=False).max().sort_values(na_position="first")
        kept = newest.index[-1]
        keep[group.index] = (group["config_hash"] == kept).to_numpy()
        log.warning("%s: %s has rows of %d settings; keeping config_hash %s (newest, %s), dropping %s",
                    table, dict(zip(keys, key if isinstance(key, tuple) else (key,))), len(newest), kept,
                    newest.iloc[-1], ", ".join(str(h) for h in newest.index[:-1]))
    return frame[keep.to_numpy()].reset_index(drop=True)


# --- one set of settings per summary -----------------------------------------------------------

# The per-engine tables whose rows feed the summary tables, with the keys their rows are
# de-duplicated on (keep_newest_config) and the table's name in messages. Latency samples and
# per-image predictions are not compared: they follow the latency and accuracy rows kept (one job
# writes a summary row and its samples/predictions with the same provenance).
CHECKED_TABLES = {
    "export_files": (["device", "dataset", "model", "stage"], "export"),
    "export_resource_files": (["device", "dataset", "model"], "export_resources"),
    "build_files": (CELL + ["stage"], "build"),
    "build_resource_files": (CELL, "build_resources"),
    "latency_files": (CELL, "latency"),
    "accuracy_files": (CELL, "accuracy"),
    "keras_accuracy_files": (["dataset", "model", "precision"], "keras_accuracy"),
}
PLACE = ["device", "backend", "dataset", "input_size", "model", "precision"]
# Rules whose jobs read each top-level key (for the rerun hint of a conflict).
KEY_RULES = {
    "input_size": "prepare_dataset", "seed": "prepare_dataset", "split": "prepare_dataset",
    "weights": "train_model", "train": "train_model",
    "export": "export_onnx", "compression": "export_onnx", "monitor": "export_onnx",
    "calibration": "build_int8_engine", "tensorrt": "build_engine build_int8_engine",
    "benchmark": "benchmark_latency", "evaluate": "evaluate_engine evaluate_keras",
}
ALLOW_HINT = "--config summary='{allow_mixed_configs: true}'"


def _place(values: dict) -> str:
    """'device/backend/dataset_<size>px/model/precision' from the labels a row has."""
    parts = [str(values["device"]) if "device" in values else "?",
             str(values["backend"]) if "backend" in values else "?"]
    if "dataset" in values:
        size = values.get("input_size")
        parts.append(f"{values['dataset']}_{int(size)}px" if pd.notna(size) and size != "" else str(values["dataset"]))
    parts += [str(values[k]) for k in ("model", "precision") if k in values and pd.notna(values[k])]
    return "/".join(parts)


def settings_values(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
    """Every dotted setting's values across the rows of ``frames``, and the rows of unknown settings.

    Returns ``({dotted key: {value as JSON: {places}}}, {places without settings})``; a place is
    'device/backend/dataset_<size>px/model/precision' (the parts a table has).
    """
    values: dict[str, dict[str, set[str]]] = {}
    unknown: set[str] = set()
    flat_of: dict[str, dict | None] = {}
    for frame in frames.values():
        if not len(frame):
            continue
        cols = [c for c in PLACE if c in frame.columns]
        text = frame["settings"].fillna("").astype(str) if "settings" in frame.columns \
            else pd.Series("", index=frame.index)
        pairs = frame[cols].assign(_settings=text.to_numpy()).drop_duplicates()
        for record in pairs.to_dict("records"):
            settings = record.pop("_settings")
            place = _place(record)
            if settings not in flat_of:
                try:
                    parsed = json.loads(settings) if settings else None
                    flat_of[settings] = flatten_settings(parsed) if isinstance(parsed, dict) else None
                except ValueError:
                    flat_of[settings] = None
            flat = flat_of[settings]
            if flat is None:
                unknown.add(place)
                continue
            for key, value in flat.items():
                shown = json.dumps(value, sort_keys=True, default=str)
                values.setdefault(key, {}).setdefault(shown, set()).add(place)
    return values, unknown


def settings_conflicts(frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, set[str]]]:
    """The dotted settings with more than one value across the rows that carry them (see :func:`settings_values`)."""
    return _conflicting(settings_values(frames)[0])


def _conflicting(values: dict[str, dict[str, set[str]]]) -> dict[str, dict[str, set[str]]]:
    """The keys of :func:`settings_values`' first result that have more than one value, sorted."""
    return {key: found for key, found in sorted(values.items()) if len(found) > 1}


def _abbreviate(places: set[str], folders: int = 3, cells: int = 2) -> str:
    """'dev/backend (N cells: a, b, … and K more)' per device/backend folder, at most ``folders`` of them."""
    by_folder: dict[str, list[str]] = {}
    for place in sorted(places):
        head, _, rest = place.partition("/")
        backend, _, cell = rest.partition("/")
        by_folder.setdefault(f"{head}/{backend}", []).append(cell or "(all)")
    parts = []
    for folder, found in list(by_folder.items())[:folders]:
        shown = ", ".join(found[:cells]) + (f", … and {len(found) - cells} more" if len(found) > cells else "")
        parts.append(f"{folder} ({len(found)} cell{'s' if len(found) != 1 else ''}: {shown})")
    if len(by_folder) > folders:
        parts.append(f"… and {len(by_folder) - folders} more device/backend folders")
    return "; ".join(parts)


def conflicts_message(conflicts: dict[str, dict[str, set[str]]], current: dict | None = None,
                      results_dir: str | Path | None = None, max_keys: int = 8) -> str:
    """The refusal: each differing key with its values and where each comes from, then the three fixes."""
    lines = [(f"the summary would mix rows measured under different settings in {len(conflicts)} "
              f"key{'s' if len(conflicts) != 1 else ''}; config key summary.allow_mixed_configs is false, so "
              "nothing was written:")]
    for key, found in list(conflicts.items())[:max_keys]:
        now = ""
        if current is not None:
            now = f" [current config: {json.dumps(current[key], sort_keys=True, default=str)}]" \
                if key in current else " [not set by the current config]"
        lines.append(f"  - {key}{now}: " + " | ".join(f"{value} on {_abbreviate(places)}"
                                                    for value, places in sorted(found.items())))
    if len(conflicts) > max_keys:
        lines.append(f"  - … and {len(conflicts) - max_keys} more keys: " + ", ".join(list(conflicts)[max_keys:]))
    rules = sorted({rule for key in conflicts for rule in KEY_RULES.get(key.split(".")[0], "").split()})
    where = f"{results_dir}/" if results_dir else "the results folder"
    lines += [
        "Fix it in one of three ways:",
        ("  1. rerun the cells with the value you do not want under the config you want: on the machine that "
         "measured them, run snakemake with that config (it reruns jobs whose settings changed); for copied "
         f"results without Snakemake metadata add --forcerun {' '.join(rules) or '<rule>'} (reruns those jobs "
         "and everything after them), or delete those cells' tables and run snakemake again;"),
        f"  2. move the results you do not want to compare out of {where} (e.g. another device's folder);",
        ("  3. draw them together anyway: set summary.allow_mixed_configs: true in the config file or run with "
         f"{ALLOW_HINT}; every summary table then carries settings_hash (and the per-row tables settings) to "
         "tell the rows apart."),
    ]
    return "\n".join(lines)


def check_settings(frames: dict[str, pd.DataFrame], allow_mixed: bool = False, current: dict | None = None,
                   results_dir: str | Path | None = None) -> dict[str, dict[str, set[str]]]:
    """Refuse (ConfigError) rows of different comparable settings unless ``allow_mixed``; return the conflicts.

    ``frames`` are the de-duplicated per-engine tables feeding the summary; ``current`` the current
    config's flattened comparable settings (only to mark its values in the message). Rows without
    a ``settings`` column (older results) are logged as of unknown settings and never conflict.
    """
    values, unknown = settings_values(frames)
    if unknown:
        log.warning("%d cells have no settings column (results from before it existed): their settings are "
                    "unknown and not compared: %s", len(unknown), _abbreviate(unknown))
    conflicts = _conflicting(values)
    if not conflicts:
        return conflicts
    message = conflicts_message(conflicts, current, results_dir)
    if not allow_mixed:
        raise ConfigError(message)
    log.warning("summary.allow_mixed_configs is true: summarizing rows of different settings together; "
                "settings_hash in every table tells them apart. %s",
                message.split("\n", 1)[1].split("Fix it")[0].rstrip())
    return conflicts


def _winners(frame: pd.DataFrame) -> pd.DataFrame:
    """The (cell, input_size) pairs a de-duplicated table kept, for filtering tables without a hash."""
    cols = [c for c in CELL + ["input_size"] if c in frame.columns]
    return frame[cols].drop_duplicates()


def _restrict(frame: pd.DataFrame, winners: pd.DataFrame) -> pd.DataFrame:
    if not len(frame) or not len(winners):
        return frame
    cols = [c for c in winners.columns if c in frame.columns]
    return frame.merge(winners[cols].drop_duplicates(), on=cols, how="inner")


def _cell_index(frame: pd.DataFrame, keys: list[str] = CELL) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[keys])


def normalize_to_fp32(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` divided by the FP32 row's value of the same device/backend/dataset/model."""
    base = frame[frame["precision"] == "fp32"].drop_duplicates(KEYS).set_index(KEYS)[column]
    values = base.reindex(pd.MultiIndex.from_frame(frame[KEYS])).to_numpy(dtype=float)
    return pd.Series(frame[column].to_numpy(dtype=float) / values, index=frame.index)


# --- tables --------------------------------------------------------------------------------------

def compression_tables(export: pd.DataFrame, build: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run compression rows (warm-ups flagged) and per-stage statistics of the measured runs."""
    export = keep_newest_config(export, ["device", "dataset", "model", "stage"], "export")
    build = keep_newest_config(build, CELL + ["stage"], "build")
    if len(export):
        export = export.assign(precision="all")
    runs = pd.concat([f for f in (export, build) if len(f)], ignore_index=True) if len(export) or len(build) \
        else pd.DataFrame()
    if not len(runs):
        return runs, pd.DataFrame()
    rows = []
    for key, group in runs.groupby(CELL + ["stage"], dropna=False):
        measured = group.loc[~group["warmup"].astype(bool), "duration_s"]
        repeat = st.repeat_statistics(measured.to_numpy())
        rows.append({**dict(zip(CELL + ["stage"], key)),
                     "input_size": group["input_size"].iloc[0] if "input_size" in group else np.nan,
                     "warmup_runs": int(group["warmup"].astype(bool).sum()),
                     "measured_runs": repeat["runs"], "duration_mean_s": repeat["mean"],
                     "duration_std_s": repeat["std"], "duration_min_s": repeat["min"],
                     "duration_max_s": repeat["max"], "duration_ci_low_s": repeat["ci_low"],
                     "duration_ci_high_s": repeat["ci_high"],
                     "config_hash": group["config_hash"].iloc[0] if "config_hash" in group else "",
                     "settings_hash": group["settings_hash"].iloc[0] if "settings_hash" in group else "",
                     "timestamp": group["timestamp"].max() if "timestamp" in group else ""})
    return runs, pd.DataFrame(rows)


def latency_table(latency: pd.DataFrame, samples: pd.DataFrame, seed: int, n_resamples: int) -> pd.DataFrame:
    """Latency rows with the median's bootstrap CI, p90/p99 from the raw samples, and ratios to FP32."""
    latency = keep_newest_config(latency, CELL, "latency")
    if not len(latency):
        return latency
    samples = _restrict(keep_newest_config(samples, CELL, "latency_samples"), _winners(latency)) \
        if len(samples) else samples
    by_cell = {key: group["latency_ms"].to_numpy() for key, group in samples.groupby(CELL)} if len(samples) else {}
    out = latency.copy()
    new: dict[str, list] = {}
    for i, row in out.iterrows():
        key = tuple(row[k] for k in CELL)
        raw = by_cell.get(key)
        if raw is None:
            log.warning("no raw latency samples for %s; its median has no interval", dict(zip(CELL, key)))
            stats_ = {"latency_samples": 0, "latency_median_ci_low_ms": np.nan, "latency_median_ci_high_ms": np.nan,
                      "latency_per_image_median_ci_low_ms": np.nan, "latency_per_image_median_ci_high_ms": np.nan}
        else:
            stats_ = st.latency_statistics(raw, int(row.get("batch_size", 1) or 1), n_resamples=n_resamples, seed=seed)
        fp32 = by_cell.get(key[:-1] + ("fp32",))
        # Only the interval is kept: the point ratio comes from the medians (latency_median_vs_fp32).
        if raw is not None and fp32 is not None:
            _, low, high = st.ratio_of_medians_ci(raw, fp32, n_resamples=n_resamples, seed=seed)
        else:
            low, high = np.nan, np.nan
        stats_.update({"latency_median_vs_fp32_ci_low": low, "latency_median_vs_fp32_ci_high": high})
        for name, value in stats_.items():
            new.setdefault(name, []).append(value)
    for name, values in new.items():
        out[name] = values
    if (out["precision"] == "fp32").any():
        out["latency_median_vs_fp32"] = normalize_to_fp32(out, "latency_median_ms")
        fp32_valid = out[out["precision"] == "fp32"].drop_duplicates(KEYS).set_index(KEYS)["valid"]
        out["fp32_valid"] = fp32_valid.reindex(pd.MultiIndex.from_frame(out[KEYS])).to_numpy()
    else:
        out["latency_median_vs_fp32"] = np.nan
        out["fp32_valid"] = pd.NA
    return out


def accuracy_table(accuracy: pd.DataFrame, predictions: pd.DataFrame, keras: pd.DataFrame, seed: int,
                   n_resamples: int) -> pd.DataFrame:
    """Accuracy rows with Wilson intervals, agreement with FP32, and the paired-bootstrap top-1 drop."""
    accuracy = keep_newest_config(accuracy, CELL, "accuracy")
    predictions = _restrict(predictions, _winners(accuracy)) if len(accuracy) and len(predictions) else predictions
    if len(accuracy):
        accuracy = accuracy.copy()
        correct = {}
        if len(predictions):
            for key, group in predictions.groupby(CELL):
                correct[key] = group.drop_duplicates("image_index").set_index("image_index")
        extra: dict[str, list] = {}
        for _, row in accuracy.iterrows():
            key = tuple(row[k] for k in CELL)
            engine, base = correct.get(key), correct.get(key[:-1] + ("fp32",))
            values = {"agreement_with_fp32": np.nan, "top1_drop_vs_fp32_points": np.nan,
                      "top1_drop_ci_low_points": np.nan, "top1_drop_ci_high_points": np.nan, "paired_images": 0}
            if engine is not None and base is not None:
                # Pair on the image: only images both engines were evaluated on count.
                joined = base[["label", "prediction"]].merge(engine[["label", "prediction"]], left_index=True,
                                                             right_index=True, how="inner", suffixes=("_fp32", ""))
                if len(joined) < max(len(base), len(engine)):
                    log.warning("%s: FP32 and this engine share %d of %d/%d images", dict(zip(CELL, key)),
                                len(joined), len(base), len(engine))
                ok_base = (joined["prediction_fp32"] == joined["label_fp32"]).to_numpy(dtype=float)
                ok_engine = (joined["prediction"] == joined["label"]).to_numpy(dtype=float)
                drop, low, high = st.paired_difference_ci(ok_base, ok_engine, n_resamples=n_resamples, seed=seed)
                values.update({"agreement_with_fp32": float((joined["prediction"] == joined["prediction_fp32"]).mean()),
                               "top1_drop_vs_fp32_points": 100 * drop, "top1_drop_ci_low_points": 100 * low,
                               "top1_drop_ci_high_points": 100 * high, "paired_images": int(len(joined))})
            for name, value in values.items():
                extra.setdefault(name, []).append(value)
        for name, values in extra.items():
            accuracy[name] = values
        # Without per-image predictions the drop is still known, just without an interval.
        fp32 = accuracy[accuracy["precision"] == "fp32"].drop_duplicates(KEYS).set_index(KEYS)["top1_accuracy"]
        fallback = 100 * (fp32.reindex(pd.MultiIndex.from_frame(accuracy[KEYS])).to_numpy(dtype=float)
                          - accuracy["top1_accuracy"].to_numpy(dtype=float))
        accuracy["top1_drop_vs_fp32_points"] = accuracy["top1_drop_vs_fp32_points"].fillna(
            pd.Series(fallback, index=accuracy.index))
    if len(keras):
        keras = keep_newest_config(keras, ["dataset", "model", "precision"], "keras_accuracy")
        keras = keras.drop(columns=[c for c in ("device", "backend") if c in keras.columns])
        # The Keras model is device-independent: show it beside each device's engines of that cell.
        if len(accuracy):
            on = [c for c in ("dataset", "model", "input_size") if c in keras.columns and c in accuracy.columns]
            pairs = accuracy[["device", "backend"] + on].drop_duplicates()
            keras = keras.merge(pairs, on=on, how="inner")
        else:
            keras = keras.assign(device="any", backend="keras")
        accuracy = pd.concat([keras, accuracy], ignore_index=True) if len(accuracy) else keras
    if len(accuracy):
        bounds = [st.wilson_interval(k, n) if pd.notna(k) and pd.notna(n) else (np.nan, np.nan)
                  for k, n in zip(accuracy["top1_correct"], accuracy["images"])]
        accuracy["top1_ci_low"] = [b[0] for b in bounds]
        accuracy["top1_ci_high"] = [b[1] for b in bounds]
    return accuracy


def size_table(latency: pd.DataFrame, build: pd.DataFrame) -> pd.DataFrame:
    """Engine size (MB) per cell, its ONNX source size, and size relative to FP32."""
    if not len(latency):
        return pd.DataFrame()
    cols = [c for c in CELL + ["input_size", "engine_mb", "settings_hash"] if c in latency.columns]
    size = latency[cols].copy()
    if len(build) and "onnx_mb" in build.columns:
        onnx = build.drop_duplicates(CELL).set_index(CELL)["onnx_mb"]
        size["onnx_mb"] = onnx.reindex(_cell_index(size)).to_numpy()
    size["size_vs_fp32"] = normalize_to_fp32(size, "engine_mb") if (size["precision"] == "fp32").any() else np.nan
    return size


RESOURCE_METRICS = {
    "gpu_util_percent_mean": "GPU utilization %",
    "utilized_cuda_cores_mean": "utilized CUDA cores",
    "cpu_percent_of_machine_mean": "CPU % of machine",
    "system_memory_percent_mean": "system memory %",
}


def device_cuda_cores(frame: pd.DataFrame) -> pd.Series:
    """CUDA cores per row: the provenance column where recorded, else looked up from the device tag."""
    recorded = pd.to_numeric(frame["cuda_cores"], errors="coerce") if "cuda_cores" in frame.columns \
        else pd.Series(np.nan, index=frame.index)
    looked_up = frame["device"].map(lambda tag: cuda_cores_of(str(tag).replace("-", " ")))
    return recorded.fillna(pd.to_numeric(looked_up, errors="coerce"))


def resources_table(latency: pd.DataFrame) -> pd.DataFrame:
    """Resource use during the latency runs (means/peaks), utilized CUDA cores, and ratios to FP32."""
    if not len(latency):
        return pd.DataFrame()
    columns = [c for c in latency.columns if c.endswith(("_mean", "_peak")) and not c.startswith("duration")]
    keep = [c for c in CELL + ["input_size", "valid", "fp32_valid", "settings_hash"] if c in latency.columns]
    resources = latency[keep + columns].copy()
    resources["cuda_cores"] = device_cuda_cores(latency)
    if "gpu_util_percent_mean" in resources.columns:
        # The study's Fig. 6b: the share of the GPU busy times its core count.
        resources["utilized_cuda_cores_mean"] = resources["gpu_util_percent_mean"] / 100 * resources["cuda_cores"]
        columns.append("utilized_cuda_cores_mean")
    if (resources["precision"] == "fp32").any():
        for column in columns:
            resources[f"{column}_vs_fp32"] = normalize_to_fp32(resources, column)
    return resources


def trace_table(export_traces: pd.DataFrame, build_traces: pd.DataFrame) -> pd.DataFrame:
    """Resource time series of the ONNX export (precision 'onnx') and the engine builds, newest settings only."""
    export_traces = keep_newest_config(export_traces, ["device", "dataset", "model"], "export_resources")
    build_traces = keep_newest_config(build_traces, CELL, "build_resources")
    frames = [f for f in (export_traces.assign(precision="onnx") if len(export_traces) else export_traces,
                          build_traces) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- claims --------------------------------------------------------------------------------------

CLAIMS = [
    # (id, text, study value, unit)
    ("fp16_size_fraction", "FP16 engine size as a fraction of FP32", "~42% (58% smaller)", "%"),
    ("int8_size_fraction", "INT8 engine size as a fraction of FP32", "<30% (over 70% smaller)", "%"),
    ("fp16_top1_drop", "average FP16 top-1 drop", "2.9 points (0.94 to 4.49)", "points"),
    ("int8_top1_drop", "average INT8 top-1 drop", "13.9 points", "points"),
    ("quantized_latency_reduction", "latency reduction of quantized (FP16 and INT8) engines vs FP32",
     "55% (ORIN) to 67% (XAVIER)", "%"),
    ("int8_over_fp16_build_time", "INT8 engine build time / FP16 engine build time", "1.9x", "x"),
    ("int8_faster_than_fp16", "INT8 latency reduction vs FP16", "3% to 4% faster", "%"),
]


def _claim_values(device: str, backend: str, tables: dict[str, pd.DataFrame]) -> dict[str, pd.Series]:
    """Per-cell values (one per dataset/model) of each claim for one device/backend."""
    def part(name):
        frame = tables.get(name, pd.DataFrame())
        if not len(frame):
            return frame
        return frame[(frame["device"] == device) & (frame["backend"] == backend)]

    size, accuracy, latency, stats = part("size"), part("accuracy"), part("latency"), part("compression_stats")
    values: dict[str, pd.Series] = {}
    if len(size):
        values["fp16_size_fraction"] = 100 * size.loc[size["precision"] == "fp16", "size_vs_fp32"]
        values["int8_size_fraction"] = 100 * size.loc[size["precision"] == "int8", "size_vs_fp32"]
    if len(accuracy):
        values["fp16_top1_drop"] = accuracy.loc[accuracy["precision"] == "fp16", "top1_drop_vs_fp32_points"]
        values["int8_top1_drop"] = accuracy.loc[accuracy["precision"] == "int8", "top1_drop_vs_fp32_points"]
    if len(latency):
        quantized = latency[latency["precision"].isin(["fp16", "int8"])]
        values["quantized_latency_reduction"] = 100 * (1 - quantized["latency_median_vs_fp32"])
        by = latency.set_index(["dataset", "model", "precision"])["latency_median_ms"]
        by = by[~by.index.duplicated()].unstack("precision") if len(by) else pd.DataFrame()
        if {"fp16", "int8"} <= set(by.columns):
            values["int8_faster_than_fp16"] = 100 * (1 - by["int8"] / by["fp16"])
    if len(stats):
        builds = stats[stats["stage"] == "engine_build"].set_index(["dataset", "model", "precision"])["duration_mean_s"]
        builds = builds[~builds.index.duplicated()].unstack("precision") if len(builds) else pd.DataFrame()
        if {"fp16", "int8"} <= set(builds.columns):
            values["int8_over_fp16_build_time"] = builds["int8"] / builds["fp16"]
    return {k: pd.to_numeric(v, errors="coerce").dropna() for k, v in values.items()}


def claims_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each headline number of the study recomputed per device/backend: mean, range and count of cells."""
    pairs = set()
    for name in ("latency", "size", "accuracy", "compression_stats"):
        frame = tables.get(name, pd.DataFrame())
        if len(frame):
            engines = frame[frame["precision"].isin(PRECISIONS)]
            pairs |= set(map(tuple, engines[["device", "backend"]].drop_duplicates().to_numpy()))
    rows = []
    for device, backend in sorted(pairs):
        values = _claim_values(device, backend, tables)
        hashes = set()
        for name in ("latency", "accuracy", "compression_stats"):
            frame = tables.get(name, pd.DataFrame())
            if len(frame) and "settings_hash" in frame.columns:
                mine = frame[(frame["device"] == device) & (frame["backend"] == backend)]
                hashes |= {str(h) for h in mine["settings_hash"].dropna() if str(h)}
        for claim, text, study, unit in CLAIMS:
            v = values.get(claim, pd.Series(dtype=float))
            rows.append({"device": device, "backend": backend, "claim": claim, "description": text, "study": study,
                         "unit": unit, "ours_mean": float(v.mean()) if len(v) else np.nan,
                         "ours_min": float(v.min()) if len(v) else np.nan,
                         "ours_max": float(v.max()) if len(v) else np.nan, "cells": int(len(v)),
                         "settings_hashes": " ".join(sorted(hashes))})
    return pd.DataFrame(rows, columns=["device", "backend", "claim", "description", "study", "unit", "ours_mean",
                                       "ours_min", "ours_max", "cells", "settings_hashes"])


def _fmt(value: float, unit: str) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "points":
        return f"{value:.2f} points"
    return f"{value:.1f}%"


def claims_markdown(claims: pd.DataFrame) -> str:
    """claims.md: per device/backend, each study headline beside our mean (and range over cells)."""
    lines = ["# The study's headline numbers, recomputed from our data", "",
             "Each value is the mean over the (dataset, model) cells measured on that device and backend; "
             "the range is the smallest and largest cell. Top-1 drops are against our FP32 engine "
             "(the study compares against its base models), latency is the median per task, build time is "
             "the mean of the measured (non-warm-up) engine builds. The study measured Jetson Xavier NX and "
             "Orin Nano with TensorRT; its latency numbers are on CIFAR-100.", ""]
    if not len(claims):
        lines.append("No engine results were found under results/.")
    for (device, backend), group in claims.groupby(["device", "backend"], sort=True):
        lines += [f"## {device} / {backend}", "", "| claim | study | ours (mean) | range over cells | cells |",
                  "|---|---|---|---|---|"]
        for _, row in group.iterrows():
            spread = f"{_fmt(row['ours_min'], row['unit'])} to {_fmt(row['ours_max'], row['unit'])}" \
                if row["cells"] else "n/a"
            spread = spread.replace(" points to ", " to ")
            lines.append(f"| {row['description']} | {row['study']} | {_fmt(row['ours_mean'], row['unit'])} | "
                         f"{spread} | {row['cells']} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- entry points --------------------------------------------------------------------------------

def build_tables(files: dict[str, list[str]], results_dir: str | Path | None = None, seed: int = 0,
                 n_resamples: int = st.N_RESAMPLES, allow_mixed: bool = False,
                 current_settings: dict | None = None) -> dict[str, pd.DataFrame]:
    """All summary tables from the per-engine tables listed in ``files`` (keys: FILE_KEYS).

    Superseded rows of a cell are dropped first (:func:`keep_newest_config`); the rows left must
    share their comparable settings (:func:`check_settings`, ConfigError unless ``allow_mixed``).
    """
    frames = {key: read_all(files.get(key, []) or [], results_dir) for key in FILE_KEYS}
    for key, (keys, table) in CHECKED_TABLES.items():
        frames[key] = keep_newest_config(frames[key], keys, table)
    check_settings({table: frames[key] for key, (_, table) in CHECKED_TABLES.items()}, allow_mixed,
                   current_settings, results_dir)

    def read(key):
        return frames[key]

    compression, compression_stats = compression_tables(read("export_files"), read("build_files"))
    latency = latency_table(read("latency_files"), read("latency_samples_files"), seed, n_resamples)
    accuracy = accuracy_table(read("accuracy_files"), read("prediction_files"), read("keras_accuracy_files"), seed,
                              n_resamples)
    build = compression[compression["stage"] == "engine_build"] if len(compression) else compression
    tables = {
        "compression": compression,
        "compression_stats": compression_stats,
        "latency": latency,
        "accuracy": accuracy,
        "size": size_table(latency, build),
        "resources": resources_table(latency),
        "compression_resources": trace_table(read("export_resource_files"), read("build_resource_files")),
    }
    tables["claims"] = claims_table(tables)
    return tables


def summarize(inputs: dict, out_dir: str | Path, allow_mixed: bool | None = None,
              config: dict | None = None) -> dict[str, pd.DataFrame]:
    """Write every summary table as ``out_dir/<name>.parquet`` plus ``claims.md``; return the tables.

    ``inputs`` holds the current config's file lists (FILE_KEYS) and optionally ``results_dir``
    (every device's tables found there are added at run time), ``seed``, ``n_resamples`` and
    ``allow_mixed_configs``. ``allow_mixed`` (config key ``summary.allow_mixed_configs``; default
    false) lets rows of different settings be summarized together; otherwise they raise
    ConfigError before anything is written. ``config``, the current config, only marks its values
    in that message.
    """
    from .config import comparable_settings

    if allow_mixed is None:
        allow_mixed = bool(inputs.get("allow_mixed_configs", False))
    current = None
    if config is not None:
        # Every key any row could carry, with the current config's value.
        current = flatten_settings(comparable_settings(config, precision="int8", backend="tensorrt"))
    results_dir = inputs.get("results_dir")
    current_files = {key: list(inputs.get(key, []) or []) for key in FILE_KEYS}
    files = merge_file_lists(current_files, discover_results(results_dir)) if results_dir else current_files
    extra = sum(len(v) for v in files.values()) - sum(len(v) for v in current_files.values())
    log.info("reading %d per-engine tables (%d beyond the current config)", sum(len(v) for v in files.values()), extra)
    tables = build_tables(files, results_dir, seed=int(inputs.get("seed", 0)),
                          n_resamples=int(inputs.get("n_resamples", st.N_RESAMPLES)), allow_mixed=allow_mixed,
                          current_settings=current)
    for name, table in tables.items():
        write_parquet(table, Path(out_dir) / f"{name}.parquet")
        devices = sorted(set(table["device"])) if len(table) and "device" in table.columns else []
        log.info("%s: %d rows, devices %s", name, len(table), devices)
    write_text(claims_markdown(tables["claims"]), Path(out_dir) / "claims.md")
    return tables
