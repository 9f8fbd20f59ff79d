"""The multi-device summary, its figures and the claims table, on synthetic per-engine result tables.

Two devices are written in the real path scheme: a CPU-only machine with ONNX Runtime (no GPU
columns, unknown CUDA cores) and a Jetson Orin Nano with TensorRT (GPU samples, 1024 CUDA cores).
Rows are made with the workflow's own helpers (latency statistics, accuracy summary, resource
summary, comparable settings), so their columns match what the benchmark jobs write. Both devices
use one config: their rows differ only in the tensorrt block the Jetson's rows carry, which the
summary must accept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.core import discovery
from workflow_scripts.summary import summarize
from workflow_scripts.figures import plots
from workflow_scripts.core.config import comparable_settings, settings_json, short_hash, validate_config
from workflow_scripts.stages.evaluate import accuracy_summary
from workflow_scripts.stages.latency import summarize_latency
from workflow_scripts.measure.monitor import summarize_resources
from workflow_scripts.core.provenance import with_provenance

CPU = {"device": "intel-xeon-processor", "backend": "onnxruntime", "cuda_cores": "", "gpu": False}
JETSON = {"device": "nvidia-jetson-orin-nano-developer-kit", "backend": "tensorrt", "cuda_cores": "1024", "gpu": True}
MODELS = {"MobileNetV3Small": 4.0, "DenseNet169": 50.0}  # FP32 size in MB
SIZE_FRACTION = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}
LATENCY_FRACTION = {"fp32": 1.0, "fp16": 0.6, "int8": 0.5}
BUILD_S = {"fp32": 10.0, "fp16": 20.0, "int8": 40.0}
TOP1 = {"fp32": 0.90, "fp16": 0.88, "int8": 0.80}
IMAGES = 200
WARMUP, REPEATS = 1, 3
NEW_STAMP, OLD_STAMP = "2026-03-02T10:00:00+00:00", "2026-01-01T10:00:00+00:00"


BASE_CONFIG = validate_config({"models": ["MobileNetV3Small", "DenseNet169"], "datasets": ["digits"],
                               "precisions": ["fp32", "fp16", "int8"], "input_size": 32, "weights": "none",
                               "compression": {"warmup": WARMUP, "repeats": REPEATS}})


def settings_columns(config: dict | None, backend: str, precision: str | None, stage: str) -> dict:
    """The ``settings``/``settings_hash`` columns a job of ``stage`` writes under ``config`` (None: none)."""
    if config is None:
        return {}
    text = settings_json(comparable_settings(config, precision=precision, backend=backend, stage=stage,
                                             dataset="digits"))
    return {"settings": text, "settings_hash": short_hash(text)}


def provenance(system: dict, backend: str | None = None, config_hash: str = "newhash", stamp: str = NEW_STAMP,
               precision: str | None = None, stage: str = "benchmark_latency", config: dict | None = BASE_CONFIG) -> dict:
    """Provenance columns like workflow_scripts.core.provenance writes them for a job of ``stage``."""
    backend = backend or system["backend"]
    return {"device": system["device"], "cpu_model": "test cpu", "os": "Linux", "gpu_name": "",
            "jetson_model": "NVIDIA Jetson Orin Nano Developer Kit" if system["gpu"] else "",
            "cuda_cores": system["cuda_cores"], "power_mode": "", "cpu_clock_mhz": "", "gpu_clock_mhz": "",
            "backend": backend, "backend_version": "1.0", "tensorflow_version": "2.21.0",
            "tf2onnx_version": "1.17.0", "onnx_version": "1.23.2", "onnxruntime_version": "1.32.0",
            "tensorrt_version": "10.3" if system["gpu"] else "", "git_commit": "abc", "git_dirty": False,
            "config_hash": config_hash, **settings_columns(config, backend, precision, stage), "timestamp": stamp}


def trace(system: dict, stage: str, runs: int, rng, seconds: float = 1.0) -> pd.DataFrame:
    """A resource monitor time series over ``runs`` runs of ``stage`` (first run a warm-up)."""
    rows, t = [], 0.0
    for run in range(runs):
        label = f"{stage}:{'warmup' if run < WARMUP else 'measured'}:{run}"
        for _ in range(10):
            row = {"elapsed_s": t, "unix_time_s": t, "stage": label, "cpu_percent": rng.uniform(50, 150),
                   "cpu_percent_of_machine": rng.uniform(20, 80), "rss_mb": rng.uniform(200, 400),
                   "system_memory_percent": rng.uniform(10, 40)}
            if system["gpu"]:
                row.update(gpu_util_percent=rng.uniform(0, 100), power_gpu_mw=rng.uniform(1000, 5000))
            rows.append(row)
            t += seconds / 10
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path: Path) -> None:
    """Write a table where the workflow would, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def write_device(results: Path, system: dict, rng, speed: float, invalid: set = frozenset(),
                 config_of: Callable[[str | None, str], dict | None] = lambda precision, stage: BASE_CONFIG) -> None:
    """Every per-engine table of one device, for both models and three precisions on digits at 32 px.

    ``config_of(precision, stage)`` is the config the job of that precision (None: the export) and
    stage (config.RULE_SETTINGS) ran under; None writes rows without settings, as older results have.
    """
    def prov_of(precision: str | None, stage: str, backend: str | None = None) -> dict:
        return provenance(system, backend, precision=precision, stage=stage, config=config_of(precision, stage))

    for model, mb in MODELS.items():
        onnx = results / system["device"] / "onnx" / "digits_32px" / model
        runs = pd.DataFrame({"stage": "onnx_conversion", "run": range(WARMUP + REPEATS),
                             "warmup": [r < WARMUP for r in range(WARMUP + REPEATS)],
                             "duration_s": [30.0] + [3.0 + 0.2 * r for r in range(REPEATS)],
                             "load_s": 1.0, "convert_s": 2.0, "parity_max_abs_diff": 1e-6, "onnx_mb": mb, "opset": 17})
        export_trace = trace(system, "onnx_conversion", WARMUP + REPEATS, rng)
        for key, value in summarize_resources(export_trace).items():
            runs[key] = value
        extra = {"dataset": "digits", "model": model}
        write(with_provenance(runs, {**prov_of(None, "export_onnx", "tf2onnx"), **extra}), onnx / "export.parquet")
        write(with_provenance(export_trace, {**prov_of(None, "export_onnx", "tf2onnx"), **extra}),
              onnx / "export_resources.parquet")
        engine = results / system["device"] / system["backend"] / "digits_32px" / model
        labels_all = rng.integers(0, 10, IMAGES)
        for precision in ("fp32", "fp16", "int8"):
            labels = {"dataset": "digits", "model": model, "precision": precision, "input_size": 32}
            prov = prov_of(precision, "build_engine")
            # Build: one slow warm-up, then repeats around BUILD_S (scaled by device speed and model size).
            base_s = BUILD_S[precision] * speed * (1 + mb / 50)
            build = pd.DataFrame({"stage": "engine_build", "run": range(WARMUP + REPEATS),
                                  "warmup": [r < WARMUP for r in range(WARMUP + REPEATS)],
                                  "duration_s": [10 * base_s] + [base_s * (1 + 0.05 * (r - 1)) for r in range(REPEATS)],
                                  "build_s": base_s, "engine_bytes": int(mb * SIZE_FRACTION[precision] * 1e6),
                                  "precision": precision, "engine_mb": mb * SIZE_FRACTION[precision], "onnx_mb": mb,
                                  "calibration_method": "entropy" if precision == "int8" else "",
                                  "calibration_images": 256 if precision == "int8" else 0})
            build_trace = trace(system, "engine_build", WARMUP + REPEATS, rng, seconds=base_s / 10)
            for key, value in summarize_resources(build_trace).items():
                build[key] = value
            write(with_provenance(build, {**prov, "dataset": "digits", "model": model}),
                  engine / f"{precision}_build.parquet")
            build_trace["precision"] = precision
            write(with_provenance(build_trace, {**prov, "dataset": "digits", "model": model}),
                  engine / f"{precision}_build_resources.parquet")
            # Latency: lognormal samples around a device/model/precision median.
            median_ms = speed * (2 + mb / 5) * LATENCY_FRACTION[precision]
            samples_s = median_ms / 1e3 * rng.lognormal(0, 0.05, 300)  # >= 299: p99 supported
            summary = summarize_latency(samples_s, 1)
            is_valid = (model, precision) not in invalid
            summary.update(labels)
            summary.update({"batch_size": 1, "warmup": 5, "min_iterations": 30, "min_duration_s": 0.0, "threads": 2,
                            "load_s": 0.1, "valid": is_valid, "engine_mb": mb * SIZE_FRACTION[precision],
                            "high_variation": False})
            prov = prov_of(precision, "benchmark_latency")
            latency_trace = trace(system, "", 1, rng)
            latency_trace["stage"] = ""
            summary.update(summarize_resources(latency_trace))
            write(with_provenance(pd.DataFrame([summary]), prov), engine / f"{precision}_latency.parquet")
            raw = pd.DataFrame({"iteration": np.arange(len(samples_s)), "latency_ms": samples_s * 1e3, **labels})
            write(with_provenance(raw, prov), engine / f"{precision}_latency_samples.parquet")
            write(with_provenance(latency_trace.assign(**labels), prov),
                  engine / f"{precision}_latency_resources.parquet")
            # Accuracy: exactly TOP1 of the images right, the same images for every precision where possible.
            correct = np.arange(IMAGES) < int(TOP1[precision] * IMAGES)
            predictions = pd.DataFrame({"image_index": np.arange(IMAGES), "label": labels_all,
                                        "prediction": np.where(correct, labels_all, (labels_all + 1) % 10),
                                        "top5_correct": True, "finite_output": True})
            accuracy = {**labels, **accuracy_summary(predictions)}
            prov = prov_of(precision, "evaluate_engine")
            write(with_provenance(pd.DataFrame([accuracy]), prov), engine / f"{precision}_accuracy.parquet")
            write(predictions.assign(**labels, device=system["device"], backend=system["backend"]),
                  engine / f"{precision}_predictions.parquet")


