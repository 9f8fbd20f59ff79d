"""The study's Figs. 5-12 from the summary tables, plus the INT8 trade-off and Pareto figures.

Each ``fig_*`` function takes the summary tables (a dict of DataFrames) and returns the matplotlib
Figure, so tests can inspect it; :func:`make_figures` saves them as PNG and SVG. Every device and
backend found is shown side by side. Conventions (colors, model order, flags, intervals, legends,
panel letters) are in :mod:`workflow_scripts.figures.plots_base`; Figs. 7 and 8 are in
:mod:`workflow_scripts.figures.plots_compression`, the decision figures in :mod:`workflow_scripts.figures.plots_decision`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.figures.plots_base import (  # noqa: F401 (re-exported: tests and other modules use these names)
    INVALID_NOTE,
    NO_GPU_NOTE,
    PRECISION_ORDER,
    QUANTIZED,
    VARIATION_NOTE,
    _bar_grid,
    _colors,
    _grid,
    _no_data,
    _pyplot,
    _with_system,
    draw_bars,
    figure_legend,
    figure_note,
    flag_columns,
    letter,
    model_order,
    save_figure,
)
from workflow_scripts.figures.plots_compression import fig_compression_time, fig_ptq_traces, trace_models
from workflow_scripts.figures.plots_decision import fig_int8_tradeoff, fig_pareto


def _variation_of_source(frame: pd.DataFrame, across: pd.Series) -> pd.Series:
    """high_variation of the measurement a drawn value comes from: the runoff's (median over its rounds of each
    round's IQR/median) where the value is the rounds', else the single run's."""
    single = frame["high_variation"].astype("object").fillna(False).astype(bool) \
        if "high_variation" in frame.columns else pd.Series(False, index=frame.index)
    if "runoff_high_variation" not in frame.columns:
        return single
    rounds = frame["runoff_high_variation"].astype("object").fillna(False).astype(bool)
    return rounds.where(across.notna(), single)


