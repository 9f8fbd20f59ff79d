"""Provenance of the on-device runner equals a Snakemake job's (issue 22's two drift bugs)."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from workflow_scripts.fleet import device_run
from workflow_scripts.core import provenance
from workflow_scripts.core.config import rule_settings, validate_config


def test_backend_version_of_litert_is_its_runtime_package():
    """LiteRT's runtime is the ``ai-edge-litert`` distribution; no package is named ``litert``."""
    try:
        expected = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ai-edge-litert is not installed (pip install -e '.[cpu]')")
    assert provenance.backend_version("litert") == expected != ""


def test_backend_version_of_an_unregistered_name_falls_back_to_its_package():
    assert provenance.backend_version("pandas") == importlib.metadata.version("pandas")
    assert provenance.backend_version("no-such-runtime-xyz") == ""


@pytest.mark.parametrize("rule,precision", [("benchmark_latency", "fp32"), ("evaluate_engine", "int8"),
                                            ("build_engine", "int8")])
def test_board_rows_record_the_models_own_weights_as_snakemake_rows_do(rule, precision):
    config = validate_config({"models": ["EfficientNetLite0", "MobileNetV3Small"], "datasets": ["digits"],
                              "weights": {"EfficientNetLite0": "imagenet", "default": "none"}})
    wildcards = {"dataset": "digits", "size": "32", "model": "EfficientNetLite0", "precision": precision}
    columns = device_run.provenance_for(config, rule, "board", "onnxruntime", wildcards, threads=2)
    recorded = json.loads(columns["settings"])
    recorded.pop("runtime", None)  # the threads the job got, added by every job itself (shims.row_settings)
    logical = "build_int8_engine" if rule == "build_engine" and precision == "int8" else rule
    # What rules/common.smk's settings_param gives the same job.
    snakemake_job = dict(rule_settings(config, logical, precision=precision, backend="onnxruntime",
                                                       dataset="digits", model="EfficientNetLite0"))
    assert recorded == json.loads(json.dumps(snakemake_job, default=str))
    assert "imagenet" in json.dumps(recorded) and "'default'" not in columns["settings"]


def test_board_rows_come_from_the_function_snakemake_jobs_call_without_a_fake_snakemake_job():
    """One code path: device_run calls core.provenance.job_provenance, as shims.provenance_of does; it never
    imports the Snakemake shims (nor builds a stand-in Snakemake object to reach them)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from workflow_scripts.fleet import device_run\n"
        "config = device_run.load_config([])\n"
        "columns = device_run.provenance_for(config, 'benchmark_latency', 'board', 'onnxruntime',\n"
        "    {'dataset': 'digits', 'size': '32', 'model': 'MobileNetV3Small', 'precision': 'fp32'}, threads=2)\n"
        "assert columns['device'] == 'board' and columns['settings'], columns\n"
        "assert 'workflow_scripts.shims' not in sys.modules, 'device_run imported the Snakemake shims'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_snakemake_job_and_the_board_runner_record_the_same_columns():
    from types import SimpleNamespace

    from workflow_scripts.core.config import settings_param
    from workflow_scripts.shims import provenance_of

    config = validate_config({"models": ["MobileNetV3Small"], "datasets": ["digits"]})
    wildcards = {"dataset": "digits", "size": "32", "model": "MobileNetV3Small", "precision": "int8"}
    job = SimpleNamespace(config=config, rule="build_int8_engine_onnxruntime", threads=2, wildcards=wildcards,
                          params=SimpleNamespace(provenance={"device": "board", "backend": "onnxruntime"},
                                                 settings=settings_param(config, "build_int8_engine", "int8",
                                                                         "onnxruntime", "digits", "MobileNetV3Small")))
    snakemake_row = provenance_of(job, dataset="digits")
    board_row = device_run.provenance_for(config, "build_engine", "board", "onnxruntime", wildcards, threads=2,
                                          dataset="digits")
    for row in (snakemake_row, board_row):
        row.pop("timestamp")
    assert snakemake_row == board_row
    assert "onnxruntime_version" in board_row and "tensorrt_version" in board_row


def test_the_board_runner_files_every_output_where_the_rules_do():
    from workflow_scripts.core import paths

    files = device_run.job_paths("res", "board", "openvino", "digits", 32, "MobileNetV3Small", "int8")
    fields = dict(results="res", device="board", backend="openvino", dataset="digits", size=32,
                  model="MobileNetV3Small", precision="int8")
    assert str(files["engine"]) == paths.ENGINE.format(ext="xml", **fields)
    for kind in paths.ENGINE_TABLES:
        assert str(files[kind]) == paths.engine_table(kind).format(**fields)
    assert str(files["calibration_json"]) == paths.engine_side_file("calibration.json").format(**fields)
    assert str(files["calibration_cache"]) == paths.engine_side_file("calibration.cache").format(**fields)
    assert "calibration_json" not in device_run.job_paths("res", "b", "openvino", "digits", 32, "M", "fp32")
