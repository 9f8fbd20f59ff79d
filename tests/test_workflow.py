"""Integration tests: the real snakemake CLI on a tiny config in a temporary directory."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import yaml

from workflow_scripts.core.device import detect_device_tag
from tests.cli import REPO, TINY, job_counts, snakemake

pytestmark = pytest.mark.slow


# Packages whose import would make planning slow: a copy of each that fails on import shadows it.
HEAVY = ("tensorflow", "keras", "onnxruntime", "scipy", "tf2onnx", "matplotlib", "openvino", "ai_edge_litert")


def test_dry_run_plans_the_full_study_without_heavy_imports(tmp_path):
    poison = tmp_path / "poison"
    for name in HEAVY:
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text(f"raise ImportError('{name} imported while planning')\n")
    study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    study["backends"] = ["onnxruntime"]
    result = snakemake(tmp_path, "-n", config=study,
                       env={"PYTHONPATH": f"{poison}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    counts = job_counts(result.stdout + result.stderr)
    cells = 6 * 2
    assert counts["train_model"] == cells and counts["export_onnx"] == cells
    assert counts["build_engine_onnxruntime"] == 2 * cells and counts["build_int8_engine_onnxruntime"] == cells
    assert counts["benchmark_latency"] == 3 * cells and counts["evaluate_engine"] == 3 * cells


def test_narrowing_the_matrix_from_the_command_line(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "models=[DenseNet201]", "precisions=[int8]")
    counts = job_counts(result.stdout + result.stderr)
    assert counts["build_int8_engine_onnxruntime"] == 1 and counts["train_model"] == 1
    assert not any(rule.startswith("build_engine") for rule in counts)


def test_tensorrt_backend_on_a_cpu_machine_is_a_clear_error(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "backends=[tensorrt]", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "'backends' names tensorrt" in text and "backends=[onnxruntime]" in text and ".[tensorrt]" in text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete tiny run of the whole DAG."""
    workdir = tmp_path_factory.mktemp("workflow")
    started = time.monotonic()
    snakemake(workdir)
    elapsed = time.monotonic() - started
    print(f"tiny end-to-end run: {elapsed:.0f} s")
    return workdir, elapsed


def test_end_to_end_run_produces_tables_and_figures(finished_run):
    workdir, elapsed = finished_run
    device = detect_device_tag()
    summary = workdir / "results" / "summary"
    for table in ("compression", "latency", "accuracy", "size", "resources", "compression_resources"):
        assert (summary / f"{table}.parquet").is_file(), table
    for figure in ("fig05_base_latency", "fig07_compression_time", "fig09_size_normalized", "fig10_accuracy",
                   "fig12_latency_normalized"):
        assert (summary / "figures" / f"{figure}.png").stat().st_size > 5000, figure
    latency = pd.read_parquet(summary / "latency.parquet")
    assert set(latency["precision"]) == {"fp32", "fp16", "int8"}
    assert (latency["iterations"] >= 5).all() and latency["valid"].all()
    assert (latency["backend"] == "onnxruntime").all() and (latency["device"] == device).all()
    assert latency["backend_version"].str.len().gt(0).all() and latency["config_hash"].nunique() == 1
    accuracy = pd.read_parquet(summary / "accuracy.parquet")
    assert set(accuracy["precision"]) == {"keras", "fp32", "fp16", "int8"}
    assert (accuracy["images"] == 270).all()
    engines = accuracy[accuracy["precision"] != "keras"].set_index("precision")
    assert engines.loc["fp32", "agreement_with_fp32"] == 1.0
    size = pd.read_parquet(summary / "size.parquet").set_index("precision")
    assert size.loc["fp32", "size_vs_fp32"] == 1.0 and size.loc["int8", "size_vs_fp32"] < 0.5
    engine_dir = workdir / "results" / device / "onnxruntime" / "digits_32px" / "MobileNetV3Small"
    assert (engine_dir / "int8_calibration.json").is_file() and (engine_dir / "int8_calibration.cache").is_file()
    # Every Parquet row carries provenance, per-image predictions and training history included.
    for table in (engine_dir / "int8_predictions.parquet", engine_dir / "fp32_build.parquet",
                  workdir / "results/models/digits_32px/MobileNetV3Small/history.parquet",
                  workdir / "results/models/digits_32px/MobileNetV3Small/predictions.parquet"):
        frame = pd.read_parquet(table)
        for column in ("device", "config_hash", "git_commit", "tensorflow_version", "onnxruntime_version", "timestamp"):
            assert column in frame.columns and frame[column].notna().all(), (table.name, column)
        assert (frame["device"] == device).all(), table.name
    samples = pd.read_parquet(engine_dir / "fp32_latency_samples.parquet")
    assert len(samples) >= 5 and (samples["latency_ms"] > 0).all()
    assert not list(workdir.rglob(".tmp-*")), "no temporary files are left behind"