def rounds_per_image(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with per_image_ms and its CI: the runoff's median over rounds where it ran (else the single
    run's median, without an interval), divided by the batch size, and that measurement's noise flag."""
    if not len(frame):
        return frame.assign(per_image_ms=[], per_image_ci_low_ms=[], per_image_ci_high_ms=[])
    nan = pd.Series(np.nan, index=frame.index)
    batch = pd.to_numeric(frame.get("batch_size", nan), errors="coerce").fillna(1)
    across = pd.to_numeric(frame.get("latency_median_rounds_ms", nan), errors="coerce")
    single = pd.to_numeric(frame["latency_median_ms"], errors="coerce")
    return frame.assign(
        high_variation=_variation_of_source(frame, across),
        per_image_ms=across.where(across.notna(), single) / batch,
        per_image_ci_low_ms=pd.to_numeric(frame.get("latency_median_rounds_ci_low_ms", nan), errors="coerce") / batch,
        per_image_ci_high_ms=pd.to_numeric(frame.get("latency_median_rounds_ci_high_ms", nan), errors="coerce") / batch)


def ratio_from_rounds(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ratio (median / FP32) and its CI paired by the runoff's rounds where it ran (else the
    single runs' ratio, without an interval), and that measurement's noise flag."""
    nan = pd.Series(np.nan, index=frame.index)
    across = pd.to_numeric(frame.get("latency_median_vs_fp32_rounds", nan), errors="coerce")
    single = pd.to_numeric(frame.get("latency_median_vs_fp32", nan), errors="coerce")
    return frame.assign(high_variation=_variation_of_source(frame, across), ratio=across.where(across.notna(), single),
                        ratio_ci_low=pd.to_numeric(frame.get("latency_median_vs_fp32_rounds_ci_low", nan),
                                                   errors="coerce"),
                        ratio_ci_high=pd.to_numeric(frame.get("latency_median_vs_fp32_rounds_ci_high", nan),
                                                    errors="coerce"))


def fig_base_latency(tables: dict[str, pd.DataFrame]):
    """Fig. 5: FP32 median latency per image per model, devices and backends side by side, with the 95% CI
    over the runoff's interleaved rounds (no bar where no runoff ran: one run's interval does not hold
    across runs)."""
    latency = tables["latency"]
    base = latency[latency["precision"] == "fp32"] if len(latency) else latency
    base = flag_columns(_with_system(rounds_per_image(base)), "valid")
    datasets = sorted(base["dataset"].unique()) if len(base) else []
    fig, axes = _grid(1, len(datasets), width=max(5.0, 1.6 * base["model"].nunique() if len(base) else 5.0))
    systems = sorted(set(base["system"])) if len(base) else []
    colors = _colors(systems)
    flags: set[str] = set()
    if not len(base):
        _no_data(axes[0, 0])
    for j, (ax, dataset) in enumerate(zip(axes[0], datasets)):
        panel = base[base["dataset"] == dataset]
        flags |= draw_bars(ax, panel, "per_image_ms", "model", "system", systems, colors,
                           lower="per_image_ci_low_ms", upper="per_image_ci_high_ms")
        ax.set_title(f"{letter(j)} {dataset}", fontsize=9)
        ax.set_ylabel("median latency per image (ms)")
    fig.suptitle("Fig. 5: base (FP32) latency per image, by device and backend "
                 "(error bars: 95% CI of the median over interleaved rounds)")
    fig.tight_layout()
    figure_legend(fig, flags)
    return fig


# (column, label, needs a GPU): the study's Fig. 6 metrics, in its order; memory is the process's RSS.
RESOURCE_PANELS = [
    ("gpu_util_percent_mean", "GPU utilization (%)", True),
    ("utilized_cuda_cores_mean", "utilized CUDA cores", True),
    ("cpu_percent_of_machine_mean", "CPU (% of machine)", False),
    ("rss_mb_mean", "process memory, RSS (MB)", False),
]


def _has_data(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].notna().any()


def _gpu_notes(frame: pd.DataFrame, column: str = "gpu_util_percent_mean") -> list[str]:
    """Which devices have no GPU samples (the figure says so instead of drawing zeros)."""
    systems = sorted(set(frame["system"])) if len(frame) else []
    if column not in frame.columns:
        return systems
    return [s for s in systems if frame.loc[frame["system"] == s, column].isna().all()]


def fig_base_resources(tables: dict[str, pd.DataFrame]):
    """Fig. 6: base-model resource use during inference: GPU %, CUDA cores, CPU %, process RSS (the metrics with
    data; panels lettered from (a))."""
    resources = _with_system(tables["resources"])
    base = resources[resources["precision"] == "fp32"] if len(resources) else resources
    base = flag_columns(base, "valid")
    # Only the metrics with data get panels (a CPU-only run has no GPU panels); letters run (a), (b), ...
    # in reading order over the panels drawn, and each title names its metric.
    panels = [(c, label) for c, label, _ in RESOURCE_PANELS if _has_data(base, c)]
    datasets = sorted(base["dataset"].unique()) if len(base) else []
    fig, axes = _grid(len(datasets), len(panels), width=4.5)
    systems = sorted(set(base["system"])) if len(base) else []
    colors = _colors(systems)
    flags: set[str] = set()
    if not len(base) or not panels:
        _no_data(axes[0, 0])
    for j, (column, label) in enumerate(panels):
        for i, dataset in enumerate(datasets):
            ax = axes[i, j]
            panel = base[(base["dataset"] == dataset) & base[column].notna()]
            ax.set_title(f"{letter(i * len(panels) + j)} {label}\n{dataset}", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            flags |= draw_bars(ax, panel, column, "model", "system", systems, colors)
            ax.set_ylabel(label)
    fig.suptitle("Fig. 6: resource use of the base (FP32) models during inference")
    fig.tight_layout()
    figure_legend(fig, flags)
    missing = _gpu_notes(base)
    if missing:
        figure_note(fig, f"{NO_GPU_NOTE} for {', '.join(missing)}: no GPU samples were recorded, "
                    "so only the panels with data are drawn.")
    return fig


def fig_size(tables: dict[str, pd.DataFrame]):
    """Fig. 9: engine size normalized to FP32 (dotted line at 1.0)."""
    size = tables["size"]
    return _bar_grid(size[size["precision"].isin(QUANTIZED)] if len(size) else size, "size_vs_fp32", "precision",
                     QUANTIZED, "Fig. 9: engine size normalized to FP32", "size / FP32 size", reference=1.0,
                     invalid=None, variation=None)


def fig_accuracy(tables: dict[str, pd.DataFrame]):
    """Fig. 10: top-1 per precision (Wilson 95% CI) and, below it, each precision's drop vs FP32 (paired 95% CI).

    Top-1 is drawn as points on an axis fitted to the data (a few points' difference stays visible);
    the drop panel shows the difference itself with its interval around 0.
    """
    accuracy = _with_system(tables["accuracy"])
    if not len(accuracy):
        fig, axes = _grid(1, 1)
        _no_data(axes[0, 0])
        return fig
    frame = accuracy.assign(top1_percent=100 * accuracy["top1_accuracy"], top1_low=100 * accuracy["top1_ci_low"],
                            top1_high=100 * accuracy["top1_ci_high"])
    datasets, systems = sorted(frame["dataset"].unique()), sorted(frame["system"].unique())
    fig, axes = _grid(2 * len(datasets), len(systems), sharey="row")
    precisions = [p for p in PRECISION_ORDER if p in set(frame["precision"])]
    colors = _colors(precisions)
    for i, dataset in enumerate(datasets):
        for j, system in enumerate(systems):
            panel = frame[(frame["dataset"] == dataset) & (frame["system"] == system)]
            top, drop = axes[2 * i, j], axes[2 * i + 1, j]
            top.set_title(f"{letter(2 * i * len(systems) + j)} {system}\n{dataset}: top-1", fontsize=9)
            drop.set_title(f"{letter((2 * i + 1) * len(systems) + j)} {system}\n{dataset}: drop vs FP32", fontsize=9)
            if not len(panel):
                _no_data(top)
                _no_data(drop)
                continue
            draw_bars(top, panel, "top1_percent", "model", "precision", precisions, colors, lower="top1_low",
                      upper="top1_high", invalid=None, variation=None, points=True)
            quantized = panel[panel["precision"].isin(QUANTIZED)]
            if len(quantized) and quantized["top1_drop_vs_fp32_points"].notna().any():
                draw_bars(drop, quantized, "top1_drop_vs_fp32_points", "model", "precision", precisions, colors,
                          lower="top1_drop_ci_low_points", upper="top1_drop_ci_high_points", invalid=None,
                          variation=None, points=True)
                drop.axhline(0, color="black", linewidth=0.8)
            else:
                _no_data(drop, "no drop: FP32 or predictions missing")
            if j == 0:
                top.set_ylabel("top-1 % (Wilson 95% CI)")
                drop.set_ylabel("drop, points (paired 95% CI)")
    for ax in axes[::2, 0]:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0), min(high, 100.5))
    fig.suptitle("Fig. 10: top-1 accuracy on the test split (keras = trained model before export) "
                 "and the drop of each quantized engine vs FP32 (positive = worse)")
    fig.tight_layout()
    figure_legend(fig)
    return fig


