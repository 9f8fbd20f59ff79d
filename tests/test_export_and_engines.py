"""Real tf2onnx export and real ONNX Runtime engine builds on a small MobileNetV3Small."""

import json

import numpy as np
import onnx
import pytest

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.stages.engine import calibration_source
from workflow_scripts.stages.export import ParityError, check_parity
from workflow_scripts.models.zoo import load_keras_model


@pytest.fixture(scope="module")
def sample(digits_dir):
    images, _ = next(iter_batches(digits_dir, "test", 16))
    return images


def test_onnx_parity_with_keras(keras_model_path, onnx_path, sample):
    model = load_keras_model(keras_model_path)
    diff = check_parity(model, onnx_path, sample, tolerance=1e-4)
    assert diff < 1e-4
    graph_input = onnx.load(str(onnx_path)).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value"), "batch dimension is dynamic"
    assert [d.dim_value for d in dims[1:]] == [32, 32, 3]


def test_parity_failure_is_reported(tmp_path, keras_model_path, onnx_path, sample):
    """An ONNX file whose classifier weights differ from the Keras model's fails the check."""
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = next(t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[-1] == 10)
    altered = numpy_helper.to_array(weights) * 50.0
    weights.CopyFrom(numpy_helper.from_array(altered, weights.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ParityError, match="parity_tolerance"):
        check_parity(load_keras_model(keras_model_path), broken, sample, tolerance=1e-4)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, onnx_path, digits_dir):
    out = tmp_path_factory.mktemp("engines")
    batches = calibration_source(digits_dir, 64, 16, seed=0)
    facts = {}
    for precision in ("fp32", "fp16", "int8"):
        facts[precision] = ort_backend.build_engine(
            onnx_path, out / f"{precision}.onnx", precision, batches,
            {"method": "entropy", "per_channel": True}, out)
    return out, facts


def test_int8_engine_holds_qdq_nodes_and_calibration_table(engines):
    out, facts = engines
    ops = ort_backend.count_ops(out / "int8.onnx")
    assert ops.get("QuantizeLinear", 0) > 10 and ops.get("DequantizeLinear", 0) > 10
    assert "QuantizeLinear" not in ort_backend.count_ops(out / "fp32.onnx")
    ranges = json.loads(facts["int8"]["calibration_json_text"])
    assert len(ranges) > 10
    lines = facts["int8"]["calibration_cache_text"].strip().splitlines()
    assert len(lines) == len(ranges) and all(len(line.split()) == 2 for line in lines)
    assert facts["int8"]["calibration_images"] == 64


def test_fp16_engine_stores_half_weights_with_float_io(engines):
    out, _ = engines
    model = onnx.load(str(out / "fp16.onnx"))
    dtypes = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sizes = {p: (out / f"{p}.onnx").stat().st_size for p in ("fp32", "fp16", "int8")}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < sizes["fp16"]


def test_engines_agree_with_fp32(engines, sample):
    out, _ = engines
    outputs = {p: ort_backend.load_runner(out / f"{p}.onnx", 1).run(sample) for p in ("fp32", "fp16", "int8")}
    assert outputs["fp32"].shape == (16, 10)
    assert np.allclose(outputs["fp32"].sum(axis=1), 1, atol=1e-4)
    assert np.abs(outputs["fp16"] - outputs["fp32"]).max() < 1e-2
    # INT8 is lossy but must stay a probability distribution near FP32's.
    assert np.abs(outputs["int8"] - outputs["fp32"]).max() < 0.5
