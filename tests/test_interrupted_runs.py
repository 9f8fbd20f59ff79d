"""Interrupted runs: each long job kind is killed with SIGKILL mid-work, whole process group and
Snakemake included (a power cut, an OOM kill), and ``snakemake --rerun-incomplete`` then finishes
the work with correct results.

A module fixture builds the upstream once (data, model, ONNX, FP32 engine); every test works on
a copy of that folder, ``.snakemake/`` metadata included.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli import ENGINE_DIR, MODEL_DIR, ONNX_DIR, job_counts, log_of, snakemake_command, tiny
from tests.cli import snakemake as run_snakemake

pytestmark = pytest.mark.slow

# The test split is made larger than the default (45% of digits, about 810 images) so that an
# evaluation at batch size 1 lasts long enough to be interrupted, and training (on the smaller
# train split) is quicker.
TINY = tiny(split={"test_fraction": 0.45})
START_TIMEOUT_S = 180


def command(workdir: Path, *args: str) -> list[str]:
    """The CLI command for ``workdir``, with the config already written there."""
    return snakemake_command(workdir, *args, config=yaml.safe_load((workdir / "config.yaml").read_text()))


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI with the config already in ``workdir``; return the finished process."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    return run_snakemake(workdir, *args, config=config, check=check)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """Prepared data, a trained model, its ONNX export and the FP32 engine, built once."""
    workdir = tmp_path_factory.mktemp("upstream")
    write_config(workdir, TINY)
    snakemake(workdir, f"{ENGINE_DIR}/fp32.onnx")
    return workdir


def copy_of(upstream: Path, tmp_path: Path, config: dict, remove: list[str]) -> Path:
    """A copy of the upstream folder (metadata included) with ``config`` and without ``remove``."""
    workdir = tmp_path / "work"
    shutil.copytree(upstream, workdir, symlinks=True)
    assert (workdir / ".snakemake").is_dir()
    write_config(workdir, config)
    for name in remove:
        (workdir / name).unlink(missing_ok=True)
    return workdir


def started_working(workdir: Path, log: str, watch: str) -> bool:
    """The job's log has content, or a scratch file (or INT8 work folder) appeared in its folder."""
    log_path = workdir / log
    if log_path.is_file() and log_path.stat().st_size > 0:
        return True
    folder = workdir / watch
    return folder.is_dir() and any(p.name.startswith((".tmp-", "edgeptq-int8-")) for p in folder.iterdir())