NORMALIZED_RESOURCES = [("gpu_util_percent_mean_vs_fp32", "GPU utilization / FP32"),
                        ("cpu_percent_of_machine_mean_vs_fp32", "CPU / FP32"),
                        ("rss_mb_mean_vs_fp32", "process RSS / FP32")]


def fig_resources_normalized(tables: dict[str, pd.DataFrame]):
    """Fig. 11: GPU, CPU and process memory of the quantized engines during inference, normalized to FP32.

    Rows are the metrics some device has; a device without GPU samples gets no GPU panel (it is
    left blank and named in a note), never an empty frame.
    """
    resources = _with_system(tables["resources"])
    frame = resources[resources["precision"].isin(QUANTIZED)] if len(resources) else resources
    frame = flag_columns(frame, "valid", "fp32_valid")
    frame = frame.assign(column=frame["system"] + "\n" + frame["dataset"].astype(str)) if len(frame) \
        else frame.assign(column=pd.Series(dtype=str))
    metrics = [(m, label) for m, label in NORMALIZED_RESOURCES if _has_data(frame, m)]
    columns = sorted(frame["column"].unique()) if len(frame) else []
    fig, axes = _grid(len(metrics), len(columns), sharey="row")
    colors = _colors(QUANTIZED)
    flags: set[str] = set()
    absent: list[str] = []
    if not len(frame) or not metrics:
        _no_data(axes[0, 0])
    n = 0
    for i, (metric, label) in enumerate(metrics):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            panel = frame[(frame["column"] == column) & frame[metric].notna()]
            if not len(panel):
                ax.set_visible(False)
                absent.append(column.replace("\n", " ") + f" ({label})")
                continue
            ax.set_title(f"{letter(n)} {column}\n{label}", fontsize=8)
            n += 1
            flags |= draw_bars(ax, panel, metric, "model", "precision", QUANTIZED, colors)
            ax.axhline(1.0, color="black", linestyle=":", linewidth=1)
            ax.set_ylabel(label)
            ax.tick_params(labelleft=True)
    fig.suptitle("Fig. 11: resource use of quantized engines during inference, normalized to FP32")
    fig.tight_layout()
    figure_legend(fig, flags)
    if absent:
        figure_note(fig, f"{NO_GPU_NOTE} (or no samples) for: {'; '.join(absent)}; those panels are left out.")
    return fig