def write_keras(results: Path, config: dict | None = BASE_CONFIG) -> None:
    """The device-independent Keras base accuracy of each model."""
    for model in MODELS:
        folder = results / "models" / "digits_32px" / model
        labels = np.zeros(IMAGES, dtype=int)
        predictions = pd.DataFrame({"image_index": np.arange(IMAGES), "label": labels,
                                    "prediction": np.where(np.arange(IMAGES) < 182, labels, 1),
                                    "top5_correct": True, "finite_output": True})
        row = {"dataset": "digits", "model": model, "precision": "keras", "input_size": 32,
               **accuracy_summary(predictions), "config_hash": "newhash", "backend": "keras", "backend_version": "3",
               **settings_columns(config, "keras", None, "evaluate_keras")}
        write(pd.DataFrame([row]), folder / "accuracy.parquet")
        write(predictions, folder / "predictions.parquet")


def write_stale(results: Path) -> None:
    """An older run of one cell at another input size and settings: it must be dropped, not mixed in."""
    engine = results / CPU["device"] / CPU["backend"] / "digits_64px" / "MobileNetV3Small"
    labels = {"dataset": "digits", "model": "MobileNetV3Small", "precision": "fp32", "input_size": 64}
    summary = {**summarize_latency(np.full(40, 0.5), 1), **labels, "batch_size": 1, "valid": True, "engine_mb": 4.0}
    prov = provenance(CPU, config_hash="oldhash", stamp=OLD_STAMP, precision="fp32",
                      config={**BASE_CONFIG, "input_size": 64})
    write(with_provenance(pd.DataFrame([summary]), prov), engine / "fp32_latency.parquet")
    raw = pd.DataFrame({"iteration": np.arange(40), "latency_ms": 500.0, **labels})
    write(with_provenance(raw, prov), engine / "fp32_latency_samples.parquet")


