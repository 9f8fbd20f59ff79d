"""The workflow on a real SLURM cluster through snakemake-executor-plugin-slurm and profiles/slurm.

Needs a working SLURM (``sinfo`` answers with an idle node) or the rights to start one (root,
apt-get): the three-node cluster of ``.ci/slurm-cluster-up`` (partitions train and edge, each node a
network namespace), else the single node of ``.ci/slurm-up``; skips with the reason otherwise, and
stops what it started. The tiny config runs once through ``--profile profiles/slurm`` (with
``placement`` on the three-node cluster) and once locally; the outputs must agree, and the one
cluster run answers every placement check. The three-node tests skip, saying why, on one node.
Run alone: ``python -m pytest -m slurm -s tests/test_slurm.py`` (-s shows the job-to-node table and
the wall times).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli import (DATA, DEVICE, ENGINE_DIR, MODEL_DIR, ONNX_DIR, REPO, output_of, snakemake, snakemake_command,
                       tiny)
from workflow_scripts.fleet.placement import is_measuring, rule_stage, stage_placement

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


CLUSTER_UP, SINGLE_UP, DOWN = (REPO / ".ci" / name for name in ("slurm-cluster-up", "slurm-up", "slurm-down"))


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


@dataclass
class Cluster:
    """What the tests need to know of the SLURM they run on."""

    default_node: str                      # the node a job without partition lands on
    partitions: dict[str, set[str]]        # partition -> its nodes
    features: dict[str, set[str]]          # node -> its features
    not_three_nodes: str = ""              # why the three-node tests skip ("" when they run)

    @property
    def device_node(self) -> str:
        return next(n for n in sorted(self.partitions.get("edge", ())) if DEVICE in self.features[n])


def _cluster(why_not: str = "") -> Cluster:
    rows = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%P|%f"], capture_output=True, text=True,
                          check=True).stdout.split()
    partitions: dict[str, set[str]] = {}
    features: dict[str, set[str]] = {}
    default = ""
    for row in rows:
        node, partition, feats = row.split("|")
        if partition.endswith("*"):
            partition, default = partition[:-1], node
        partitions.setdefault(partition, set()).add(node)
        features[node] = set(feats.split(",")) - {"(null)"}
    cluster = Cluster(default or sorted(features)[0], partitions, features)
    if not (len(partitions.get("train", ())) == 1 and len(partitions.get("edge", ())) == 2):
        cluster.not_three_nodes = why_not or (
            f"this SLURM is not the three-node cluster of .ci/slurm-cluster-up (partitions {partitions})")
    elif not any(DEVICE in features[n] for n in partitions["edge"]):
        cluster.not_three_nodes = (f"no edge node has this machine's device tag {DEVICE} as a feature "
                                   "(.ci/slurm-cluster-up with SLURM_CLUSTER_DEVICE unset)")
    return cluster


def _start(script: Path) -> str:
    """Run a bring-up script; '' on success, else what it said."""
    up = subprocess.run([str(script)], capture_output=True, text=True, timeout=900)
    return "" if up.returncode == 0 else (up.stdout + up.stderr).strip()[-500:]


@pytest.fixture(scope="module")
def slurm_cluster():
    """A SLURM that takes jobs: the one running, else the three-node cluster started with
    .ci/slurm-cluster-up, else one node with .ci/slurm-up (stopped after)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    ready, why = _sinfo_idle()
    started, why_not = False, ""
    if not ready:
        if os.geteuid() != 0:
            pytest.skip(f"SLURM is not up ({why}) and .ci/slurm-cluster-up needs root")
        why_not = _start(CLUSTER_UP)
        if why_not:
            subprocess.run([str(DOWN)], capture_output=True, timeout=300)
            why_not = f".ci/slurm-cluster-up failed: {why_not}"
            failed = _start(SINGLE_UP)
            if failed:
                pytest.skip(f"SLURM could not start ({why_not}); .ci/slurm-up: {failed}")
        started = True
        ready, why = _sinfo_idle()
        if not ready:
            pytest.skip(f"SLURM started but {why}")
    yield _cluster(why_not)
    if started:
        subprocess.run([str(DOWN)], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def three_nodes(slurm_cluster):
    if slurm_cluster.not_three_nodes:
        pytest.skip(slurm_cluster.not_three_nodes)
    return slurm_cluster


def placed_config(cluster: Cluster) -> dict:
    """The tiny config; on the three-node cluster training and export go to train, the device stage to
    the edge node with this device's tag (export is filed under the device but timed on train)."""
    if cluster.not_three_nodes:
        return tiny()
    return tiny(device=DEVICE, placement={
        "train": {"slurm_partition": "train"}, "export": {"slurm_partition": "train"},
        "device": {"slurm_partition": "edge", "constraint": DEVICE}})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()}


