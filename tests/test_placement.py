"""Placement: the declared device against the machine a job runs on, scheduler facts, stage resources."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli import TINY

from workflow_scripts.core.device import detect_device_tag
from workflow_scripts.core.errors import BackendUnavailable, ConfigError, EdgePTQError
from workflow_scripts.fleet.placement import MEASURING_RULES, RULE_STAGE, WrongDevice, base_rule, check_backend_here, check_job_device, check_placement, check_running_device, is_measuring, probe_backends_while_planning, rule_stage, should_check_device, stage_placement
from workflow_scripts.core.scheduler import scheduler_columns, scheduler_facts

REPO = Path(__file__).resolve().parent.parent

# --- check_running_device ---------------------------------------------------------------------


def test_same_device_passes():
    check_running_device("jetson-orin-nano", "jetson-orin-nano", rule="benchmark_latency")


def test_wrong_device_names_both_the_node_and_the_fix():
    facts = {"scheduler": "slurm", "job_id": "4711", "node": "login01"}
    with pytest.raises(WrongDevice) as info:
        check_running_device("jetson-orin-nano", "intel-xeon-processor", rule="benchmark_latency", facts=facts)
    message = str(info.value)
    assert "benchmark_latency" in message
    assert "'jetson-orin-nano'" in message and "'intel-xeon-processor'" in message
    assert "results/jetson-orin-nano/" in message
    assert "node login01" in message and "slurm job 4711" in message
    assert "placement.device" in message and "constraint: jetson-orin-nano" in message
    assert "device: intel-xeon-processor" in message
    assert isinstance(info.value, EdgePTQError)


def test_wrong_device_locally_has_no_scheduler_clause():
    with pytest.raises(WrongDevice) as info:
        check_running_device("a", "b")
    assert "this measuring job" in str(info.value)
    assert "(node" not in str(info.value) and "job " not in str(info.value).split("measures")[1]


def test_this_machine_against_another_declared_device():
    """The real detected tag of this machine, declared as some other device, is refused."""
    here = detect_device_tag("auto")
    check_running_device(here, detect_device_tag("auto"))
    with pytest.raises(WrongDevice, match=re.escape(f"runs on device '{here}'")):
        check_running_device("jetson-agx-orin", here, rule="build_int8_engine")


# --- should_check_device ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verify, facts, expected",
    [
        ("auto", {"scheduler": "slurm", "job_id": "1", "node": "n"}, True),
        ("auto", {"scheduler": "", "job_id": "", "node": ""}, False),
        ("always", {"scheduler": ""}, True),
        (True, {"scheduler": ""}, True),
        ("never", {"scheduler": "slurm"}, False),
        (False, {"scheduler": "slurm"}, False),
    ],
)
def test_should_check_device(verify, facts, expected):
    assert should_check_device(verify, facts) is expected


def test_should_check_device_refuses_unknown_value():
    with pytest.raises(ConfigError, match="placement.verify_device"):
        should_check_device("sometimes", {})


# --- scheduler_facts ----------------------------------------------------------------------------


def test_scheduler_facts_local():
    assert scheduler_facts({"HOME": "/root"}) == {"scheduler": "", "job_id": "", "node": ""}


def test_scheduler_facts_slurm_prefers_slurmd_nodename():
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "orin[01-02]", "SLURMD_NODENAME": "orin01"}
    assert scheduler_facts(env) == {"scheduler": "slurm", "job_id": "42", "node": "orin01"}


def test_scheduler_facts_slurm_nodelist_fallback():
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "nano07"}
    assert scheduler_facts(env) == {"scheduler": "slurm", "job_id": "42", "node": "nano07"}


def test_scheduler_facts_array_task():
    env = {"SLURM_JOB_ID": "107", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "7", "SLURMD_NODENAME": "n1"}
    assert scheduler_facts(env)["job_id"] == "100_7"


def test_scheduler_facts_ignores_blank_job_id():
    assert scheduler_facts({"SLURM_JOB_ID": " ", "SLURMD_NODENAME": "n1"})["scheduler"] == ""


# --- stage_placement ----------------------------------------------------------------------------

PLACEMENT = {
    "train": {"slurm_partition": "cpu", "constraint": "avx512"},
    "device": {"slurm_partition": "edge", "constraint": "jetson-orin-nano"},
}


def test_stage_placement_per_stage():
    assert stage_placement(PLACEMENT, "train_model") == {"slurm_partition": "cpu", "constraint": "avx512"}
    assert stage_placement(PLACEMENT, "benchmark_latency") == {
        "slurm_partition": "edge", "constraint": "jetson-orin-nano"}


def test_stage_placement_fallbacks():
    # data follows train, export follows device, unless given.
    assert stage_placement(PLACEMENT, "prepare_dataset") == PLACEMENT["train"]
    assert stage_placement(PLACEMENT, "export_onnx") == PLACEMENT["device"]
    own = {**PLACEMENT, "export": {"slurm_partition": "cpu"}}
    assert stage_placement(own, "export_onnx") == {"slurm_partition": "cpu"}


def test_stage_placement_empty_and_missing():
    assert stage_placement(None, "train_model") == {}
    assert stage_placement({}, "benchmark_latency") == {}
    assert stage_placement(PLACEMENT, "summarize") == {}
    assert stage_placement({"device": None}, "benchmark_latency") == {}


def test_stage_placement_returns_a_copy():
    got = stage_placement(PLACEMENT, "build_engine")
    got["slurm_partition"] = "changed"
    assert PLACEMENT["device"]["slurm_partition"] == "edge"


def test_stage_placement_unknown_rule():
    with pytest.raises(ConfigError, match="rule 'mystery' has no placement stage"):
        stage_placement(PLACEMENT, "mystery")


@pytest.mark.parametrize(
    "placement, match",
    [
        ({"gpu_nodes": {"slurm_partition": "gpu"}}, r"'placement.gpu_nodes' is not a stage"),
        ({"device": {"partition": "gpu"}}, r"'placement.device.partition' is not a placement resource"),
        ({"device": {"mem_mb": 1000}}, r"memory, time and CPUs belong in the profile"),
        ({"device": "gpu"}, r"give a mapping"),
        ({"device": {"constraint": ["a", "b"]}}, r"give a string or an integer"),
        ({"verify_device": "maybe"}, r"placement.verify_device"),
    ],
)
def test_check_placement_refuses(placement, match):
    with pytest.raises(ConfigError, match=match):
        check_placement(placement)


def test_check_placement_accepts_verify_device():
    check_placement({"verify_device": "always", **PLACEMENT})
    assert stage_placement({"verify_device": "never", **PLACEMENT}, "train_model") == PLACEMENT["train"]


def test_rules_generated_per_backend_take_their_base_stage():
    assert rule_stage("build_engine_onnxruntime") == "device"
    assert rule_stage("build_int8_engine_tensorrt") == "device"
    assert stage_placement(PLACEMENT, "build_int8_engine_litert") == PLACEMENT["device"]
    assert is_measuring("build_int8_engine_tensorrt") and is_measuring("benchmark_latency")
    assert not is_measuring("evaluate_engine") and not is_measuring("train_model")
    assert base_rule("build_engine") == "build_engine" and base_rule("nothing_like_it") is None


def workflow_rules(tmp_path) -> list[str]:
    """Every rule of the workflow as Snakemake itself lists them (per-backend rules included)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                          str(tmp_path), "--configfile", str(config), "--list-rules"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return [line.strip() for line in out.stdout.splitlines() if re.fullmatch(r"\w+", line.strip())]


