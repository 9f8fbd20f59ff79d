"""Figures for choosing an engine: each backend's INT8 trade-off (Fig. 13) and the Pareto front (Fig. 14)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow_scripts.decision.decide import engine_table, pareto_front
from workflow_scripts.figures.plots_base import INVALID_NOTE, VARIATION_NOTE, _colors, _grid, _no_data, _with_system, draw_bars, figure_legend, flag_columns, letter, model_order

PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}

# Mantissas of the labelled ticks of a log axis, sparsest first; the first set that puts enough labels
# inside the axis' limits is used (an axis under one decade has no power of ten, or only one, to label).
LOG_TICK_MANTISSAS = ([1], [1, 2, 5], [1, 2, 3, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9],
                      [1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9], [1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9])


def readable_log_ticks(ax, which: str = "x", minimum: int = 3) -> list[float]:
    """Label a log axis at round values, at least ``minimum`` of them inside its current limits, as plain
    numbers (0.2, 0.5, 1, 2); the other minor ticks stay unlabelled. Call it once the data are drawn.

    Returns the labelled values.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    low, high = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low < high):
        return []
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    ticks: list[float] = []
    for mantissas in LOG_TICK_MANTISSAS:
        ticks = [float(f"{m * 10.0 ** d:.6g}") for d in decades for m in mantissas]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= minimum:
            break
    if len(ticks) < minimum:  # a few percent wide: evenly spaced round values (log and linear look alike there)
        ticks = [float(f"{t:.6g}") for t in MaxNLocator(nbins=minimum + 1, steps=[1, 2, 5, 10]).tick_values(low, high) if low <= t <= high]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    return ticks


