"""Summary tables across every device and backend found under ``results/``, with interval statistics.

The per-engine tables follow the path scheme of :mod:`workflow_scripts.core.paths`; the summary step
reads the current config's tables (real Snakemake inputs, so they are built first) and, at run
time, every other device's and backend's tables found under the same results folder. It writes
only ``results/summary/``, never another device's folder.

Rows of one experiment cell (device, backend, dataset, model, precision) produced under
different settings (``config_hash``) are never mixed: the newest by ``timestamp`` is kept and the
dropped ones are logged (an older run of the cell, e.g. at another input size, is superseded).

Across cells, the rows that remain must agree on every setting that determines what they measure
(the ``settings`` provenance column, ``config.comparable_settings``): :func:`check_settings` flattens
each row's settings to dotted keys, and a key with more than one value among the rows that carry it
is a conflict. Conflicts raise :class:`~workflow_scripts.core.errors.ConfigError` before anything is
written, unless config key ``summary.allow_mixed_configs`` is true: then they are logged as a
warning, the rows are kept and every summary table carries ``settings_hash`` to tell them apart.
Rows without a ``settings`` column (results written before it existed) are logged as of unknown
settings and take no part in the comparison.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pyarrow.lib import ArrowException

from workflow_scripts.measure import statistics as st
from workflow_scripts.core.artifacts import write_parquet, write_text
from workflow_scripts.summary.claims import claims_markdown, claims_table
from workflow_scripts.core.config import flatten_settings
from workflow_scripts.core.device import cuda_cores as cuda_cores_of
from workflow_scripts.core.discovery import FILE_KEYS, corrupt_table_message, discover_results, merge_file_lists, parse_result_path
from workflow_scripts.backends.engine_check import check_summary_engines
from workflow_scripts.core.errors import ConfigError, CorruptArtifact
from workflow_scripts.core.registry import BACKENDS, PRECISIONS
from workflow_scripts.core.settings_check import CHECKED_TABLES, check_settings

log = logging.getLogger(__name__)
KEYS = ["device", "backend", "dataset", "model"]
CELL = KEYS + ["precision"]

# --- reading and de-duplicating ----------------------------------------------------------------

def check_device_folders(files: dict[str, list[str]], results_dir: str | Path,
                         ignore: list[str]) -> dict[str, list[str]]:
    """Drop the folders listed in ``ignore`` (config key summary.ignore_folders); refuse two device
    folders holding rows of the same measured device (a copy, e.g. ``cp -a results/<device>
    results/<device>-backup``), which would count every number twice.

    A row's device is the folder it was found in (:func:`read_all`); its ``device`` column says
    where it was measured. One folder per measured device, or the user says which to use.
    """
    unknown = sorted(set(ignore) - {parse_result_path(p, results_dir)["device"]
                                    for found in files.values() for p in found
                                    if parse_result_path(p, results_dir).get("device")})
    if unknown:
        log.warning("summary.ignore_folders names %s, which holds no results under %s", unknown, results_dir)
    kept = {key: [p for p in found if parse_result_path(p, results_dir).get("device") not in ignore]
            for key, found in files.items()}
    measured: dict[str, set[str]] = {}
    for path in kept.get("build_files", []) + kept.get("latency_files", []) + kept.get("export_files", []):
        folder = parse_result_path(path, results_dir)["device"]
        try:
            devices = pd.read_parquet(path, columns=["device"])["device"].dropna().unique()
        except (KeyError, ValueError, OSError, ArrowException):
            continue  # unreadable files are refused, naming them, when they are read in full
        for device in devices:
            measured.setdefault(str(device), set()).add(folder)
    doubled = {device: folders for device, folders in measured.items() if len(folders) > 1}
    if doubled:
        lines = [f"  - rows measured on {device} lie in {len(folders)} folders: "
                 + ", ".join(f"{results_dir}/{f}" for f in sorted(folders)) for device, folders in sorted(doubled.items())]
        example = sorted(next(iter(doubled.values())))[-1]
        raise ConfigError(
            "the summary would count the same device's measurements twice:\n" + "\n".join(lines) + "\n"
            f"Keep one folder per device: move the copies out of {results_dir}/ (e.g. mv {results_dir}/{example} "
            f"/somewhere/else), or name the folders to leave out in config key summary.ignore_folders, e.g. "
            f"--config 'summary={{ignore_folders: [{example}]}}'")
    return kept


def read_all(paths, results_dir: str | Path | None = None) -> pd.DataFrame:
    """Concatenate Parquet files; labels their path encodes fill columns the rows lack (input_size)."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, ArrowException) as exc:
            raise CorruptArtifact(corrupt_table_message(path, results_dir or Path(path).parent,
                                                        f"{type(exc).__name__}: {str(exc)[:200]}")) from exc
        labels = parse_result_path(path, results_dir) if results_dir is not None else None
        for key, value in (labels or {}).items():
            if key in ("kind", "backend"):
                continue  # export rows say backend 'tf2onnx'; the folder says 'onnx'
            if key not in frame.columns:
                frame[key] = value
        if labels and labels.get("device"):
            # The folder names the device: a renamed device folder relabels its rows, and a copy
            # was refused before reading (check_device_folders).
            if "device" in frame.columns and len(frame) and (frame["device"] != labels["device"]).any():
                frame["measured_device"] = frame["device"]
            frame["device"] = labels["device"]
        if labels and labels.get("backend") and labels["backend"] != "onnx":
            frame["backend"] = labels["backend"]
        elif labels and "backend" not in frame.columns:
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
    values = base.reindex(pd.MultiIndex.from_frame(frame[KEYS])).to_numpy(dtype=float, copy=True)
    values[values == 0] = np.nan  # no ratio to a zero baseline (e.g. a resource not sampled on this device)
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


