"""The Snakemake workflow catalog's conventions: .snakemake-workflow-catalog.yml in the catalog's format, and
the small configs under .test/ plan as their comments say (the catalog runs `--directory .test`)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from tests.cli import DEVICE, REPO, SNAKEFILE, job_counts
from workflow_scripts.core import paths


def test_catalog_file_has_the_documented_usage_keys():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    flags = usage["mandatory-flags"]
    assert set(flags) == {"desc", "flags"} and isinstance(flags["flags"], (str, list)) and flags["desc"].strip()
    stack = usage["software-stack-deployment"]
    assert set(stack) <= {"conda", "apptainer", "apptainer+conda", "singularity", "singularity+conda"}
    assert all(isinstance(v, bool) for v in stack.values()) and any(stack.values())
    assert usage["report"] is True and (REPO / "report" / "workflow.rst").is_file()
    if stack.get("conda"):  # every environment installs the project (tests/test_envs.py checks the rest)
        assert all(env.with_suffix("").with_suffix(".post-deploy.sh").is_file()
                   for env in (REPO / "envs").glob("*.yaml"))
    # The catalog's standardized usage also reads config/README.md.
    assert (REPO / "config" / "README.md").is_file()


def test_the_tiny_test_config_is_the_end_to_end_tests_run():
    from tests.cli import TINY

    assert yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text()) == TINY


def test_test_configs_set_what_the_schema_requires():
    from workflow_scripts.core.config import validate_config

    base = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    validate_config(dict(base))
    study = yaml.safe_load((REPO / ".test" / "config-study" / "config.yaml").read_text())
    validate_config({**base, **study})


def dry_run(workdir, *args) -> dict[str, int]:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-n", "--directory",
                             str(workdir), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return job_counts(result.stdout + result.stderr)


@pytest.fixture()
def dot_test(tmp_path):
    """A copy of .test/ (a dry run still writes .snakemake/ into its working directory)."""
    return shutil.copytree(REPO / ".test", tmp_path / ".test")


@pytest.mark.slow  # three dry runs of the real CLI, 7-12 s each
def test_the_test_configs_plan_as_their_comments_say(dot_test):
    tiny = dry_run(dot_test)  # the Snakefile's configfile is .test/config/config.yaml
    assert tiny["train_model"] == 1 and tiny["build_engine_onnxruntime"] == 2
    assert tiny["build_int8_engine_onnxruntime"] == 1 and tiny["benchmark_latency"] == 3 and tiny["decide"] == 1
    study = dry_run(dot_test, "--configfile", str(dot_test / "config-study" / "config.yaml"))
    assert study["train_model"] == 6 * 2 and study["benchmark_latency"] == 3 * 6 * 2
    assert study["calibration_study_summary"] == 1 and study["build_calibration_variant"] > 0
    engine = paths.ENGINE.replace("{ext}", "onnx").format(
        results="results", device=DEVICE, backend="onnxruntime", dataset="digits", size=32,
        model="MobileNetV3Small", precision="int8")
    one = dry_run(dot_test, engine)
    assert one == {"prepare_dataset": 1, "train_model": 1, "export_onnx": 1, "build_int8_engine_onnxruntime": 1}
