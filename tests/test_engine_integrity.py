"""The engine measured is the engine built (issue 25, items 1, 2 and 5).

Real engines of a small ONNX graph made with numpy (ONNX Runtime and OpenVINO; no TensorFlow), built
by the workflow's own build stage: the build records each file's SHA-256; a missing, empty,
truncated or replaced engine file is refused at load (latency, accuracy, device side) and in the
summary, naming the file, the cause and the command that rebuilds it; a killed OpenVINO build
leaves nothing the next build does not remove.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.backends import engine_check
from workflow_scripts.core import paths
from workflow_scripts.backends import get_backend
from workflow_scripts.core.discovery import FILE_KEYS
from workflow_scripts.core.errors import CorruptArtifact
from workflow_scripts.stages.engine import build_engine_benchmark

SIZE = 32
CELL = dict(device="cpu-box", dataset="digits", size=SIZE, model="MobileNetV3Small")


def small_onnx(path: Path, hidden: int = 64, seed: int = 0) -> Path:
    """An NHWC 32x32x3 classifier: flatten, MatMul, Relu, MatMul (about 0.8 MB of weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    features = SIZE * SIZE * 3
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w1"], ["hidden"]),
         helper.make_node("Relu", ["hidden"], ["relu"]),
         helper.make_node("MatMul", ["relu", "w2"], ["scores"])],
        "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "shape"),
         numpy_helper.from_array((rng.standard_normal((features, hidden)) * 0.01).astype(np.float32), "w1"),
         numpy_helper.from_array((rng.standard_normal((hidden, 10)) * 0.1).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny prepared split at 32 px (what the build reads: meta.json and the train split)."""
    import json

    out = tmp_path_factory.mktemp("data") / "digits_32px"
    out.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        np.save(out / f"{split}_images.npy", rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))
        np.save(out / f"{split}_labels.npy", (np.arange(n) % 10).astype(np.int64))
    (out / "meta.json").write_text(json.dumps({"dataset": "digits", "input_size": SIZE, "num_classes": 10}))
    return out


def build(results: Path, backend: str, data_dir: Path, precision: str = "fp32") -> Path:
    """One engine built by the workflow's build stage under ``results`` (path scheme); returns its path."""
    source = small_onnx(Path(paths.onnx_dir(str(results), CELL["device"], CELL["dataset"], SIZE, CELL["model"]))
                        / "model.onnx")
    engine = Path(paths.engine_file(str(results), CELL["device"], backend, CELL["dataset"], SIZE, CELL["model"],
                                    precision))
    fields = dict(results=str(results), backend=backend, precision=precision, **CELL)
    build_engine_benchmark(backend, source, engine, precision, data_dir, {"num_images": 16, "batch_size": 8}, {},
                           paths.engine_table("build").format(**fields),
                           paths.engine_table("build_resources").format(**fields), None, None,
                           warmup=0, repeats=1, monitor_interval_s=0.5, seed=0,
                           provenance={"device": CELL["device"], "backend": backend})
    return engine


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir) -> dict[str, Path]:
    results = tmp_path_factory.mktemp("built") / "results"
    return {backend: build(results, backend, data_dir) for backend in ("onnxruntime", "openvino")}


def copy_engine(engine: Path, tmp_path: Path, with_build_table: bool = True) -> Path:
    """A copy of an engine folder's files of one precision (engine, companions, build table)."""
    out = tmp_path / "engine"
    out.mkdir()
    for path in engine.parent.glob(f"{engine.stem}*"):
        if path.name.endswith("_build.parquet") and not with_build_table:
            continue
        shutil.copy2(path, out / path.name)
    return out / engine.name


def backend_of(engine: Path) -> str:
    return "openvino" if engine.suffix == ".xml" else "onnxruntime"


# --- digests recorded at the build -------------------------------------------------------------------------

def test_the_build_records_the_digest_of_every_engine_file(built):
    for backend, engine in built.items():
        table = pd.read_parquet(engine_check.build_table_of(engine))
        assert table["engine_sha256"].iloc[-1] == engine_check.file_sha256(engine)
        if backend == "openvino":
            assert table["engine_bin_sha256"].iloc[-1] == engine_check.file_sha256(engine.with_suffix(".bin"))
        runner = get_backend(backend).load_runner(engine, 1)  # the untouched engine loads
        assert runner.run(np.zeros((2, SIZE, SIZE, 3), np.float32)).shape == (2, 10)
        runner.close()


# --- refused at load: tampered, truncated, empty --------------------------------------------------------------