def timed(workdir: Path, *args: str, config: dict) -> float:
    start = time.monotonic()
    snakemake(workdir, *args, config=config, timeout=RUN_TIMEOUT_S)
    return time.monotonic() - start


@dataclass
class SlurmRun:
    workdir: Path
    seconds: float
    jobs: list   # [Job], read from squeue as soon as the run ends


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory) -> SlurmRun:
    """The tiny config (placed on the three-node cluster), from scratch, through SLURM."""
    workdir = tmp_path_factory.mktemp("slurm")
    seconds = timed(workdir, "--profile", str(PROFILE), config=placed_config(slurm_cluster))
    nodes = ", ".join(f"{p}: {' '.join(sorted(n))}" for p, n in sorted(slurm_cluster.partitions.items()))
    print(f"\ntiny config through SLURM ({nodes}): {seconds:.0f} s")
    return SlurmRun(workdir, seconds, jobs_of(workdir))


@pytest.fixture(scope="module")
def slurm_and_local(slurm_cluster, slurm_run, tmp_path_factory):
    """The same config run locally (placement means nothing to a local run)."""
    local = tmp_path_factory.mktemp("local")
    local_s = timed(local, config=placed_config(slurm_cluster))
    print(f"\ntiny config wall time: SLURM {slurm_run.seconds:.0f} s, local {local_s:.0f} s")
    return slurm_run.workdir, local


@dataclass
class Job:
    """One SLURM job of a run, as squeue (MinJobAge=600 keeps finished jobs) reports it."""

    job_id: str
    state: str
    partition: str
    node: str
    rule: str
    exclusive: bool   # squeue's OverSubscribe column: NO for --exclusive
    start: str
    end: str


