"""TensorRT BF16 (issue 29): BuilderFlag.BF16 through Polygraphy's CreateConfig(bf16=True), refused where
TensorRT or the GPU cannot build it. Checked without a GPU (the builder is never called); board-side:
runs under Python 3.8/3.10 without TensorFlow."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workflow_scripts.backends import tensorrt as trt_backend
from workflow_scripts.backends.tensorrt import availability
from workflow_scripts.core.errors import ConfigError

pytestmark = pytest.mark.device

FAKE_TRT = SimpleNamespace(__version__="10.3.0", MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"))
SPEC = ("input_1", [None, 28, 28, 3])
BASE = {"batch_size": 8, "max_batch_size": 32, "workspace_mb": 512, "device": "test-device"}


def test_bf16_chain_sets_polygraphys_bf16_flag_and_nothing_else():
    pytest.importorskip("polygraphy")
    chain = trt_backend.make_loader_chain("model.onnx", "bf16", BASE, trt_module=FAKE_TRT, input_spec=SPEC)
    cfg = chain._config
    assert (cfg.bf16, cfg.fp16, cfg.int8, cfg.tf32) == (True, False, False, False)
    assert cfg.use_dla is False


def test_bf16_never_goes_to_dla():
    """DLA runs FP16/INT8 only: a bf16 build with dla_core set stays on the GPU (no DLA postprocess)."""
    pytest.importorskip("polygraphy")
    record = {}
    chain = trt_backend.make_loader_chain("model.onnx", "bf16", {**BASE, "dla_core": 0}, trt_module=FAKE_TRT,
                                          input_spec=SPEC, record=record)
    assert chain._config.use_dla is False and record["dla_core"] is None
    # ...so a board without DLA cores does not refuse it either.
    assert trt_backend.check_build_request(["bf16"], {"dla_core": 0}, "10.3.0", 0, "8.7") == "weak"


def test_other_precisions_do_not_pass_bf16():
    """Polygraphy versions older than CreateConfig's bf16 argument still build fp32/fp16/int8."""
    pytest.importorskip("polygraphy")
    chain = trt_backend.make_loader_chain("model.onnx", "fp16", BASE, trt_module=FAKE_TRT, input_spec=SPEC)
    assert chain._config.bf16 is False


@pytest.mark.parametrize("capability", ["8.0", "8.6", "8.7", "9.0", (8, 7)])
def test_ampere_and_newer_build_bf16_on_tensorrt_10(capability):
    assert trt_backend.check_build_request(["fp32", "bf16"], {}, "10.3.0", None, capability) == "weak"


@pytest.mark.parametrize("capability, board", [("7.2", "Xavier"), ("7.5", "Turing"), ("5.3", "Nano")])
def test_gpus_before_ampere_are_refused_naming_the_capability(capability, board):
    with pytest.raises(ConfigError) as error:
        trt_backend.check_build_request(["fp32", "bf16"], {}, "10.3.0", None, capability)
    text = str(error.value)
    assert f"compute capability {capability}" in text and "8.0 or newer" in text
    assert "leave bf16 out of config key 'precisions'" in text


def test_tensorrt_8_and_strong_typing_and_11_are_refused():
    with pytest.raises(ConfigError, match=r"TensorRT 8.5.2.2 has no BF16 builder flag.*TensorRT 10"):
        trt_backend.check_build_request(["bf16"], {}, "8.5.2.2", None, "8.7")
    with pytest.raises(ConfigError, match=r"network_typing' is 'strong'.*set tensorrt.network_typing: weak"):
        trt_backend.check_build_request(["bf16"], {"network_typing": "strong"}, "10.3.0", None, "8.7")
    with pytest.raises(ConfigError, match=r"TensorRT 11.0.0 removed that flag"):
        trt_backend.check_build_request(["bf16"], {}, "11.0.0", None, "9.0")


def test_probe_result_answers_bf16_support():
    assert availability.bf16_support({"ok": True, "version": "10.3.0", "compute_capability": "8.7"}) == (True, "")
    ok, why = availability.bf16_support({"ok": True, "version": "10.3.0", "compute_capability": "7.2"})
    assert not ok and "compute capability 7.2" in why and why.startswith("backend 'tensorrt' cannot build bf16")
    ok, why = availability.bf16_support({"ok": False, "reason": "no GPU"})
    assert not ok and "no GPU" in why


def test_registry_leaves_out_or_refuses_tensorrt_bf16_on_xavier(monkeypatch):
    """Under backends: auto the pair is left out with a note naming the capability; named, it is refused."""
    from workflow_scripts.core import registry

    found = {"ok": True, "version": "10.3.0", "compute_capability": "7.2"}
    monkeypatch.setattr(registry.Backend, "available", lambda self: (True, "installed"))
    monkeypatch.setattr(trt_backend, "probe", lambda: found)
    kept, notes = registry.engine_precisions(["tensorrt"], {"backends": "auto", "precisions": ["fp32", "bf16"]})
    assert kept == {"tensorrt": ["fp32"]}
    assert len(notes) == 1 and "tensorrt bf16" in notes[0] and "compute capability 7.2" in notes[0]
    with pytest.raises(ConfigError, match=r"names 'tensorrt'.*compute capability 7.2"):
        registry.engine_precisions(["tensorrt"], {"backends": ["tensorrt"], "precisions": ["fp32", "bf16"]})
