"""The summary figures on a synthetic quickstart-like summary (three CPU backends): real tables, real matplotlib."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_decision import write_quickstart_like
from tests.test_summary import error_bar_lengths, figure_text
from workflow_scripts.figures import plots, report_html
from workflow_scripts.decision.decide import pareto_front, read_tables

TABLES = ("latency", "accuracy", "size", "resources", "compression_stats", "compression_resources")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = write_quickstart_like(tmp_path_factory.mktemp("plots") / "results")
    return out, read_tables(out, TABLES)


def close(fig):
    plots._pyplot().close(fig)


@pytest.mark.slow  # renders every figure / converts or builds a real model
def test_every_figure_is_written_and_the_gallery_shows_captions(quick, tmp_path):
    out, _ = quick
    files = [str(tmp_path / f"{stem}.png") for stem in plots.FIGURES]
    plots.make_figures(out, files)
    page = report_html.gallery_html(files, "report")
    for stem in plots.FIGURES:
        assert f"<h2>{stem}</h2>" in page
    assert page.count("<figcaption>") == len(plots.FIGURES) and "Pareto front" in page


def test_flags_are_drawn(quick):
    _, tables = quick
    fig = plots.fig_int8_tradeoff(tables)
    hatches = {p.get_hatch() for ax in fig.axes for p in ax.patches if p.get_visible()}
    assert ".." in hatches and plots.VARIATION_NOTE in figure_text(fig)
    close(fig)
    fig = plots.fig_base_latency(tables)  # openvino fp32 is valid; only fp16 was invalid
    assert plots.INVALID_NOTE not in figure_text(fig)
    close(fig)


def test_memory_is_process_rss_not_system_percent(quick):
    _, tables = quick
    for draw in (plots.fig_base_resources, plots.fig_resources_normalized):
        fig = draw(tables)
        text = figure_text(fig)
        assert "RSS" in text and "system" not in text.replace("system memory", "") and "% of system" not in text
        close(fig)


def test_cpu_only_figures_have_no_empty_gpu_panels_and_letter_panels_from_a(quick):
    _, tables = quick
    fig = plots.fig_base_resources(tables)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[0].startswith("(a) CPU") and titles[1].startswith("(b) process memory")
    assert plots.NO_GPU_NOTE in figure_text(fig)
    close(fig)
    fig = plots.fig_resources_normalized(tables)
    assert all("GPU" not in ax.get_title() for ax in fig.axes if ax.get_visible())
    close(fig)


def test_model_order_is_the_registrys_in_every_figure(quick):
    _, tables = quick
    for draw in (plots.fig_base_latency, plots.fig_size, plots.fig_latency_normalized, plots.fig_int8_tradeoff):
        fig = draw(tables)
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert ticks == ["MobileNetV3Small", "DenseNet169"], draw.__name__
        close(fig)


def test_compression_time_is_on_a_log_axis_without_nan_error_bars(quick):
    _, tables = quick
    stats = tables["compression_stats"].copy()
    fig = plots.fig_compression_time({"compression_stats": stats})
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    assert "no ONNX stage" in figure_text(fig)  # LiteRT converts the Keras model
    assert any(length > 0 for ax in fig.axes for length in error_bar_lengths(ax))
    close(fig)
    one = stats.assign(measured_runs=1, duration_std_s=np.nan)
    fig = plots.fig_compression_time({"compression_stats": one})
    assert "one measured run each" in figure_text(fig) and "mean of 1-1" not in figure_text(fig)
    assert not any(error_bar_lengths(ax) for ax in fig.axes)
    close(fig)


def test_accuracy_figure_draws_the_drop_with_its_interval_and_a_fitted_axis(quick):
    _, tables = quick
    fig = plots.fig_accuracy(tables)
    drops = [ax for ax in fig.axes if "drop vs FP32" in ax.get_title()]
    tops = [ax for ax in fig.axes if ax.get_title().endswith("top-1")]
    assert len(drops) == len(tops) == 3
    assert all(ax.get_ylim()[1] <= 100.5 and ax.get_ylim()[0] > 50 for ax in tops)
    assert any(length > 2 for ax in drops for length in error_bar_lengths(ax))
    assert not any(ax.get_legend() for ax in fig.axes) and fig.legends
    close(fig)


def test_pareto_front_and_figure(quick):
    # Ties are not dominated: both equal engines stay on the front.
    assert list(pareto_front([1, 2, 3, 2], [80, 90, 85, 90])) == [True, True, False, True]
    assert list(pareto_front([1, np.nan, 0.5], [80, 99, 70])) == [True, False, True]
    _, tables = quick
    fig = plots.fig_pareto(tables)
    text = figure_text(fig)
    assert "Pareto front" in text and "litert int8" in text and "marker area" in text
    assert sum(1 for ax in fig.axes if ax.get_xscale() == "log") == 2
    close(fig)
