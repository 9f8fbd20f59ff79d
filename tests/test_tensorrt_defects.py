"""One guard per defect of issue 13 (TensorRT on first contact), each checked on a CPU.

Where TensorRT or CUDA would be needed, the stand-ins of tests/tensorrt_stub.py take their place;
Polygraphy (pure Python) runs for real: its Calibrator, its input check and its loaders.
Device-side: runs under Python 3.8/3.10 without TensorFlow (pytest -m device).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("polygraphy")

from workflow_scripts.backends import tensorrt as trt_backend
from workflow_scripts.backends.tensorrt import availability, loader, runner
from workflow_scripts.core.errors import ConfigError, EdgePTQError

sys.path.insert(0, str(Path(__file__).parent))
import tensorrt_stub  # noqa: E402

pytestmark = pytest.mark.device

SPEC = ("images", [None, 4, 4, 3])
FAKE_TRT = SimpleNamespace(__version__="10.3.0", MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"))


def chain(precision, options=None, trt=FAKE_TRT, calibrator=None, record=None):
    return trt_backend.make_loader_chain(
        "model.onnx", precision, {"device": "dev", **(options or {})}, calibrator=calibrator,
        trt_module=trt, input_spec=SPEC, record=record,
    )


def create_config(c):
    cfg = c._config
    return getattr(cfg, "_config", cfg)


# --- 1: calibration fed TensorRT nothing with the default batch sizes ----------------------------------


def feed_like_tensorrt(monkeypatch, batches, opt_batch, tmp_path):
    """Drive Polygraphy's real Calibrator the way TensorRT does: get_batch until it returns None.

    Polygraphy checks each batch against the calibration profile's optimum shape (set here as
    try_setup_polygraphy_calibrator sets it) and ends calibration at the first mismatch. Only the
    copy to GPU memory is replaced (no CUDA here); it records what would have been copied.
    """
    from polygraphy.backend.trt import calibrator as polygraphy_calibrator
    from polygraphy.backend.trt import util as trt_util
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    copied = []

    def to_gpu(buf, name, device_buffers):
        copied.append(np.array(buf))
        return 1234

    fake = tensorrt_stub.fake_tensorrt()
    monkeypatch.setattr(trt_util, "_get_array_on_gpu", to_gpu)
    # Calibrator() reads trt.IInt8EntropyCalibrator2 as its default base even when given one.
    monkeypatch.setattr(polygraphy_calibrator, "trt", fake)
    data = trt_backend.CalibrationData(lambda: iter(batches), "images", batch_size=opt_batch)
    calibrator = trt_backend.make_calibrator(data, tmp_path / "c.cache", fake)
    calibrator.set_input_metadata(TensorMetadata().add("images", DataType.FLOAT32, (opt_batch, 4, 4, 3)))
    while calibrator.get_batch(["images"]) is not None:
        pass
    return copied, data


@pytest.mark.parametrize("opt_batch", [1, 4, 5])
def test_defect1_calibration_batches_are_rechunked_to_the_profile_opt_batch(monkeypatch, tmp_path, opt_batch):
    rng = np.random.default_rng(0)
    # calibration.batch_size 16 and a short last batch: 39 images.
    batches = [rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32) for n in (16, 16, 7)]
    copied, data = feed_like_tensorrt(monkeypatch, batches, opt_batch, tmp_path)
    assert len(copied) > 0 and data.yielded == len(copied)
    assert all(c.shape == (opt_batch, 4, 4, 3) for c in copied)
    fed = np.concatenate(copied)
    images = np.concatenate(batches)
    np.testing.assert_array_equal(fed[: len(images)], images)  # every image, in order
    assert len(fed) - len(images) == data.padded == (-len(images)) % opt_batch
    np.testing.assert_array_equal(fed[len(images):], images[: data.padded])


def test_defect1_build_uses_the_profile_opt_batch_for_calibration():
    opts = trt_backend.normalize_options({"batch_size": 1, "max_batch_size": 32})
    assert trt_backend.profile_shapes([None, 4, 4, 3], opts)[1][0] == 1


# --- 2 and 9: the pip extra and the conda environment resolve TensorRT < 11 ----------------------------

REPO = Path(__file__).resolve().parent.parent


def test_defect9_tensorrt_env_pins_below_11_and_has_onnxruntime():
    import yaml
    from packaging.requirements import Requirement

    env = yaml.safe_load((REPO / "envs" / "tensorrt.yaml").read_text())
    pip = [Requirement(r) for d in env["dependencies"] if isinstance(d, dict) for r in d["pip"]]
    names = {r.name: r for r in pip}
    assert "tensorrt" not in names, "the bare 'tensorrt' wheel is the CUDA 13 build from 11 on"
    trt = names["tensorrt-cu12"]
    assert trt.specifier.contains("10.3.0") and not trt.specifier.contains("11.0.0")
    assert "onnxruntime" in names and "polygraphy" in names  # the Q/DQ path quantizes with ORT


def test_defect2_pip_extra_pins_tensorrt_cu12_below_11():
    """pyproject.toml's ``tensorrt`` extra (owned elsewhere; see docs/tensorrt.md for the text)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomli = pytest.importorskip("tomli", reason="Python < 3.11 needs tomli to read pyproject.toml")
        tomllib = tomli
    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    reqs = {Requirement(r).name: Requirement(r) for r in extras["tensorrt"]}
    assert "tensorrt" not in reqs, "pin tensorrt-cu12>=10.0.1,<11 instead of the bare 'tensorrt'"
    assert not reqs["tensorrt-cu12"].specifier.contains("11.0.0")
    assert reqs["tensorrt-cu12"].specifier.contains("10.3.0")