def test_second_run_has_nothing_to_do(finished_run):
    workdir, _ = finished_run
    result = snakemake(workdir, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_calibration_reruns_only_int8(finished_run):
    workdir, _ = finished_run
    config = {**TINY, "calibration": {**TINY["calibration"], "method": "minmax"}}
    result = snakemake(workdir, "-n", config=config)
    counts = job_counts(result.stdout + result.stderr)
    assert counts.get("build_int8_engine_onnxruntime") == 1
    assert counts.get("benchmark_latency") == 1 and counts.get("evaluate_engine") == 1
    for rule in ("build_engine_onnxruntime", "train_model", "export_onnx", "prepare_dataset"):
        assert rule not in counts, (rule, counts)


def test_report_and_unlock_run_as_the_readme_writes_them(finished_run):
    # Exactly as the README spells them: no --cores (measuring rules take every core, yet these
    # commands run no job and must not need it).
    workdir, _ = finished_run
    report = snakemake(workdir, "--report", str(workdir / "report.html"), cores=None)
    assert report.returncode == 0
    html = (workdir / "report.html").read_text(errors="replace")
    assert len(html) > 10000 and "fig05_base_latency" in html
    assert snakemake(workdir, "--unlock", cores=None).returncode == 0


def test_single_engine_target_builds_just_that_engine(tmp_path):
    device = detect_device_tag()
    target = f"results/{device}/onnxruntime/digits_32px/MobileNetV3Small/fp16.onnx"
    plan = job_counts(snakemake(tmp_path, "-n", target).stdout)
    assert plan == {"build_engine_onnxruntime": 1, "export_onnx": 1, "prepare_dataset": 1, "train_model": 1}, plan
    snakemake(tmp_path, target)
    assert (tmp_path / target).is_file()
    assert not (tmp_path / target.replace("fp16.onnx", "fp32.onnx")).exists()
    assert not list((tmp_path / "results").rglob("*_latency.parquet"))


def test_command_line_values_and_home_folder_plan_as_in_a_config_file(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = snakemake(tmp_path, "-n", "--config", "verify_checksums=false", "train={epochs: 2, threads: 1}",
                       "results_dir=~/edgeptq-out", env={"HOME": str(home)})
    text = result.stdout + result.stderr
    assert f"{home}/edgeptq-out/models/digits_32px/MobileNetV3Small/model.keras" in text
    assert not (tmp_path / "~").exists(), "a folder literally named ~ was created"


def test_a_latency_cell_rerun_with_other_cores_is_not_mixed_silently(finished_run):
    # Last in this module: it leaves the run's summary failing on purpose.
    workdir, _ = finished_run
    device = detect_device_tag()
    target = f"results/{device}/onnxruntime/digits_32px/MobileNetV3Small/fp16_latency.parquet"
    snakemake(workdir, "--forcerun", "benchmark_latency", "--", target, cores=1)
    rerun = pd.read_parquet(workdir / target)
    assert '"runtime":{"benchmark_latency":{"threads":1}}' in rerun["settings"].iloc[0]
    failed = snakemake(workdir, check=False)
    assert failed.returncode != 0
    log = (workdir / "results" / "logs" / "summarize" / "summary.log").read_text()
    assert "runtime.benchmark_latency.threads" in log and "1 on" in log and "2 on" in log
