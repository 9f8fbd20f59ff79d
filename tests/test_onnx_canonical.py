"""Deterministic ONNX export: the same .keras file gives byte-identical model.onnx in fresh processes,
computing exactly what tf2onnx's plain output computes (workflow_scripts/models/onnx_canonical.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workflow_scripts.models.onnx_canonical import canonicalize

REPO = Path(__file__).resolve().parent.parent

# Converts argv[1] to each later argv path in turn, in one process (like export's warm-up + repeats).
CONVERT = """
import sys
from workflow_scripts.stages.export import convert_to_onnx
from workflow_scripts.models.zoo import load_keras_model
for out in sys.argv[2:]:
    convert_to_onnx(load_keras_model(sys.argv[1]), out, 17)
"""


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    """An untrained MobileNetV3Small at 32 px (seconds to build; tf2onnx varies on it like on a trained one)."""
    import keras

    from workflow_scripts.models.zoo import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    build_model("MobileNetV3Small", 10, 32, "none", 0.9).save(path)
    return path


def convert_in_fresh_process(keras_path: Path, *outputs: Path, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": hash_seed}
    result = subprocess.run([sys.executable, "-c", CONVERT, str(keras_path), *map(str, outputs)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # fresh processes / the real snakemake CLI
def test_two_fresh_processes_export_byte_identical_onnx(keras_file, tmp_path):
    first, again, other = tmp_path / "first.onnx", tmp_path / "again.onnx", tmp_path / "other.onnx"
    # Two conversions in one process (the second starts from a used name counter) and one in
    # another process with other string hashes: all three files are the same bytes.
    convert_in_fresh_process(keras_file, first, again, hash_seed="1")
    convert_in_fresh_process(keras_file, other, hash_seed="2")
    assert digest(first) == digest(again) == digest(other)


@pytest.mark.slow  # renders every figure / converts or builds a real model
def test_canonical_export_computes_exactly_what_plain_tf2onnx_computes(keras_file, tmp_path):
    import onnxruntime as ort
    import tf2onnx.graph

    from workflow_scripts.stages.export import convert_to_onnx
    from workflow_scripts.models.zoo import load_keras_model

    model = load_keras_model(keras_file)
    method = tf2onnx.graph.Graph.extract_sub_graph_nodes
    canonical, plain = tmp_path / "canonical.onnx", tmp_path / "plain.onnx"
    convert_to_onnx(model, canonical, 17)
    assert tf2onnx.graph.Graph.extract_sub_graph_nodes is method, "the tf2onnx patch must end with the conversion"
    convert_to_onnx(model, plain, 17, canonical=False)

    checked = onnx.load(str(canonical))
    onnx.checker.check_model(checked, full_check=True)
    raw = onnx.load(str(plain))
    assert [i.name for i in checked.graph.input] == [i.name for i in raw.graph.input] == ["images"]
    assert [o.name for o in checked.graph.output] == [o.name for o in raw.graph.output]
    assert not checked.doc_string and not any(n.doc_string for n in checked.graph.node)

    images = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype(np.float32)
    outputs = []
    for path in (canonical, plain):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"images": images})[0])
    assert np.array_equal(outputs[0], outputs[1]), "canonicalization must not change a single output bit"
    keras_out = model(images, training=False).numpy()
    assert float(np.max(np.abs(outputs[0] - keras_out))) < 1e-4


# --- canonicalize on hand-made graphs (no TensorFlow) ---------------------------------------------

def small_model(counter: int, reverse: bool):
    """Input -> Mul(const) -> Relu -> Add(const) -> output, names numbered from ``counter`` like tf2onnx's."""
    a, b = f"const_fold_opt__{counter}", f"new_shape__{counter + 7}"
    nodes = [
        helper.make_node("Mul", ["x", a], [f"Mul__{counter + 1}:0"], name=f"Mul__{counter + 1}", doc_string="volatile"),
        helper.make_node("Relu", [f"Mul__{counter + 1}:0"], ["layer/relu:0"], name="layer/relu"),
        helper.make_node("Add", ["layer/relu:0", b], ["y"], name=f"head/add__{counter + 12}"),
    ]
    if reverse:
        nodes.reverse()
    inits = [numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), a),
             numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), b)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [f"unk__{counter + 30}", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"unk__{counter + 31}", 4])],
        initializer=inits[::-1] if reverse else inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string="converted at 12:00")


def test_canonicalize_removes_counter_values_and_node_order():
    one = canonicalize(small_model(counter=5, reverse=False))
    other = canonicalize(small_model(counter=911, reverse=True))
    assert one.SerializeToString() == other.SerializeToString()
    onnx.checker.check_model(one, full_check=True)
    graph = one.graph
    assert [n.op_type for n in graph.node] == ["Mul", "Relu", "Add"]
    assert [n.name for n in graph.node] == ["Mul__2", "layer/relu", "head/add__4"]
    assert sorted(t.name for t in graph.initializer) == ["const_fold_opt__1", "new_shape__3"]
    assert graph.input[0].name == "x" and graph.output[0].name == "y"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "unk__5"
    assert not one.doc_string and not any(n.doc_string for n in graph.node)
    # Canonical form is a fixed point.
    assert canonicalize(onnx.ModelProto.FromString(one.SerializeToString())).SerializeToString() == \
        one.SerializeToString()


def test_canonicalize_keeps_what_the_graph_computes():
    import onnxruntime as ort

    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    results = []
    for model in (small_model(7, reverse=False), canonicalize(small_model(7, reverse=True))):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        results.append(session.run(None, {"x": x})[0])
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], np.maximum(x * 2, 0) + 0.5)
