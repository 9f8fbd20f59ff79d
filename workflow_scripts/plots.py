"""The study's Figs. 5-12 from the summary tables; every device and backend found is shown side by side.

Each ``fig_*`` function takes the summary tables (a dict of DataFrames) and returns the matplotlib
Figure, so tests can inspect it; :func:`make_figures` saves them as PNG and SVG. Latency runs that
missed their minimum count or duration (``valid == False``) are drawn hatched, with a legend note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import atomic_path

PRECISION_ORDER = ["keras", "fp32", "fp16", "int8"]
QUANTIZED = ["fp16", "int8"]
INVALID_NOTE = "hatched: invalid latency run (valid = False)"
NO_GPU_NOTE = "GPU data absent"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` atomically in the format its suffix names (png, svg)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=120, bbox_inches="tight")


def _system(frame: pd.DataFrame) -> pd.Series:
    """'device / backend' per row: the unit compared side by side."""
    return frame["device"].astype(str) + " / " + frame["backend"].astype(str)


def _with_system(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(system=_system(frame)) if len(frame) else frame.assign(system=pd.Series(dtype=str))


def _grid(n_rows: int, n_cols: int, width: float = 5.0, height: float = 3.6):
    plt = _pyplot()
    n_rows, n_cols = max(n_rows, 1), max(n_cols, 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False)
    return fig, axes


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _colors(values) -> dict:
    cmap = _pyplot().get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(values)}


def draw_bars(ax, frame: pd.DataFrame, value: str, group: str, hue: str, hues: list, colors: dict,
              lower: str | None = None, upper: str | None = None, yerr: str | None = None,
              invalid: str | None = None, groups: list | None = None) -> bool:
    """Grouped bars of ``value`` per ``group`` (x) and ``hue``; CI bounds or symmetric errors; hatch invalid.

    Returns whether any invalid bar was drawn.
    """
    groups = groups or list(dict.fromkeys(frame[group]))
    hues = [h for h in hues if h in set(frame[hue])]
    width = 0.8 / max(len(hues), 1)
    any_invalid = False
    for k, h in enumerate(hues):
        part = frame[frame[hue] == h].drop_duplicates(group).set_index(group).reindex(groups)
        x = np.arange(len(groups)) + (k - (len(hues) - 1) / 2) * width
        heights = part[value].to_numpy(dtype=float)
        err = None
        if lower and upper:
            err = np.vstack([heights - part[lower].to_numpy(dtype=float), part[upper].to_numpy(dtype=float) - heights])
            err = np.clip(np.nan_to_num(err, nan=0.0), 0, None)
        elif yerr:
            err = np.nan_to_num(part[yerr].to_numpy(dtype=float), nan=0.0)
        bad = np.zeros(len(x), bool)
        if invalid and invalid in part:
            bad = part[invalid].fillna(False).to_numpy(dtype=bool)
        any_invalid |= bool(bad.any())
        bars = ax.bar(x, np.nan_to_num(heights), width, label=str(h), color=colors.get(h), yerr=err, capsize=3,
                      edgecolor="black", linewidth=0.4)
        for bar, is_bad in zip(bars, bad):
            if is_bad:
                bar.set_hatch("//")
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    return any_invalid


def _legend(ax, invalid: bool) -> None:
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    if invalid:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//"))
        labels.append(INVALID_NOTE)
    if handles:
        # Headroom so the legend does not hide the tallest bars.
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.25 * (high - low))
        ax.legend(handles, labels, fontsize=7, loc="upper right")


def _bar_grid(frame: pd.DataFrame, value: str, hue: str, hue_order: list, title: str, ylabel: str,
              rows: str = "dataset", cols: str = "system", reference: float | None = None, **bar_kw):
    """One panel per (row, col) value pair, x = model, bars by ``hue``; returns the Figure."""
    frame = _with_system(frame)
    row_values = sorted(frame[rows].dropna().unique()) if len(frame) else []
    col_values = sorted(frame[cols].dropna().unique()) if len(frame) else []
    fig, axes = _grid(len(row_values), len(col_values))
    hues = [h for h in hue_order if len(frame) and h in set(frame[hue])] or \
        (sorted(frame[hue].unique()) if len(frame) else [])
    colors = _colors(hues)
    models = list(dict.fromkeys(frame["model"])) if len(frame) else []
    if not len(frame):
        _no_data(axes[0, 0])
    for i, r in enumerate(row_values):
        for j, c in enumerate(col_values):
            ax = axes[i, j]
            panel = frame[(frame[rows] == r) & (frame[cols] == c)]
            ax.set_title(f"{c}\n{r}", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            invalid = draw_bars(ax, panel, value, "model", hue, hues, colors,
                                groups=[m for m in models if m in set(panel["model"])], **bar_kw)
            if reference is not None:
                ax.axhline(reference, color="black", linestyle=":", linewidth=1)
            ax.set_ylabel(ylabel)
            _legend(ax, invalid)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- the figures -------------------------------------------------------------------------------

def _invalid(frame: pd.DataFrame, *columns: str) -> pd.Series:
    """True where any of the validity ``columns`` is False (missing columns count as valid)."""
    bad = pd.Series(False, index=frame.index)
    for column in columns:
        if column in frame.columns:
            bad |= ~frame[column].fillna(True).astype(bool)
    return bad


def fig_base_latency(tables: dict[str, pd.DataFrame]):
    """Fig. 5: FP32 median latency per image per model, devices side by side, bootstrap 95% CI."""
    latency = tables["latency"]
    base = latency[latency["precision"] == "fp32"] if len(latency) else latency
    base = _with_system(base)
    return _dataset_panels_by_system(base.assign(invalid=_invalid(base, "valid")))


def _dataset_panels_by_system(base: pd.DataFrame):
    """Fig. 5's layout: one panel per dataset, bars per model, one color per device/backend."""
    datasets = sorted(base["dataset"].unique()) if len(base) else []
    fig, axes = _grid(1, len(datasets), width=max(5.0, 1.6 * base["model"].nunique() if len(base) else 5.0))
    systems = sorted(set(base["system"])) if len(base) else []
    colors = _colors(systems)
    if not len(base):
        _no_data(axes[0, 0])
    for ax, dataset in zip(axes[0], datasets):
        panel = base[base["dataset"] == dataset]
        invalid = draw_bars(ax, panel, "latency_per_image_median_ms", "model", "system", systems, colors,
                            lower="latency_per_image_median_ci_low_ms", upper="latency_per_image_median_ci_high_ms",
                            invalid="invalid")
        ax.set_title(dataset, fontsize=9)
        ax.set_ylabel("median latency per image (ms)")
        _legend(ax, invalid)
    fig.suptitle("Fig. 5: base (FP32) latency per image, by device (error bars: bootstrap 95% CI of the median)")
    fig.tight_layout()
    return fig