@pytest.mark.slow
def test_every_rule_has_a_stage_and_every_measuring_rule_the_whole_node(tmp_path):
    """A rule added without a stage would fail once placement is wired; a measuring rule without
    --exclusive in profiles/slurm would share its node with other jobs while it is timed."""
    names = [n for n in workflow_rules(tmp_path) if n != "all"]
    assert "benchmark_latency" in names, names
    missing = sorted(n for n in names if base_rule(n) is None)
    assert not missing, f"rules without a placement stage (workflow_scripts/fleet/placement.py RULE_STAGE): {missing}"
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    extra = {rule: str(res.get("slurm_extra", "")) for rule, res in profile["set-resources"].items()}
    not_exclusive = sorted(n for n in names if is_measuring(n) and "--exclusive" not in extra.get(n, ""))
    assert not not_exclusive, f"measuring rules without slurm_extra '--exclusive' in profiles/slurm: {not_exclusive}"


def test_measuring_rules_are_device_or_export_stage():
    assert {RULE_STAGE[r] for r in MEASURING_RULES} <= {"device", "export"}


# --- check_job_device, scheduler_columns, probe_backends_while_planning ----------------------------

SLURM_ENV = {"SLURM_JOB_ID": "17", "SLURMD_NODENAME": "vm"}


