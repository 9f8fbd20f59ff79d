"""Shared drawing helpers of the summary figures: grids, grouped bars with intervals and flags, legends.

Conventions every figure follows:

- one color per hue (precision, or device / backend), the same order everywhere;
- models in the registry's order (small to large, as in the study), whatever order rows come in;
- flags are drawn, never hidden: hatched ``//`` = invalid latency run (or its FP32 reference),
  dotted ``..`` = noisy run (IQR/median of the task latencies > 0.10); each figure's legend explains the hatches it uses;
- error bars only where an interval exists (a single measured run or a NaN spread draws none,
  never a zero-length bar);
- one legend per figure, below the panels, so no legend covers a bar;
- panel letters (a), (b), ... in reading order, as in the study.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.core.artifacts import atomic_path
from workflow_scripts.core.registry import MODELS, PRECISIONS

# The registry's precisions (fp32, fp16, bf16, int8) after the Keras reference; QUANTIZED: every one
# normalized to FP32. A precision keeps its color in every figure (see _colors).
PRECISION_ORDER = ["keras", *PRECISIONS]
QUANTIZED = [p for p in PRECISIONS if p != "fp32"]
INVALID_NOTE = "hatched //: invalid latency run (valid = False) or invalid FP32 reference"
VARIATION_NOTE = ("dotted ..: noisy measurement (IQR/median of task latency > 0.10; over the runoff's rounds, "
                  "their median; the tables say why)")
NO_GPU_NOTE = "GPU data absent"
INVALID_HATCH, VARIATION_HATCH = "//", ".."
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` atomically in the format its suffix names (png, svg)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=120, bbox_inches="tight")


def letter(i: int) -> str:
    """The study's panel label for the ``i``-th panel: (a), (b), ..."""
    return f"({LETTERS[i % 26]})"


def plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (0.5, 2, 10), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))


def model_order(models) -> list[str]:
    """Models in the registry's order (the study's, small to large); unknown names after, alphabetically."""
    known = list(MODELS)
    present = list(dict.fromkeys(models))
    return [m for m in known if m in present] + sorted(m for m in present if m not in known)


def _system(frame: pd.DataFrame) -> pd.Series:
    """'device / backend' per row: the unit compared side by side."""
    return frame["device"].astype(str) + " / " + frame["backend"].astype(str)


