"""fast_quantize_static: ONNX Runtime's quantize_static output, byte for byte, with its Python loops vectorized."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import quant_utils

from workflow_scripts.backends.onnxruntime import fast_quantize
from workflow_scripts.backends import onnxruntime as ort_backend


def _weights(dtype, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((6, 3, 2, 2)).astype(dtype) * np.asarray(0.2, dtype)
    data[1] = 0                                  # an all-zero channel: ORT's degenerate scale 1.0, zero point 0
    data[2] = np.abs(data[2])                    # only positive values
    data[3] = -np.abs(data[3]) * np.asarray(40, dtype)  # only negative, wide
    data[4] *= np.asarray(1e-38 if dtype == np.float32 else 1e-7, dtype)  # a scale below the dtype's smallest normal
    return data


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("quant_type", [TensorProto.INT8, TensorProto.UINT8])
@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_params_equal_orts_channel_loop(dtype, quant_type, reduce_range, axis):
    data = _weights(dtype)
    expected_zp, expected_scale = [], []
    for i in range(data.shape[axis]):
        zp, scale = quant_utils.compute_data_quant_params(data.take(i, axis).ravel(), quant_type, True,
                                                          reduce_range=reduce_range)
        expected_zp.append(zp)
        expected_scale.append(scale)
    zero_points, scales = fast_quantize.per_channel_params(data, axis, quant_type, reduce_range)
    expected_zp, expected_scale = np.asarray(expected_zp), np.asarray(expected_scale)
    assert zero_points.dtype == expected_zp.dtype and scales.dtype == expected_scale.dtype
    assert zero_points.tobytes() == expected_zp.tobytes()
    assert scales.tobytes() == expected_scale.tobytes()


@pytest.mark.parametrize("quant_type", [TensorProto.INT8, TensorProto.UINT8])
@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_quantized_weights_equal_orts(quant_type, axis):
    data = _weights(np.float32, seed=1)
    zero_points, scales = fast_quantize.per_channel_params(data, axis, quant_type, False)
    weight = numpy_helper.from_array(data, "w")
    expected = quant_utils.quantize_onnx_initializer(weight, quant_type, zero_points, scales, axis)
    ours = fast_quantize._patched_quantize_onnx_initializer(quant_utils.quantize_onnx_initializer)(
        weight, quant_type, zero_points, scales, axis)
    assert ours.SerializeToString() == expected.SerializeToString()


def _model(path):
    """Conv (with an all-zero output channel) -> depthwise Conv -> Relu -> pool -> Gemm and MatMul heads."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w1[5] = 0
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.1, "wd"),
             numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "wg"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "bg"),
             numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "wm")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Conv", ["c1", "wd"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw"),
             helper.make_node("Relu", ["c2"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], name="gemm"),
             helper.make_node("MatMul", ["g", "wm"], ["y"], name="matmul")]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def _batches():
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((4, 3, 10, 10)).astype(np.float32) for _ in range(4)]
    return lambda: iter(images)


def _both(model, tmp_path, batches, options):
    outputs = {}
    for fast in (False, True):
        out = tmp_path / f"{fast}.onnx"
        ort_backend.build_engine(model, out, "int8", batches, {**options, "fast_rewrites": fast}, None)
        outputs[fast] = out.read_bytes()
    return outputs


@pytest.mark.parametrize("options", [
    {"method": "entropy"},
    {"method": "minmax", "per_channel": False},
    {"method": "entropy", "symmetric_activations": True},
    {"method": "minmax", "weight_type": "uint8", "activation_type": "uint8"},
    {"method": "minmax", "reduce_range": True},
    {"method": "percentile", "exclude_nodes": ["dw"]},
], ids=["default", "per-tensor", "symmetric", "u8u8", "reduce-range", "excluded-node"])
def test_quantize_static_output_is_byte_identical(tmp_path, options):
    outputs = _both(_model(tmp_path / "toy.onnx"), tmp_path, _batches(), options)
    assert outputs[True] == outputs[False]


