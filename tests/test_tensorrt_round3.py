"""One guard per item of issue 28 (TensorRT, third round), each checked on a CPU.

TensorRT and CUDA are replaced by the stand-ins of tests/tensorrt_stub.py; Polygraphy (pure Python)
runs for real: its Calibrator with its cache handling, its CUDA wrapper's library search.
Device-side: runs under Python 3.8/3.10 without TensorFlow (pytest -m device).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("polygraphy")

from workflow_scripts.backends import tensorrt as trt_backend
from workflow_scripts.backends.tensorrt import cudart, loader, runner
from workflow_scripts.core.errors import ConfigError, EdgePTQError

sys.path.insert(0, str(Path(__file__).parent))
import tensorrt_stub  # noqa: E402

pytestmark = pytest.mark.device
REPO = Path(__file__).resolve().parent.parent


# --- 1: evaluation batches a (DLA) engine's profile does not cover ----------------------------------


def stub_runner(tmp_path, min_batch, max_batch):
    engine = tensorrt_stub.write_engine(tmp_path / "e.engine", max_batch=max_batch, min_batch=min_batch)
    return runner.TensorRTRunner(engine, trt_module=tensorrt_stub.fake_tensorrt(), cuda_module=tensorrt_stub.FakeCuda())


@pytest.mark.parametrize("min_batch, max_batch, n, parts", [
    (4, 4, 10, [4, 4, 4]),  # DLA: static batch 4 (the benchmark's); evaluation 10 = 4 + 4 + 2 padded to 4
    (4, 4, 1, [4]),  # DLA: the last evaluation batch, smaller than the static batch
    (1, 8, 20, [8, 8, 4]),  # GPU: evaluation batch 20 above the profile's max_batch_size 8
])
def test_item1_evaluation_batches_outside_the_profile_run_in_parts(tmp_path, min_batch, max_batch, n, parts):
    r = stub_runner(tmp_path, min_batch, max_batch)
    batch = np.random.default_rng(0).uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    scores = r.run(batch)
    # The stand-in engine's scores are each image's first 5 values: every image's own row, in order,
    # and nothing of the padding.
    np.testing.assert_array_equal(scores, batch.reshape(n, -1)[:, :5])
    assert [s[0] for s in r.context.shapes_set] == [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    assert r.context.executions == len(parts) and r.split_calls == 1
    r.close()


def test_item1_benchmark_batch_is_one_call_and_timed_infer_refuses_other_batches(tmp_path):
    r = stub_runner(tmp_path, 4, 4)
    batch = np.ones((4, 4, 4, 3), np.float32)
    r.run(batch)
    assert r.context.executions == 1 and r.split_calls == 0  # the latency path is untouched
    with pytest.raises(EdgePTQError, match="benchmark.batch_size"):
        r.timed_infer(batch[:2])
    r.close()


# --- 2: the CUDA runtime of the nvidia-cuda-runtime-cu12 wheel with an older Polygraphy -----------------


@pytest.fixture
def wheel_site(tmp_path):
    """A site-packages folder holding what nvidia-cuda-runtime-cu12 installs (an empty stand-in library)."""
    lib = tmp_path / "site" / "nvidia" / "cuda_runtime" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.12").write_bytes(b"")
    return tmp_path / "site", lib


def polygraphy_loads(monkeypatch, search_wheel, root):
    """The library Polygraphy's real Cuda() would load here (ctypes.CDLL recorded, not called).

    ``search_wheel=False`` removes the wheel folders from its search, as in Polygraphy < 0.53.4.
    """
    from polygraphy.cuda import cuda as pg_cuda

    if not search_wheel and hasattr(pg_cuda, "_cuda_runtime_wheel_dirs"):
        monkeypatch.setattr(pg_cuda, "_cuda_runtime_wheel_dirs", lambda subdir: [])
    # Only the test's own folders: a CUDA runtime this machine has elsewhere must not be found.
    real_find = pg_cuda.util.find_in_dirs
    monkeypatch.setattr(pg_cuda.util, "find_in_dirs",
                        lambda pattern, dirs: real_find(pattern, [d for d in dirs if str(root) in d]))
    loaded = []
    monkeypatch.setattr(pg_cuda.ctypes, "CDLL", lambda lib: loaded.append(lib) or object())
    pg_cuda.Cuda()
    return loaded[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the wheel layout checked is Linux's")
def test_item2_older_polygraphy_finds_the_wheel_runtime(monkeypatch, wheel_site):
    site, lib = wheel_site
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.setattr(sys, "path", [str(site)] + sys.path)
    # What Polygraphy 0.49/0.50 does on its own: falls back to a name the wheel does not ship.
    assert polygraphy_loads(monkeypatch, search_wheel=False, root=site) == "libcudart.so"
    added = cudart.prepare_cuda_runtime("0.49.26")
    assert added == str(lib) and os.environ["LD_LIBRARY_PATH"] == str(lib)
    assert polygraphy_loads(monkeypatch, search_wheel=False, root=site) == str(lib / "libcudart.so.12")
    assert cudart.prepare_cuda_runtime("0.49.26") is None  # already listed: nothing added twice


def test_item2_new_polygraphy_and_boards_are_left_alone(monkeypatch, wheel_site):
    site, _ = wheel_site
    env = {"LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}
    assert cudart.prepare_cuda_runtime("0.53.4", env, [str(site)]) is None
    assert cudart.prepare_cuda_runtime("0.49.26", env, [str(REPO)]) is None  # no wheel (a JetPack board)
    assert env == {"LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}
    assert cudart.polygraphy_finds_wheel("0.53.4") and not cudart.polygraphy_finds_wheel("0.50.3")


def test_item2_tensorrt_extra_and_env_need_a_polygraphy_that_finds_the_wheel():
    import yaml
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tensorrt"]
    env = yaml.safe_load((REPO / "envs" / "tensorrt.yaml").read_text())
    pip = [r for d in env["dependencies"] if isinstance(d, dict) for r in d["pip"]]
    for where, reqs in (("pyproject.toml [tensorrt]", extra), ("envs/tensorrt.yaml", pip)):
        polygraphy = [Requirement(r) for r in reqs if Requirement(r).name == "polygraphy"]
        assert polygraphy, where
        spec = polygraphy[0].specifier
        assert not spec.contains("0.49.26") and not spec.contains("0.50.3") and spec.contains("0.53.4"), where


# --- 3, 4, 5: calibration caches and the build facts ------------------------------------------------------


def calibration_build(monkeypatch, tmp_path, batches, options=None, feed=True):
    """build_engine (int8, calibration) with TensorRT played by a chain that drives Polygraphy's real
    Calibrator as TensorRT does: read the cache; if none, get_batch until None and write the cache."""
    from polygraphy.backend.trt import calibrator as polygraphy_calibrator
    from polygraphy.backend.trt import util as trt_util
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType
    from test_tensorrt_backend import make_tiny_onnx

    fake = tensorrt_stub.fake_tensorrt("8.5.2.2")
    monkeypatch.setattr(trt_util, "_get_array_on_gpu", lambda buf, name, device_buffers: 1234)
    monkeypatch.setattr(polygraphy_calibrator, "trt", fake)
    seen = {}

    def fake_chain(source, precision, opts, calibrator=None, trt_module=None, input_spec=None, record=None):
        def build():
            shape = (opts["batch_size"], 4, 4, 3)  # the profile's optimum: what TensorRT calibrates at
            calibrator.set_input_metadata(TensorMetadata().add("images", DataType.FLOAT32, shape))
            seen["cache_read"] = calibrator.read_calibration_cache() is not None
            if not seen["cache_read"] and feed:
                while calibrator.get_batch(["images"]) is not None:
                    pass
                calibrator.write_calibration_cache(memoryview(b"TRT-8502-EntropyCalibration2\nimages: 3c010a14\n"))
            return b"serialized engine"
        return build

    monkeypatch.setattr(loader, "make_loader_chain", fake_chain)
    onnx_path = tmp_path / "tiny.onnx"
    if not onnx_path.exists():
        make_tiny_onnx(onnx_path)
    engine = tmp_path / "int8.engine"
    opts = {"batch_size": 1, "device": "dev", "num_images": 12, "seed": 7, "method": "entropy", **(options or {})}
    facts = trt_backend.build_engine(onnx_path, engine, "int8", lambda: iter(batches), opts, tmp_path, trt_module=fake)
    return facts, engine, seen


def images(n, seed=0):
    return [np.random.default_rng(seed).uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)]


def test_item4_a_reused_build_records_what_calibrated_the_cache(monkeypatch, tmp_path):
    first, _, seen = calibration_build(monkeypatch, tmp_path, images(12))
    assert not seen["cache_read"] and first["calibration_batches"] == 12 and not first["calibration_cache_reused"]
    meta_path = trt_backend.calibration_metadata_path(tmp_path / "tiny.int8.cache")
    meta = json.loads(meta_path.read_text())
    assert {k: meta[k] for k in ("num_images", "seed", "method", "batch_size", "batches")} == {
        "num_images": 12, "seed": 7, "method": "entropy", "batch_size": 1, "batches": 12}
    assert meta["onnx_sha256"] and meta["data_sha256"]

    again, _, seen = calibration_build(monkeypatch, tmp_path, images(12))
    assert seen["cache_read"] and again["calibration_cache_reused"] is True
    assert again["calibration_batches_fed"] == 0
    assert (again["calibration_batches"], again["calibration_images"]) == (12, 12)  # the truth, not 0
    assert json.loads(meta_path.read_text()) == meta  # the cache's record is left as it was


@pytest.mark.parametrize("change", [
    {"num_images": 13}, {"seed": 8}, {"method": "minmax"}, {"batch_size": 2, "max_batch_size": 32}, "images",
])
def test_item4_any_other_calibration_setting_recalibrates(monkeypatch, tmp_path, change):
    calibration_build(monkeypatch, tmp_path, images(12))
    data = images(12, seed=1) if change == "images" else images(12)
    facts, _, seen = calibration_build(monkeypatch, tmp_path, data, None if change == "images" else change)
    assert not seen["cache_read"] and facts["calibration_cache_reused"] is False
    assert facts["calibration_batches_fed"] > 0


def test_item4_metadata_without_a_model_hash_never_matches(tmp_path):
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"scales")
    identity = trt_backend.calibration_identity("10.3.0", "dev", "abc", 1, num_images=12, seed=7)
    trt_backend.write_calibration_metadata(cache, {**identity, "onnx_sha256": None, "data_sha256": "d"})
    ok, why = trt_backend.calibration_cache_is_valid(cache, identity, "d")
    assert not ok and "onnx_sha256" in why
    trt_backend.write_calibration_metadata(cache, {**identity, "data_sha256": "d"})
    assert trt_backend.calibration_cache_is_valid(cache, identity, "d")[0]
    assert not trt_backend.calibration_cache_is_valid(cache, {**identity, "onnx_sha256": None}, "d")[0]
    assert not trt_backend.calibration_cache_is_valid(cache, identity, None)[0]  # images unknown


def test_item5_a_calibration_that_fed_nothing_leaves_no_engine(monkeypatch, tmp_path):
    with pytest.raises(EdgePTQError, match="fed TensorRT no batches"):
        calibration_build(monkeypatch, tmp_path, [], feed=True)
    assert not (tmp_path / "int8.engine").exists()


def test_item3_gpu_validate_keep_folder_calibrates_afresh(monkeypatch, tmp_path):
    """A second `gpu_validate --keep DIR` run: the cache the first left must not be reused."""
    from workflow_scripts.fleet import gpu_validate

    pytest.importorskip("onnxruntime")
    cache = tmp_path / "small.int8.cache"
    cache.write_bytes(b"scales of the first run")
    trt_backend.calibration_metadata_path(cache).write_text("{}")
    seen = {}

    class Runner:
        def run(self, batch):
            return validator.reference(batch)

        def close(self):
            pass

    def build_engine(onnx_path, engine, precision, batches, options, calibration_dir):
        path = Path(options.get("calibration_cache") or Path(calibration_dir) / "small.int8.cache")
        seen["cache_left"] = path.exists() or trt_backend.calibration_metadata_path(path).exists()
        return {"build_s": 1.0, "engine_bytes": 1, "calibration_batches_fed": 64, "calibration_images": 64}

    backend = SimpleNamespace(build_engine=build_engine, load_runner=lambda engine: Runner())
    validator = gpu_validate.Validator(tmp_path, 1, lambda record: None)
    monkeypatch.setattr(validator, "backend", lambda: backend)
    validator.stage_build_int8()
    assert seen["cache_left"] is False
    assert validator.stage_calibration_default_batches()["calibration_batches_fed"] == 64


# --- 6: the DLA core index against the device's DLA cores ---------------------------------------------------


@pytest.mark.parametrize("cores, core, words", [(0, 0, "has no DLA core"), (2, 2, "numbered 0..1")])
def test_item6_a_dla_core_the_device_lacks_is_refused(cores, core, words):
    with pytest.raises(ConfigError, match=f"tensorrt.dla_core.*{words}"):
        trt_backend.check_build_request(["fp16"], {"dla_core": core}, "8.5.2.2", num_dla_cores=cores)
    assert trt_backend.check_build_request(["fp32"], {"dla_core": core}, "8.5.2.2", num_dla_cores=cores) == "weak"
    if cores:
        assert trt_backend.check_build_request(["int8"], {"dla_core": cores - 1}, "8.5.2.2", cores) == "weak"


def test_item6_the_build_checks_the_builders_dla_cores_before_placing_layers():
    post = loader.make_dla_postprocess(1, True, {})
    builder = SimpleNamespace(num_DLA_cores=1)
    config = SimpleNamespace(can_run_on_DLA=lambda layer: True)
    network = SimpleNamespace(num_layers=2, get_layer=lambda i: i)
    with pytest.raises(ConfigError, match="num_DLA_cores = 1"):
        post(builder, network, config)
    assert not hasattr(config, "DLA_core")


def test_item6_planning_passes_the_probed_dla_cores(monkeypatch):
    registry = pytest.importorskip("workflow_scripts.core.registry", reason="the planner needs Python >= 3.10")
    monkeypatch.setattr(type(registry.BACKENDS["tensorrt"]), "available", lambda self: (True, "stand-in"))
    monkeypatch.setattr(trt_backend, "version", lambda: "8.5.2.2")
    monkeypatch.setattr(trt_backend, "probe", lambda: {"ok": True, "num_DLA_cores": 0})
    config = {"precisions": ["fp16"], "tensorrt": {"dla_core": 0}, "calibration": {}}
    with pytest.raises(ConfigError, match="has no DLA core"):
        registry.check_backend_config("tensorrt", config, probe=True)


# --- 7: NCHW inputs with dynamic height and width ----------------------------------------------------------


def test_item7_nchw_dynamic_spatial_profile():
    opts = trt_backend.normalize_options({"batch_size": 2, "max_batch_size": 8, "input_shape": [32, 48, 3]})
    lo, opt, hi = trt_backend.profile_shapes([None, 3, None, None], opts)
    assert (lo, opt, hi) == ((1, 3, 32, 48), (2, 3, 32, 48), (8, 3, 32, 48))
    assert trt_backend.profile_shapes([None, None, None, 3], opts)[1] == (2, 32, 48, 3)
    assert trt_backend.profile_shapes([None, 3, 32, None], opts)[1] == (2, 3, 32, 48)


# --- 8: gpu_validate without Polygraphy ---------------------------------------------------------------------


def test_item8_gpu_validate_without_polygraphy_skips_every_stage(tmp_path):
    from workflow_scripts.fleet import gpu_validate

    stub = tensorrt_stub.write_stub_package(tmp_path, "10.3.0", fail_builder=False)
    hidden = stub / "polygraphy"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('polygraphy is not installed (test stand-in)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub), str(REPO)]))
    done = subprocess.run([sys.executable, "-m", "workflow_scripts.fleet.gpu_validate", "--iterations", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r["stage"] for r in records] == list(gpu_validate.STAGES), done.stderr
    assert done.returncode == 0 and all(r["status"] == "skipped" for r in records), records
    assert "Polygraphy" in records[0]["reason"] and "polygraphy>=0.53.4" in records[0]["reason"]


# --- 9: docs/tensorrt.md against pyproject.toml, the schema and the shipped configs ---------------------------


def doc():
    return (REPO / "docs" / "tensorrt.md").read_text()


def test_item9_doc_python_requirement_matches_pyproject():
    requires = re.search(r'requires-python\s*=\s*">=\s*([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    stated = set(re.findall(r"workflow itself needs Python >= ([\d.]+)", doc()))
    assert stated == {requires}, (stated, requires)


def test_item9_doc_option_table_matches_the_schema():
    import yaml

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    keys = schema["properties"]["tensorrt"]["properties"]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+)$", doc(), re.M))
    for key, rules in keys.items():
        assert key in rows, f"docs/tensorrt.md has no row for tensorrt.{key}"
        default = rules["default"]
        shown = {None: "null", True: "true", False: "false"}.get(default, default) if not isinstance(
            default, (int, float)) or isinstance(default, bool) else default
        row = rows[key].replace("`", "")
        assert f"schema ({shown})" in row and "not in the schema" not in row, (key, row)


def test_item9_doc_describes_what_a_run_sample_contains():
    text = doc()
    section = text.split("## Running engines")[1].split("\n## ")[0]
    for words in ("np.copyto", "page-locked", "transpose", "cudaMemcpyAsync", "execute_async_v3",
                  "cudaStreamSynchronize", "float32"):
        assert words in section, words
    assert "bare path" not in text


def test_item9_configs_the_doc_names_exist_and_board_yaml_is_valid():
    named = set(re.findall(r"config/[\w.-]+\.yaml", doc()))
    missing = [n for n in named if not (REPO / n).is_file()]
    assert not missing, missing
    from workflow_scripts.fleet import device_run

    cfg = device_run.load_config([REPO / "config" / "board.yaml"])
    assert cfg["tensorrt"]["max_batch_size"] >= cfg["evaluate"]["batch_size"]
    opts = trt_backend.normalize_options({**cfg["tensorrt"], "batch_size": cfg["benchmark"]["batch_size"]})
    assert opts["max_batch_size"] >= cfg["benchmark"]["batch_size"]
    config = pytest.importorskip("workflow_scripts.core.config", reason="schema validation needs the workstation set")
    pytest.importorskip("snakemake")
    import yaml

    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    merged.update(yaml.safe_load((REPO / "config" / "board.yaml").read_text()))
    validated = config.validate_config(merged)
    assert validated["tensorrt"]["dla_core"] is None and validated["datasets"] == ["digits"]


# --- 1 (planning): the tensorrt block against the rest of the config, before TensorRT is probed ---------


def test_item1_device_run_refuses_a_profile_below_the_benchmark_batch_before_any_job(tmp_path, caplog):
    import yaml

    from workflow_scripts.fleet import device_run

    cfg = tmp_path / "board.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), "benchmark": {"batch_size": 64},
                                   "tensorrt": {"max_batch_size": 32}}))
    assert device_run.main(["--configfile", str(cfg), "--backend", "tensorrt"]) == 2
    assert "tensorrt.max_batch_size" in caplog.text and "benchmark.batch_size" in caplog.text
    assert not (tmp_path / "results").exists()


def test_item1_config_validation_refuses_it_when_backends_name_tensorrt():
    config = pytest.importorskip("workflow_scripts.core.config", reason="schema validation needs the workstation set")
    pytest.importorskip("snakemake")
    import yaml

    base = yaml.safe_load((REPO / "config" / "quickstart.yaml").read_text())
    bad = {**base, "backends": ["tensorrt"], "benchmark": {"batch_size": 64}, "tensorrt": {"max_batch_size": 32}}
    with pytest.raises(ConfigError, match="tensorrt.max_batch_size.*benchmark.batch_size"):
        config.validate_config(bad)
    # With backends auto the check waits until TensorRT is chosen (registry.check_backend_config).
    validated = config.validate_config({**bad, "backends": "auto"})
    registry = pytest.importorskip("workflow_scripts.core.registry")
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setattr(type(registry.BACKENDS["tensorrt"]), "available", lambda self: (True, "stand-in"))
        monkeypatch.setattr(trt_backend, "version", lambda: "10.3.0")
        monkeypatch.setattr(trt_backend, "probe", lambda: {"ok": True, "num_DLA_cores": 0})
        with pytest.raises(ConfigError, match="tensorrt.max_batch_size"):
            registry.check_backend_config("tensorrt", validated, probe=True)
    finally:
        monkeypatch.undo()
