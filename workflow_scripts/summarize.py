"""Tidy tables across the experiment matrix: compression, latency, accuracy, size, resources."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import write_parquet

log = logging.getLogger(__name__)
KEYS = ["device", "backend", "dataset", "model"]


def read_all(paths) -> pd.DataFrame:
    """Concatenate Parquet files (an empty frame for none)."""
    frames = [pd.read_parquet(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def agreement_with_fp32(predictions: pd.DataFrame) -> pd.DataFrame:
    """Share of test images on which each engine's top-1 equals the FP32 engine's, per group."""
    rows = []
    for key, group in predictions.groupby(KEYS):
        base = group[group["precision"] == "fp32"].set_index("image_index")["prediction"]
        for precision, engine in group.groupby("precision"):
            aligned = engine.set_index("image_index")["prediction"].reindex(base.index)
            rows.append({**dict(zip(KEYS, key)), "precision": precision,
                         "agreement_with_fp32": float((aligned == base).mean()) if len(base) else np.nan})
    return pd.DataFrame(rows)


def normalize_to_fp32(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` divided by the FP32 row's value of the same device/backend/dataset/model."""
    base = frame[frame["precision"] == "fp32"].set_index(KEYS)[column]
    index = pd.MultiIndex.from_frame(frame[KEYS])
    return pd.Series(frame[column].to_numpy() / base.reindex(index).to_numpy(), index=frame.index)


def build_tables(export_files, build_files, latency_files, accuracy_files, keras_accuracy_files, prediction_files,
                 build_resource_files, export_resource_files) -> dict[str, pd.DataFrame]:
    """All summary tables from the per-engine outputs."""
    export = read_all(export_files)
    build = read_all(build_files)
    compression = pd.concat([export.assign(precision="all"), build], ignore_index=True) if len(export) else build
    latency = read_all(latency_files)
    accuracy = read_all(accuracy_files)
    keras = read_all(keras_accuracy_files)
    predictions = read_all(prediction_files)
    if len(predictions):
        accuracy = accuracy.merge(agreement_with_fp32(predictions), on=KEYS + ["precision"], how="left")
    if len(accuracy) and (accuracy["precision"] == "fp32").any():
        fp32 = accuracy[accuracy["precision"] == "fp32"].set_index(KEYS)["top1_accuracy"]
        accuracy["top1_drop_vs_fp32_points"] = 100 * (
            fp32.reindex(pd.MultiIndex.from_frame(accuracy[KEYS])).to_numpy() - accuracy["top1_accuracy"].to_numpy())
    if len(keras):
        # The Keras base model is device-independent: show it beside every device's engines.
        pairs = accuracy[["device", "backend"]].drop_duplicates() if len(accuracy) else pd.DataFrame(
            {"device": ["any"], "backend": ["keras"]})
        keras = keras.drop(columns=[c for c in ("device", "backend") if c in keras.columns]).merge(pairs, how="cross")
        accuracy = pd.concat([keras, accuracy], ignore_index=True)
    size = latency[KEYS + ["precision", "engine_mb"]].copy() if len(latency) else pd.DataFrame()
    if len(size) and (size["precision"] == "fp32").any():
        size["size_vs_fp32"] = normalize_to_fp32(size, "engine_mb")
    if len(latency) and (latency["precision"] == "fp32").any():
        latency["latency_median_vs_fp32"] = normalize_to_fp32(latency, "latency_median_ms")
    resource_columns = [c for c in latency.columns if c.endswith(("_mean", "_peak"))]
    resources = latency[KEYS + ["precision"] + resource_columns].copy() if len(latency) else pd.DataFrame()
    if len(resources) and (resources["precision"] == "fp32").any():
        for column in resource_columns:
            resources[f"{column}_vs_fp32"] = normalize_to_fp32(resources, column)
    traces = pd.concat([read_all(export_resource_files).assign(precision="onnx"), read_all(build_resource_files)],
                       ignore_index=True)
    return {"compression": compression, "latency": latency, "accuracy": accuracy, "size": size,
            "resources": resources, "compression_resources": traces}


def summarize(inputs: dict[str, list[str]], out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Write every summary table as ``out_dir/<name>.parquet`` and return them."""
    tables = build_tables(**inputs)
    for name, table in tables.items():
        write_parquet(table, Path(out_dir) / f"{name}.parquet")
        log.info("%s: %d rows", name, len(table))
    return tables