def run_and_kill(workdir: Path, target: str, log: str, watch: str, settle_s: float) -> subprocess.Popen:
    """Start the CLI on ``target``, wait until the job works, then SIGKILL the whole process group."""
    with open(workdir / "killed_run.txt", "w") as out:
        process = subprocess.Popen(command(workdir, target), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not started_working(workdir, log, watch):
            if process.poll() is not None:
                raise AssertionError("the run ended before it could be interrupted:\n"
                                     + (workdir / "killed_run.txt").read_text()[-4000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"the job did not start working within {START_TIMEOUT_S} s")
            time.sleep(0.01)
        time.sleep(settle_s)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    return process


def incomplete_markers(workdir: Path) -> set[str]:
    """Outputs Snakemake marked as started but not finished (its .snakemake/incomplete/ folder)."""
    folder = workdir / ".snakemake" / "incomplete"
    if not folder.is_dir():
        return set()
    return {base64.urlsafe_b64decode(p.name).decode() for p in folder.iterdir() if p.is_file()}


def assert_interrupted_cleanly(workdir: Path, target: str, outputs: list[str]) -> bool:
    """No final output of the killed job, or Snakemake marks it incomplete and will not use it.

    Returns False when the job had already finished when the kill came (the caller retries).
    """
    existing = [name for name in outputs if (workdir / name).exists()]
    markers = incomplete_markers(workdir)
    if len(existing) == len(outputs) and not markers & set(outputs):
        return False
    assert set(outputs) <= markers, (outputs, markers)
    if existing:
        # Some outputs were published before the kill: Snakemake must call them incomplete.
        plan = snakemake(workdir, "-n", target, check=False)
        text = plan.stdout + plan.stderr
        assert plan.returncode != 0 and "incomplete" in text.lower(), text[-3000:]
    return True


def resume(workdir: Path, target: str) -> subprocess.CompletedProcess:
    """How a user resumes: release the dead run's lock, then rerun what is incomplete."""
    locked = snakemake(workdir, target, check=False)
    text = locked.stdout + locked.stderr
    # The killed Snakemake could not release its lock (or its incomplete markers): a plain run
    # refuses and says what to do.
    assert locked.returncode != 0 and ("--unlock" in text or "--rerun-incomplete" in text), text[-3000:]
    snakemake(workdir, "--unlock", target)
    result = snakemake(workdir, "--rerun-incomplete", target)
    assert "Nothing to be done" in (snakemake(workdir, "-n", target).stdout)
    assert not [p for p in (workdir / "results").rglob("*") if p.name.startswith((".tmp-", "edgeptq-int8-"))], \
        "the rerun removed what the killed job left half-written"
    return result


def interrupt_and_resume(upstream: Path, tmp_path: Path, config: dict, target: str, outputs: list[str], log: str,
                         watch: str, settle_s: float, attempts: int = 1) -> Path:
    for _ in range(attempts):
        # The job's old log goes too: its content would look like the new job at work.
        workdir = copy_of(upstream, tmp_path, config, remove=outputs + [log])
        run_and_kill(workdir, target, log, watch, settle_s)
        if assert_interrupted_cleanly(workdir, target, outputs):
            break
        shutil.rmtree(workdir)  # the job outran the kill: try again on a fresh copy
    else:
        pytest.fail(f"the job finished before it could be killed in {attempts} attempts")
    resume(workdir, target)
    for name in outputs:
        assert (workdir / name).is_file(), name
    return workdir


def test_interrupted_training_resumes(upstream, tmp_path):
    outputs = [f"{MODEL_DIR}/model.keras", f"{MODEL_DIR}/history.parquet"]
    workdir = interrupt_and_resume(upstream, tmp_path, TINY, outputs[0], outputs,
                                   log=log_of("train_model", "model"),
                                   watch=MODEL_DIR, settle_s=3.0)
    from workflow_scripts.models.zoo import load_keras_model

    model = load_keras_model(workdir / outputs[0])
    assert model.output_shape == (None, 10)
    history = pd.read_parquet(workdir / outputs[1])
    assert len(history) == TINY["train"]["epochs"] and history["kept"].sum() == 1


def test_interrupted_onnx_conversion_resumes(upstream, tmp_path):
    config = {**TINY, "compression": {"warmup": 0, "repeats": 2}}
    outputs = [f"{ONNX_DIR}/{name}" for name in ("model.onnx", "export.parquet", "export_resources.parquet")]
    workdir = interrupt_and_resume(upstream, tmp_path, config, outputs[0], outputs,
                                   log=log_of("export_onnx", "onnx"),
                                   watch=ONNX_DIR, settle_s=0.5)
    import onnx

    onnx.checker.check_model(str(workdir / outputs[0]))
    timings = pd.read_parquet(workdir / outputs[1])
    assert len(timings) == 2 and (timings["parity_max_abs_diff"] < 1e-4).all()


def test_interrupted_int8_calibration_resumes(upstream, tmp_path):
    config = {**TINY, "calibration": {"num_images": 512, "batch_size": 1}}
    names = ("int8.onnx", "int8_build.parquet", "int8_build_resources.parquet", "int8_calibration.json",
             "int8_calibration.cache")
    outputs = [f"{ENGINE_DIR}/{name}" for name in names]
    workdir = interrupt_and_resume(upstream, tmp_path, config, outputs[0], outputs,
                                   log=log_of("build_engine", "engine", "int8"),
                                   watch=ENGINE_DIR, settle_s=1.0)
    from workflow_scripts.backends.onnxruntime import count_ops, load_runner

    assert count_ops(workdir / outputs[0]).get("QuantizeLinear", 0) > 0
    runner = load_runner(workdir / outputs[0], 1)
    runner.close()
    build = pd.read_parquet(workdir / outputs[1])
    assert len(build) == 1 and build.loc[0, "calibration_images"] == 512
    assert json.loads((workdir / outputs[3]).read_text())


def test_interrupted_latency_run_resumes(upstream, tmp_path):
    config = {**TINY, "benchmark": {**TINY["benchmark"], "min_duration_s": 6.0}}
    outputs = [f"{ENGINE_DIR}/fp32_{name}.parquet" for name in ("latency", "latency_samples", "latency_resources")]
    workdir = interrupt_and_resume(upstream, tmp_path, config, outputs[0], outputs,
                                   log=log_of("benchmark_latency", "engine"),
                                   watch=ENGINE_DIR, settle_s=1.0)
    summary = pd.read_parquet(workdir / outputs[0])
    assert len(summary) == 1 and bool(summary.loc[0, "valid"]) and summary.loc[0, "measured_duration_s"] >= 6.0
    assert len(pd.read_parquet(workdir / outputs[1])) == summary.loc[0, "iterations"]


def test_interrupted_evaluation_resumes(upstream, tmp_path):
    config = {**TINY, "evaluate": {"batch_size": 1}}
    outputs = [f"{ENGINE_DIR}/fp32_accuracy.parquet", f"{ENGINE_DIR}/fp32_predictions.parquet"]
    # The first progress line comes after 20 of about 810 images; a busy machine could still let
    # the job outrun the kill, hence a few attempts.
    workdir = interrupt_and_resume(upstream, tmp_path, config, outputs[0], outputs,
                                   log=log_of("evaluate_engine", "engine"),
                                   watch=ENGINE_DIR, settle_s=0.0, attempts=3)
    test_images = json.loads((workdir / "results/data/digits_32px/meta.json").read_text())["counts"]["test"]
    assert test_images > 700
    accuracy = pd.read_parquet(workdir / outputs[0])
    predictions = pd.read_parquet(workdir / outputs[1])
    assert accuracy.loc[0, "images"] == test_images == len(predictions)
    assert list(predictions["image_index"]) == list(range(test_images))


# --- a forced engine rebuild killed at any moment (issue 25, item 1) --------------------------------------
# The engines are the product: after a kill -9 of `snakemake -f <engine>` and the README's resume
# (--unlock, then --rerun-incomplete on the default target), every engine of the matrix is present
# with its companion files and is the file its build table and the summary describe.

MATRIX = {**TINY, "backends": ["onnxruntime", "openvino"], "precisions": ["fp32"]}
OV_ENGINE = ENGINE_DIR.replace("/onnxruntime/", "/openvino/") + "/fp32.xml"
OV_LOG = log_of("build_engine", "engine").replace("/onnxruntime/", "/openvino/")


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


KILL_POINTS = {
    # Snakemake has planned and started the build job (it rewrites the job's log).
    "job-started": lambda workdir, before: mtime(workdir / OV_LOG) != before[OV_LOG],
    # OpenVINO is writing the IR into its temporary folder.
    "writing-ir": lambda workdir, before: any((workdir / OV_ENGINE).parent.glob(".tmp-ir-*")),
    # The new engine was published (its build table may or may not be written yet).
    "published": lambda workdir, before: mtime(workdir / OV_ENGINE) not in (0, before[OV_ENGINE]),
}


@pytest.fixture(scope="module")
def finished(upstream, tmp_path_factory) -> Path:
    """The default target of a two-backend matrix, finished (upstream reused)."""
    workdir = tmp_path_factory.mktemp("finished") / "work"
    shutil.copytree(upstream, workdir, symlinks=True)
    write_config(workdir, MATRIX)
    snakemake(workdir)
    return workdir


def kill_when(workdir: Path, args: list[str], point) -> str:
    """Start the CLI with ``args``, SIGKILL its process group as soon as ``point`` holds; how it ended."""
    before = {name: mtime(workdir / name) for name in (OV_ENGINE, OV_LOG)}
    with open(workdir / "killed_run.txt", "w") as out:
        process = subprocess.Popen(command(workdir, *args), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not point(workdir, before):
            if process.poll() is not None:
                return "finished before the kill"
            if time.monotonic() > deadline:
                raise AssertionError(f"the kill point was not reached within {START_TIMEOUT_S} s")
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    return "killed"


def assert_matrix_consistent(workdir: Path) -> None:
    """Every engine of the matrix present (companions too), equal to the digest its build recorded and
    to the summary's rows; every measurement newer than its engine; nothing half-written left."""
    from tests.cli import DEVICE
    from workflow_scripts.core import paths
    from workflow_scripts.backends.engine_check import engine_digests
    from workflow_scripts.core.registry import backend as backend_entry

    results = workdir / "results"
    compression = pd.read_parquet(results / "summary" / "compression.parquet")
    decision = pd.read_parquet(results / "summary" / "decision.parquet")
    summary_mtime = (results / "summary" / "compression.parquet").stat().st_mtime_ns
    for backend in MATRIX["backends"]:
        for precision in MATRIX["precisions"]:
            engine = Path(paths.engine_file(str(results), DEVICE, backend, "digits", 32, "MobileNetV3Small",
                                            precision))
            for path in [engine] + [engine.with_suffix(f".{e}") for e in backend_entry(backend).companions]:
                assert path.is_file() and path.stat().st_size > 0, path
            digests = engine_digests(backend, engine)
            build = pd.read_parquet(engine.with_name(f"{precision}_build.parquet"))
            rows = compression[(compression["stage"] == "engine_build") & (compression["backend"] == backend)
                               & (compression["precision"] == precision)]
            assert len(rows) > 0
            for column, digest in digests.items():
                assert set(build[column]) == {digest}, (engine, column)
                assert set(rows[column]) == {digest}, (engine, column, "summary")
            for kind in ("latency", "accuracy", "predictions"):
                table = engine.with_name(f"{precision}_{kind}.parquet")
                assert table.stat().st_mtime_ns >= engine.stat().st_mtime_ns, table
                assert summary_mtime >= table.stat().st_mtime_ns, table
    named = decision[["backend", "precision"]].drop_duplicates()
    for _, row in named.iterrows():
        assert Path(paths.engine_file(str(results), DEVICE, row["backend"], "digits", 32, "MobileNetV3Small",
                                      row["precision"])).is_file(), row.to_dict()
    assert not [p for p in results.rglob("*") if p.name.startswith((".tmp-", "edgeptq-int8-"))]


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_forced_engine_rebuild_killed_at_any_moment_resumes_to_a_consistent_matrix(finished, tmp_path, point):
    workdir = tmp_path / "work"
    shutil.copytree(finished, workdir, symlinks=True)
    assert_matrix_consistent(workdir)
    ended = kill_when(workdir, ["-f", OV_ENGINE], KILL_POINTS[point])
    print(f"kill point {point}: {ended}")
    if point != "published":  # the last point may come after the job's end on a fast machine
        assert ended == "killed", ended
    # The README's resume, whatever the kill left (a lock, incomplete markers, or nothing).
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--rerun-incomplete")
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout, ended
    assert_matrix_consistent(workdir)


@pytest.mark.parametrize("deleted", ["fp32.xml", "fp32.bin"])
def test_a_deleted_engine_file_is_rebuilt_by_the_default_run(finished, tmp_path, deleted):
    workdir = tmp_path / "work"
    shutil.copytree(finished, workdir, symlinks=True)
    (workdir / OV_ENGINE).with_name(deleted).unlink()
    plan = snakemake(workdir, "-n")
    counts = job_counts(plan.stdout)
    # The engine is rebuilt, and everything measured on it remeasured and summarized again.
    assert counts.get("build_engine_openvino") == 1 and counts.get("benchmark_latency") == 1, counts
    assert counts.get("evaluate_engine") == 1 and counts.get("summarize") == 1, counts
