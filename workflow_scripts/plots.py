"""The study's figures that apply to the measured data; devices are shown side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import atomic_path

PRECISION_ORDER = ["keras", "fp32", "fp16", "int8"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def grouped_bars(frame: pd.DataFrame, value: str, group: str, hue: str, title: str, ylabel: str, path: str | Path,
                 error: str | None = None, reference: float | None = None, hue_order=None) -> None:
    """Bars of ``value`` per ``group`` (x) and ``hue``, one panel per device/dataset pair."""
    plt = _pyplot()
    panels = frame.groupby(["device", "dataset"]) if len(frame) else []
    count = max(len(panels), 1)
    fig, axes = plt.subplots(1, count, figsize=(5.5 * count, 4), squeeze=False)
    if not len(frame):
        axes[0, 0].text(0.5, 0.5, "no data", ha="center", va="center")
    for ax, ((device, dataset), panel) in zip(axes[0], panels):
        groups = list(dict.fromkeys(panel[group]))
        hues = [h for h in (hue_order or sorted(panel[hue].unique())) if h in set(panel[hue])]
        width = 0.8 / max(len(hues), 1)
        for k, h in enumerate(hues):
            part = panel[panel[hue] == h].set_index(group).reindex(groups)
            x = np.arange(len(groups)) + (k - (len(hues) - 1) / 2) * width
            ax.bar(x, part[value], width, label=str(h), yerr=part[error] if error else None, capsize=3)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle=":", linewidth=1)
        ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right")
        ax.set_title(f"{device}\n{dataset}", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def fig_base_latency(latency: pd.DataFrame, path) -> None:
    """Fig. 5: FP32 median latency per image, per model and device."""
    base = latency[latency["precision"] == "fp32"]
    grouped_bars(base, "latency_per_image_median_ms", "model", "backend", "Base (FP32) latency per image", "ms", path)


def fig_compression_time(compression: pd.DataFrame, path) -> None:
    """Fig. 7: mean measured duration per stage, stacked ONNX conversion + engine build, per precision."""
    measured = compression[~compression["warmup"]]
    stats = measured.groupby(["device", "dataset", "model", "precision", "stage"])["duration_s"].agg(["mean", "std"]).reset_index()
    onnx = stats[stats["stage"] == "onnx_conversion"].set_index(["device", "dataset", "model"])["mean"]
    build = stats[stats["stage"] == "engine_build"].copy()
    build["onnx_s"] = onnx.reindex(pd.MultiIndex.from_frame(build[["device", "dataset", "model"]])).to_numpy()
    build["total_s"] = build["onnx_s"] + build["mean"]
    plt = _pyplot()
    panels = list(build.groupby(["device", "dataset"]))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4), squeeze=False)
    for ax, ((device, dataset), panel) in zip(axes[0], panels):
        models = list(dict.fromkeys(panel["model"]))
        precisions = [p for p in PRECISION_ORDER if p in set(panel["precision"])]
        width = 0.8 / len(precisions)
        for k, precision in enumerate(precisions):
            part = panel[panel["precision"] == precision].set_index("model").reindex(models)
            x = np.arange(len(models)) + (k - (len(precisions) - 1) / 2) * width
            ax.bar(x, part["onnx_s"], width, color="lightgray", edgecolor="gray", label="ONNX conversion" if k == 0 else None)
            ax.bar(x, part["mean"], width, bottom=part["onnx_s"], yerr=part["std"], capsize=3, label=f"{precision} engine build")
        ax.set_xticks(np.arange(len(models)), models, rotation=20, ha="right")
        ax.set_ylabel("seconds")
        ax.set_title(f"{device}\n{dataset}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle("Compression time by stage (error bars: std over measured runs)")
    _save(fig, path)


def fig_size(size: pd.DataFrame, path) -> None:
    """Fig. 9: engine size normalized to FP32."""
    grouped_bars(size, "size_vs_fp32", "model", "precision", "Size normalized to FP32", "size / FP32 size", path,
                 reference=1.0, hue_order=PRECISION_ORDER)


def fig_accuracy(accuracy: pd.DataFrame, path) -> None:
    """Fig. 10: top-1 accuracy per precision (keras = the base model before export)."""
    frame = accuracy.assign(top1_percent=100 * accuracy["top1_accuracy"])
    grouped_bars(frame, "top1_percent", "model", "precision", "Top-1 accuracy on the test split", "top-1 %", path,
                 hue_order=PRECISION_ORDER)


def fig_latency_normalized(latency: pd.DataFrame, path) -> None:
    """Fig. 12: median latency normalized to FP32."""
    grouped_bars(latency, "latency_median_vs_fp32", "model", "precision", "Latency normalized to FP32",
                 "median latency / FP32", path, reference=1.0, hue_order=PRECISION_ORDER)


FIGURES = {
    "fig05_base_latency": (fig_base_latency, "latency"),
    "fig07_compression_time": (fig_compression_time, "compression"),
    "fig09_size_normalized": (fig_size, "size"),
    "fig10_accuracy": (fig_accuracy, "accuracy"),
    "fig12_latency_normalized": (fig_latency_normalized, "latency"),
}


def make_figures(summary_dir: str | Path, out_files: list[str]) -> None:
    """Draw each figure named by an output file's stem from the summary tables in ``summary_dir``."""
    tables: dict[str, pd.DataFrame] = {}
    for out in out_files:
        draw, table = FIGURES[Path(out).stem]
        if table not in tables:
            tables[table] = pd.read_parquet(Path(summary_dir) / f"{table}.parquet")
        draw(tables[table], out)
