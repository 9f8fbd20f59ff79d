"""A full disk fails cleanly: the folder and the space needed are named, nothing partial is left.

Real full disks: a small tmpfs mounted for the test (needs root and mount; skipped with the reason
where the sandbox refuses it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.cli import TINY, snakemake
from workflow_scripts.core.errors import DiskFull


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_preparing_data_on_a_short_disk_names_the_space_needed(small_disk):
    from workflow_scripts.data.datasets import prepare_dataset

    out = small_disk / "data" / "digits_224px"
    with pytest.raises(DiskFull) as info:
        prepare_dataset("digits", 224, out, small_disk / "resources", True, 0.15, 0.15, seed=0)
    message = str(info.value)
    assert str(out) in message and "MB are needed" in message and "MB are free" in message
    assert not leftovers(small_disk), leftovers(small_disk)


def test_an_atomic_write_that_fills_the_disk_leaves_no_scratch(small_disk):
    from workflow_scripts.core.artifacts import write_parquet, write_text

    (small_disk / "filler").write_bytes(b"\0" * (2 * 2**20 - 64 * 1024))
    with pytest.raises(DiskFull, match=str(small_disk)):
        write_text("x" * (1 << 20), small_disk / "big.txt")
    with pytest.raises(DiskFull):
        write_parquet(pd.DataFrame({"x": range(200_000)}), small_disk / "table.parquet")
    assert sorted(p.name for p in leftovers(small_disk)) == ["filler"]


@pytest.mark.slow
def test_the_cli_job_fails_with_the_message_and_no_partial_output(tmp_path, small_disk):
    results = small_disk / "results"
    config = {**TINY, "input_size": 224, "results_dir": str(results)}
    result = snakemake(tmp_path, f"{results}/data/digits_224px/meta.json", config=config, check=False)
    assert result.returncode != 0
    log = (results / "logs" / "prepare_dataset" / "digits_224px.log").read_text()
    assert "no space left" in log and "MB are needed" in log and "Traceback" not in log
    assert not list((results / "data").rglob("*.npy")) if (results / "data").exists() else True


def test_an_openvino_engine_write_that_fills_the_disk_is_named_not_an_iostream_error(small_disk):
    """OpenVINO reports a failed write as 'basic_ios::clear: iostream error'; the build says DiskFull,
    naming the engine, its folder and the rebuild command, and leaves no IR folder behind."""
    from tests.test_engine_integrity import small_onnx
    from workflow_scripts.backends import openvino as openvino_backend

    onnx_path = small_onnx(small_disk.parent / "model.onnx", hidden=1000)  # 12 MB of weights, 2 MB of disk
    engine = small_disk / "engines" / ".tmp-x1y2z3-fp32.xml"  # the scratch name a timed build passes
    with pytest.raises(DiskFull) as info:
        openvino_backend.build_engine(onnx_path, engine, "fp32")
    message = str(info.value)
    assert "no space left" in message and str(engine.parent) in message and "fp32.xml" in message
    assert f"snakemake --cores all -f {engine.parent / 'fp32.xml'}" in message
    assert "iostream" not in message
    assert not leftovers(small_disk), leftovers(small_disk)