def int8_tradeoff_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per device/backend/dataset/model: INT8 speedup over its own FP32 (with CI) and INT8 top-1 drop (with CI)."""
    latency, accuracy = tables.get("latency", pd.DataFrame()), tables.get("accuracy", pd.DataFrame())
    if not len(latency):
        return pd.DataFrame()
    from workflow_scripts.figures.plots import ratio_from_rounds

    int8 = ratio_from_rounds(latency[latency["precision"] == "int8"].copy())
    int8["speedup"] = 1 / int8["ratio"].astype(float)
    # The interval of 1/r is [1/high, 1/low] of r's interval (paired by the runoff's rounds).
    int8["speedup_ci_low"] = 1 / int8["ratio_ci_high"]
    int8["speedup_ci_high"] = 1 / int8["ratio_ci_low"]
    keys = [k for k in ("device", "backend", "dataset", "input_size", "model") if k in int8.columns]
    if len(accuracy):
        acc = accuracy[accuracy["precision"] == "int8"]
        cols = ["top1_drop_vs_fp32_points", "top1_drop_ci_low_points", "top1_drop_ci_high_points"]
        on = [k for k in keys if k in acc.columns]
        int8 = int8.merge(acc[on + [c for c in cols if c in acc.columns]].drop_duplicates(on), on=on, how="left")
    return int8


def fig_int8_tradeoff(tables: dict[str, pd.DataFrame]):
    """Fig. 13: each backend's INT8 speedup over its own FP32 (95% CI over interleaved rounds) beside its INT8
    top-1 drop (paired CI)."""
    frame = int8_tradeoff_table(tables)
    if not len(frame):
        fig, axes = _grid(1, 1)
        _no_data(axes[0, 0], "no INT8 engines")
        return fig
    frame = flag_columns(_with_system(frame), "valid", "fp32_valid")
    datasets = sorted(frame["dataset"].unique())
    systems = sorted(frame["system"].unique())
    colors = _colors(systems)
    width = max(5.0, 1.2 * frame["model"].nunique() * max(1, len(systems)) / 2)
    fig, axes = _grid(len(datasets), 2, width=width)
    flags: set[str] = set()
    for i, dataset in enumerate(datasets):
        panel = frame[frame["dataset"] == dataset]
        left, right = axes[i, 0], axes[i, 1]
        flags |= draw_bars(left, panel, "speedup", "model", "system", systems, colors, lower="speedup_ci_low",
                           upper="speedup_ci_high")
        left.axhline(1.0, color="black", linestyle=":", linewidth=1)
        left.set_title(f"{letter(2 * i)} INT8 speedup over the same backend's FP32\n{dataset}", fontsize=9)
        left.set_ylabel("FP32 median / INT8 median (x)")
        if "top1_drop_vs_fp32_points" in panel and panel["top1_drop_vs_fp32_points"].notna().any():
            draw_bars(right, panel, "top1_drop_vs_fp32_points", "model", "system", systems, colors,
                      lower="top1_drop_ci_low_points", upper="top1_drop_ci_high_points", invalid=None, variation=None,
                      points=True)
            right.axhline(0, color="black", linewidth=0.8)
        else:
            _no_data(right, "no accuracy results")
        right.set_title(f"{letter(2 * i + 1)} INT8 top-1 drop vs the same backend's FP32\n{dataset}", fontsize=9)
        right.set_ylabel("drop, points (paired 95% CI)")
    fig.suptitle("Fig. 13: what INT8 buys and costs, per backend (above 1 = faster; above 0 = less accurate)")
    fig.tight_layout()
    figure_legend(fig, flags)
    return fig


def fig_pareto(tables: dict[str, pd.DataFrame], latency: str = "p99"):
    """Fig. 14: per device (rows) and model (columns), p99 (or p50) latency vs top-1 of every backend x precision.

    Color = backend, marker = precision, marker area proportional to engine size (MB); the
    Pareto front (no other engine both faster and more accurate) is drawn as a step line and its
    engines are labelled. Invalid runs are hollow; high-variation runs have a thick edge.
    """
    from matplotlib.lines import Line2D

    column = {"p99": "p99_ms", "p50": "p50_ms"}[latency]
    engines = engine_table(tables)
    engines = engines[engines[column].notna() & engines["top1_percent"].notna()] if len(engines) else engines
    if not len(engines):
        fig, axes = _grid(1, 1)
        _no_data(axes[0, 0], "no engines with both latency and accuracy")
        return fig
    rows = sorted(set(map(tuple, engines[["device", "dataset"]].drop_duplicates().to_numpy())))
    models = model_order(engines["model"])
    backends = sorted(engines["backend"].unique())
    colors = _colors(backends)
    largest = float(engines["engine_mb"].max()) or 1.0
    fig, axes = _grid(len(rows), len(models), width=4.8, height=4.0)
    flags: set[str] = set()
    for i, (device, dataset) in enumerate(rows):
        for j, model in enumerate(models):
            ax = axes[i, j]
            panel = engines[(engines["device"] == device) & (engines["dataset"] == dataset)
                            & (engines["model"] == model)].reset_index(drop=True)
            ax.set_title(f"{letter(i * len(models) + j)} {device}\n{model} ({dataset})", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            for _, row in panel.iterrows():
                area = 30 + 400 * float(row["engine_mb"]) / largest if np.isfinite(row["engine_mb"]) else 30
                invalid, noisy = not row["valid"], bool(row["high_variation"])
                flags |= ({"invalid"} if invalid else set()) | ({"variation"} if noisy else set())
                ax.scatter(row[column], row["top1_percent"], s=area, marker=PRECISION_MARKERS.get(row["precision"], "o"),
                           facecolors="white" if invalid else colors[row["backend"]], edgecolors="black",
                           linewidths=2.0 if noisy else 0.6, alpha=0.85, zorder=3)
                low, high = row["top1_low_percent"], row["top1_high_percent"]
                if np.isfinite(low) and np.isfinite(high):
                    ax.plot([row[column]] * 2, [low, high], color=colors[row["backend"]], linewidth=0.8, zorder=2)
                # The latency's 95% CI (over the runoff's rounds where it ran, else the run's order statistics).
                x_low, x_high = row.get(f"{column[:3]}_ci_low_ms"), row.get(f"{column[:3]}_ci_high_ms")
                if pd.notna(x_low) and pd.notna(x_high) and np.isfinite(x_low) and np.isfinite(x_high):
                    ax.plot([x_low, x_high], [row["top1_percent"]] * 2, color=colors[row["backend"]], linewidth=0.8,
                            zorder=2)
            front = panel[pareto_front(panel[column], panel["top1_percent"])].sort_values(column)
            if len(front):
                ax.step(front[column], front["top1_percent"], where="post", color="black", linewidth=1,
                        linestyle="--", zorder=1)
                for _, row in front.iterrows():
                    ax.annotate(f"{row['backend']} {row['precision']}", (row[column], row["top1_percent"]),
                                textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xscale("log")
            readable_log_ticks(ax, "x")
            ax.set_xlabel(f"{latency} task latency (ms, log scale; line: 95% CI over rounds)")
            ax.set_ylabel("top-1 % (line: Wilson 95% CI)")
            ax.grid(linewidth=0.3)
    handles = [(Line2D([], [], marker="o", linestyle="none", color=colors[b], markeredgecolor="black"), b)
               for b in backends]
    handles += [(Line2D([], [], marker=m, linestyle="none", color="gray", markeredgecolor="black"), p)
                for p, m in PRECISION_MARKERS.items() if p in set(engines["precision"])]
    handles.append((Line2D([], [], color="black", linestyle="--"), "Pareto front (faster or more accurate)"))
    handles.append((Line2D([], [], marker="o", linestyle="none", color="lightgray", markersize=12),
                    f"marker area ~ engine MB (largest {largest:.3g} MB)"))
    if "invalid" in flags:
        handles.append((Line2D([], [], marker="o", linestyle="none", markerfacecolor="white", markeredgecolor="black"),
                        "hollow: " + INVALID_NOTE.split(": ", 1)[1]))
    if "variation" in flags:
        handles.append((Line2D([], [], marker="o", linestyle="none", color="gray", markeredgecolor="black",
                               markeredgewidth=2.0), "thick edge: " + VARIATION_NOTE.split(": ", 1)[1]))
    fig.suptitle(f"Fig. 14: latency ({latency}) vs top-1 of every backend x precision, per device and model")
    fig.tight_layout()
    figure_legend(fig, extra=handles)
    return fig
