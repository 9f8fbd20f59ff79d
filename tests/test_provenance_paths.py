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
