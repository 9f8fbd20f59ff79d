"""The on-device entry point (workflow_scripts.fleet.device_run) end to end on this CPU, with the ONNX Runtime
backend standing in for TensorRT: the same stage functions the rules call, the same file layout.
Device-side: runs under Python 3.8/3.10 without TensorFlow or Snakemake."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("onnxruntime")
pd = pytest.importorskip("pandas")

from workflow_scripts.fleet import device_run

pytestmark = pytest.mark.device


def make_tiny_data(folder: Path, size: int = 4, classes: int = 5):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in (("train", 40), ("val", 10), ("test", 20)):
        np.save(folder / f"{split}_images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        np.save(folder / f"{split}_labels.npy", rng.integers(0, classes, n).astype(np.int64))
    (folder / "meta.json").write_text(json.dumps({"dataset": "digits", "num_classes": classes,
                                                  "input_size": size, "class_names": [str(i) for i in range(classes)]}))


def test_device_run_writes_the_rule_layout(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_tensorrt_backend import make_tiny_onnx

    results = tmp_path / "results"
    make_tiny_data(results / "data" / "digits_4px")
    onnx_dir = results / "workstation" / "onnx" / "digits_4px" / "MobileNetV3Small"
    onnx_dir.mkdir(parents=True)
    make_tiny_onnx(onnx_dir / "model.onnx")
    cfg = tmp_path / "board.yaml"
    cfg.write_text(yaml.safe_dump({
        "results_dir": str(results), "device": "test-board", "input_size": 4, "datasets": ["digits"],
        "models": ["MobileNetV3Small"], "precisions": ["fp32"],
        "compression": {"warmup": 0, "repeats": 1},
        "benchmark": {"warmup": 1, "iterations": 3, "min_duration_s": 0.0, "threads": 1},
        "evaluate": {"batch_size": 8, "max_images": 0},
    }))
    argv = ["--configfile", str(cfg), "--backend", "onnxruntime"]
    assert device_run.main(argv + ["--dry-run"]) == 0
    assert device_run.main(argv) == 0
    base = results / "test-board" / "onnxruntime" / "digits_4px" / "MobileNetV3Small"
    for name in ("fp32.onnx", "fp32_build.parquet", "fp32_build_resources.parquet", "fp32_latency.parquet",
                 "fp32_latency_samples.parquet", "fp32_latency_resources.parquet", "fp32_accuracy.parquet",
                 "fp32_predictions.parquet"):
        assert (base / name).is_file(), name
    accuracy = pd.read_parquet(base / "fp32_accuracy.parquet")
    assert accuracy["images"].iloc[0] == 20 and accuracy["device"].iloc[0] == "test-board"
    latency = pd.read_parquet(base / "fp32_latency.parquet")
    assert latency["iterations"].iloc[0] >= 3 and latency["engine_mb"].iloc[0] > 0
    # A second run finds every output and runs nothing.
    mtime = (base / "fp32_accuracy.parquet").stat().st_mtime_ns
    assert device_run.main(argv) == 0
    assert (base / "fp32_accuracy.parquet").stat().st_mtime_ns == mtime


def test_missing_export_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="onnx-device"):
        device_run.find_onnx(str(tmp_path), "board", "digits", 4, "MobileNetV3Small", None)
