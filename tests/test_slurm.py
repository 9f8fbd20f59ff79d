"""The workflow on a real SLURM cluster through snakemake-executor-plugin-slurm and profiles/slurm.

Needs a working SLURM (``sinfo`` answers with an idle node) or the rights to start one with
``.ci/slurm-up`` (root, apt-get); skips with the reason otherwise, and stops what it started.
The tiny config runs through ``--profile profiles/slurm`` and locally; the outputs must agree.
Run alone: ``python -m pytest -m slurm -s tests/test_slurm.py`` (-s shows the wall times).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli import DATA, ENGINE_DIR, MODEL_DIR, ONNX_DIR, REPO, output_of, snakemake, snakemake_command

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = REPO / "profiles" / "slurm"
# A tiny run is ~13 jobs; each waits for a status poll. Generous: no timing is asserted.
RUN_TIMEOUT_S = 2400
PRECISIONS = ("fp32", "fp16", "int8")
# Deterministic on one machine (docs/reliability.md), wherever the job was scheduled.
IDENTICAL = [f"{DATA}/{split}_{kind}.npy" for split in ("train", "val", "test") for kind in ("images", "labels")] + [
    f"{DATA}/meta.json", f"{ONNX_DIR}/model.onnx", f"{ENGINE_DIR}/fp32.onnx", f"{ENGINE_DIR}/fp16.onnx",
    f"{ENGINE_DIR}/int8.onnx", f"{ENGINE_DIR}/int8_calibration.json"]
ACCURACY_COLUMNS = ["dataset", "model", "precision", "images", "top1_accuracy", "top5_accuracy", "top1_correct"]


def _sinfo_idle() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"sinfo failed: {exc}"
    states = out.stdout.split()
    if out.returncode != 0:
        return False, f"sinfo failed: {out.stderr.strip()[-300:]}"
    return any(s in ("idle", "mixed") for s in states), f"no idle node (sinfo: {states or 'nothing'})"


@pytest.fixture(scope="module")
def slurm_cluster():
    """A SLURM that takes jobs: the one running, else one started with .ci/slurm-up (stopped after)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    ready, why = _sinfo_idle()
    started = False
    if not ready:
        if os.geteuid() != 0:
            pytest.skip(f"SLURM is not up ({why}) and .ci/slurm-up needs root")
        up = subprocess.run([str(REPO / ".ci" / "slurm-up")], capture_output=True, text=True, timeout=900)
        if up.returncode != 0:
            pytest.skip(f"SLURM could not start: {(up.stdout + up.stderr).strip()[-500:]}")
        started = True
        ready, why = _sinfo_idle()
        if not ready:
            pytest.skip(f".ci/slurm-up succeeded but {why}")
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()[0]
    yield node
    if started:
        subprocess.run([str(REPO / ".ci" / "slurm-down")], capture_output=True, timeout=300)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()}


def timed(workdir: Path, *args: str) -> float:
    start = time.monotonic()
    snakemake(workdir, *args, timeout=RUN_TIMEOUT_S)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def slurm_and_local(slurm_cluster, tmp_path_factory):
    """The tiny config, from scratch, once through SLURM and once locally."""
    through_slurm, local = tmp_path_factory.mktemp("slurm"), tmp_path_factory.mktemp("local")
    slurm_s = timed(through_slurm, "--profile", str(PROFILE))
    local_s = timed(local)
    print(f"\ntiny config wall time: SLURM {slurm_s:.0f} s, local {local_s:.0f} s (node {slurm_cluster})")
    return through_slurm, local