# --- 3: trt.nptype crashes on TensorRT 8.5 with NumPy >= 1.24 -----------------------------------------


def test_defect3_dtype_map_does_not_use_trt_nptype(tmp_path):
    fake = tensorrt_stub.fake_tensorrt("8.5.2.2")
    with pytest.raises(AttributeError, match="np|bool"):
        fake.nptype(fake.DataType.HALF)  # what TensorRT 8.5 does under NumPy >= 1.24
    assert trt_backend.numpy_dtype(fake, fake.DataType.HALF) == np.float16
    assert trt_backend.numpy_dtype(fake, fake.DataType.BOOL) == np.bool_
    engine = tensorrt_stub.write_engine(tmp_path / "half.engine", dtype="HALF")
    r = runner.TensorRTRunner(engine, trt_module=fake, cuda_module=tensorrt_stub.FakeCuda())
    try:
        batch = np.arange(2 * 48, dtype=np.float32).reshape(2, 4, 4, 3)
        np.testing.assert_array_equal(r.run(batch), batch.reshape(2, -1)[:, :5])
    finally:
        r.close()


# --- 4: latency samples included CUDA-event overhead ----------------------------------------------------


def test_defect4_run_is_bare_and_timed_infer_keeps_the_breakdown(tmp_path):
    cuda = tensorrt_stub.FakeCuda()
    engine = tensorrt_stub.write_engine(tmp_path / "fp32.engine")
    r = runner.TensorRTRunner(engine, trt_module=tensorrt_stub.fake_tensorrt(), cuda_module=cuda)
    batch = np.random.default_rng(0).uniform(0, 255, (3, 4, 4, 3)).astype(np.float32)
    try:
        r.run(batch)  # first call sizes the buffers
        cuda.calls.clear()
        scores = r.run(batch)
        assert cuda.calls == ["memcpyHostToDevice", "memcpyDeviceToHost", "streamSynchronize"]
        cuda.calls.clear()
        timed = r.timed_infer(batch)
        assert cuda.calls.count("cudaEventRecord") == 4 and "cudaEventElapsedTime" in cuda.calls
        np.testing.assert_array_equal(scores, timed.scores)
        np.testing.assert_array_equal(scores, batch.reshape(3, -1)[:, :5])
        assert (timed.h2d_ms, timed.compute_ms, timed.d2h_ms) == (0.25, 0.25, 0.25)
    finally:
        r.close()