@pytest.fixture(scope="module")
def results_tree(tmp_path_factory) -> Path:
    """A results folder holding two devices' per-engine tables, plus a stale run and noise to ignore."""
    results = tmp_path_factory.mktemp("study") / "results"
    rng = np.random.default_rng(0)
    write_device(results, CPU, rng, speed=1.0)
    write_device(results, JETSON, rng, speed=0.5, invalid={("DenseNet169", "int8")})
    write_keras(results)
    write_stale(results)
    # Things that are not per-engine tables must be ignored.
    write(pd.DataFrame({"x": [1]}), results / "summary" / "onnxruntime" / "digits_32px" / "M" / "fp32_latency.parquet")
    write(pd.DataFrame({"x": [1]}), results / "models" / "digits_32px" / "MobileNetV3Small" / "history.parquet")
    return results


@pytest.fixture(scope="module")
def summary(results_tree, tmp_path_factory):
    """The summary of ``results_tree`` written by the summarize entry point, as the rule calls it."""
    out = tmp_path_factory.mktemp("summary")
    # The rule lists only the current device's files; the rest must be discovered under results_dir.
    current = {key: [p for p in paths if CPU["device"] in p]
               for key, paths in discovery.discover_results(results_tree).items()}
    tables = summarize.summarize({**current, "results_dir": str(results_tree), "seed": 0, "n_resamples": 500}, out)
    return out, tables


