"""Figures of the calibration study: top-1 drop per calibration method and size, latency cost of float fallbacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.calibration_study.variants import AUTO_VARIANT, format_number

def plot_study(study: pd.DataFrame, drop_png: str | Path, fallback_png: str | Path) -> None:
    """Figures: drop vs calibration method and size per model; the latency cost of each float fallback."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = study[(study["precision"] == "int8") & (study["exclude"] == "none")]
    models = sorted(study["model"].unique())
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(5 * max(len(models), 1), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = plain[plain["model"] == model]
        for (method, pct, pc, sym), group in rows.groupby(
                ["method", "percentile", "per_channel", "symmetric_activations"], dropna=False):
            group = group.sort_values("num_images")
            label = (method if method != "percentile" else f"percentile {format_number(pct)}")
            label += f", {'per-channel' if pc else 'per-tensor'}" + (", sym" if sym else "")
            err = np.vstack([group["drop_points"] - group["drop_ci_low"], group["drop_ci_high"] - group["drop_points"]])
            ax.errorbar(group["num_images"], group["drop_points"], yerr=np.clip(err, 0, None), marker="o",
                        capsize=3, label=label)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel("calibration images")
        ax.set_ylabel("top-1 drop vs FP32 (points, 95% CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(drop_png, dpi=120)
    plt.close(fig)

    int8 = study[study["precision"] == "int8"]
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(5 * max(len(models), 1), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = int8[(int8["model"] == model) & ((int8["exclude"] != "none") | (int8["variant"] == AUTO_VARIANT)
                                                | (int8["float_nodes"] == 0))]
        rows = rows.sort_values("float_nodes")
        ax.scatter(rows["float_nodes"], rows["latency_vs_baseline_int8"], c=rows["drop_points"], cmap="viridis")
        for _, row in rows[(rows["float_nodes"] > 0)].iterrows():
            ax.annotate(row["exclude"] if row["variant"] != AUTO_VARIANT else AUTO_VARIANT,
                        (row["float_nodes"], row["latency_vs_baseline_int8"]), fontsize=7)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(model)
        ax.set_xlabel("nodes kept in float")
        ax.set_ylabel("median latency / plain INT8 baseline")
    fig.tight_layout()
    fig.savefig(fallback_png, dpi=120)
    plt.close(fig)