# --- 5: a persistent timing cache was shared by every measured build ----------------------------------


def test_defect5_measured_builds_do_not_reuse_tactic_timings_by_default():
    record = {}
    # The rules always pass a timing cache path; by default it is neither loaded nor saved.
    c = chain("fp16", {"timing_cache": "results/dev/tensorrt/timing.cache"}, record=record)
    assert create_config(c).timing_cache_path is None and c.timing_cache_path is None
    assert record["timing_cache_used"] is False and record["timing_cache"] is None


def test_defect5_reused_timing_cache_is_per_tensorrt_version_and_recorded():
    record = {}
    c = chain("fp16", {"timing_cache": "results/{device}/timing.cache", "reuse_timing_cache": True},
              trt=SimpleNamespace(__version__="8.6.1", MemoryPoolType=FAKE_TRT.MemoryPoolType), record=record)
    assert c.timing_cache_path == "results/dev/timing.trt-8.6.1.cache"
    assert record["timing_cache_used"] is True
    assert trt_backend.versioned_timing_cache("c/{tensorrt_version}.cache", "d", "10.3.0") == "c/10.3.0.cache"


# --- 6: DLA with a dynamic profile -------------------------------------------------------------------


def test_defect6_dla_gets_a_static_profile():
    record = {}
    c = chain("int8", {"dla_core": 0, "batch_size": 2, "max_batch_size": 32}, calibrator=object(), record=record)
    (profile,) = create_config(c).profiles
    shapes = profile["images"]
    assert shapes.min == shapes.opt == shapes.max == (2, 4, 4, 3)
    assert record["profile_static_for_dla"] is True
    # FP32 does not run on DLA and keeps its dynamic profile.
    (profile,) = create_config(chain("fp32", {"dla_core": 0})).profiles
    assert profile["images"].max == (32, 4, 4, 3)


class _Network:
    def __init__(self, layers):
        self.layers = layers
        self.num_layers = len(layers)

    def get_layer(self, i):
        return self.layers[i]


class _Config:
    DLA_core = 0

    def __init__(self, runs_on_dla):
        self.runs_on_dla = runs_on_dla

    def can_run_on_DLA(self, layer):
        return layer in self.runs_on_dla


def test_defect6_dla_placement_is_recorded_and_an_all_gpu_dla_build_refused():
    record = {}
    post = loader.make_dla_postprocess(1, True, record)
    config = _Config({"conv", "relu"})
    post(None, _Network(["conv", "relu", "softmax"]), config)
    assert config.DLA_core == 1 and record == {"dla_layers": 2, "network_layers": 3}
    with pytest.raises(EdgePTQError, match="none of the 2 layers"):
        post(None, _Network(["topk", "softmax"]), _Config(set()))
    c = chain("fp16", {"dla_core": 1})
    assert type(c._config).__name__ == "PostprocessConfig"


# --- 7: is_available only checked that a package exists -----------------------------------------------


@pytest.mark.parametrize(
    "version, fail_builder, ok, words",
    [
        ("10.3.0", False, True, "can create a builder"),
        ("10.3.0", True, False, "cannot create a builder"),
        ("8.2.1.8", False, False, "older than 8.5"),
    ],
)
def test_defect7_is_available_creates_a_builder(monkeypatch, tmp_path, version, fail_builder, ok, words):
    stub = tensorrt_stub.write_stub_package(tmp_path, version, fail_builder)
    monkeypatch.syspath_prepend(str(stub))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(stub)] + sys.path))
    availability.probe.cache_clear()
    try:
        found, reason = trt_backend.is_available()
    finally:
        availability.probe.cache_clear()
        sys.modules.pop("tensorrt", None)
    assert found is ok and words in reason, reason