DEVICES = {CPU["device"], JETSON["device"]}


def figure_text(fig) -> str:
    """Every piece of text in a figure: titles, labels, tick labels, legends, annotations."""
    parts = [t.get_text() for t in fig.findobj(match=lambda o: hasattr(o, "get_text"))]
    return "\n".join(p for p in parts if p)


def test_discovery_finds_both_devices_and_ignores_other_folders(results_tree):
    found = discovery.discover_results(results_tree)
    assert len(found["latency_files"]) == 2 * 2 * 3 + 1  # two devices x two models x three precisions + stale
    assert len(found["export_files"]) == 4 and len(found["keras_accuracy_files"]) == 2
    everything = [p for paths in found.values() for p in paths]
    assert not [p for p in everything if "/summary/" in p or p.endswith("history.parquet")]
    assert {discovery.parse_result_path(p, results_tree)["device"] for p in found["build_files"]} == DEVICES


def test_other_results_lists_what_the_current_config_does_not(results_tree):
    current = {key: [p for p in paths if CPU["device"] in p]
               for key, paths in discovery.discover_results(results_tree).items()}
    others = discovery.other_results(results_tree, current)
    assert others and all(JETSON["device"] in line or "/models/" in line for line in others)
    assert discovery.other_results(results_tree, current) == others  # stable: no spurious reruns


def test_every_summary_table_has_both_devices(summary):
    out, tables = summary
    for name in ("compression", "compression_stats", "latency", "accuracy", "size", "resources",
                 "compression_resources", "claims"):
        table = pd.read_parquet(out / f"{name}.parquet")
        assert DEVICES <= set(table["device"]), name


def test_stale_settings_are_dropped_and_logged(results_tree, tmp_path, caplog):
    current = discovery.discover_results(results_tree)
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.summary.summarize"):
        tables = summarize.build_tables(current, results_tree, n_resamples=200)
    latency = tables["latency"]
    cell = latency[(latency["device"] == CPU["device"]) & (latency["model"] == "MobileNetV3Small")
                   & (latency["precision"] == "fp32")]
    assert len(cell) == 1 and cell["config_hash"].iloc[0] == "newhash" and cell["input_size"].iloc[0] == 32
    assert "oldhash" in caplog.text and "newhash" in caplog.text


