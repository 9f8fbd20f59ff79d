"""The study's headline claims recomputed from the summary tables (claims.parquet, claims.md), honestly.

Each row is one claim on one device and backend, and says whether our measurement is like-for-like
with the study's: the study ran TensorRT 8.5 on Jetson GPUs (Xavier NX, Orin Nano) with models
fine-tuned from ImageNet on CIFAR-100 and Oxford-102 flowers at 224 px, its latency on CIFAR-100.
Where ours differs (device class, runtime, dataset, input size) ``why_not`` says so, plus what the
difference does to that claim (e.g. a CPU without FP16 arithmetic cannot speed FP16 up).

FP16 and INT8 are never pooled in one row. Drops and latency reductions carry a 95% interval: for
one cell the cell's own interval (paired bootstrap for drops; for latency the order-statistic
interval of the median over the runoff's interleaved rounds of the ratio to FP32, paired by round,
an interval that holds across runs, not one run's tasks resampled); over several cells, the
interval of their mean by a normal approximation from each cell's interval (cells independent):
mean +/- 1.96 sqrt(sum se_i^2) / n, se_i = (high_i - low_i) / 3.92. Without a runoff a latency claim
has no interval. The INT8-vs-FP16 latency comparison pairs the two by round the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.core.registry import CLAIMS_RUNTIME, PRECISIONS

STUDY = {"device_class": "Jetson GPU", "runtime": CLAIMS_RUNTIME, "datasets": {"cifar100", "oxford_flowers102"},
         "latency_datasets": {"cifar100"}, "input_size": 224}

CLAIMS = [
    # (id, group, text, study value as printed, unit)
    ("fp16_size_fraction", "FP16", "FP16 engine size as a fraction of FP32", "~42% (58% smaller)", "%"),
    ("fp16_top1_drop", "FP16", "FP16 top-1 drop", "2.9 points (0.94 to 4.49)", "points"),
    ("fp16_latency_reduction", "FP16", "FP16 median latency reduction vs FP32",
     "55% (ORIN) to 67% (XAVIER), FP16 and INT8 pooled", "%"),
    ("int8_size_fraction", "INT8", "INT8 engine size as a fraction of FP32", "<30% (over 70% smaller)", "%"),
    ("int8_top1_drop", "INT8", "INT8 top-1 drop", "13.9 points", "points"),
    ("int8_latency_reduction", "INT8", "INT8 median latency reduction vs FP32",
     "55% (ORIN) to 67% (XAVIER), FP16 and INT8 pooled", "%"),
    ("int8_over_fp16_build_time", "INT8 vs FP16", "INT8 engine build time / FP16 engine build time", "1.9x", "x"),
    ("int8_faster_than_fp16", "INT8 vs FP16", "INT8 median latency reduction vs FP16", "3% to 4% faster", "%"),
]
GROUPS = ("FP16", "INT8", "INT8 vs FP16")
COLUMNS = ["device", "backend", "group", "claim", "description", "study", "unit", "ours_mean", "ours_ci_low",
           "ours_ci_high", "ours_min", "ours_max", "cells", "device_class", "datasets", "input_sizes",
           "like_for_like", "why_not", "settings_hashes"]
Z95 = 1.959964


def mean_interval(points: pd.Series, lows: pd.Series, highs: pd.Series) -> tuple[float, float, float]:
    """Mean of per-cell values and a 95% interval of that mean from the cells' own 95% intervals.

    One cell: its interval as it is. Several: normal approximation with independent cells.
    Any cell without an interval leaves the mean without one.
    """
    points, lows, highs = (pd.to_numeric(s, errors="coerce").to_numpy(dtype=float) for s in (points, lows, highs))
    if not len(points):
        return np.nan, np.nan, np.nan
    mean = float(np.mean(points))
    if not (np.isfinite(lows).all() and np.isfinite(highs).all()):
        return mean, np.nan, np.nan
    if len(points) == 1:
        return mean, float(lows[0]), float(highs[0])
    se = (highs - lows) / (2 * Z95)
    half = Z95 * float(np.sqrt(np.sum(se ** 2))) / len(points)
    return mean, mean - half, mean + half


def device_class(latency: pd.DataFrame, device: str) -> str:
    """'Jetson GPU', 'NVIDIA GPU' or 'CPU', from the rows' provenance (else the device tag)."""
    rows = latency[latency["device"] == device] if len(latency) else latency

    def has(column):
        return column in rows.columns and rows[column].fillna("").astype(str).str.len().gt(0).any()

    if has("jetson_model") or "jetson" in device:
        return "Jetson GPU"
    if has("gpu_name"):
        return "NVIDIA GPU"
    return "CPU"