# --- 8: EngineFromNetwork deserialised and re-serialised inside the timed build ------------------------


def test_defect8_chain_builds_serialized_bytes():
    from polygraphy.backend.trt import EngineBytesFromNetwork, EngineFromNetwork

    c = chain("fp32")
    assert type(c) is EngineBytesFromNetwork and not isinstance(c, EngineFromNetwork)


# --- 11: scratch names and cache JSON cleanup disagreed ----------------------------------------------


def test_defect11_int8_scratch_is_what_the_engine_stage_cleans(tmp_path):
    engine = pytest.importorskip("workflow_scripts.stages.engine", reason="the engine stage needs pandas")
    stale = Path(tempfile.mkdtemp(prefix=trt_backend.scratch_prefix("int8"), dir=tmp_path))
    engine.remove_stale_work_dirs(tmp_path)
    assert not stale.exists()
    for precision in ("fp16", "int8"):
        left = Path(tempfile.mkdtemp(prefix=trt_backend.scratch_prefix(precision), dir=tmp_path))
        legacy = Path(tempfile.mkdtemp(prefix="edgeptq-qdq-", dir=tmp_path))
        assert sorted(trt_backend.remove_stale_scratch(tmp_path, precision)) == sorted([left.name, legacy.name])


def test_defect11_cache_json_left_by_the_engine_stage_is_removed_quietly(tmp_path, caplog):
    cache = tmp_path / "int8_calibration.cache"
    cache.write_bytes(b"scales")
    identity = trt_backend.calibration_identity("10.3.0", "dev", "abc", 1)
    trt_backend.write_calibration_metadata(cache, {**identity, "data_sha256": "d"})
    cache.unlink()  # what the engine stage does before each measured build
    with caplog.at_level(logging.INFO):
        assert trt_backend.prepare_calibration_cache(cache, identity, "d") is False
    assert not trt_backend.calibration_metadata_path(cache).exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- version policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, precisions, options, expected",
    [
        ("8.5.2.2", ["fp32", "fp16", "int8"], {}, "weak"),
        ("10.3.0", ["fp16", "int8"], {"network_typing": "strong", "int8_mode": "qdq"}, "strong"),
        ("11.0.0.114", ["fp32", "fp16", "int8"], {"int8_mode": "qdq"}, "strong"),
        ("11.0.0.114", ["int8"], {}, "int8_mode: qdq"),
        ("11.0.0.114", ["fp16"], {"network_typing": "weak"}, "removed the FP16/INT8 builder flags"),
        ("8.6.1", ["fp16"], {"network_typing": "strong"}, "need TensorRT >= 10"),
        ("10.3.0", ["int8"], {"network_typing": "strong"}, "only from Q/DQ"),
        ("8.2.1.8", ["fp32"], {}, "older than 8.5"),
    ],
)
def test_version_policy(version, precisions, options, expected):
    if expected in ("weak", "strong"):
        assert trt_backend.check_build_request(precisions, options, version) == expected
    else:
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            trt_backend.check_build_request(precisions, options, version)


def test_strongly_typed_chain_sets_no_precision_flags():
    trt11 = SimpleNamespace(__version__="11.0.0", MemoryPoolType=FAKE_TRT.MemoryPoolType)
    c = chain("fp16", trt=trt11)
    cfg = create_config(c)
    assert c._network.strongly_typed is True and (cfg.fp16, cfg.int8) == (False, False)
    c = chain("int8", {"int8_mode": "qdq"}, trt=trt11)
    assert c._network.strongly_typed is True and create_config(c).int8 is False
    c = chain("fp16", trt=SimpleNamespace(__version__="10.3.0", MemoryPoolType=FAKE_TRT.MemoryPoolType))
    assert c._network.strongly_typed is False and create_config(c).fp16 is True