def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "same-size":
        path.write_bytes(bytes(b ^ 0x5A for b in data[:64]) + data[64:])  # other weights, same size
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("with_build_table", [True, False], ids=["digest-recorded", "older-build-no-digest"])
@pytest.mark.parametrize("target, how", [("onnx", "truncated"), ("onnx", "empty"), ("bin", "truncated"),
                                          ("bin", "empty"), ("bin", "same-size")])
def test_a_damaged_engine_is_refused_at_load_naming_file_cause_and_rebuild(built, tmp_path, target, how,
                                                                         with_build_table):
    engine = copy_engine(built["onnxruntime" if target == "onnx" else "openvino"], tmp_path, with_build_table)
    damaged = engine.with_suffix(f".{target}")
    damage(damaged, how)
    if how == "same-size" and not with_build_table:
        pytest.skip("without a recorded digest, other weights of the same size are a valid engine")
    with pytest.raises(CorruptArtifact) as info:
        runner = get_backend(backend_of(engine)).load_runner(engine, 1)
        runner.run(np.zeros((1, SIZE, SIZE, 3), np.float32))  # OpenVINO compiles at the first batch
    message = str(info.value)
    assert str(damaged) in message, message
    assert f"snakemake --cores all -f {engine}" in message
    cause = {"empty": "empty (0 bytes)", "truncated": "truncated", "same-size": "not the file its build wrote"}[how]
    assert cause in message, message


def test_a_missing_weights_file_is_refused_naming_it(built, tmp_path):
    engine = copy_engine(built["openvino"], tmp_path)
    engine.with_suffix(".bin").unlink()
    with pytest.raises(engine_check.EngineMissing, match=r"fp32\.bin .*is missing; rebuild it: snakemake"):
        get_backend("openvino").load_runner(engine, 1)


# --- the summary: missing engines left out, changed ones refused ----------------------------------------------

def summary_files(results: Path) -> dict[str, list[str]]:
    from workflow_scripts.core.discovery import discover_results

    return discover_results(results)


def test_the_summary_leaves_out_a_deleted_engine_and_refuses_a_replaced_one(tmp_path, data_dir, caplog):
    results = tmp_path / "results"
    engines = {precision: build(results, "openvino", data_dir, precision) for precision in ("fp32", "fp16")}
    files = summary_files(results)
    assert engine_check.check_summary_engines(files, results) == files
    engines["fp16"].with_suffix(".bin").unlink()
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.backends.engine_check"):
        kept = engine_check.check_summary_engines(files, results)
    assert not any("fp16_" in p for key in FILE_KEYS for p in kept.get(key, []))
    assert any("fp32_build" in p for p in kept["build_files"])
    assert "fp16.bin" in caplog.text and "left out of the summary" in caplog.text
    damage(engines["fp32"].with_suffix(".bin"), "same-size")
    with pytest.raises(CorruptArtifact, match=r"fp32\.bin is not the file its build wrote.*cpu-box"):
        engine_check.check_summary_engines(files, results)


# --- a killed OpenVINO build leaves nothing behind -----------------------------------------------------------

def test_the_next_build_removes_what_a_killed_openvino_build_left(tmp_path, data_dir):
    results = tmp_path / "results"
    folder = Path(paths.engine_dir(str(results), CELL["device"], "openvino", CELL["dataset"], SIZE, CELL["model"]))
    folder.mkdir(parents=True)
    # What kill -9 leaves: the IR folder of save_model (older versions named it without the precision)
    # and a scratch .bin of the timed build.
    for name in (".tmp-ir-fp32-k1ll3d_x", ".tmp-ir-abcd1234", ".tmp-ir-int8-running"):
        (folder / name).mkdir()
        (folder / name / "model.bin").write_bytes(b"\0" * 1000)
    (folder / ".tmp-q1w2e3r4-fp32.bin").write_bytes(b"\0" * 1000)
    build(results, "openvino", data_dir, "fp32")
    left = sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp"))
    # Another precision's folder may belong to a build running now (on another node): kept.
    assert left == [".tmp-ir-int8-running"], left


@pytest.mark.slow  # converts a (tiny) Keras model with TensorFlow's converter
@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_tflite_is_refused_at_load_naming_it(tmp_path, how):
    import keras

    from workflow_scripts.backends import litert as litert_backend

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10)])
    model.save(tmp_path / "model.keras")
    engine = tmp_path / "fp32.tflite"
    litert_backend.build_engine(tmp_path / "model.keras", engine, "fp32")
    get_backend("litert").load_runner(engine, 1).close()
    damage(engine, how)
    with pytest.raises(CorruptArtifact) as info:
        get_backend("litert").load_runner(engine, 1)
    message = str(info.value)
    assert str(engine) in message and f"snakemake --cores all -f {engine}" in message
    assert ("empty (0 bytes)" if how == "empty" else "damaged or truncated") in message, message
