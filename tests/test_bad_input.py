"""Bad input: every refusal names the offending key, file or value and says what to do, fails
before long work starts where the error is knowable early, and leaves nothing half-written.

CLI tests run the real ``snakemake`` on a tiny config in a temporary folder (as tests/test_workflow.py
does); the rest call the checking functions directly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.archive_factory import make_cifar100_python_archive
from workflow_scripts.core.device import detect_device_tag
from workflow_scripts.core.errors import ConfigError, DatasetUnavailable, EdgePTQError
from tests.cli import DATA, MODEL_DIR, REPO, SNAKEFILE, TINY, job_counts, output_of, snakemake, snakemake_command


def scratch_files(folder: Path) -> list[Path]:
    """Half-written files: the workflow's ``.tmp-*`` scratch files, downloads and extractions in progress."""
    patterns = (".tmp-*", "*.part", ".*.extracting-*", "edgeptq-int8-*")
    return [p for pattern in patterns for p in Path(folder).rglob(pattern)]


def assert_failed_with(result: subprocess.CompletedProcess, *needles: str) -> str:
    text = output_of(result)
    assert result.returncode != 0, text[-3000:]
    for needle in needles:
        assert needle in text, f"{needle!r} not in the output:\n{text[-3000:]}"
    return text


# ---------------------------------------------------------------------------------------------
# Config errors: refused while planning (snakemake -n), before any job, with nothing written.


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        (["input_size=16"], ["Set a valid value", "'input_size'", "16", "minimum of 32", "config/schema.yaml"]),
        # A name that is neither built in nor a user model/dataset: the choices and the user_* key to add it under.
        (["models=[ResNet50]"], ["config key 'models'", "'ResNet50'", "MobileNetV3Small", "user_models"]),
        (["datasets=[imagenet]"], ["config key 'datasets'", "'imagenet'", "cifar100", "user_datasets"]),
        (["precisions=[int4]"], ["Set a valid value", "'precisions[0]'", "'int4'", "fp16", "config/schema.yaml"]),
    ],
    ids=["invalid-value", "unknown-model", "unknown-dataset", "unknown-precision"],
)
@pytest.mark.slow  # the real snakemake CLI
def test_config_errors_fail_at_planning_time(tmp_path, override, needles):
    result = snakemake(tmp_path, "-n", "--config", *override, check=False)
    text = assert_failed_with(result, "ConfigError", *needles)
    assert "Traceback (most recent call last)" not in text
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # the real snakemake CLI
def test_results_dir_under_a_file_fails_at_planning_time(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a regular file where a folder would have to be\n")
    results = blocker / "results"
    result = snakemake(tmp_path, "-n", "--config", f"results_dir={results}", check=False)
    text = assert_failed_with(result, "'results_dir'", str(results), str(blocker), "is a file",
                              "set results_dir to a folder you can write")
    assert "Traceback (most recent call last)" not in text
    assert blocker.read_text().startswith("a regular file")


# Run by the candidate way of running without the right to ignore permission bits: it must run
# the venv's Python, import snakemake, read the Snakefile, and be refused writing into argv[1].
UNPRIVILEGED_PROBE = """
import sys
import snakemake  # noqa: F401  (the venv is readable)
open(sys.argv[2]).read()  # so is the repository
try:
    open(sys.argv[1] + "/probe", "w")
except PermissionError:
    sys.exit(0)
sys.exit(3)
"""


def chown_tree(folder: Path, uid: int, gid: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


def unprivileged_way(work: Path, readonly: Path, env: dict) -> tuple[list[str], dict, str] | None:
    """(command prefix, subprocess arguments, description) of a way to run the CLI for which ``readonly``
    is really read-only, or None. Root ignores permission bits (the tests run as root, CI too), so a
    root test process runs it as ``nobody`` or, where nobody cannot reach the interpreter (e.g. a
    Python under /root), as root with every capability dropped (``setpriv``)."""
    candidates: list[tuple[list[str], dict, str, int | None]] = []
    if os.geteuid() != 0:
        candidates.append(([], {}, f"the unprivileged user {os.geteuid()}", None))
    else:
        try:
            nobody = pwd.getpwnam("nobody")
            candidates.append(([], {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []},
                               "user nobody", nobody.pw_uid))
        except KeyError:
            pass
        if shutil.which("setpriv"):
            candidates.append((["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"], {},
                               "root without capabilities (setpriv)", None))
    for prefix, kwargs, description, owner in candidates:
        if owner is not None:
            chown_tree(work, owner, kwargs["group"])  # the run's own folder (.snakemake/, HOME)
        try:
            probe = subprocess.run([*prefix, sys.executable, "-c", UNPRIVILEGED_PROBE, str(readonly), str(SNAKEFILE)],
                                   cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False,
                                   **kwargs)
            if probe.returncode == 0:
                return prefix, kwargs, description
        except OSError:  # e.g. nobody may not execute the interpreter
            pass
        if owner is not None:
            chown_tree(work, os.geteuid(), os.getegid())
    return None


@pytest.mark.slow  # the real snakemake CLI
@pytest.mark.parametrize("below", [False, True], ids=["read-only-folder", "under-a-read-only-folder"])
def test_read_only_results_dir_fails_at_planning_time(below):
    # tmp_path lies in a 0700 folder of root's; the unprivileged run needs a folder it can enter.
    work = Path(tempfile.mkdtemp(prefix="edgeptq-readonly-"))
    readonly = work / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    results = readonly / "results" if below else readonly
    env = {**os.environ, "HOME": str(work / "home"), "MPLCONFIGDIR": str(work / "home" / "mpl"),
           "XDG_CACHE_HOME": str(work / "home" / "cache")}
    try:
        way = unprivileged_way(work, readonly, env)
        if way is None:
            pytest.skip("cannot make a folder read-only for the workflow: the tests run as root, and neither "
                        "user nobody (with the venv and repository readable by it) nor setpriv is available")
        prefix, kwargs, description = way
        # A real run of the default target (not -n): had planning passed, jobs would start.
        command = [*prefix, *snakemake_command(work, "--config", f"results_dir={results}")]
        if kwargs:
            chown_tree(work, kwargs["user"], kwargs["group"])  # config.yaml, written just now
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
                                **kwargs)
        text = assert_failed_with(result, "ConfigError", "'results_dir'", str(results), f"the folder {readonly} "
                                  "is not writable", "fix its permissions or set results_dir to a folder you can write")
        assert "Traceback (most recent call last)" not in text, description
        # Refused while planning: no job was scheduled, let alone started.
        assert job_counts(text) == {} and "rule " not in text and "Building DAG" not in text, text[-3000:]
        # Nothing half-written: the folder is untouched, no scratch file, no output marked incomplete.
        assert list(readonly.iterdir()) == []
        assert not scratch_files(work)
        for state in ("incomplete", "locks"):
            folder = work / ".snakemake" / state
            assert not folder.exists() or not any(folder.iterdir()), (state, list(folder.iterdir()))
    finally:
        readonly.chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# What the chosen backend cannot do (TensorRT is absent here: the check is tested directly).


def test_backend_options_accepts_what_onnxruntime_can_do():
    from workflow_scripts.core.registry import check_backend_config as check_backend_options

    for method in ("entropy", "minmax", "percentile"):
        check_backend_options("onnxruntime", {"precisions": ["fp32", "int8"], "calibration": {"method": method}})


@pytest.mark.parametrize("method", ["percentile", "minmax"])
def test_tensorrt_refuses_a_calibration_method_it_cannot_do(method):
    from workflow_scripts.core.registry import check_backend_config as check_backend_options

    config = {"precisions": ["fp32", "int8"], "calibration": {"method": method},
              "tensorrt": {"int8_mode": "calibration"}}
    with pytest.raises(ConfigError) as err:
        check_backend_options("tensorrt", config)
    message = str(err.value)
    assert "'calibration.method'" in message and repr(method) in message and "'tensorrt'" in message
    assert "['entropy']" in message and "'onnxruntime'" in message


def test_tensorrt_calibration_method_matters_only_when_it_calibrates():
    from workflow_scripts.core.registry import check_backend_config as check_backend_options

    check_backend_options("tensorrt", {"precisions": ["fp32", "int8"], "calibration": {"method": "entropy"}})
    # No int8, or explicit Q/DQ int8: TensorRT never calibrates, so the method is irrelevant.
    check_backend_options("tensorrt", {"precisions": ["fp32", "fp16"], "calibration": {"method": "percentile"}})
    check_backend_options("tensorrt", {"precisions": ["int8"], "calibration": {"method": "percentile"},
                                       "tensorrt": {"int8_mode": "qdq"}})


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_backend_refuses_an_unknown_precision(backend):
    from workflow_scripts.core.registry import check_backend_config as check_backend_options

    with pytest.raises(ConfigError, match=r"'precisions'.*int4.*use a subset of"):
        check_backend_options(backend, {"precisions": ["fp32", "int4"], "calibration": {}})



# ---------------------------------------------------------------------------------------------
# Dataset archives, through the prepare_dataset rule.


def cifar_config(resources: Path, verify: bool = True) -> dict:
    return {**TINY, "datasets": ["cifar100"], "resources_dir": str(resources), "verify_checksums": verify}


def assert_nothing_prepared(workdir: Path, resources: Path) -> None:
    data = workdir / "results" / "data" / "cifar100_32px"
    assert not data.exists() or not any(data.iterdir()), list(data.iterdir())
    assert not scratch_files(workdir) and not scratch_files(resources)
    # The run stopped at its first job: no training started.
    assert not (workdir / "results" / "logs" / "train_model").exists()
    assert not (workdir / "results" / "models").exists()


@pytest.mark.slow  # the real snakemake CLI
def test_missing_archive_names_file_folder_and_url(tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    # The default target: the whole study fails at its first job (there is no network here).
    result = snakemake(tmp_path, config=cifar_config(resources), check=False)
    text = assert_failed_with(result, "prepare_dataset", "cifar-100-python.tar.gz", str(resources),
                              "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")
    assert "Put either" in text
    # At most the (empty) extraction folder: no partial download.
    assert [p for p in resources.rglob("*") if not p.is_dir()] == []
    assert_nothing_prepared(tmp_path, resources)


@pytest.mark.slow  # the real snakemake CLI
def test_truncated_archive_is_named_with_the_fix(tmp_path):
    resources = tmp_path / "resources"
    archive = resources / "cifar-100-python.tar.gz"
    make_cifar100_python_archive(archive, n_train=200, n_test=50)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    # With checksums off the extraction itself must notice the truncation.
    result = snakemake(tmp_path, "results/data/cifar100_32px/meta.json", config=cifar_config(resources, verify=False),
                       check=False)
    assert_failed_with(result, str(archive), "truncated or corrupt", "Delete it and download it again")
    assert sorted(p.name for p in resources.iterdir()) == ["cifar-100-python.tar.gz", "extracted"]
    assert not any((resources / "extracted").iterdir())
    assert_nothing_prepared(tmp_path, resources)


@pytest.mark.slow  # the real snakemake CLI
def test_checksum_mismatch_is_named_with_the_fix(tmp_path):
    resources = tmp_path / "resources"
    archive = resources / "cifar-100-python.tar.gz"
    # A well-formed archive in the official format, but not the published bytes.
    actual = make_cifar100_python_archive(archive)
    result = snakemake(tmp_path, "results/data/cifar100_32px/meta.json", config=cifar_config(resources), check=False)
    assert_failed_with(result, "checksum mismatch", str(archive), actual, "eb9058c3a382ffc7106e4002c42a8d85",
                       "delete it", "verify_checksums: false")
    assert archive.is_file(), "the user's file is reported, not deleted"
    assert_nothing_prepared(tmp_path, resources)


# ---------------------------------------------------------------------------------------------
# Model files, through the export_onnx and evaluate_keras rules.


@pytest.fixture(scope="module")
def prepared_workdir(tmp_path_factory) -> Path:
    """A workdir whose digits data is prepared (the cheap first job), so a model file can be planted."""
    workdir = tmp_path_factory.mktemp("prepared")
    snakemake(workdir, f"{DATA}/meta.json")
    return workdir


@pytest.fixture
def workdir(prepared_workdir, tmp_path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(prepared_workdir, copy, symlinks=True)  # .snakemake/ metadata included
    return copy


def plant(workdir: Path, keras_bytes: bytes) -> Path:
    """Put a model file where train_model would have written it (newer than the data, so it is kept)."""
    path = workdir / MODEL_DIR / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(keras_bytes)
    return path


def tiny_keras_bytes(tmp_path: Path, with_lambda: bool) -> bytes:
    import keras

    inputs = keras.Input((32, 32, 3), name="images")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    path = tmp_path / "tiny.keras"
    keras.Model(inputs, outputs).save(path)
    return path.read_bytes()


@pytest.mark.slow  # the real snakemake CLI
def test_truncated_keras_file_fails_the_export_naming_file_and_fix(workdir, tmp_path):
    data = tiny_keras_bytes(tmp_path, with_lambda=False)
    model = plant(workdir, data[: len(data) // 2])
    device = detect_device_tag()
    onnx = f"results/{device}/onnx/digits_32px/MobileNetV3Small/model.onnx"
    plan = snakemake(workdir, "-n", onnx)
    assert "rule train_model:" not in output_of(plan), "the planted model is used, not retrained"
    result = snakemake(workdir, onnx, check=False)
    assert_failed_with(result, "export_onnx", str(model.relative_to(workdir)), "corrupt or truncated",
                       "delete it and rerun its train_model rule")
    export_dir = (workdir / onnx).parent
    assert not export_dir.exists() or not any(export_dir.iterdir()), list(export_dir.iterdir())
    assert not scratch_files(workdir)


@pytest.mark.slow  # the real snakemake CLI
def test_lambda_layer_is_refused_in_safe_mode_with_the_reason(workdir, tmp_path):
    model = plant(workdir, tiny_keras_bytes(tmp_path, with_lambda=True))
    target = f"{MODEL_DIR}/accuracy.parquet"
    result = snakemake(workdir, target, check=False)
    assert_failed_with(result, "evaluate_keras", str(model.relative_to(workdir)), "Lambda", "safe mode",
                       "would execute code from the file", "Rebuild the model without Lambda layers")
    assert not (workdir / target).exists() and not (workdir / MODEL_DIR / "predictions.parquet").exists()
    assert model.is_file(), "the refused model is not deleted (it may be someone's work)"
    assert not scratch_files(workdir)


# ---------------------------------------------------------------------------------------------
# ONNX models and engines, through the build and evaluation functions.


def nhwc_model(tmp_path: Path, threshold: float, name: str = "nan.onnx", size: int = 32) -> Path:
    """A float32 NHWC 32x32x3 -> (N, 10) model whose scores are log(mean pixel - threshold):
    NaN (or -Inf) for every image darker than ``threshold``."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),  # (N,)
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean2d"]),  # (N, 1)
        helper.make_node("Mul", ["mean2d", "ones"], ["spread"]),  # (N, 10)
        helper.make_node("Add", ["spread", "offsets"], ["shifted"]),
        helper.make_node("Log", ["shifted"], ["scores"]),
    ]
    offsets = (-threshold + np.arange(10, dtype=np.float32)).astype(np.float32)
    inits = [
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("ones", TensorProto.FLOAT, [1, 10], [1.0] * 10),
        # Class k scores log(mean - threshold + k): class 0 is NaN for every image darker than threshold.
        helper.make_tensor("offsets", TensorProto.FLOAT, [10], offsets.tolist()),
    ]
    graph = helper.make_graph(
        nodes, "nan_model",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_engine_with_nan_outputs_is_counted_not_fatal(tmp_path, digits_dir):
    import pandas as pd

    from workflow_scripts.backends.onnxruntime import load_runner
    from workflow_scripts.data.data_io import open_split
    from workflow_scripts.stages.evaluate import evaluate

    images, _ = open_split(digits_dir, "test")
    means = np.sort(np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3)))
    # A threshold halfway between two distinct image means, near the median: about half are NaN.
    k = len(means) // 2
    while means[k + 1] == means[k]:
        k += 1
    threshold = float((means[k] + means[k + 1]) / 2)
    expected = int((means < threshold).sum())
    assert 0 < expected < len(means)
    engine = nhwc_model(tmp_path, threshold)
    summary = evaluate(load_runner(engine, 1), digits_dir, batch_size=7, max_images=0,
                       accuracy_path=tmp_path / "accuracy.parquet", predictions_path=tmp_path / "predictions.parquet",
                       labels={"dataset": "digits", "model": "nan", "precision": "fp32", "input_size": 32},
                       provenance={"device": "test", "backend": "onnxruntime"})
    assert summary["images"] == len(means)
    assert summary["nonfinite_outputs"] == expected
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert (~predictions["finite_output"]).sum() == expected
    # A NaN row counts as wrong (prediction -1), never as a lucky class.
    assert (predictions.loc[~predictions["finite_output"], "prediction"] == -1).all()
    assert not predictions.loc[~predictions["finite_output"], "top5_correct"].any()
    assert pd.read_parquet(tmp_path / "accuracy.parquet").loc[0, "nonfinite_outputs"] == expected


def invalid_onnx(tmp_path: Path) -> Path:
    """An ONNX file that parses but fails onnx.checker: a node reads a tensor nothing produces."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["scores"])], "broken",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 32, 32, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def build_args(tmp_path: Path, onnx_path: Path, data_dir: Path, precision: str, num_images: int = 8) -> dict:
    out = tmp_path / "engines"
    return dict(
        backend="onnxruntime", source_path=onnx_path, engine_path=out / f"{precision}.onnx", precision=precision,
        data_dir=data_dir, calibration={"method": "minmax", "num_images": num_images, "batch_size": 4,
                                        "per_channel": True, "percentile": 99.999},
        backend_options={}, build_table=out / f"{precision}_build.parquet",
        resources_table=out / f"{precision}_build_resources.parquet",
        calibration_json=out / "int8_calibration.json", calibration_cache=out / "int8_calibration.cache",
        warmup=0, repeats=1, monitor_interval_s=0.1, seed=0, provenance={"device": "test", "backend": "onnxruntime"},
    )


@pytest.mark.parametrize("damage", ["checker", "truncated"])
def test_invalid_onnx_is_refused_before_the_engine_build(tmp_path, digits_dir, damage):
    from workflow_scripts.stages.engine import InvalidOnnxModel, build_engine_benchmark, check_onnx_model

    if damage == "checker":
        path = invalid_onnx(tmp_path)
    else:
        path = nhwc_model(tmp_path, 1.0, name="model.onnx")
        path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InvalidOnnxModel) as err:
        check_onnx_model(path)
    message = str(err.value)
    assert str(path) in message and "not a valid ONNX model" in message
    assert "delete it and rerun its export_onnx rule" in message
    with pytest.raises(InvalidOnnxModel):
        build_engine_benchmark(**build_args(tmp_path, path, digits_dir, "fp32"))
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_calibration_larger_than_the_train_split_names_key_and_maximum(tmp_path, digits_dir):
    from workflow_scripts.data.data_io import open_split
    from workflow_scripts.stages.engine import build_engine_benchmark

    available = len(open_split(digits_dir, "train")[1])
    onnx_path = nhwc_model(tmp_path, 1.0, name="model.onnx")
    with pytest.raises(DatasetUnavailable) as err:
        build_engine_benchmark(**build_args(tmp_path, onnx_path, digits_dir, "int8", num_images=available + 1))
    message = str(err.value)
    assert "'calibration.num_images'" in message and str(available + 1) in message
    assert f"at most {available}" in message
    assert isinstance(err.value, EdgePTQError)  # the shim logs it as one line and exits 1
    engines = tmp_path / "engines"
    assert not engines.exists() or not any(engines.iterdir()), "refused before calibration: nothing written"


def test_a_model_whose_input_is_not_the_configured_size_is_refused_at_the_build(tmp_path, digits_dir):
    from workflow_scripts.stages.engine import InvalidOnnxModel, build_engine_benchmark

    path = nhwc_model(tmp_path, 1.0, name="model.onnx", size=64)  # the prepared data are 32x32
    with pytest.raises(InvalidOnnxModel) as err:
        build_engine_benchmark(**build_args(tmp_path, path, digits_dir, "fp32"))
    message = str(err.value)
    assert str(path) in message and "64x64" in message and "'input_size'" in message and "32x32" in message
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_a_keras_model_of_another_size_is_refused_too(tmp_path, keras_model_path):
    from workflow_scripts.stages.engine import InvalidOnnxModel, check_input_size, source_input_hw

    assert source_input_hw(keras_model_path) == (32, 32)
    check_input_size(keras_model_path, 32)
    with pytest.raises(InvalidOnnxModel, match="takes 32x32 images but config key 'input_size'.* 96x96"):
        check_input_size(keras_model_path, 96)