def test_compression_repeats_exclude_warmups(summary):
    out, _ = summary
    runs = pd.read_parquet(out / "compression.parquet")
    builds = runs[(runs["stage"] == "engine_build") & (runs["device"] == CPU["device"])]
    per_cell = builds.groupby(["model", "precision"])["warmup"].agg(["sum", "count"])
    assert (per_cell["sum"] == WARMUP).all() and (per_cell["count"] == WARMUP + REPEATS).all()
    stats = pd.read_parquet(out / "compression_stats.parquet")
    assert (stats["measured_runs"] == REPEATS).all() and (stats["warmup_runs"] == WARMUP).all()
    cell = builds[(builds["model"] == "DenseNet169") & (builds["precision"] == "int8")]
    measured = cell.loc[~cell["warmup"], "duration_s"]
    row = stats[(stats["device"] == CPU["device"]) & (stats["model"] == "DenseNet169")
                & (stats["precision"] == "int8") & (stats["stage"] == "engine_build")].iloc[0]
    assert row["duration_mean_s"] == pytest.approx(measured.mean())
    assert row["duration_std_s"] == pytest.approx(measured.std(ddof=1))
    assert row["duration_ci_low_s"] < row["duration_mean_s"] < row["duration_ci_high_s"]
    # The warm-up is ten times slower: had it counted, the mean would be far above every measured run.
    assert row["duration_mean_s"] <= measured.max()


def test_statistics_columns(summary):
    _, tables = summary
    latency = tables["latency"]
    assert (latency["latency_median_ci_low_ms"] <= latency["latency_median_ms"]).all()
    assert (latency["latency_median_ms"] <= latency["latency_median_ci_high_ms"]).all()
    assert (latency["latency_p99_ms"] >= latency["latency_p90_ms"]).all()
    int8 = latency[latency["precision"] == "int8"]
    assert int8["latency_median_vs_fp32"].between(0.4, 0.6).all()
    # Latency intervals across runs come from the runoff's rounds only; none here.
    assert (latency["rounds"] == 0).all() and int8["latency_median_vs_fp32_rounds_ci_low"].isna().all()
    assert (latency["latency_p99_ci_low_ms"] <= latency["latency_p99_ms"]).all()
    accuracy = tables["accuracy"]
    assert accuracy["top1_ci_low"].lt(accuracy["top1_accuracy"]).all()
    assert accuracy["top1_ci_high"].gt(accuracy["top1_accuracy"]).all()
    engines = accuracy[accuracy["precision"] == "int8"]
    assert engines["top1_drop_vs_fp32_points"].to_numpy() == pytest.approx(10.0)
    assert (engines["top1_drop_ci_low_points"] <= 10.0).all() and (engines["top1_drop_ci_high_points"] >= 10.0).all()
    keras = accuracy[accuracy["precision"] == "keras"]
    assert set(keras["device"]) == DEVICES  # the base model is shown beside each device
    resources = tables["resources"]
    jetson = resources[resources["device"] == JETSON["device"]]
    assert (jetson["cuda_cores"] == 1024).all()
    assert jetson["utilized_cuda_cores_mean"].to_numpy() == pytest.approx(jetson["gpu_util_percent_mean"] / 100 * 1024)
    assert resources.loc[resources["device"] == CPU["device"], "utilized_cuda_cores_mean"].isna().all()


def test_claims_table_covers_both_devices(summary):
    out, tables = summary
    text = (out / "claims.md").read_text()
    for device, backend in ((CPU["device"], CPU["backend"]), (JETSON["device"], JETSON["backend"])):
        assert f"## {device} / {backend}" in text
    for study in ("~42%", "<30%", "2.9 points", "13.9 points", "1.9x", "3% to 4% faster", "55%"):
        assert study in text
    claims = tables["claims"].set_index(["device", "claim"])
    for device in DEVICES:
        assert claims.loc[(device, "fp16_size_fraction"), "ours_mean"] == pytest.approx(50.0)
        assert claims.loc[(device, "int8_size_fraction"), "ours_mean"] == pytest.approx(25.0)
        assert claims.loc[(device, "fp16_top1_drop"), "ours_mean"] == pytest.approx(2.0)
        assert claims.loc[(device, "int8_top1_drop"), "ours_mean"] == pytest.approx(10.0)
        assert claims.loc[(device, "int8_over_fp16_build_time"), "ours_mean"] == pytest.approx(2.0)
        assert claims.loc[(device, "fp16_latency_reduction"), "ours_mean"] == pytest.approx(40.0, abs=3)
        assert claims.loc[(device, "int8_latency_reduction"), "ours_mean"] == pytest.approx(50.0, abs=3)
        assert claims.loc[(device, "int8_faster_than_fp16"), "ours_mean"] == pytest.approx(100 / 6, abs=3)


