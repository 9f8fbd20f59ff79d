"""The compression figures: Fig. 7 (time per PTQ stage) and Fig. 8 (resource traces during PTQ)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.core.registry import BACKENDS
from workflow_scripts.figures.plots_base import NO_GPU_NOTE, PRECISION_ORDER, QUANTIZED, _colors, _grid, _no_data, _with_system, figure_legend, figure_note, letter, model_order
from workflow_scripts.figures.plots_decision import readable_log_ticks


def _runs_text(runs: pd.Series) -> str:
    low, high = int(runs.min()), int(runs.max())
    if high <= 1:
        return "one measured run each: no spread to show, so no error bars"
    count = f"{low}" if low == high else f"{low} to {high}"
    return f"mean of {count} measured runs; error bars: std over them, warm-ups excluded"


def fig_compression_time(tables: dict[str, pd.DataFrame]):
    """Fig. 7: mean time of each PTQ stage per model: ONNX conversion and the engine build of each precision.

    Stages are side by side (not stacked) on a log axis, so a sub-second FP16 cast stays visible
    beside a minute-long conversion. Error bars only where more than one run was measured.
    """
    stats = tables["compression_stats"]
    if not len(stats):
        fig, axes = _grid(1, 1)
        _no_data(axes[0, 0])
        return fig
    onnx = stats[stats["stage"] == "onnx_conversion"].drop_duplicates(["device", "dataset", "model"]) \
        .set_index(["device", "dataset", "model"])
    build = _with_system(stats[stats["stage"] == "engine_build"].copy())
    index = pd.MultiIndex.from_frame(build[["device", "dataset", "model"]])
    for column in ("duration_mean_s", "duration_std_s", "measured_runs"):
        build[f"onnx_{column}"] = onnx[column].reindex(index).to_numpy() if len(onnx) else np.nan
    datasets, systems = sorted(build["dataset"].unique()), sorted(build["system"].unique())
    fig, axes = _grid(len(datasets), len(systems), width=5.5, sharey=True)
    precisions = [p for p in PRECISION_ORDER if p in set(build["precision"])]
    colors = {**_colors([None] + precisions), "ONNX conversion": "lightgray"}
    for i, dataset in enumerate(datasets):
        for j, system in enumerate(systems):
            ax = axes[i, j]
            panel = build[(build["dataset"] == dataset) & (build["system"] == system)]
            ax.set_title(f"{letter(i * len(systems) + j)} {system}\n{dataset}", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            models = model_order(panel["model"])
            # Backends built from the Keras model (LiteRT) have no ONNX stage.
            backend = panel["backend"].iloc[0]
            from_onnx = backend not in BACKENDS or BACKENDS[backend].source == "onnx"
            bars = (["ONNX conversion"] if from_onnx else []) + precisions
            width = 0.8 / len(bars)
            for k, name in enumerate(bars):
                if name == "ONNX conversion":
                    part = panel.drop_duplicates("model").set_index("model").reindex(models)
                    mean, std, runs = (part[f"onnx_{c}"] for c in ("duration_mean_s", "duration_std_s",
                                                                      "measured_runs"))
                    label = "ONNX conversion (shared by every precision)"
                else:
                    part = panel[panel["precision"] == name].set_index("model").reindex(models)
                    mean, std, runs = part["duration_mean_s"], part["duration_std_s"], part["measured_runs"]
                    label = f"{name} engine build" + (" (with calibration)" if name == "int8" else "")
                x = np.arange(len(models)) + (k - (len(bars) - 1) / 2) * width
                heights = mean.to_numpy(dtype=float)
                shown = np.isfinite(heights) & (heights > 0)
                ax.bar(x[shown], heights[shown], width, color=colors[name], edgecolor="black", linewidth=0.4,
                       label=label)
                err = std.to_numpy(dtype=float)
                keep = shown & np.isfinite(err) & (runs.to_numpy(dtype=float) > 1)
                if keep.any():
                    ax.errorbar(x[keep], heights[keep], yerr=np.vstack([np.minimum(err[keep], 0.9 * heights[keep]),
                                                                       err[keep]]),
                                fmt="none", ecolor="black", elinewidth=0.9, capsize=3)
            ax.set_yscale("log")
            if not from_onnx:
                ax.text(0.01, 0.98, f"{backend} converts the Keras model: no ONNX stage", transform=ax.transAxes,
                        fontsize=7, va="top", color="dimgray")
            ax.set_xticks(np.arange(len(models)), models, rotation=20, ha="right", fontsize=8)
            if j == 0:
                ax.set_ylabel("seconds (log scale)")
            ax.grid(axis="y", which="major", linewidth=0.3)
    positive = pd.concat([build["duration_mean_s"], build["onnx_duration_mean_s"]]).astype(float)
    positive = positive[positive > 0]
    if len(positive):
        axes[0, 0].set_ylim(float(positive.min()) / 3, float(positive.max()) * 2)
    for ax in axes.flat:  # round values, 0.2 and 0.5 below 1 included (after the limits are final)
        if ax.get_yscale() == "log":
            readable_log_ticks(ax, "y")
    fig.suptitle(f"Fig. 7: PTQ time per stage ({_runs_text(stats['measured_runs'])})")
    fig.tight_layout()
    figure_legend(fig)
    return fig


def trace_models(compression_resources: pd.DataFrame, size: pd.DataFrame) -> list[str]:
    """Fig. 8's default models: the smallest and largest (by FP32 engine size) with build traces."""
    if not len(compression_resources):
        return []
    present = list(dict.fromkeys(compression_resources.loc[compression_resources["precision"] != "onnx", "model"]))
    if len(size) and "engine_mb" in size.columns:
        fp32 = size[(size["precision"] == "fp32") & size["model"].isin(present)]
        ranked = fp32.groupby("model")["engine_mb"].mean().sort_values()
        ranked_models = list(ranked.index) + [m for m in present if m not in set(ranked.index)]
    else:
        ranked_models = model_order(present)
    return list(dict.fromkeys([ranked_models[0], ranked_models[-1]])) if ranked_models else []