def jobs_of(workdir: Path | None) -> list[Job]:
    """The SLURM jobs submitted from ``workdir`` (its working directory; None: all), in submission order.
    squeue keeps a finished job for MinJobAge seconds (3600 on .ci/slurm-cluster-up's cluster)."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%P|%N|%k|%h|%S|%e|%Z"],
                         capture_output=True, text=True, check=True)
    jobs = []
    for line in out.stdout.splitlines():
        job_id, state, partition, node, comment, share, start, end, folder = line.split("|")
        if workdir is None or Path(folder).resolve() == workdir.resolve():
            # The plugin's comment: rule_<rule>_wildcards_<wildcards>.
            rule = comment.removeprefix("rule_").split("_wildcards")[0]
            jobs.append(Job(job_id, state, partition, node, rule, share == "NO", start, end))
    return sorted(jobs, key=lambda j: int(j.job_id.split("_")[0]))


def job_table(jobs: list[Job]) -> str:
    lines = [f"{'job':>5}  {'rule':<34}{'partition':<11}{'node':<8}{'exclusive':<10}{'state':<10}start - end"]
    lines += [f"{j.job_id:>5}  {j.rule:<34}{j.partition:<11}{j.node:<8}{'yes' if j.exclusive else 'no':<10}"
              f"{j.state:<10}{j.start[11:]} - {j.end[11:]}" for j in jobs]
    return "\n".join(lines)


def test_every_job_ran_on_a_node_of_its_partition(three_nodes, slurm_run):
    """Placement from the config: train/export on train's node, the device stage on the device's edge node."""
    jobs = slurm_run.jobs
    print("\njob-to-node table of the tiny run on the three-node cluster:\n" + job_table(jobs))
    placement = placed_config(three_nodes)["placement"]
    assert {"train_model", "export_onnx", "benchmark_latency", "evaluate_engine"} <= {j.rule for j in jobs}, jobs
    for job in jobs:
        assert job.state == "COMPLETED", job
        wanted = stage_placement(placement, job.rule).get("slurm_partition", "train")
        assert job.partition == wanted, f"{job.rule} ran in partition {job.partition}, placement says {wanted}"
        assert job.node in three_nodes.partitions[wanted], f"{job.rule} ran on {job.node}, not a node of {wanted}"
        if rule_stage(job.rule) == "device":
            assert job.node == three_nodes.device_node, f"{job.rule} ran on {job.node}, not the device node"


def _overlap(a: Job, b: Job) -> bool:
    # ISO timestamps to the second compare as strings; touching intervals do not overlap.
    return a.start < b.end and b.start < a.end


def test_timed_jobs_ran_alone_on_their_node(three_nodes, slurm_run):
    """Every measuring job asked for --exclusive and no other job (of any run) shared its node meanwhile."""
    timed_jobs = [j for j in slurm_run.jobs if is_measuring(j.rule)]
    assert {"export_onnx", "benchmark_latency"} <= {j.rule for j in timed_jobs}, slurm_run.jobs
    everyone = jobs_of(None)
    for job in timed_jobs:
        assert job.exclusive, f"{job.rule} (job {job.job_id}) was not --exclusive"
        beside = [o for o in everyone if o.job_id != job.job_id and o.node == job.node and _overlap(job, o)]
        assert not beside, f"{job.rule} (job {job.job_id}) shared {job.node} with {beside}"
    print(f"\n{len(timed_jobs)} timed jobs, each alone on its node: "
          + ", ".join(f"{j.rule}@{j.node}" for j in timed_jobs))


def test_rows_record_the_node_they_ran_on(three_nodes, slurm_run):
    """The scheduler columns of the result tables name the job and node squeue reports for that job."""
    through_slurm = slurm_run.workdir
    node_of = {j.job_id: j.node for j in slurm_run.jobs}
    tables = [f"{MODEL_DIR}/accuracy.parquet"] + [
        f"{ENGINE_DIR}/{p}_{t}.parquet" for p in PRECISIONS for t in ("accuracy", "latency", "build")]
    for table in tables:
        rows = pd.read_parquet(through_slurm / table)
        assert (rows["scheduler"] == "slurm").all(), table
        for job_id, node in zip(rows["scheduler_job_id"], rows["scheduler_node"]):
            assert node_of.get(job_id) == node, f"{table}: job {job_id} recorded node {node}, squeue {node_of.get(job_id)}"
    latency = pd.read_parquet(through_slurm / f"{ENGINE_DIR}/fp32_latency.parquet")
    assert set(latency["scheduler_node"]) == {three_nodes.device_node}


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
            assert time.monotonic() < deadline, f"no running train_model job within 300 s: {jobs_of(workdir)}"
            running = next((j.job_id for j in jobs_of(workdir) if j.state == "RUNNING" and j.rule == "train_model"),
                           None)
            time.sleep(0.5)
        time.sleep(5)  # mid-run: training takes about a minute here
        subprocess.run(["scancel", running], check=True)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=120)
    text = (workdir / "cancelled_run.txt").read_text()
    states = {j.job_id: j.state for j in jobs_of(workdir)}
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


def _netns_pids(node: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", f"edgeptq-{node}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _node_state(node: str) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def _restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return int(next((w.split("=")[1] for w in out.split() if w.startswith("Restarts=")), "0"))


def test_edge_node_lost_during_latency_then_resume(three_nodes, slurm_and_local, tmp_path):
    """The device node dies (its slurmd, job steps and measurement killed) while it measures latency;
    SLURM requeues the job (JobRequeue=1, its default) or the run fails naming it; once the node is
    back the job measures afresh, --rerun-incomplete completes, one measurement is in the table and
    no scratch file is left."""
    if os.geteuid() != 0 or not _netns_pids(three_nodes.device_node):
        pytest.skip("killing a node needs root and the network namespaces of .ci/slurm-cluster-up")
    through_slurm, _ = slurm_and_local
    node = three_nodes.device_node
    workdir = tmp_path / "work"
    shutil.copytree(through_slurm, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake" / "slurm_logs", ignore_errors=True)
    summary, samples = f"{ENGINE_DIR}/fp32_latency.parquet", f"{ENGINE_DIR}/fp32_latency_samples.parquet"
    for name in (summary, samples, f"{ENGINE_DIR}/fp32_latency_resources.parquet"):
        (workdir / name).unlink()
    config = yaml.safe_load((through_slurm / "config.yaml").read_text())
    # A longer measurement, so the node dies in the middle of it. Only missing files rerun (mtime),
    # whatever else changed in the code meanwhile.
    config["benchmark"].update({"min_duration_s": 30.0, "max_duration_s": 120.0})
    only_missing = ("--rerun-triggers", "mtime")
    command = snakemake_command(workdir, "--profile", str(PROFILE), summary, *only_missing, config=config)
    log = workdir / "node_lost_run.txt"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        running = None
        while running is None:
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, f"no running latency job within 600 s: {jobs_of(workdir)}"
            running = next((j for j in jobs_of(workdir) if j.state == "RUNNING" and j.rule == "benchmark_latency"),
                           None)
            time.sleep(0.5)
        assert running.node == node, running
        time.sleep(10)  # mid-measurement: it measures for at least 30 s
        killed = _netns_pids(node)
        subprocess.run(["kill", "-KILL", *map(str, killed)], check=True)
        lost_at = time.monotonic()
        while not _node_state(node).startswith("down") and process.poll() is None:
            assert time.monotonic() - lost_at < 300, _node_state(node)
            time.sleep(1)
        seen = (f"\nkilled node {node} ({len(killed)} processes: slurmd, job steps, the measurement) during "
                f"latency job {running.job_id}; {time.monotonic() - lost_at:.0f} s later sinfo: "
                f"{_node_state(node)!r}, squeue: {[(j.job_id, j.state) for j in jobs_of(workdir)]}")
        print(seen)
        back = subprocess.run([str(CLUSTER_UP)], capture_output=True, text=True, timeout=300)
        assert back.returncode == 0, back.stdout + back.stderr
        process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=120)
    text = log.read_text()
    print(f"node back ({time.monotonic() - lost_at:.0f} s after the loss); the run exited {process.returncode}, "
          f"job {running.job_id} restarted {_restarts(running.job_id)} time(s)")
    if process.returncode == 0:
        assert _restarts(running.job_id) == 1, text[-3000:]     # requeued once, measured afresh
    else:
        assert running.job_id in text and "benchmark_latency" in text, text[-3000:]
    start = time.monotonic()
    snakemake(workdir, "--profile", str(PROFILE), "--rerun-incomplete", summary, *only_missing, config=config,
              timeout=RUN_TIMEOUT_S)
    print(f"then --rerun-incomplete: {time.monotonic() - start:.0f} s")
    assert "Nothing to be done" in output_of(snakemake(workdir, "-n", summary, *only_missing, config=config))
    scratch = sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob(".tmp-*"))
    assert not scratch, f"half-written files kept: {scratch}"
    rows, raw = pd.read_parquet(workdir / summary), pd.read_parquet(workdir / samples)
    assert len(rows) == 1 and rows["min_duration_s"].iloc[0] == 30.0, rows
    # One measurement: the samples of one job, numbered once, as many as the summary counts.
    assert raw["scheduler_job_id"].nunique() == 1 and set(raw["scheduler_job_id"]) == set(rows["scheduler_job_id"])
    assert list(raw["iteration"]) == list(range(int(rows["iterations"].iloc[0]))), raw["iteration"].describe()
    assert set(rows["scheduler_node"]) == {node}, rows["scheduler_node"]
    assert _node_state(node).split("|")[0] in ("idle", "mixed", "allocated"), _node_state(node)


WRONG_DEVICE_JOB = """
import os, sys
sys.path.insert(0, {repo!r})
from workflow_scripts.core.device import detect_device_tag
from workflow_scripts.core.scheduler import scheduler_facts
from workflow_scripts.fleet.placement import check_running_device, should_check_device
facts = scheduler_facts(os.environ)
assert should_check_device("auto", facts), facts
check_running_device({declared!r}, detect_device_tag("auto"), rule="benchmark_latency", facts=facts)
print("device ok", facts)
"""


def test_measuring_job_on_the_wrong_node_is_refused(slurm_cluster):
    """A job declared for another device, scheduled by SLURM on this node, refuses naming both."""
    from workflow_scripts.core.device import detect_device_tag

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
    assert f"runs on device '{here}'" in message and f"node {slurm_cluster.default_node}" in message, message
    assert "slurm job " in message and "placement.device" in message, message
    print("\n" + next(line for line in message.splitlines() if "measures device" in line))

    accepted = srun(here)
    assert accepted.returncode == 0 and "device ok" in accepted.stdout, accepted.stdout + accepted.stderr