@pytest.mark.slow  # renders every figure / converts or builds a real model
def test_every_figure_is_written_and_shows_both_devices(summary, tmp_path):
    out, tables = summary
    files = [str(tmp_path / f"{stem}.{fmt}") for stem in plots.FIGURES for fmt in ("png", "svg")]
    plots.make_figures(out, files)
    for path in files:
        assert Path(path).stat().st_size > 5000, path
    for stem, (draw, _) in plots.FIGURES.items():
        fig = draw(tables)
        text = figure_text(fig)
        for device in DEVICES:
            assert device in text, (stem, device)
        plots._pyplot().close(fig)


def error_bar_lengths(ax) -> list[float]:
    """Lengths of the error bars drawn on an Axes."""
    from matplotlib.container import ErrorbarContainer

    lengths = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for collection in container.lines[2]:
                for segment in collection.get_segments():
                    lengths.append(abs(segment[1][1] - segment[0][1]))
    return lengths


def test_compression_figure_has_error_bars_from_repeats(summary):
    _, tables = summary
    fig = plots.fig_compression_time(tables)
    axes = [ax for ax in fig.axes if ax.containers]
    assert len(axes) == 2  # one panel per device/backend
    titles = " ".join(ax.get_title() for ax in axes)
    assert all(device in titles for device in DEVICES)
    for ax in axes:
        assert any(length > 0 for length in error_bar_lengths(ax))
    plots._pyplot().close(fig)


def test_resource_figure_says_gpu_data_is_absent_for_the_cpu_device(summary):
    _, tables = summary
    fig = plots.fig_base_resources(tables)
    text = figure_text(fig)
    assert plots.NO_GPU_NOTE in text and CPU["device"] in text
    assert "GPU utilization" in text and "utilized CUDA cores" in text
    plots._pyplot().close(fig)
    cpu_only = {name: t[t["device"] == CPU["device"]] for name, t in tables.items() if "device" in t}
    fig = plots.fig_base_resources(cpu_only)
    text = figure_text(fig)
    assert "GPU utilization" not in text and "CPU" in text and "memory" in text and plots.NO_GPU_NOTE in text
    plots._pyplot().close(fig)


def test_invalid_latency_runs_are_hatched_with_a_legend_note(summary):
    _, tables = summary
    fig = plots.fig_latency_normalized(tables)
    hatched = [p for ax in fig.axes for p in ax.patches if p.get_hatch() == "//" and p.get_height() > 0]
    assert hatched
    assert plots.INVALID_NOTE in figure_text(fig)
    plots._pyplot().close(fig)


def test_trace_figure_picks_smallest_and_largest_model(summary):
    _, tables = summary
    assert plots.trace_models(tables["compression_resources"], tables["size"]) == ["MobileNetV3Small", "DenseNet169"]
    fig = plots.fig_ptq_traces(tables)
    lines = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert "GPU %" in lines and "CPU % of machine" in lines
    plots._pyplot().close(fig)


def test_fingerprint_changes_when_another_device_arrives(results_tree, tmp_path):
    import shutil

    current = {key: [p for p in paths if CPU["device"] in p]
               for key, paths in discovery.discover_results(results_tree).items()}
    before = discovery.results_fingerprint(results_tree, current)
    assert before == discovery.results_fingerprint(results_tree, current)
    copy = tmp_path / "results"
    shutil.copytree(results_tree, copy)
    current = {key: [p.replace(str(results_tree), str(copy)) for p in paths] for key, paths in current.items()}
    unchanged = discovery.results_fingerprint(copy, current)
    shutil.copytree(copy / JETSON["device"], copy / "another-device")
    assert discovery.results_fingerprint(copy, current) != unchanged