def latency_table(latency: pd.DataFrame, samples: pd.DataFrame, seed: int, n_resamples: int,
                  runoff: pd.DataFrame | None = None) -> pd.DataFrame:
    """Latency rows with order-statistic CIs of median and p99 from the raw samples, ratios to FP32, and the
    runoff's between-round intervals (:func:`runoff.merge_round_statistics`)."""
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
            stats_ = st.latency_statistics(raw, int(row.get("batch_size", 1) or 1))
        for name, value in stats_.items():
            new.setdefault(name, []).append(value)
    for name, values in new.items():
        out[name] = values
    # NaN samples or no finite median: never a valid row the decision ranks.
    nan_samples = pd.to_numeric(out.get("latency_nan_samples", 0), errors="coerce").fillna(0)
    finite = np.isfinite(pd.to_numeric(out["latency_median_ms"], errors="coerce").to_numpy(dtype=float))
    broken = (nan_samples.to_numpy() > 0) | ~finite
    if "valid" not in out.columns:
        out["valid"] = True
    out["valid"] = out["valid"].astype("object").fillna(True).astype(bool) & ~broken
    if broken.any():
        reason = out.get("invalid_reason", pd.Series("", index=out.index)).fillna("").astype(str)
        out["invalid_reason"] = np.where(broken, reason.where(reason == "", reason + "; ")
                                         + "NaN latency samples or no finite median", reason)
        log.warning("%d latency rows have NaN samples or no finite median: marked invalid", int(broken.sum()))
    from workflow_scripts.stages.runoff import merge_round_statistics

    out = merge_round_statistics(out, runoff if runoff is not None else pd.DataFrame())
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


# --- entry points --------------------------------------------------------------------------------

def build_tables(files: dict[str, list[str]], results_dir: str | Path | None = None, seed: int = 0,
                 n_resamples: int = st.N_RESAMPLES, allow_mixed: bool = False,
                 current_settings: dict | None = None, runoff: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
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
    latency = latency_table(read("latency_files"), read("latency_samples_files"), seed, n_resamples, runoff)
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
    tables["runoff"] = runoff if runoff is not None else pd.DataFrame()
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
    from workflow_scripts.core.config import comparable_settings

    if allow_mixed is None:
        allow_mixed = bool(inputs.get("allow_mixed_configs", False))
    current = None
    if config is not None:
        # Every key any row could carry, with the current config's value.
        current = {}
        for backend in BACKENDS:
            current.update(flatten_settings(comparable_settings(config, precision="int8", backend=backend)))
    results_dir = inputs.get("results_dir")
    current_files = {key: list(inputs.get(key, []) or []) for key in FILE_KEYS}
    files = merge_file_lists(current_files, discover_results(results_dir)) if results_dir else current_files
    if results_dir:
        files = check_device_folders(files, results_dir, inputs.get("ignore_folders") or [])
        # An engine whose file is gone is left out (warned); one that differs from its build is refused.
        files = check_summary_engines(files, results_dir)
    extra = sum(len(v) for v in files.values()) - sum(len(v) for v in current_files.values())
    log.info("reading %d per-engine tables (%d beyond the current config)", sum(len(v) for v in files.values()), extra)
    from workflow_scripts.stages.runoff import find_runoff_files, read_runoff

    runoff = read_runoff(find_runoff_files(results_dir, inputs.get("runoff_files"), inputs.get("ignore_folders")),
                         results_dir)
    tables = build_tables(files, results_dir, seed=int(inputs.get("seed", 0)),
                          n_resamples=int(inputs.get("n_resamples", st.N_RESAMPLES)), allow_mixed=allow_mixed,
                          current_settings=current, runoff=runoff)
    for name, table in tables.items():
        write_parquet(table, Path(out_dir) / f"{name}.parquet")
        devices = sorted(set(table["device"])) if len(table) and "device" in table.columns else []
        log.info("%s: %d rows, devices %s", name, len(table), devices)
    write_text(claims_markdown(tables["claims"]), Path(out_dir) / "claims.md")
    return tables
