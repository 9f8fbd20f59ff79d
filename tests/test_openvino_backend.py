"""OpenVINO backend: real ONNX -> IR conversions (FP32, FP16) and NNCF INT8 of a trained MobileNetV3Small."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install -e .[openvino])")
pytest.importorskip("nncf", reason="nncf is not installed (pip install -e .[openvino])")

from workflow_scripts.backends import openvino as ovb
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.stages.engine import calibration_source
from workflow_scripts.core.errors import ConfigError

pytestmark = pytest.mark.slow  # builds and converts real models (tens of seconds)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def engines(tmp_path_factory, onnx_path, digits_dir) -> dict[str, tuple[Path, dict]]:
    """FP32, FP16 and INT8 IR pairs of the session's ONNX export, with their build facts."""
    folder = tmp_path_factory.mktemp("openvino")
    batches = calibration_source(digits_dir, 64, 16, 0)
    built = {}
    for precision in ovb.PRECISIONS:
        path = folder / f"{precision}.xml"
        facts = ovb.build_engine(onnx_path, path, precision, batches if precision == "int8" else None, {})
        built[precision] = (path, facts)
    return built


def top1(engine_path: Path, digits_dir: Path, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and labels of the whole test split."""
    runner = ovb.load_runner(engine_path, threads)
    try:
        predicted, labels = [], []
        for images, batch_labels in iter_batches(digits_dir, "test", 32):
            predicted.append(runner.run(images).argmax(1))
            labels.append(batch_labels)
    finally:
        runner.close()
    return np.concatenate(predicted), np.concatenate(labels)


def test_available_and_version():
    available, reason = ovb.is_available()
    assert available, reason
    assert ovb.version() == importlib.metadata.version("openvino")


def test_each_engine_is_an_xml_with_its_bin_and_no_leftovers(engines):
    for precision, (path, facts) in engines.items():
        weights = ovb.companion_paths(path)[0]
        assert path.is_file() and weights.is_file() and weights.name == f"{precision}.bin"
        assert facts["engine_bytes"] == path.stat().st_size + weights.stat().st_size
    folder = engines["fp32"][0].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        name for precision in ovb.PRECISIONS for name in (f"{precision}.xml", f"{precision}.bin"))


def test_fp16_engine_stores_float16_weights(engines):
    fp32_types = ovb.constant_types(engines["fp32"][0])
    fp16_types = ovb.constant_types(engines["fp16"][0])
    assert fp16_types.get("f16", 0) > 0 and fp32_types.get("f16", 0) == 0
    assert engines["fp16"][1]["weights_bytes"] < 0.6 * engines["fp32"][1]["weights_bytes"]


def test_int8_engine_holds_int8_weights_and_runs_int8_layers(engines, digits_dir):
    path, facts = engines["int8"]
    assert facts["fake_quantize_ops"] > 0 and facts["int8_constants"] > 0
    assert ovb.count_ops(path).get("FakeQuantize", 0) == facts["fake_quantize_ops"]
    assert ovb.constant_types(path).get("i8", 0) > 0
    assert facts["calibration_images"] == 64 and facts["subset_size"] == 64
    assert facts["preset"] == "performance" and facts["per_channel"] is True
    images, _ = next(iter_batches(digits_dir, "test", 2))
    runner = ovb.load_runner(path, 1)
    try:
        runner.run(images)
        executed = runner.runtime_precisions()
    finally:
        runner.close()
    # The CPU plugin reports each convolution's runtime precision (i8/u8/f32, in this case in
    # OpenVINO 2026): most must execute in int8 (MobileNetV3Small here: 42 of 53; NNCF leaves the
    # squeeze-excite layers in float).
    int8_layers = sum(n for key, n in executed.items() if key.lower() in ("i8", "u8"))
    assert int8_layers > 0.5 * sum(executed.values()), executed


def test_fp32_engine_computes_in_f32_and_matches_onnx_runtime(engines, onnx_path, digits_dir):
    from workflow_scripts.backends import onnxruntime as onnxruntime_backend

    images, _ = next(iter_batches(digits_dir, "test", 16))
    runner = ovb.load_runner(engines["fp32"][0], 2)
    ort = onnxruntime_backend.load_runner(onnx_path, 1)
    try:
        np.testing.assert_allclose(runner.run(images), ort.run(images), atol=1e-4)
        # Explicit f32, whatever the plugin's default (bf16 on AVX512-BF16/AMX CPUs).
        assert runner.facts["compiled_inference_precision_hint"] == "f32"
        assert runner.facts["compiled_inference_num_threads"] == "2"
        assert runner.facts["compiled_performance_hint"] == "LATENCY"
    finally:
        runner.close()
        ort.close()


def test_fp16_hint_follows_the_cpu(engines):
    import openvino as ov

    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    runner = ovb.load_runner(engines["fp16"][0], 1)
    try:
        assert runner.facts["engine_precision"] == "fp16"
        assert runner.facts["inference_precision_hint"] == ("f16" if "FP16" in capabilities else "f32")
    finally:
        runner.close()
    assert ovb.inference_precision("fp16", ["FP32"]) == "f32"
    assert ovb.inference_precision("fp32", ["FP32", "BF16", "FP16"]) == "f32"


def test_reduced_precisions_agree_with_fp32_on_the_test_split(engines, digits_dir):
    fp32, labels = top1(engines["fp32"][0], digits_dir)
    fp16, _ = top1(engines["fp16"][0], digits_dir)
    int8, _ = top1(engines["int8"][0], digits_dir)
    assert len(labels) > 200
    assert np.mean(fp16 == fp32) >= 0.98
    assert np.mean(int8 == fp32) >= 0.90
    assert np.mean(fp32 == labels) > 0.5


def test_runner_recompiles_for_each_batch_size(engines, digits_dir):
    images, _ = next(iter_batches(digits_dir, "test", 8))
    runner = ovb.load_runner(engines["fp32"][0], 1)
    try:
        whole = runner.run(images)
        parts = np.concatenate([runner.run(images[:3]), runner.run(images[3:])])
        assert runner.batch_size == 5
    finally:
        runner.close()
    assert whole.shape == (8, 10)
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_missing_weights_file_is_named(engines, tmp_path):
    lone = tmp_path / "lone.xml"
    lone.write_bytes(engines["fp32"][0].read_bytes())
    with pytest.raises(FileNotFoundError, match="lone.bin"):
        ovb.load_runner(lone, 1)


def test_publish_moves_bin_before_xml(engines, tmp_path):
    tmp_xml = tmp_path / ".tmp-1-int8.xml"
    tmp_xml.write_bytes(engines["fp32"][0].read_bytes())
    tmp_xml.with_suffix(".bin").write_bytes(ovb.companion_paths(engines["fp32"][0])[0].read_bytes())
    ovb.publish_engine(tmp_xml, tmp_path / "int8.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.bin", "int8.xml"]
    # A pair whose .bin is missing is refused before the .xml takes its final name.
    (tmp_path / "other.xml").write_text("<net/>")
    with pytest.raises(FileNotFoundError):
        ovb.publish_engine(tmp_path / "other.xml", tmp_path / "final.xml")
    assert not (tmp_path / "final.xml").exists()


def test_refusals_name_the_problem(onnx_path, tmp_path):
    with pytest.raises(ConfigError, match="precisions"):
        ovb.build_engine(onnx_path, tmp_path / "x.xml", "int4")
    with pytest.raises(ConfigError, match=r"\.xml"):
        ovb.build_engine(onnx_path, tmp_path / "x.onnx", "fp32")
    with pytest.raises(ConfigError, match="calibration.method"):
        ovb.build_engine(onnx_path, tmp_path / "x.xml", "int8", lambda: iter([np.zeros((1, 32, 32, 3), np.float32)]),
                         {"method": "entropy"})
    with pytest.raises(ConfigError, match="preset"):
        ovb.build_engine(onnx_path, tmp_path / "x.xml", "int8", lambda: iter([np.zeros((1, 32, 32, 3), np.float32)]),
                         {"preset": "accurate"})
    assert not list(tmp_path.iterdir())


def test_telemetry_is_declined_and_nothing_written_to_home(tmp_path):
    """In a fresh process (outside pytest, which NNCF itself special-cases) NNCF's telemetry declines."""
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import os\n"
        "from workflow_scripts.backends.openvino import _telemetry_off\n"
        "with _telemetry_off():\n"
        "    import nncf\n"
        "    from nncf.telemetry import wrapper\n"
        "import openvino_telemetry\n"
        "print(isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub))\n"
        "print(openvino_telemetry.Telemetry().consent)\n"
        "print(os.environ.get('CI'), os.environ.get('NNCF_CI'))\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "NNCF_CI", "NNCF_DEV")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            check=True)
    stub, consent, restored = result.stdout.strip().splitlines()[-3:]
    assert stub == "True"
    assert consent == "False"
    assert restored == "None None"
    assert not (home / "intel").exists(), list((home / "intel").rglob("*"))