def test_slurm_run_matches_local_run(slurm_and_local):
    through_slurm, local = slurm_and_local
    assert files_under(through_slurm) == files_under(local)
    # Every job went through sbatch: the plugin keeps each job's SLURM log (slurm-keep-successful-logs).
    # .snakemake/slurm_logs/rule_<rule>/<wildcards>/<SLURM job id>.log
    rules = {p.parent.parent.name for p in (through_slurm / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert {"rule_train_model", "rule_export_onnx", "rule_benchmark_latency"} <= rules, rules
    different = [name for name in IDENTICAL if sha256(through_slurm / name) != sha256(local / name)]
    assert not different, f"not byte-identical between the SLURM and the local run: {different}"
    for table in [f"{MODEL_DIR}/accuracy.parquet"] + [f"{ENGINE_DIR}/{p}_accuracy.parquet" for p in PRECISIONS]:
        a, b = pd.read_parquet(through_slurm / table), pd.read_parquet(local / table)
        columns = [c for c in ACCURACY_COLUMNS if c in a.columns]
        assert {"top1_accuracy", "top5_accuracy"} <= set(columns), table
        pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True, obj=table)


def _our_jobs(workdir: Path) -> list[tuple[str, str, str]]:
    """(job id, state, comment) of the SLURM jobs whose working directory is ``workdir``."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%k|%Z"], capture_output=True, text=True)
    jobs = []
    for line in out.stdout.splitlines():
        job_id, state, comment, folder = (line.split("|") + ["", "", "", ""])[:4]
        if Path(folder).resolve() == workdir.resolve():
            jobs.append((job_id, state, comment))
    return jobs


def test_scancel_mid_run_then_rerun_incomplete_completes(slurm_and_local, tmp_path):
    """A training job cancelled by the scheduler while it runs; the resumed run completes it."""
    through_slurm, _ = slurm_and_local
    workdir = tmp_path / "work"
    shutil.copytree(through_slurm, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake" / "slurm_logs", ignore_errors=True)
    outputs = [f"{MODEL_DIR}/model.keras", f"{MODEL_DIR}/history.parquet"]
    for name in outputs:
        (workdir / name).unlink()
    target = outputs[0]
    config = yaml.safe_load((through_slurm / "config.yaml").read_text())
    command = snakemake_command(workdir, "--profile", str(PROFILE), target, config=config)
    with open(workdir / "cancelled_run.txt", "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        running = None
        while running is None:
            assert process.poll() is None, (workdir / "cancelled_run.txt").read_text()[-4000:]
            assert time.monotonic() < deadline, f"no running train_model job within 300 s: {_our_jobs(workdir)}"
            running = next((j for j, state, comment in _our_jobs(workdir)
                            if state == "RUNNING" and "train_model" in comment), None)
            time.sleep(0.5)
        time.sleep(5)  # mid-run: training takes about a minute here
        subprocess.run(["scancel", running], check=True)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=120)
    text = (workdir / "cancelled_run.txt").read_text()
    states = {j: s for j, s, _ in _our_jobs(workdir)}
    assert states.get(running) == "CANCELLED", (states, text[-3000:])
    assert process.returncode != 0, text[-3000:]
    assert not (workdir / outputs[0]).exists() or "incomplete" in snakemake(
        workdir, "-n", target, config=config, check=False).stdout.lower()
    print(f"\nscancel {running} (train_model, RUNNING) -> state CANCELLED, run exit code {process.returncode}")

    start = time.monotonic()
    snakemake(workdir, "--profile", str(PROFILE), "--rerun-incomplete", target, config=config,
              timeout=RUN_TIMEOUT_S)
    print(f"resume with --rerun-incomplete through SLURM: {time.monotonic() - start:.0f} s")
    for name in outputs:
        assert (workdir / name).is_file(), name
    assert "Nothing to be done" in output_of(snakemake(workdir, "-n", target, config=config))


WRONG_DEVICE_JOB = """
import os, sys
sys.path.insert(0, {repo!r})
from workflow_scripts.device import detect_device_tag
from workflow_scripts.placement import check_running_device, scheduler_facts, should_check_device
facts = scheduler_facts(os.environ)
assert should_check_device("auto", facts), facts
check_running_device({declared!r}, detect_device_tag("auto"), rule="benchmark_latency", facts=facts)
print("device ok", facts)
"""


def test_measuring_job_on_the_wrong_node_is_refused(slurm_cluster):
    """A job declared for another device, scheduled by SLURM on this node, refuses naming both."""
    from workflow_scripts.device import detect_device_tag

    here = detect_device_tag("auto")
    declared = "jetson-agx-orin" if here != "jetson-agx-orin" else "rtx-4090"

    def srun(tag: str) -> subprocess.CompletedProcess:
        code = WRONG_DEVICE_JOB.format(repo=str(REPO), declared=tag)
        return subprocess.run(["srun", "-n1", "--mem=500", "-t", "5", sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=600)

    refused = srun(declared)
    message = refused.stdout + refused.stderr
    assert refused.returncode != 0, message
    assert "WrongDevice" in message and f"measures device '{declared}'" in message, message
    assert f"runs on device '{here}'" in message and f"node {slurm_cluster}" in message, message
    assert "slurm job " in message and "placement.device" in message, message
    print("\n" + next(line for line in message.splitlines() if "measures device" in line))

    accepted = srun(here)
    assert accepted.returncode == 0 and "device ok" in accepted.stdout, accepted.stdout + accepted.stderr
