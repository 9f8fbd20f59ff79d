"""The bf16 precision (issue 29): which (backend, bf16) pairs planning keeps, leaves out or refuses, the
refusal naming the missing CPU flag, and a real tiny OpenVINO bf16 engine where this CPU has BF16."""

from __future__ import annotations

import numpy as np
import pytest

from workflow_scripts.core import device, registry
from workflow_scripts.core.errors import ConfigError

NO_BF16_FLAGS = {"fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni"}  # an AVX-512 CPU without BF16 (Cascade Lake)


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """This machine's CPU seen as an x86 one without avx512_bf16 and amx_bf16."""
    monkeypatch.setattr(device, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": set(NO_BF16_FLAGS))
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(device, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": NO_BF16_FLAGS | {"avx512_bf16"})


def config(backends, precisions=("fp32", "bf16", "int8")):
    return {"backends": backends, "precisions": list(precisions)}


def test_named_openvino_bf16_is_refused_naming_the_missing_flags_and_the_fix(cpu_without_bf16):
    with pytest.raises(ConfigError) as error:
        registry.engine_precisions(["openvino"], config(["openvino"]))
    text = str(error.value)
    assert "config key 'precisions' has 'bf16'" in text and "names 'openvino'" in text
    assert "avx512_bf16" in text and "amx_bf16" in text
    assert "leave bf16 out of config key 'precisions'" in text


def test_check_backend_config_refuses_it_at_planning(cpu_without_bf16):
    with pytest.raises(ConfigError, match="avx512_bf16"):
        registry.check_backend_config("openvino", {**config(["openvino"]), "calibration": {}})


def test_auto_leaves_openvino_bf16_out_with_one_note_naming_the_flag(cpu_without_bf16):
    kept, notes = registry.engine_precisions(["onnxruntime", "openvino"], config("auto"))
    assert kept == {"onnxruntime": ["fp32", "int8"], "openvino": ["fp32", "int8"]}
    [openvino_note] = [n for n in notes if "openvino" in n]
    assert "\n" not in openvino_note and "avx512_bf16" in openvino_note and "bf16" in openvino_note
    registry.check_backend_config("openvino", {**config("auto"), "calibration": {}})  # no error under auto


def test_openvino_bf16_is_kept_where_the_cpu_has_it(cpu_with_bf16):
    kept, notes = registry.engine_precisions(["openvino"], config(["openvino"]))
    assert kept == {"openvino": ["fp32", "bf16", "int8"]} and notes == []


def test_onnxruntime_and_litert_get_no_bf16_engines(cpu_with_bf16):
    kept, notes = registry.engine_precisions(["onnxruntime", "litert", "openvino"], config("auto"))
    assert kept["onnxruntime"] == kept["litert"] == ["fp32", "int8"] and "bf16" in kept["openvino"]
    assert len(notes) == 2 and all("builds no bf16 engines" in n for n in notes)
    with pytest.raises(ConfigError, match=r"'onnxruntime' builds no bf16 engines.*set backends: auto"):
        registry.engine_precisions(["onnxruntime", "openvino"], config(["onnxruntime", "openvino"]))


def test_an_arm_cpu_and_an_unreadable_one_are_refused_with_a_reason(monkeypatch):
    ok, why = device.cpu_bf16_support({"fp", "asimd", "bf16"}, "aarch64")
    assert not ok and "aarch64" in why and "avx512_bf16" in why
    ok, why = device.cpu_bf16_support(set(), "x86_64")
    assert not ok and "cannot be read" in why
    assert device.cpu_bf16_support({"amx_bf16", "amx_tile"}, "x86_64") == (True, "the CPU has amx_bf16")


def test_openvino_runner_precision_hint_for_bf16(cpu_without_bf16):
    ovb = pytest.importorskip("workflow_scripts.backends.openvino")
    assert ovb.inference_precision("bf16", ["FP32", "BF16", "INT8"]) == "bf16"
    assert ovb.inference_precision("fp32", ["FP32", "BF16", "INT8"]) == "f32"  # never the plugin's default
    with pytest.raises(ConfigError, match=r"bf16 engine.*no BF16.*avx512_bf16"):
        ovb.inference_precision("bf16", ["FP32", "INT8"])


def test_the_schema_and_the_figures_know_bf16():
    from workflow_scripts.core.config import load_schema
    from workflow_scripts.figures.plots_base import PRECISION_ORDER, QUANTIZED, _colors

    assert "bf16" in load_schema()["properties"]["precisions"]["items"]["enum"]
    assert PRECISION_ORDER.index("fp16") < PRECISION_ORDER.index("bf16") < PRECISION_ORDER.index("int8")
    assert "bf16" in QUANTIZED
    # A precision keeps its colour whichever others are drawn beside it.
    assert _colors(["int8"])["int8"] == _colors(["fp16", "bf16", "int8"])["int8"]


# --- a real engine, where the CPU computes in BF16 ------------------------------------------------------

def _cpu_computes_bf16() -> bool:
    """Whether OpenVINO's CPU plugin lists BF16 among this CPU's OPTIMIZATION_CAPABILITIES."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_bf16_cpu = pytest.mark.skipif(
    not _cpu_computes_bf16(), reason="this CPU has no BF16 arithmetic (OpenVINO's CPU plugin lists no BF16: no "
                         "avx512_bf16/amx_bf16), so a bf16 engine cannot run here")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A small conv net as ONNX (NHWC input like tf2onnx's), random but fixed weights; no training."""
    pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (10, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "w1"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 8, 8, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(np.array(1 / 255.0, dtype=np.float32), "scale"),
         numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    path = tmp_path_factory.mktemp("bf16") / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_bf16_ir_builds_anywhere_as_fp32_weights_recording_bf16(tiny_onnx, tmp_path):
    from workflow_scripts.backends import openvino as ovb

    import openvino as ov

    facts = ovb.build_engine(tiny_onnx, tmp_path / "bf16.xml", "bf16")
    assert facts["weights_dtype"] == "f32" and facts["inference_precision"] == "bf16"
    model = ov.Core().read_model(str(tmp_path / "bf16.xml"))
    assert ovb._text(model.get_rt_info(ovb.PRECISION_KEY)) == "bf16"


@needs_bf16_cpu
def test_a_real_bf16_engine_runs_in_bf16_and_agrees_with_fp32(tiny_onnx, tmp_path):
    from workflow_scripts.backends import openvino as ovb

    engines = {p: tmp_path / f"{p}.xml" for p in ("fp32", "bf16")}
    for precision, path in engines.items():
        ovb.build_engine(tiny_onnx, path, precision)
    batch = np.random.default_rng(1).uniform(0, 255, (64, 8, 8, 3)).astype(np.float32)
    scores = {}
    for precision, path in engines.items():
        runner = ovb.load_runner(path, threads=1)
        scores[precision] = runner.run(batch)
        runner.close()
        applied = runner.facts["compiled_inference_precision_hint"]
        assert applied == ("bf16" if precision == "bf16" else "f32"), (precision, applied)
    # bf16 keeps 8 significant bits: close to fp32, but not bit-identical (it did compute in bf16).
    np.testing.assert_allclose(scores["bf16"], scores["fp32"], rtol=0.05, atol=0.05)
    assert not np.array_equal(scores["bf16"], scores["fp32"])
    agree = (scores["bf16"].argmax(1) == scores["fp32"].argmax(1)).mean()
    assert agree >= 0.9, agree
