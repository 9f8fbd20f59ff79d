"""The study's headline claims recomputed from the summary tables (claims.parquet, claims.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .registry import PRECISIONS


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
