"""LiteRT backend: real Keras -> .tflite conversions of a trained MobileNetV3Small, run in the LiteRT interpreter."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install -e .[litert])")

from workflow_scripts.backends import litert
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.stages.engine import calibration_source
from workflow_scripts.core.errors import ConfigError

pytestmark = pytest.mark.slow  # builds and converts real models (tens of seconds)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, keras_model_path, digits_dir) -> dict[str, tuple[Path, dict]]:
    """FP32, FP16 and INT8 .tflite files of the session's trained model, with their build facts."""
    folder = tmp_path_factory.mktemp("litert")
    batches = calibration_source(digits_dir, 64, 16, 0)
    built = {}
    for precision in litert.PRECISIONS:
        path = folder / f"{precision}.tflite"
        facts = litert.build_engine(keras_model_path, path, precision, batches if precision == "int8" else None, {})
        built[precision] = (path, facts)
    return built


def predictions(engine_path: Path, digits_dir: Path, threads: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, predicted classes and labels of the whole test split."""
    runner = litert.load_runner(engine_path, threads)
    try:
        scores, labels = [], []
        for images, batch_labels in iter_batches(digits_dir, "test", 32):
            scores.append(runner.run(images))
            labels.append(batch_labels)
    finally:
        runner.close()
    scores = np.concatenate(scores)
    return scores, scores.argmax(1), np.concatenate(labels)


def test_available_and_version():
    available, reason = litert.is_available()
    assert available, reason
    assert litert.version() == importlib.metadata.version("ai-edge-litert")


def test_every_precision_writes_its_engine_with_float_io(engines):
    sizes = {}
    for precision, (path, facts) in engines.items():
        assert path.is_file() and path.stat().st_size == facts["engine_bytes"]
        assert facts["input_dtype"] == "float32" and facts["output_dtype"] == "float32", precision
        sizes[precision] = facts["engine_bytes"]
    assert not list(path.parent.glob(".tmp-*")), "a temporary file was left behind"
    # float16 weights halve the file; int8 weights quarter it (small graphs carry some overhead).
    assert sizes["fp16"] < 0.6 * sizes["fp32"]
    assert sizes["int8"] < 0.4 * sizes["fp32"]


def test_int8_engine_computes_every_convolution_in_int8(engines):
    path, facts = engines["int8"]
    dtypes = litert.compute_ops_dtypes(path)
    assert dtypes.get("CONV_2D") and dtypes.get("FULLY_CONNECTED")
    for op, per_dtype in dtypes.items():
        assert set(per_dtype) == {"int8"}, f"{op} takes {per_dtype}"
    ops = litert.op_histogram(path)
    # Float I/O: one QUANTIZE at the input, one DEQUANTIZE at the output, nothing float between.
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1
    assert facts["int8_tensors"] > 0 and facts["calibration_images"] == 64
    assert facts["input_quantization"].startswith("int8 scale")
    # The FP32 engine is float throughout.
    fp32_dtypes = litert.compute_ops_dtypes(engines["fp32"][0])
    assert all(set(per_dtype) == {"float32"} for per_dtype in fp32_dtypes.values())


def test_fp16_engine_stores_float16_weights(engines):
    _, facts = engines["fp16"]
    assert facts["float16_tensors"] > 0 and facts["int8_tensors"] == 0
    assert facts["weights_dtype"] == "float16"


def test_converter_freezing_once_gives_the_bytes_of_freezing_first(engines, keras_model_path):
    """The backend lets the converter freeze the variables (once); freezing the function first, as it did
    before, must give the same flatbuffer, or the engines changed with the speed-up."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from workflow_scripts.models.zoo import load_keras_model

    model = load_keras_model(keras_model_path)

    @tf.function(input_signature=[tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="images")])
    def serve(images):
        return model(images, training=False)

    frozen_first = convert_variables_to_constants_v2(serve.get_concrete_function())
    content = tf.lite.TFLiteConverter.from_concrete_functions([frozen_first]).convert()
    assert content == engines["fp32"][0].read_bytes()


def test_fp32_engine_matches_onnx_runtime(engines, onnx_path, digits_dir):
    from workflow_scripts.backends import onnxruntime as onnxruntime_backend

    images, _ = next(iter_batches(digits_dir, "test", 16))
    ort = onnxruntime_backend.load_runner(onnx_path, 1)
    runner = litert.load_runner(engines["fp32"][0], 1)
    try:
        np.testing.assert_allclose(runner.run(images), ort.run(images), atol=1e-4)
    finally:
        runner.close()
        ort.close()


def test_reduced_precisions_agree_with_fp32_on_the_test_split(engines, digits_dir):
    fp32_scores, fp32_top1, labels = predictions(engines["fp32"][0], digits_dir)
    _, fp16_top1, _ = predictions(engines["fp16"][0], digits_dir)
    _, int8_top1, _ = predictions(engines["int8"][0], digits_dir)
    assert len(labels) > 200
    assert np.mean(fp16_top1 == fp32_top1) >= 0.99
    assert np.mean(int8_top1 == fp32_top1) >= 0.90
    # The comparison means something only if the FP32 model learned the task.
    assert np.mean(fp32_top1 == labels) > 0.5


def test_runner_resizes_to_each_batch_size(engines, digits_dir):
    images, _ = next(iter_batches(digits_dir, "test", 8))
    runner = litert.load_runner(engines["int8"][0], 1)
    try:
        whole = runner.run(images)
        first, rest = runner.run(images[:3]), runner.run(images[3:])
        again = runner.run(images)
    finally:
        runner.close()
    assert whole.shape == (8, 10)
    np.testing.assert_allclose(np.concatenate([first, rest]), whole, atol=1e-6)
    np.testing.assert_array_equal(again, whole)


def _thread_count() -> int:
    return len(list(Path("/proc/self/task").iterdir()))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to count threads")
def test_thread_count_is_set_and_recorded(engines, digits_dir):
    images, _ = next(iter_batches(digits_dir, "test", 4))
    single = litert.load_runner(engines["fp32"][0], 1)
    single.run(images)
    before = _thread_count()
    multi = litert.load_runner(engines["fp32"][0], 3)
    multi.run(images)
    try:
        assert single.facts["threads"] == 1 and multi.facts["threads"] == 3
        # XNNPACK's thread pool for 3 threads has 2 workers beside the caller.
        assert _thread_count() - before >= 2
    finally:
        single.close()
        multi.close()
    assert litert.resolve_threads(0) >= 1


def test_refusals_name_the_problem(engines, keras_model_path, onnx_path, tmp_path):
    with pytest.raises(ConfigError, match="precisions"):
        litert.build_engine(keras_model_path, tmp_path / "x.tflite", "int4")
    with pytest.raises(ConfigError, match=r"\.keras"):
        litert.build_engine(onnx_path, tmp_path / "x.tflite", "fp32")
    with pytest.raises(ConfigError, match="calibration.method"):
        litert.build_engine(keras_model_path, tmp_path / "x.tflite", "int8", lambda: iter([]), {"method": "entropy"})
    with pytest.raises(ConfigError, match="calibration"):
        litert.build_engine(keras_model_path, tmp_path / "x.tflite", "int8", None)
    assert not (tmp_path / "x.tflite").exists()