def _never_called():
    raise AssertionError("detect must not run for this job")


def test_check_job_device_refuses_measuring_rule_under_slurm():
    with pytest.raises(WrongDevice, match=r"job build_int8_engine_onnxruntime measures device 'jetson-agx-orin'.*"
                                          r"node vm, slurm job 17"):
        check_job_device("build_int8_engine_onnxruntime", "jetson-agx-orin", "auto", SLURM_ENV, lambda: "x86-box")


def test_check_job_device_passes_and_returns_facts():
    facts = check_job_device("benchmark_latency", "x86-box", "auto", SLURM_ENV, lambda: "x86-box")
    assert facts == {"scheduler": "slurm", "job_id": "17", "node": "vm"}
    assert scheduler_columns(facts) == {"scheduler": "slurm", "scheduler_job_id": "17", "scheduler_node": "vm"}
    assert scheduler_columns(scheduler_facts({})) == {"scheduler": "", "scheduler_job_id": "", "scheduler_node": ""}


@pytest.mark.parametrize(
    "rule, declared, verify, env",
    [
        ("train_model", "jetson-agx-orin", "auto", SLURM_ENV),  # not measuring: trains anywhere
        ("evaluate_engine", "jetson-agx-orin", "always", SLURM_ENV),  # accuracy does not depend on the machine
        ("benchmark_latency", None, "auto", SLURM_ENV),  # no device in its outputs
        ("benchmark_latency", "my-laptop", "auto", {}),  # local run: the device may be a chosen name
        ("benchmark_latency", "jetson-agx-orin", "never", SLURM_ENV),
    ],
)
def test_check_job_device_skips(rule, declared, verify, env):
    check_job_device(rule, declared, verify, env, _never_called)


def test_check_job_device_always_checks_local_runs():
    with pytest.raises(WrongDevice):
        check_job_device("export_onnx", "my-laptop", "always", {}, lambda: "intel-xeon-processor")


@pytest.mark.parametrize(
    "device, placement, expected",
    [
        ("jetson-orin-nano", {"device": {"slurm_partition": "edge"}}, False),  # planned off the device
        ("jetson-orin-nano", {"export": {"constraint": "jetson-orin-nano"}}, False),
        ("jetson-orin-nano", {"train": {"slurm_partition": "cpu"}}, True),  # device stage runs here
        ("jetson-orin-nano", None, True),  # a declared name for this machine, run locally
        ("auto", {"device": {"slurm_partition": "edge"}}, True),  # auto: the device is this machine
    ],
)
def test_probe_backends_while_planning(device, placement, expected):
    assert probe_backends_while_planning(device, placement) is expected


def test_check_backend_here():
    check_backend_here("onnxruntime", (True, "installed"), SLURM_ENV_FACTS)
    with pytest.raises(BackendUnavailable, match=r"backend tensorrt cannot run where this job runs "
                                                 r"\(node vm, slurm job 17\): the Python package\(s\) tensorrt"):
        check_backend_here("tensorrt", (False, "the Python package(s) tensorrt are not installed"), SLURM_ENV_FACTS)


SLURM_ENV_FACTS = {"scheduler": "slurm", "job_id": "17", "node": "vm"}