def _with_system(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(system=_system(frame)) if len(frame) else frame.assign(system=pd.Series(dtype=str))


def _grid(n_rows: int, n_cols: int, width: float = 5.0, height: float = 3.6, sharey: bool | str = False):
    plt = _pyplot()
    n_rows, n_cols = max(n_rows, 1), max(n_cols, 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False,
                             sharey=sharey)
    return fig, axes


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _colors(values) -> dict:
    """One color per value; precisions keep theirs in every figure, whichever of them are present."""
    cmap = _pyplot().get_cmap("tab10")
    values = list(values)
    if values and set(values) <= set(PRECISION_ORDER):
        return {v: cmap(PRECISION_ORDER.index(v) % 10) for v in values}
    return {v: cmap(i % 10) for i, v in enumerate(values)}


def flag_columns(frame: pd.DataFrame, *valid_columns: str) -> pd.DataFrame:
    """``frame`` with boolean ``invalid`` (any of ``valid_columns`` False) and ``variation`` (high_variation)."""
    bad = pd.Series(False, index=frame.index)
    for column in valid_columns:
        if column in frame.columns:
            bad |= ~frame[column].astype("object").fillna(True).astype(bool)
    variation = frame["high_variation"].astype("object").fillna(False).astype(bool) \
        if "high_variation" in frame.columns else pd.Series(False, index=frame.index)
    return frame.assign(invalid=bad, variation=variation)


def _hatch(invalid: bool, variation: bool) -> str:
    return (INVALID_HATCH if invalid else "") + (VARIATION_HATCH if variation else "")


def _errors(part: pd.DataFrame, heights: np.ndarray, lower, upper, yerr) -> np.ndarray | None:
    """Asymmetric error lengths (2 x n), NaN where no interval exists."""
    if lower and upper and lower in part and upper in part:
        return np.vstack([heights - part[lower].to_numpy(dtype=float), part[upper].to_numpy(dtype=float) - heights])
    if yerr and yerr in part:
        err = part[yerr].to_numpy(dtype=float)
        return np.vstack([err, err])
    return None


def _draw_errors(ax, x, heights, err) -> None:
    """Error bars only where the interval and the value are finite (no zero-length bars for NaN)."""
    if err is None:
        return
    err = np.clip(err, 0, None)
    keep = np.isfinite(heights) & np.isfinite(err).all(axis=0)
    if keep.any():
        ax.errorbar(np.asarray(x)[keep], heights[keep], yerr=err[:, keep], fmt="none", ecolor="black",
                    elinewidth=0.9, capsize=3)


def draw_bars(ax, frame: pd.DataFrame, value: str, group: str, hue: str, hues: list, colors: dict,
              lower: str | None = None, upper: str | None = None, yerr: str | None = None,
              invalid: str | None = "invalid", variation: str | None = "variation",
              groups: list | None = None, points: bool = False) -> set[str]:
    """Grouped bars (or points with ``points``) of ``value`` per ``group`` (x) and ``hue``, intervals, flags.

    Returns the flags drawn: a subset of {"invalid", "variation"}.
    """
    groups = groups or (model_order(frame[group]) if group == "model" else list(dict.fromkeys(frame[group])))
    hues = [h for h in hues if h in set(frame[hue])]
    width = 0.8 / max(len(hues), 1)
    drawn: set[str] = set()
    for k, h in enumerate(hues):
        part = frame[frame[hue] == h].drop_duplicates(group).set_index(group).reindex(groups)
        x = np.arange(len(groups)) + (k - (len(hues) - 1) / 2) * width
        heights = part[value].to_numpy(dtype=float)
        bad = part[invalid].astype("object").fillna(False).to_numpy(dtype=bool) \
            if invalid and invalid in part else np.zeros(len(x), bool)
        noisy = part[variation].astype("object").fillna(False).to_numpy(dtype=bool) \
            if variation and variation in part else np.zeros(len(x), bool)
        present = np.isfinite(heights)
        drawn |= {"invalid"} if (bad & present).any() else set()
        drawn |= {"variation"} if (noisy & present).any() else set()
        if points:
            for xi, yi, b, n in zip(x, heights, bad, noisy):
                if np.isfinite(yi):
                    ax.plot([xi], [yi], marker="o", markersize=6, linestyle="none", color=colors.get(h),
                            markerfacecolor="white" if b else colors.get(h), markeredgecolor="black",
                            markeredgewidth=1.4 if n else 0.6)
            ax.plot([], [], marker="o", linestyle="none", color=colors.get(h), markeredgecolor="black", label=str(h))
        else:
            bars = ax.bar(x, np.where(present, heights, 0.0), width, label=str(h), color=colors.get(h),
                          edgecolor="black", linewidth=0.4)
            for bar, b, n, p in zip(bars, bad, noisy, present):
                if not p:
                    bar.set_visible(False)
                elif b or n:
                    bar.set_hatch(_hatch(b, n))
        _draw_errors(ax, x, heights, _errors(part, heights, lower, upper, yerr))
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    return drawn


def figure_legend(fig, flags: set[str] | None = None, extra: list | None = None, title: str | None = None) -> None:
    """One legend below the panels: every labelled artist once, plus the hatches the figure uses."""
    from matplotlib.patches import Patch

    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels and not label.startswith("_"):
                handles.append(handle)
                labels.append(label)
    for handle, label in extra or []:
        handles.append(handle)
        labels.append(label)
    flags = flags or set()
    if "invalid" in flags:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=INVALID_HATCH))
        labels.append(INVALID_NOTE)
    if "variation" in flags:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=VARIATION_HATCH))
        labels.append(VARIATION_NOTE)
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 4),
                   fontsize=8, title=title, frameon=False)


def figure_note(fig, text: str, y: float | None = None) -> None:
    """A line of text under the legend (what is absent and why), about 0.6 inch below the panels."""
    y = -0.6 / fig.get_figheight() if y is None else y
    fig.text(0.5, y, text, ha="center", va="top", fontsize=8, color="dimgray", wrap=True)


def _bar_grid(frame: pd.DataFrame, value: str, hue: str, hue_order: list, title: str, ylabel: str,
              rows: str = "dataset", cols: str = "system", reference: float | None = None, **bar_kw):
    """One panel per (row, col) value pair, x = model, bars by ``hue``, y shared along a row; returns the Figure."""
    frame = _with_system(frame)
    row_values = sorted(frame[rows].dropna().unique()) if len(frame) else []
    col_values = sorted(frame[cols].dropna().unique()) if len(frame) else []
    fig, axes = _grid(len(row_values), len(col_values), sharey="row")
    hues = [h for h in hue_order if len(frame) and h in set(frame[hue])] or \
        (sorted(frame[hue].unique()) if len(frame) else [])
    colors = _colors(hues)
    models = model_order(frame["model"]) if len(frame) else []
    flags: set[str] = set()
    if not len(frame):
        _no_data(axes[0, 0])
    for i, r in enumerate(row_values):
        for j, c in enumerate(col_values):
            ax = axes[i, j]
            panel = frame[(frame[rows] == r) & (frame[cols] == c)]
            ax.set_title(f"{letter(i * len(col_values) + j)} {c}\n{r}", fontsize=9)
            if not len(panel):
                _no_data(ax)
                continue
            flags |= draw_bars(ax, panel, value, "model", hue, hues, colors,
                               groups=[m for m in models if m in set(panel["model"])], **bar_kw)
            if reference is not None:
                ax.axhline(reference, color="black", linestyle=":", linewidth=1)
            if j == 0:
                ax.set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    figure_legend(fig, flags)
    return fig
