"""Figure defects a reader sees: titles on titles, bands for stages a backend does not have, panel letters not
starting at (a), a log axis with too few labels. Real matplotlib figures on the synthetic three-backend summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_decision import write_quickstart_like
from workflow_scripts.figures import plots
from workflow_scripts.decision.decide import read_tables
from workflow_scripts.figures.plots_decision import readable_log_ticks
from workflow_scripts.core.registry import BACKENDS

TABLES = ("latency", "accuracy", "size", "resources", "compression_stats", "compression_resources")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return read_tables(write_quickstart_like(tmp_path_factory.mktemp("layout") / "results"), TABLES)


def close(fig):
    plots._pyplot().close(fig)


def labels_inside(ax, which: str = "x") -> list[str]:
    """The tick labels a reader sees on an axis: drawn, non-empty, inside the limits."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    low, high = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    return [t.get_text() for t in axis.get_ticklabels(which="both")
            if t.get_visible() and t.get_text() and low <= (t.get_position()[0 if which == "x" else 1]) <= high]


def _every_figure(quick: str):
    """Every figure, slow except ``quick`` (the one this file is about): each renders in a few seconds."""
    return [pytest.param(stem, marks=[] if stem == quick else [pytest.mark.slow]) for stem in plots.FIGURES]


@pytest.mark.parametrize("stem", _every_figure("fig08_ptq_resources"))
def test_the_figure_title_overlaps_no_panel_title(tables, stem):
    fig = plots.FIGURES[stem][0](tables)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    hit = [ax.get_title() for ax in fig.axes
           if ax.get_visible() and ax.get_title() and ax.title.get_window_extent(renderer).overlaps(title)]
    close(fig)
    assert not hit, f"{stem}: the figure title overlaps {hit}"


def _stage_bands(ax) -> set[str]:
    return {p.get_label() for p in ax.patches if p.get_label() in ("ONNX conversion", "engine build")}


def test_fig8_shows_an_onnx_conversion_only_for_backends_built_from_onnx(tables):
    fig = plots.fig_ptq_traces(tables)
    panels = [ax for ax in fig.axes if " / " in ax.get_title()]
    assert panels
    for ax in panels:
        backend = ax.get_title().split("\n")[0].split(" / ")[1]
        bands = _stage_bands(ax)
        if BACKENDS[backend].source == "onnx":
            assert bands == {"ONNX conversion", "engine build"}, ax.get_title()
        else:  # LiteRT converts the Keras model: its trace is the build alone, from t = 0
            assert bands == {"engine build"}, ax.get_title()
            build = next(p for p in ax.patches if p.get_label() == "engine build")
            assert build.get_x() == 0 or min(build.get_xy()[:, 0]) == 0
            assert any("no ONNX stage" in t.get_text() for t in ax.texts)
    assert any(BACKENDS[ax.get_title().split("\n")[0].split(" / ")[1]].source == "keras" for ax in panels)
    close(fig)


def _reading_order(fig) -> list[str]:
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    axes.sort(key=lambda ax: (-round(ax.get_position().y1, 3), ax.get_position().x0))
    return [ax.get_title() for ax in axes]


def test_fig6_panel_letters_start_at_a_in_reading_order(tables):
    fig = plots.fig_base_resources(tables)  # a CPU-only summary: no GPU panels
    titles = _reading_order(fig)
    close(fig)
    assert [t[:3] for t in titles] == [f"({c})" for c in "abcdefgh"[:len(titles)]], titles
    assert "CPU" in titles[0] and "RSS" in titles[1]


@pytest.mark.parametrize("stem", _every_figure("fig06_base_resources"))
def test_every_figure_letters_its_panels_from_a(tables, stem):
    fig = plots.FIGURES[stem][0](tables)
    titles = [t for t in _reading_order(fig) if t.startswith("(")]
    close(fig)
    assert [t[:3] for t in titles] == [f"({c})" for c in "abcdefghijklmnopqrstuvwxyz"[:len(titles)]], (stem, titles)


def _narrow_latency(tables: dict) -> dict:
    """The tables with every latency in ms mapped into 3..7 ms (order kept): the Pareto axis spans under a decade."""
    latency = tables["latency"].copy()
    columns = [c for c in latency.columns if c.endswith("_ms") and pd.api.types.is_numeric_dtype(latency[c])]
    top = float(np.nanmax(latency[columns].to_numpy(dtype=float)))
    latency[columns] = 3 + 4 * latency[columns].astype(float) / top
    return {**tables, "latency": latency}


def test_fig14_log_axis_under_one_decade_has_at_least_three_labels(tables):
    fig = plots.fig_pareto(_narrow_latency(tables))
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert panels
    for ax in panels:
        low, high = ax.get_xlim()
        assert high / low < 10  # the case at hand
        shown = labels_inside(ax)
        assert len(shown) >= 3, (ax.get_title(), ax.get_xlim(), shown)
        assert len(set(shown)) == len(shown)
    close(fig)


@pytest.mark.parametrize("limits, expected", [
    ((0.15, 2.6), ["0.2", "0.5", "1", "2"]),      # one decade and a bit: 1, 2, 5 per decade
    ((3.0, 7.5), ["3", "4", "5", "6", "7"]),      # under a decade
    ((1.0, 150.0), ["1", "10", "100"]),           # several decades: the powers of ten suffice
    ((3.1, 3.4), ["3.1", "3.2", "3.3", "3.4"]),   # a few percent wide: round values
])
def test_readable_log_ticks(limits, expected):
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    readable_log_ticks(ax, "x")
    fig.canvas.draw()
    assert labels_inside(ax) == expected
    plt.close(fig)