def fig_latency_normalized(tables: dict[str, pd.DataFrame]):
    """Fig. 12: median latency normalized to FP32, with the 95% CI of the ratio paired by the runoff's rounds."""
    latency = tables["latency"]
    frame = latency[latency["precision"].isin(QUANTIZED)] if len(latency) else latency
    frame = flag_columns(ratio_from_rounds(frame), "valid", "fp32_valid")
    return _bar_grid(frame, "ratio", "precision", QUANTIZED,
                     "Fig. 12: median latency normalized to FP32 (error bars: 95% CI over interleaved rounds, "
                     "paired by round)", "median latency / FP32", reference=1.0, lower="ratio_ci_low",
                     upper="ratio_ci_high")


FIGURES = {
    "fig05_base_latency": (fig_base_latency, ["latency"]),
    "fig06_base_resources": (fig_base_resources, ["resources"]),
    "fig07_compression_time": (fig_compression_time, ["compression_stats"]),
    "fig08_ptq_resources": (fig_ptq_traces, ["compression_resources", "size"]),
    "fig09_size_normalized": (fig_size, ["size"]),
    "fig10_accuracy": (fig_accuracy, ["accuracy"]),
    "fig11_resources_normalized": (fig_resources_normalized, ["resources"]),
    "fig12_latency_normalized": (fig_latency_normalized, ["latency"]),
    "fig13_int8_tradeoff": (fig_int8_tradeoff, ["latency", "accuracy"]),
    "fig14_pareto": (fig_pareto, ["latency", "accuracy"]),
}


def make_figures(summary_dir: str | Path, out_files: list[str]) -> None:
    """Draw each figure named by an output file's stem once, and save it in every requested format."""
    plt = _pyplot()
    tables: dict[str, pd.DataFrame] = {}
    by_stem: dict[str, list[str]] = {}
    for out in out_files:
        by_stem.setdefault(Path(out).stem, []).append(out)
    for stem, outs in by_stem.items():
        draw, needed = FIGURES[stem]
        for table in needed:
            if table not in tables:
                tables[table] = pd.read_parquet(Path(summary_dir) / f"{table}.parquet")
        fig = draw(tables)
        for out in outs:
            save_figure(fig, out)
        plt.close(fig)