RESOURCE_PANELS = [
    ("gpu_util_percent_mean", "GPU utilization (%)", True),
    ("utilized_cuda_cores_mean", "utilized CUDA cores", True),
    ("cpu_percent_of_machine_mean", "CPU (% of machine)", False),
    ("system_memory_percent_mean", "memory (% of system)", False),
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
    """Fig. 6: base-model resource use during inference: GPU %, utilized CUDA cores, CPU %, memory %."""
    resources = _with_system(tables["resources"])
    base = resources[resources["precision"] == "fp32"] if len(resources) else resources
    base = base.assign(invalid=_invalid(base, "valid"))
    panels = [(c, label) for c, label, gpu in RESOURCE_PANELS if _has_data(base, c)]
    datasets = sorted(base["dataset"].unique()) if len(base) else []
    # Like the study: the metrics (a)-(d) side by side, one row per dataset.
    fig, axes = _grid(len(datasets), len(panels), width=4.5)
    systems = sorted(set(base["system"])) if len(base) else []
    colors = _colors(systems)
    if not len(base) or not panels:
        _no_data(axes[0, 0])
    for j, (column, label) in enumerate(panels):
        for i, dataset in enumerate(datasets):
            ax = axes[i, j]
            panel = base[(base["dataset"] == dataset) & base[column].notna()]
            ax.set_title(f"({'abcd'[j]}) {label}\n{dataset}", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            invalid = draw_bars(ax, panel, column, "model", "system", systems, colors, invalid="invalid")
            ax.set_ylabel(label)
            _legend(ax, invalid)
    missing = _gpu_notes(base)
    if missing:
        fig.text(0.5, -0.02, f"{NO_GPU_NOTE} for {', '.join(missing)}: no GPU samples were recorded, "
                 "so only the panels with data are drawn.", ha="center", fontsize=8)
    fig.suptitle("Fig. 6: resource use of the base (FP32) models during inference")
    fig.tight_layout()
    return fig


def fig_compression_time(tables: dict[str, pd.DataFrame]):
    """Fig. 7: mean compression time per model and precision, stacked ONNX conversion + engine build.

    Error bars: standard deviation over the measured repeats (warm-ups excluded), per stage.
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
    build["onnx_mean_s"] = onnx["duration_mean_s"].reindex(index).fillna(0).to_numpy() if len(onnx) else 0.0
    build["onnx_std_s"] = onnx["duration_std_s"].reindex(index).to_numpy() if len(onnx) else np.nan
    datasets, systems = sorted(build["dataset"].unique()), sorted(build["system"].unique())
    fig, axes = _grid(len(datasets), len(systems), width=5.5)
    precisions = [p for p in PRECISION_ORDER if p in set(build["precision"])]
    colors = _colors(precisions)
    for i, dataset in enumerate(datasets):
        for j, system in enumerate(systems):
            ax = axes[i, j]
            panel = build[(build["dataset"] == dataset) & (build["system"] == system)]
            ax.set_title(f"{system}\n{dataset}", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            models = list(dict.fromkeys(panel["model"]))
            width = 0.8 / len(precisions)
            for k, precision in enumerate(precisions):
                part = panel[panel["precision"] == precision].set_index("model").reindex(models)
                x = np.arange(len(models)) + (k - (len(precisions) - 1) / 2) * width
                onnx_s = part["onnx_mean_s"].fillna(0).to_numpy(dtype=float)
                ax.bar(x, onnx_s, width, color="lightgray", edgecolor="gray",
                       yerr=np.nan_to_num(part["onnx_std_s"].to_numpy(dtype=float)), capsize=2,
                       label="ONNX conversion" if k == 0 else None)
                ax.bar(x, part["duration_mean_s"].fillna(0).to_numpy(dtype=float), width, bottom=onnx_s,
                       color=colors[precision], edgecolor="black", linewidth=0.4,
                       yerr=np.nan_to_num(part["duration_std_s"].to_numpy(dtype=float)), capsize=3,
                       label=f"{precision} engine build")
            ax.set_xticks(np.arange(len(models)), models, rotation=20, ha="right", fontsize=8)
            ax.set_ylabel("seconds")
            ax.legend(fontsize=7)
    runs = stats["measured_runs"]
    fig.suptitle(f"Fig. 7: compression time by stage (mean of {runs.min()}-{runs.max()} measured runs; "
                 "error bars: std over measured runs, warm-ups excluded)")
    fig.tight_layout()
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
        ranked_models = sorted(present)
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


TRACE_LINES = [("cpu_percent_of_machine", "CPU % of machine"), ("system_memory_percent", "memory %"),
               ("gpu_util_percent", "GPU %")]


def fig_ptq_traces(tables: dict[str, pd.DataFrame], models: list[str] | None = None, dataset: str | None = None):
    """Fig. 8: CPU, memory and GPU over time during ONNX conversion then engine build (last measured runs)."""
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
            ax.set_title(f"{system}\n{model} {precision} ({dataset})", fontsize=9)
            if not len(build):
                _no_data(ax)
                continue
            first = _last_measured(export, "onnx_conversion")
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
            ax.set_ylim(0, 105)
            ax.set_xlabel("seconds")
            ax.set_ylabel("%")
            ax.legend(fontsize=6, loc="upper right")
    if gpu_missing:
        fig.text(0.5, -0.02, f"{NO_GPU_NOTE} for {', '.join(sorted(gpu_missing))}.", ha="center", fontsize=8)
    fig.suptitle("Fig. 8: resource use during PTQ (last measured run of each stage)")
    fig.tight_layout()
    return fig


def fig_size(tables: dict[str, pd.DataFrame]):
    """Fig. 9: engine size normalized to FP32 (dotted line at 1.0)."""
    size = tables["size"]
    return _bar_grid(size[size["precision"].isin(QUANTIZED)] if len(size) else size, "size_vs_fp32", "precision",
                     QUANTIZED, "Fig. 9: engine size normalized to FP32", "size / FP32 size", reference=1.0)


def fig_accuracy(tables: dict[str, pd.DataFrame]):
    """Fig. 10: top-1 accuracy per precision and dataset, Wilson 95% intervals (keras = base model)."""
    accuracy = tables["accuracy"]
    frame = accuracy.assign(top1_percent=100 * accuracy["top1_accuracy"], top1_low=100 * accuracy["top1_ci_low"],
                            top1_high=100 * accuracy["top1_ci_high"]) if len(accuracy) else accuracy
    return _bar_grid(frame, "top1_percent", "precision", PRECISION_ORDER,
                     "Fig. 10: top-1 accuracy on the test split (error bars: Wilson 95% interval)", "top-1 %",
                     lower="top1_low", upper="top1_high")


NORMALIZED_RESOURCES = [("gpu_util_percent_mean_vs_fp32", "GPU utilization / FP32"),
                        ("cpu_percent_of_machine_mean_vs_fp32", "CPU / FP32"),
                        ("system_memory_percent_mean_vs_fp32", "memory / FP32")]


def fig_resources_normalized(tables: dict[str, pd.DataFrame]):
    """Fig. 11: GPU, CPU and memory use of the quantized engines during inference, normalized to FP32."""
    resources = _with_system(tables["resources"])
    frame = resources[resources["precision"].isin(QUANTIZED)] if len(resources) else resources
    frame = frame.assign(invalid=_invalid(frame, "valid", "fp32_valid"), column=frame["system"] + "\n" +
                         frame["dataset"].astype(str) if len(frame) else pd.Series(dtype=str))
    columns = sorted(frame["column"].unique()) if len(frame) else []
    fig, axes = _grid(len(NORMALIZED_RESOURCES), len(columns))
    colors = _colors(QUANTIZED)
    if not len(frame):
        _no_data(axes[0, 0])
    for i, (metric, label) in enumerate(NORMALIZED_RESOURCES):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            panel = frame[frame["column"] == column]
            ax.set_title(f"{column}\n{label}", fontsize=8)
            if metric not in panel.columns or panel[metric].isna().all():
                _no_data(ax, NO_GPU_NOTE if metric.startswith("gpu") else "no data")
                continue
            invalid = draw_bars(ax, panel, metric, "model", "precision", QUANTIZED, colors, invalid="invalid")
            ax.axhline(1.0, color="black", linestyle=":", linewidth=1)
            ax.set_ylabel(label)
            _legend(ax, invalid)
    fig.suptitle("Fig. 11: resource use of quantized engines during inference, normalized to FP32")
    fig.tight_layout()
    return fig


def fig_latency_normalized(tables: dict[str, pd.DataFrame]):
    """Fig. 12: median latency normalized to FP32 with bootstrap 95% CIs of the ratio."""
    latency = tables["latency"]
    frame = latency[latency["precision"].isin(QUANTIZED)] if len(latency) else latency
    frame = frame.assign(invalid=_invalid(frame, "valid", "fp32_valid"))
    return _bar_grid(frame, "latency_median_vs_fp32", "precision", QUANTIZED,
                     "Fig. 12: median latency normalized to FP32 (error bars: bootstrap 95% CI of the ratio)",
                     "median latency / FP32", reference=1.0, lower="latency_median_vs_fp32_ci_low",
                     upper="latency_median_vs_fp32_ci_high", invalid="invalid")


FIGURES = {
    "fig05_base_latency": (fig_base_latency, ["latency"]),
    "fig06_base_resources": (fig_base_resources, ["resources"]),
    "fig07_compression_time": (fig_compression_time, ["compression_stats"]),
    "fig08_ptq_resources": (fig_ptq_traces, ["compression_resources", "size"]),
    "fig09_size_normalized": (fig_size, ["size"]),
    "fig10_accuracy": (fig_accuracy, ["accuracy"]),
    "fig11_resources_normalized": (fig_resources_normalized, ["resources"]),
    "fig12_latency_normalized": (fig_latency_normalized, ["latency"]),
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
