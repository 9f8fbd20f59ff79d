"""TensorRT backend: what can be checked without a GPU, plus a GPU test that skips without one.

Polygraphy's loaders (NetworkFromOnnxPath, CreateConfig, PostprocessConfig, EngineBytesFromNetwork,
Profile) construct lazily without ``tensorrt``; its ``Calibrator`` does not (it subclasses
``trt.IInt8EntropyCalibrator2`` at construction), so here a stand-in object plays the calibrator
and the data loader it would read is tested on its own (tests/test_tensorrt_defects.py runs it
through Polygraphy's own input check). Device-side: runs under Python 3.8/3.10 without TensorFlow.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from workflow_scripts.backends import tensorrt as trt_backend
from workflow_scripts.backends.tensorrt import availability
from workflow_scripts.core.errors import BackendUnavailable, ConfigError

pytest.importorskip("polygraphy")
pytestmark = pytest.mark.device

TRT_OK, TRT_REASON = trt_backend.is_available()
# The stand-in for the ``tensorrt`` module: make_loader_chain needs the version and memory-pool enum.
FAKE_TRT = SimpleNamespace(__version__="10.3.0", MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"))
SPEC = ("input_1", [None, 28, 28, 3])  # name and shape as tf2onnx writes a Keras NHWC input
BASE = {"batch_size": 8, "max_batch_size": 32, "workspace_mb": 512, "device": "test-device"}


def chain_for(precision, options=None, calibrator=None):
    return trt_backend.make_loader_chain(
        "model.onnx", precision, {**BASE, **(options or {})},
        calibrator=calibrator, trt_module=FAKE_TRT, input_spec=SPEC,
    )


def create_config(chain):
    cfg = chain._config
    return getattr(cfg, "_config", cfg)  # unwrap PostprocessConfig (dla_core != 0)


# --- loader chain ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "precision, fp16, int8", [("fp32", False, False), ("fp16", True, False), ("int8", False, True)]
)
def test_chain_flags_per_precision(precision, fp16, int8):
    calibrator = object() if precision == "int8" else None
    chain = chain_for(precision, calibrator=calibrator)
    cfg = create_config(chain)
    assert (cfg.fp16, cfg.int8, cfg.tf32) == (fp16, int8, False)
    assert cfg.calibrator is calibrator
    assert cfg.memory_pool_limits == {"WORKSPACE": 512 * 2**20}
    assert cfg.builder_optimization_level == 3
    assert cfg.use_dla is False
    assert chain._network.path == "model.onnx"


def test_chain_profile_covers_dynamic_batch():
    cfg = create_config(chain_for("fp16"))
    (profile,) = cfg.profiles
    shapes = profile["input_1"]
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 28, 28, 3), (8, 28, 28, 3), (32, 28, 28, 3))


def test_static_batch_in_onnx_wins():
    lo, opt, hi = trt_backend.profile_shapes([4, 28, 28, 3], trt_backend.normalize_options(BASE))
    assert lo == opt == hi == (4, 28, 28, 3)


def test_dynamic_spatial_dims_need_input_shape():
    opts = trt_backend.normalize_options(BASE)
    with pytest.raises(ConfigError, match="input_shape"):
        trt_backend.profile_shapes([None, None, None, 3], opts)
    opts = trt_backend.normalize_options({**BASE, "input_shape": [32, 32, 3]})
    assert trt_backend.profile_shapes([None, None, None, 3], opts)[1] == (8, 32, 32, 3)


def test_timing_cache_and_optimization_level_passed_through():
    chain = chain_for(
        "fp16", {"timing_cache": "results/{device}/timing.cache", "builder_optimization_level": 5,
                 "reuse_timing_cache": True}
    )
    cfg = create_config(chain)
    assert cfg.timing_cache_path == "results/test-device/timing.trt-10.3.0.cache"
    assert chain.timing_cache_path == "results/test-device/timing.trt-10.3.0.cache"
    assert cfg.builder_optimization_level == 5


def test_optimization_level_dropped_before_tensorrt_8_6():
    old_trt = SimpleNamespace(__version__="8.5.2.2", MemoryPoolType=FAKE_TRT.MemoryPoolType)
    chain = trt_backend.make_loader_chain(
        "model.onnx", "fp16", BASE, trt_module=old_trt, input_spec=SPEC
    )
    assert create_config(chain).builder_optimization_level is None
    assert trt_backend.supports_optimization_level(SimpleNamespace(__version__="10.3.0.30"))


def test_int8_qdq_has_no_calibrator():
    cfg = create_config(chain_for("int8", {"int8_mode": "qdq"}, calibrator=object()))
    assert cfg.int8 is True and cfg.calibrator is None


def test_int8_calibration_without_calibrator_is_refused():
    with pytest.raises(ConfigError, match="calibrator"):
        chain_for("int8")


def test_dla_core_and_gpu_fallback():
    cfg = create_config(chain_for("fp16", {"dla_core": 0, "gpu_fallback": False}))
    assert cfg.use_dla is True and cfg.allow_gpu_fallback is False
    chain = chain_for("int8", {"dla_core": 1}, calibrator=object())
    assert type(chain._config).__name__ == "PostprocessConfig"  # selects DLA core 1
    assert create_config(chain).use_dla and create_config(chain).allow_gpu_fallback
    # DLA has no FP32: an fp32 engine stays on the GPU.
    assert create_config(chain_for("fp32", {"dla_core": 0})).use_dla is False


@pytest.mark.parametrize(
    "key, value",
    [("workspace_mb", 0), ("builder_optimization_level", 6), ("int8_mode", "ptq"),
     ("dla_core", -1), ("gpu_fallback", "yes"), ("max_batch_size", 4), ("input_shape", [28, 28])],
)
def test_bad_options_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        trt_backend.normalize_options({**BASE, key: value})


def test_unknown_precision_is_refused():
    # bf16 is a precision now (tests/test_tensorrt_bf16.py); fp8 is not.
    with pytest.raises(ConfigError, match="fp8"):
        chain_for("fp8")


def test_onnx_input_spec_reads_name_and_dynamic_batch(tmp_path):
    path = tmp_path / "tiny.onnx"
    make_tiny_onnx(path)
    assert trt_backend.onnx_input_spec(path) == ("images", [None, 4, 4, 3])


# --- calibration data loader -------------------------------------------------------------------


def test_option_defaults_come_from_the_schema():
    import yaml

    from workflow_scripts.backends.tensorrt import options

    block = yaml.safe_load(options.SCHEMA_PATH.read_text())["properties"]["tensorrt"]["properties"]
    opts = trt_backend.normalize_options({})
    for key, rules in block.items():
        assert opts[key] == rules.get("default"), key
    # The schema's bounds are the backend's bounds.
    low = block["workspace_mb"]["minimum"]
    trt_backend.normalize_options({"workspace_mb": low})
    with pytest.raises(ConfigError, match="workspace_mb"):
        trt_backend.normalize_options({"workspace_mb": low - 1})


def test_calibration_loader_yields_exactly_the_batches():
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 255, (8, 28, 28, 3)).astype(np.float32) for _ in range(3)]
    loader = trt_backend.CalibrationData(lambda: iter(batches), "input_1", batch_size=8)
    for _ in range(2):  # re-iterable: the calibrator may reset and read again
        fed = list(loader)
        assert [list(d) for d in fed] == [["input_1"]] * 3
        for d, b in zip(fed, batches):
            assert d["input_1"].dtype == np.float32 and d["input_1"].flags.c_contiguous
            np.testing.assert_array_equal(d["input_1"], b)
        assert loader.yielded == 3 and loader.padded == 0 and loader.images == 24


def test_calibration_loader_tops_up_short_last_batch_and_transposes_nchw():
    batches = [np.full((8, 4, 4, 3), 1, np.float32), np.full((5, 4, 4, 3), 2, np.float32)]
    loader = trt_backend.CalibrationData(lambda: iter(batches), "x", batch_size=8, layout="NCHW")
    fed = list(loader)
    assert [f["x"].shape for f in fed] == [(8, 3, 4, 4)] * 2
    # The 5 last images, then 3 from the start of the stream.
    assert [float(v) for v in fed[1]["x"][:, 0, 0, 0]] == [2] * 5 + [1] * 3
    assert loader.padded == 3 and loader.images == 13


# --- calibration cache -------------------------------------------------------------------------


def ident(version="10.3.0", device="dev", onnx="abc", batch=1, **kw):
    return trt_backend.calibration_identity(version, device, onnx, batch, **kw)


def test_calibration_cache_validity(tmp_path):
    cache = tmp_path / "model.int8.cache"
    ok, why = trt_backend.calibration_cache_is_valid(cache, ident(), "d")
    assert not ok and "no calibration cache" in why

    cache.write_bytes(b"TRT-100300-EntropyCalibration2\n")
    ok, why = trt_backend.calibration_cache_is_valid(cache, ident(), "d")
    assert not ok and "model.int8.cache.json" in why

    trt_backend.write_calibration_metadata(cache, {**ident("8.5.2.2"), "data_sha256": "d"})
    meta = json.loads((tmp_path / "model.int8.cache.json").read_text())
    assert meta["tensorrt_version"] == "8.5.2.2" and meta["device"] == "dev"
    ok, why = trt_backend.calibration_cache_is_valid(cache, ident("10.3.0"), "d")
    assert not ok and "TensorRT '8.5.2.2'" in why and "TensorRT '10.3.0'" in why
    ok, why = trt_backend.calibration_cache_is_valid(cache, ident("8.5.2.2", "other"), "d")
    assert not ok and "'other'" in why
    ok, why = trt_backend.calibration_cache_is_valid(cache, ident("8.5.2.2", onnx="xyz"), "d")
    assert not ok and "different ONNX" in why
    ok, why = trt_backend.calibration_cache_is_valid(cache, ident("8.5.2.2"), "d")
    assert ok, why


def test_version_mismatch_deletes_cache_for_rebuild(tmp_path, caplog):
    cache = tmp_path / "model.int8.cache"
    cache.write_bytes(b"old scales")
    trt_backend.write_calibration_metadata(cache, {**ident("8.5.2.2"), "data_sha256": "d"})
    with caplog.at_level("WARNING"):
        reused = trt_backend.prepare_calibration_cache(cache, ident("10.3.0"), "d")
    assert reused is False
    assert not cache.exists() and not (tmp_path / "model.int8.cache.json").exists()
    assert "recalibrating" in caplog.text and "8.5.2.2" in caplog.text

    cache.write_bytes(b"scales")
    trt_backend.write_calibration_metadata(cache, {**ident("10.3.0"), "data_sha256": "d"})
    assert trt_backend.prepare_calibration_cache(cache, ident("10.3.0"), "d") is True
    assert cache.exists()


# --- availability on this machine --------------------------------------------------------------


@pytest.mark.skipif(TRT_OK, reason="TensorRT and a GPU are present; this checks their absence")
def test_unavailable_here_is_reported_not_raised():
    ok, reason = trt_backend.is_available()
    assert ok is False and reason
    with pytest.raises(BackendUnavailable, match="docs/tensorrt.md"):
        trt_backend.version()


def test_missing_tensorrt_package_reason(monkeypatch):
    availability.probe.cache_clear()
    monkeypatch.setattr(availability.importlib.util, "find_spec", lambda name: None)
    try:
        ok, reason = trt_backend.is_available()
    finally:
        availability.probe.cache_clear()
    assert not ok and "'tensorrt' is not installed" in reason


def test_build_without_tensorrt_raises_backend_unavailable(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(BackendUnavailable, match="docs/tensorrt.md"):
        trt_backend.build_engine(
            tmp_path / "m.onnx", tmp_path / "m.engine", "fp32", lambda: iter(()), {}, tmp_path
        )


# --- GPU integration -----------------------------------------------------------------------------


def make_tiny_onnx(path, batch=None):
    """images [N,4,4,3] -> Flatten -> MatMul(48x5) + bias -> Softmax: a 5-class toy classifier."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(42)
    w = numpy_helper.from_array((rng.standard_normal((48, 5)) / 255).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b")
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch or "N", 4, 4, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch or "N", 5])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by the ONNX parsers of TensorRT 8.5 (JetPack 5) and newer
    save(model, str(path))
    return path


@pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT and an NVIDIA GPU: {TRT_REASON}")
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 5e-3), ("int8", None)])
def test_engine_matches_onnxruntime(tmp_path, precision, atol):
    import onnxruntime as ort

    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(1)
    batches = [rng.uniform(0, 255, (4, 4, 4, 3)).astype(np.float32) for _ in range(6)]
    # The workflow's defaults: profile optimum batch 1 (benchmark.batch_size), calibration batches of 4.
    facts = trt_backend.build_engine(
        onnx_path, tmp_path / f"tiny.{precision}.engine", precision, lambda: iter(batches),
        {"batch_size": 1, "max_batch_size": 8, "device": "gpu-test"}, tmp_path,
    )
    assert facts["engine_bytes"] > 0 and facts["build_s"] > 0
    assert (tmp_path / f"tiny.{precision}.engine").stat().st_size == facts["engine_bytes"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    runner = trt_backend.load_runner(tmp_path / f"tiny.{precision}.engine", threads=1)
    try:
        assert runner.input_name == "images"
        for batch in batches[:3] + [batches[0][:3]]:  # the last one has a smaller batch
            expected = session.run(None, {"images": batch})[0]
            timed = runner.timed_infer(batch)
            np.testing.assert_array_equal(runner.run(batch), timed.scores)
            assert timed.scores.shape == expected.shape
            assert min(timed.h2d_ms, timed.compute_ms, timed.d2h_ms) >= 0
            if atol is None:  # int8: classes must mostly agree
                agree = (timed.scores.argmax(1) == expected.argmax(1)).mean()
                assert agree >= 0.5
            else:
                np.testing.assert_allclose(timed.scores, expected, atol=atol)
    finally:
        runner.close()
    if precision == "int8":
        cache = tmp_path / "tiny.int8.cache"
        assert cache.is_file() and facts["calibration_batches"] == 24
        identity = trt_backend.calibration_identity(
            facts["tensorrt_version"], "gpu-test", trt_backend.file_sha256(onnx_path), 1
        )
        ok, why = trt_backend.calibration_cache_is_valid(
            cache, identity, trt_backend.calibration_data_sha256(lambda: iter(batches))
        )
        assert ok, why
