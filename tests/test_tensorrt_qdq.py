"""int8_mode qdq: the Q/DQ model TensorRT builds from (made by ONNX Runtime's quantizer; needs TensorFlow
for the fixture model, so it is not a device-side test)."""

from __future__ import annotations

import numpy as np


def test_qdq_model_for_explicit_quantization_is_symmetric(tmp_path, onnx_path, digits_dir):
    """int8_mode: qdq feeds TensorRT a Q/DQ model; TensorRT needs int8 zero points of 0 everywhere."""
    import onnx
    from onnx import numpy_helper

    from workflow_scripts.backends.tensorrt import make_qdq_model
    from workflow_scripts.stages.engine import calibration_source

    out = tmp_path / "qdq.onnx"
    facts = make_qdq_model(onnx_path, out, calibration_source(digits_dir, 32, 16, seed=0), {"method": "entropy"})
    assert facts["calibration_images"] == 32
    model = onnx.load(str(out))
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) > 10
    for node in quantize:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
