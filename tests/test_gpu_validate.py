"""The one-shot GPU validation script: on a machine without TensorRT or a GPU, every stage is skipped
with its reason, through the real command line. Device-side (runs under Python 3.8/3.10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tensorrt_stub  # noqa: E402

from workflow_scripts.fleet import gpu_validate
from workflow_scripts.backends import tensorrt as trt_backend

pytestmark = pytest.mark.device
REPO = Path(__file__).resolve().parent.parent
TRT_OK, TRT_REASON = trt_backend.is_available()


def run_validate(extra_path=None):
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), str(REPO)])
    done = subprocess.run([sys.executable, "-m", "workflow_scripts.fleet.gpu_validate", "--iterations", "5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, records


@pytest.mark.skipif(TRT_OK, reason="TensorRT can build here; this checks the CPU-machine report")
def test_every_stage_is_skipped_with_a_reason_on_a_cpu_machine():
    code, records = run_validate()
    assert code == 0
    assert [r["stage"] for r in records] == list(gpu_validate.STAGES)
    for r in records:
        assert r["status"] == "skipped" and r["reason"], r
    assert "tensorrt" in records[0]["reason"].lower()


def test_a_tensorrt_that_cannot_create_a_builder_skips_every_stage(tmp_path):
    stub = tensorrt_stub.write_stub_package(tmp_path, "10.3.0", fail_builder=True)
    code, records = run_validate(stub)
    assert code == 0 and len(records) == len(gpu_validate.STAGES)
    assert all(r["status"] == "skipped" for r in records)
    assert "cannot create a builder" in records[0]["reason"]


@pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT and an NVIDIA GPU: {TRT_REASON}")
def test_every_stage_passes_on_a_gpu():
    code, records = run_validate()
    failed = [r for r in records if r["status"] == "failed"]
    assert code == 0 and not failed, failed