def test_one_config_on_two_backends_is_accepted_and_carries_settings_hash(summary):
    out, tables = summary
    for name in ("compression", "compression_stats", "latency", "accuracy", "size", "resources",
                 "compression_resources"):
        table = pd.read_parquet(out / f"{name}.parquet")
        assert "settings_hash" in table.columns and table["settings_hash"].str.len().eq(12).all(), name
    latency = tables["latency"]
    jetson = latency[latency["device"] == JETSON["device"]]
    cpu = latency[latency["device"] == CPU["device"]]
    # Only TensorRT rows carry the tensorrt block; only int8 rows the calibration block.
    assert jetson["settings"].str.contains('"tensorrt"').all() and not cpu["settings"].str.contains("tensorrt").any()
    assert latency.loc[latency["precision"] == "int8", "settings"].str.contains('"calibration"').all()
    assert not latency.loc[latency["precision"] != "int8", "settings"].str.contains("calibration").any()
    assert tables["claims"]["settings_hashes"].str.len().gt(0).all()


# --- one folder per device ------------------------------------------------------------------------

def test_a_copied_device_folder_is_refused_naming_both_folders(tmp_path):
    import shutil

    from workflow_scripts.core.errors import ConfigError

    results = tmp_path / "results"
    write_device(results, CPU, np.random.default_rng(0), speed=1.0)
    write_keras(results)
    shutil.copytree(results / CPU["device"], results / f"{CPU['device']}-backup")
    inputs = {**discovery.discover_results(results), "results_dir": str(results), "n_resamples": 100}
    out = tmp_path / "summary"
    with pytest.raises(ConfigError) as info:
        summarize.summarize(inputs, out)
    message = str(info.value)
    assert f"rows measured on {CPU['device']} lie in 2 folders" in message
    assert f"{results}/{CPU['device']}-backup" in message and "summary.ignore_folders" in message
    assert not out.exists() or not list(out.iterdir())
    # Leaving the copy out: every number counted once, as without the copy.
    tables = summarize.summarize({**inputs, "ignore_folders": [f"{CPU['device']}-backup"]}, out)
    assert len(tables["latency"]) == len(MODELS) * 3 and set(tables["latency"]["device"]) == {CPU["device"]}


def test_a_renamed_device_folder_labels_its_rows_by_the_folder(tmp_path):
    results = tmp_path / "results"
    write_device(results, CPU, np.random.default_rng(0), speed=1.0)
    write_keras(results)
    (results / CPU["device"]).rename(results / "lab-box")
    tables = summarize.summarize({**discovery.discover_results(results), "results_dir": str(results),
                                  "n_resamples": 100}, tmp_path / "summary")
    latency = tables["latency"]
    assert set(latency["device"]) == {"lab-box"} and set(latency["measured_device"]) == {CPU["device"]}


def test_a_truncated_table_of_another_device_is_named_while_planning_and_when_read(tmp_path):
    from workflow_scripts.core.errors import CorruptArtifact

    results = tmp_path / "results"
    write_device(results, CPU, np.random.default_rng(0), speed=1.0)
    write_device(results, JETSON, np.random.default_rng(1), speed=0.5)
    write_keras(results)
    broken = results / JETSON["device"] / "tensorrt" / "digits_32px" / "DenseNet169" / "int8_latency.parquet"
    broken.write_bytes(broken.read_bytes()[:200])
    current = {key: [p for p in found if CPU["device"] in p or "/models/" in p]
               for key, found in discovery.discover_results(results).items()}
    with pytest.raises(CorruptArtifact) as info:
        discovery.results_fingerprint(results, current)
    message = str(info.value)
    assert str(broken) in message and "--forcerun benchmark_latency" in message and JETSON["device"] in message
    with pytest.raises(CorruptArtifact, match="build_int8_engine_tensorrt"):
        (broken.parent / "int8_build.parquet").write_bytes(b"PAR1 not really PAR1")
        summarize.read_all([broken.parent / "int8_build.parquet"], results)


def test_normalize_to_fp32_gives_no_ratio_to_a_zero_baseline():
    import warnings

    from workflow_scripts.summary.summarize import KEYS, normalize_to_fp32

    rows = []
    for precision, value in (("fp32", 0.0), ("int8", 2.0)):
        row = {key: "x" for key in KEYS}
        row.update(precision=precision, gpu_util=value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero RuntimeWarning reached the console
        ratio = normalize_to_fp32(frame, "gpu_util")
    assert ratio.isna().all()