def test_patches_are_restored_on_exit():
    from onnxruntime.quantization import qdq_quantizer
    from onnxruntime.quantization.onnx_model import ONNXModel

    before = (qdq_quantizer.QDQQuantizer._calc_initializer_quant_params, qdq_quantizer.quantize_onnx_initializer,
              ONNXModel.replace_input_of_all_nodes, qdq_quantizer.find_by_name)
    with pytest.raises(RuntimeError):
        with fast_quantize.fast_quantize_static():
            assert qdq_quantizer.quantize_onnx_initializer is not before[1]
            raise RuntimeError("a failed build")
    after = (qdq_quantizer.QDQQuantizer._calc_initializer_quant_params, qdq_quantizer.quantize_onnx_initializer,
             ONNXModel.replace_input_of_all_nodes, qdq_quantizer.find_by_name)
    assert after == before


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"method": "entropy"}, {"method": "minmax", "symmetric_activations": True}],
                         ids=["default", "symmetric"])
def test_byte_identical_on_the_trained_quickstart_model(tmp_path, onnx_path, digits_dir, options):
    from workflow_scripts.stages.engine import calibration_source

    outputs = _both(onnx_path, tmp_path, calibration_source(digits_dir, 64, 16, 0), options)
    assert outputs[True] == outputs[False]


def test_name_index_follows_appends_removals_and_renames():
    """find_by_name with the index returns what ORT's scan returns after every kind of change to the field."""
    graph = helper.make_graph([], "g", [], [], [numpy_helper.from_array(np.zeros(1, np.float32), f"t{i}")
                                                for i in range(5)])
    field = graph.initializer

    def check(*names):
        for name in names:
            expected = quant_utils.find_by_name(name, field)
            found = fast_quantize._find_by_name(name, field)
            assert (found is None and expected is None) or found is expected, name

    try:
        check("t0", "t4", "missing")
        field.append(numpy_helper.from_array(np.ones(1, np.float32), "t5"))        # appended
        field.append(numpy_helper.from_array(np.ones(2, np.float32), "t1"))        # a duplicate: the first wins
        check("t5", "t1", "missing")
        field.remove(field[1])                                                      # removed: positions shift
        check("t1", "t2", "t5", "t0")
        field.remove(field[0])
        field.append(numpy_helper.from_array(np.ones(1, np.float32), "t6"))        # same length, other last item
        check("t0", "t6", "t2")
        old = field[0].name
        field[0].name = "renamed"                               # renamed in place: the old name is gone
        check(old, "t2", "t3")
    finally:
        fast_quantize._INDEXES.clear()


def test_ort_renames_only_fresh_protos():
    """The index's precondition: quantize_static never renames an element already in a field (a lookup of
    the new name would miss). Every name assignment in ORT's quantization package is listed here with the
    fresh object it renames; a new one (an ORT upgrade) fails this test until it is checked."""
    import re
    from pathlib import Path

    import onnxruntime.quantization as package

    root = Path(package.__file__).parent
    # quantize_static's QDQ path: the quantizers, the model wrapper, utilities and the operator classes
    modules = [root / f"{name}.py" for name in ("quantize", "qdq_quantizer", "base_quantizer", "onnx_quantizer",
                                               "onnx_model", "quant_utils", "registry", "tensor_quant_overrides")]
    modules += sorted((root / "operators").glob("*.py"))
    found = sorted(f"{path.relative_to(root)}: {line.strip()}" for path in modules if path.exists()
                   for line in path.read_text().splitlines() if re.search(r"\b\w+\.name = ", line))
    fresh = {  # each assigns the name of a proto created just before and added only after
        "qdq_quantizer.py: new_initializer.name = new_initializer_name",
        "base_quantizer.py: q_weight_initializer.name = q_weight_name",
        "quant_utils.py: q_weight_initializer.name = q_weight_name",
    }
    unexpected = [line for line in found if line not in fresh and "self.name = name" not in line]
    assert not unexpected, unexpected