def _part(tables: dict[str, pd.DataFrame], name: str, device: str, backend: str) -> pd.DataFrame:
    frame = tables.get(name, pd.DataFrame())
    if not len(frame):
        return frame
    return frame[(frame["device"] == device) & (frame["backend"] == backend)]


def _claim_values(device: str, backend: str, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Per-cell values of each claim for one device/backend: columns value, low, high (NaN without interval)."""
    size, accuracy = _part(tables, "size", device, backend), _part(tables, "accuracy", device, backend)
    latency, stats = _part(tables, "latency", device, backend), _part(tables, "compression_stats", device, backend)
    out: dict[str, pd.DataFrame] = {}

    def frame(value, low=None, high=None):
        value = pd.to_numeric(value, errors="coerce")
        low = pd.to_numeric(low, errors="coerce") if low is not None else pd.Series(np.nan, index=value.index)
        high = pd.to_numeric(high, errors="coerce") if high is not None else pd.Series(np.nan, index=value.index)
        result = pd.DataFrame({"value": value, "low": low, "high": high})
        return result[result["value"].notna()]

    for precision in ("fp16", "int8"):
        if len(size):
            out[f"{precision}_size_fraction"] = frame(100 * size.loc[size["precision"] == precision, "size_vs_fp32"])
        if len(accuracy) and "top1_drop_vs_fp32_points" in accuracy.columns:
            rows = accuracy[accuracy["precision"] == precision]
            out[f"{precision}_top1_drop"] = frame(rows["top1_drop_vs_fp32_points"],
                                                  rows.get("top1_drop_ci_low_points"),
                                                  rows.get("top1_drop_ci_high_points"))
        if len(latency) and "latency_median_vs_fp32" in latency.columns:
            rows = latency[latency["precision"] == precision]
            # The runoff's ratio paired by round where it ran (point and interval from the same rounds).
            rounds = pd.to_numeric(rows.get("latency_median_vs_fp32_rounds", pd.Series(np.nan, index=rows.index)),
                                   errors="coerce")
            point = rounds.where(rounds.notna(), pd.to_numeric(rows["latency_median_vs_fp32"], errors="coerce"))
            low = rows.get("latency_median_vs_fp32_rounds_ci_low")
            high = rows.get("latency_median_vs_fp32_rounds_ci_high")
            out[f"{precision}_latency_reduction"] = frame(
                100 * (1 - point), 100 * (1 - high) if high is not None else None,
                100 * (1 - low) if low is not None else None)
    if len(latency):
        out.update(_int8_vs_fp16(latency, tables.get("runoff", pd.DataFrame()), device, backend, frame))
    if len(stats):
        builds = stats[stats["stage"] == "engine_build"].set_index(["dataset", "model", "precision"])["duration_mean_s"]
        builds = builds[~builds.index.duplicated()].unstack("precision") if len(builds) else pd.DataFrame()
        if {"fp16", "int8"} <= set(builds.columns):
            out["int8_over_fp16_build_time"] = frame(builds["int8"] / builds["fp16"])
    return out


def _int8_vs_fp16(latency: pd.DataFrame, runoff: pd.DataFrame, device: str, backend: str, frame) -> dict:
    """INT8 median latency reduction vs FP16 per cell: paired by the runoff's rounds where it ran
    (median of 1 - int8/fp16 over rounds with its order-statistic CI), else from one run's medians."""
    from workflow_scripts.measure.statistics import rounds_interval

    by = latency.set_index(["dataset", "model", "precision"])["latency_median_ms"]
    by = by[~by.index.duplicated()].unstack("precision") if len(by) else pd.DataFrame()
    if not {"fp16", "int8"} <= set(by.columns):
        return {}
    values = 100 * (1 - by["int8"] / by["fp16"])
    lows, highs = pd.Series(np.nan, index=values.index), pd.Series(np.nan, index=values.index)
    if len(runoff) and {"device", "backend", "round"} <= set(runoff.columns):
        mine = runoff[(runoff["device"] == device) & (runoff["backend"] == backend)]
        for (dataset, model), cell in mine.groupby(["dataset", "model"]):
            table = cell.pivot_table(index="round", columns="precision", values="latency_median_ms", aggfunc="first")
            if {"fp16", "int8"} <= set(table.columns) and (dataset, model) in values.index:
                point, low, high = rounds_interval(100 * (1 - table["int8"] / table["fp16"]))
                values[(dataset, model)], lows[(dataset, model)], highs[(dataset, model)] = point, low, high
    return {"int8_faster_than_fp16": frame(values, lows, highs)}


def comparability(klass: str, backend: str, datasets: set[str], sizes: set[int], claim: str) -> list[str]:
    """Why our cells of ``claim`` are not like-for-like with the study's ([] when they are)."""
    why = []
    if klass != STUDY["device_class"]:
        why.append(f"device class {klass}, the study's is a Jetson GPU (Xavier NX, Orin Nano)")
    if backend != STUDY["runtime"]:
        why.append(f"runtime {backend}, the study's is TensorRT 8.5")
    wanted = STUDY["latency_datasets"] if "latency" in claim or "faster" in claim else STUDY["datasets"]
    if datasets and not datasets <= wanted:
        why.append(f"dataset {', '.join(sorted(datasets))}, the study's is {' and '.join(sorted(wanted))}")
    if sizes and sizes != {STUDY["input_size"]}:
        why.append(f"input {', '.join(str(s) for s in sorted(sizes))} px, the study's is 224 px")
    # What the difference does to this particular claim.
    cpu_fp16 = "this CPU runs FP16 engines with float32 arithmetic (float16 weights plus casts)"
    if klass == "CPU" and claim == "fp16_latency_reduction":
        why.append(f"{cpu_fp16}, so FP16 is not expected to be faster than FP32 here")
    if klass == "CPU" and claim == "int8_faster_than_fp16":
        why.append(f"{cpu_fp16}, so INT8 is compared with an FP16 engine that is no faster than FP32")
    if backend != STUDY["runtime"] and claim == "int8_over_fp16_build_time":
        why.append(f"{backend}'s FP16 'build' is a weight conversion without kernel selection (often under a "
                   "second), so this ratio compares INT8 calibration with a cast")
    return why


def claims_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each headline number of the study per device/backend: mean [95% CI], range, cells, comparability."""
    pairs = set()
    for name in ("latency", "size", "accuracy", "compression_stats"):
        frame = tables.get(name, pd.DataFrame())
        if len(frame):
            engines = frame[frame["precision"].isin(PRECISIONS)]
            pairs |= set(map(tuple, engines[["device", "backend"]].drop_duplicates().to_numpy()))
    latency_all = tables.get("latency", pd.DataFrame())
    rows = []
    for device, backend in sorted(pairs):
        values = _claim_values(device, backend, tables)
        hashes, datasets, sizes = set(), set(), set()
        for name in ("latency", "accuracy", "compression_stats"):
            mine = _part(tables, name, device, backend)
            if len(mine) and "settings_hash" in mine.columns:
                hashes |= {str(h) for h in mine["settings_hash"].dropna() if str(h)}
            if len(mine):
                datasets |= set(mine["dataset"].dropna().astype(str))
                if "input_size" in mine.columns:
                    sizes |= {int(s) for s in pd.to_numeric(mine["input_size"], errors="coerce").dropna()}
        klass = device_class(latency_all, device)
        for claim, group, text, study, unit in CLAIMS:
            cells = values.get(claim, pd.DataFrame(columns=["value", "low", "high"]))
            mean, low, high = mean_interval(cells["value"], cells["low"], cells["high"])
            why = comparability(klass, backend, datasets, sizes, claim)
            rows.append({"device": device, "backend": backend, "group": group, "claim": claim, "description": text,
                         "study": study, "unit": unit, "ours_mean": mean, "ours_ci_low": low, "ours_ci_high": high,
                         "ours_min": float(cells["value"].min()) if len(cells) else np.nan,
                         "ours_max": float(cells["value"].max()) if len(cells) else np.nan, "cells": int(len(cells)),
                         "device_class": klass, "datasets": " ".join(sorted(datasets)),
                         "input_sizes": " ".join(str(s) for s in sorted(sizes)),
                         "like_for_like": not why, "why_not": "; ".join(why),
                         "settings_hashes": " ".join(sorted(hashes))})
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value: float, unit: str) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "points":
        return f"{value:.2f} points"
    return f"{value:.1f}%"


def _with_interval(row) -> str:
    text = _fmt(row["ours_mean"], row["unit"])
    if np.isfinite(row["ours_ci_low"]) and np.isfinite(row["ours_ci_high"]):
        suffix = {"points": "", "%": "%", "x": "x"}[row["unit"]]
        text += f" [{row['ours_ci_low']:.2f}{suffix}, {row['ours_ci_high']:.2f}{suffix}]"
    return text


COMMON_REASONS = ("device class", "runtime", "dataset", "input")


def claims_markdown(claims: pd.DataFrame) -> str:
    """claims.md: per device/backend, what is comparable with the study, then FP16, INT8 and INT8-vs-FP16 tables."""
    lines = ["# The study's headline numbers, recomputed from our data", "",
             "The study (Rachmanto et al.) ran TensorRT 8.5 on Jetson Xavier NX and Orin Nano GPUs, with models "
             "fine-tuned on CIFAR-100 and Oxford-102 flowers at 224 px; its latency numbers are on CIFAR-100. "
             "A claim is **like-for-like** only where our device class, runtime, dataset and input size are the "
             "study's; otherwise the row says why not, and the number answers the same question on a different "
             "setup, not a replication.", "",
             "Values are the mean over the (dataset, model) cells of the device and backend, with a 95% interval: "
             "for one cell its own interval (paired bootstrap for top-1 drops; for latency the 95% interval over "
             "the runoff's interleaved rounds of the ratio paired by round, which holds across runs; n/a without "
             "a runoff), for several the interval of their mean (normal approximation from each cell's "
             "interval). Top-1 drops are against our FP32 engine; build time is the mean of the measured "
             "(non-warm-up) builds. FP16 and INT8 are never pooled.", ""]
    if not len(claims):
        lines.append("No engine results were found under results/.")
    for (device, backend), group in claims.groupby(["device", "backend"], sort=True):
        first = group.iloc[0]
        common = [r for r in first["why_not"].split("; ") if r.startswith(COMMON_REASONS)] if first["why_not"] else []
        lines += [f"## {device} / {backend}", "",
                  f"Our setup: {first['device_class']}, {backend}, dataset {first['datasets'] or 'n/a'}, "
                  f"{first['input_sizes'] or 'n/a'} px. "
                  + ("**Not like-for-like** with the study: " + "; ".join(common) + "." if common
                     else "Like-for-like with the study's setup."), ""]
        for name in GROUPS:
            part = group[group["group"] == name]
            if not len(part):
                continue
            lines += [f"### {name}", "", "| claim | study | ours: mean [95% CI] | range over cells | cells | "
                      "like-for-like | why not (beyond the setup) |", "|---|---|---|---|---|---|---|"]
            for _, row in part.iterrows():
                spread = f"{_fmt(row['ours_min'], row['unit'])} to {_fmt(row['ours_max'], row['unit'])}" \
                    if row["cells"] else "n/a"
                spread = spread.replace(" points to ", " to ")
                extra = [r for r in row["why_not"].split("; ") if r and not r.startswith(COMMON_REASONS)]
                lines.append(f"| {row['description']} | {row['study']} | {_with_interval(row)} | {spread} | "
                             f"{row['cells']} | {'yes' if row['like_for_like'] else 'no'} | "
                             f"{'; '.join(extra) or '–'} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