def _last_measured(trace: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Rows of the last measured run of ``stage`` (the last warm-up where nothing was measured)."""
    labels = trace["stage"].astype(str)
    for kind in ("measured", "warmup"):
        runs = labels[labels.str.startswith(f"{stage}:{kind}:")]
        if len(runs):
            last = max(runs.unique(), key=lambda s: int(s.rsplit(":", 1)[1]))
            rows = trace[labels == last].sort_values("elapsed_s")
            return rows.assign(t=rows["elapsed_s"] - rows["elapsed_s"].iloc[0])
    return trace.iloc[0:0].assign(t=pd.Series(dtype=float))


TRACE_LINES = [("cpu_percent_of_machine", "CPU % of machine"), ("gpu_util_percent", "GPU %")]
MEMORY_LINE = ("rss_mb", "process RSS (MB, right axis)")


def fig_ptq_traces(tables: dict[str, pd.DataFrame], models: list[str] | None = None, dataset: str | None = None):
    """Fig. 8: CPU and GPU % (left axis) and process RSS (right axis) over time during ONNX conversion then build
    (the build alone for a backend built from the Keras model, which has no ONNX stage)."""
    traces = tables["compression_resources"]
    if not len(traces):
        fig, axes = _grid(1, 1)
        _no_data(axes[0, 0])
        return fig
    traces = traces.copy()
    models = models or trace_models(traces, tables.get("size", pd.DataFrame()))
    builds = _with_system(traces[traces["precision"] != "onnx"])
    exports = traces[traces["precision"] == "onnx"]
    dataset = dataset or sorted(builds["dataset"].unique())[0]
    builds = builds[(builds["dataset"] == dataset) & builds["model"].isin(models)]
    rows = sorted(set(map(tuple, builds[["system", "model"]].drop_duplicates().to_numpy())),
                  key=lambda r: (r[0], models.index(r[1])))
    precisions = [p for p in QUANTIZED if p in set(builds["precision"])] or \
        [p for p in PRECISION_ORDER if p in set(builds["precision"])]
    fig, axes = _grid(len(rows), len(precisions), width=5.5, height=3.0)
    gpu_missing = set()
    for i, (system, model) in enumerate(rows):
        for j, precision in enumerate(precisions):
            ax = axes[i, j]
            device = system.split(" / ")[0]
            build = builds[(builds["system"] == system) & (builds["model"] == model)
                           & (builds["precision"] == precision)]
            export = exports[(exports["device"] == device) & (exports["dataset"] == dataset)
                             & (exports["model"] == model)]
            ax.set_title(f"{letter(i * len(precisions) + j)} {system}\n{model} {precision} ({dataset})", fontsize=9)
            if not len(build):
                _no_data(ax)
                continue
            # Backends built from the Keras model (LiteRT) have no ONNX stage: their trace is the build alone.
            backend = system.split(" / ", 1)[1]
            from_onnx = backend not in BACKENDS or BACKENDS[backend].source == "onnx"
            first = _last_measured(export if from_onnx else export.iloc[0:0], "onnx_conversion")
            second = _last_measured(build, "engine_build")
            offset = float(first["t"].max()) if len(first) else 0.0
            second = second.assign(t=second["t"] + offset)
            joined = pd.concat([first, second], ignore_index=True)
            if len(first):
                ax.axvspan(0, offset, color="lightgray", alpha=0.5, label="ONNX conversion")
            ax.axvspan(offset, float(joined["t"].max()) if len(joined) else offset, color="lightblue", alpha=0.4,
                       label="engine build")
            for column, label in TRACE_LINES:
                if column in joined.columns and joined[column].notna().any():
                    ax.plot(joined["t"], joined[column], label=label, linewidth=1)
                elif column.startswith("gpu"):
                    gpu_missing.add(system)
            if not from_onnx:
                ax.text(0.01, 0.97, f"{backend} converts the Keras model: no ONNX stage", transform=ax.transAxes,
                        fontsize=7, va="top", color="dimgray", zorder=5,
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            ax.set_ylim(0, 105)
            ax.set_xlabel("seconds")
            ax.set_ylabel("%")
            column, label = MEMORY_LINE
            if column in joined.columns and joined[column].notna().any():
                right = ax.twinx()
                right.plot(joined["t"], joined[column], label=label, linewidth=1, color="tab:purple")
                right.set_ylim(0, 1.1 * float(joined[column].max()))
                right.set_ylabel("MB", fontsize=8)
    fig.suptitle("Fig. 8: resource use during PTQ (last measured run of each stage)")
    # tight_layout leaves a tall figure's suptitle on the first row's two-line titles: keep 0.5 inch for it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    figure_legend(fig)
    if gpu_missing:
        figure_note(fig, f"{NO_GPU_NOTE} for {', '.join(sorted(gpu_missing))}: no GPU samples were recorded.")
    return fig
