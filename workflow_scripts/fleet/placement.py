"""Where a job runs: the declared device against the machine a job lands on, the scheduler's facts,
and the per-stage placement (partition, constraint) of rules on a cluster.

Under a cluster executor the DAG, and with it the device tag in every result path, is decided on the
submitting machine, while each job runs on whichever node the scheduler picks. A measuring job that
lands on another kind of machine would file that machine's numbers under the declared device, so
measuring jobs compare the two and refuse. Pure functions: no Snakemake, no subprocess, no I/O
beyond the mapping passed in; docs/cluster.md describes the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from workflow_scripts.core.errors import BackendUnavailable, ConfigError, EdgePTQError
from workflow_scripts.core.scheduler import scheduler_facts

# Rules by stage. "device" is everything measured on, or tagged with, the target device (the
# results/<device>/ tree): in the study the ONNX conversion, the engine builds and the benchmarks
# all run on the edge board, so export belongs to the device unless placement.export says otherwise.
RULE_STAGE: dict[str, str] = {
    "prepare_dataset": "data",
    "train_model": "train",
    "import_user_model": "train",   # a user's Keras model stands in for training
    "evaluate_keras": "train",
    "export_onnx": "export",
    "import_user_onnx": "export",   # a user's ONNX model stands in for the export
    "build_engine": "device",
    "build_int8_engine": "device",
    "benchmark_latency": "device",
    "evaluate_engine": "device",
    "calibration_prepare": "device",
    "calibration_statistics": "device",
    "build_calibration_variant": "device",
    "evaluate_calibration_variant": "device",
    "benchmark_calibration_variant": "device",
    "calibration_sensitivity": "device",
    "calibration_int8_auto": "device",
    "calibration_nncf_rescue": "device",
    "evaluate_nncf_rescue": "device",
    "benchmark_nncf_rescue": "device",
    "calibration_study_summary": "summary",
    "summarize": "summary",
    "plot_figures": "summary",
    "decide": "summary",
    "run_summary": "summary",
    "report_html": "summary",
}
# A stage without its own entry takes the placement of the stage it falls back to.
STAGE_FALLBACK: dict[str, str] = {"data": "train", "export": "device"}
STAGES = ("data", "train", "export", "device", "summary")

# The resources a placement may set: the executor plugin's names (snakemake-executor-plugin-slurm).
# mem_mb/runtime/cpus_per_task belong to the profile, which knows the cluster's sizes.
PLACEMENT_KEYS = ("slurm_partition", "slurm_account", "constraint", "qos", "gres", "gpu", "slurm_extra")

# Rules whose numbers describe the device they run on (timings, resource use, the latency
# distribution). Only these refuse to run on another device; accuracy and training do not depend on it.
MEASURING_RULES = frozenset({
    "export_onnx",
    "import_user_onnx",
    "build_engine",
    "build_int8_engine",
    "benchmark_latency",
    "build_calibration_variant",
    "benchmark_calibration_variant",
    "calibration_int8_auto",
    "calibration_nncf_rescue",
    "benchmark_nncf_rescue",
})


class WrongDevice(EdgePTQError):
    """A measuring job runs on another device than the one its results are filed under."""


def _where(facts: Mapping[str, str] | None) -> str:
    if facts and facts.get("scheduler"):
        return f" (node {facts.get('node') or '?'}, {facts['scheduler']} job {facts.get('job_id') or '?'})"
    return ""


def check_running_device(declared_tag: str, detected_tag: str, *, rule: str = "",
                         facts: Mapping[str, str] | None = None) -> None:
    """Refuse a measuring job whose machine is not the device its results are filed under.

    ``declared_tag`` is the device in the job's output paths (the config's ``device``, or what the
    submitting machine detected); ``detected_tag`` is what ``detect_device_tag("auto")`` finds where
    the job runs. Equal tags pass silently.
    """
    if declared_tag == detected_tag:
        return
    job = f"job {rule}" if rule else "this measuring job"
    raise WrongDevice(
        f"{job} measures device '{declared_tag}' (its results go under results/{declared_tag}/) but runs on "
        f"device '{detected_tag}'{_where(facts)}; its timings would describe the wrong machine. "
        f"Send the device stage to '{declared_tag}' nodes (config placement.device, e.g. "
        f"{{constraint: {declared_tag}}} or {{slurm_partition: <the partition of those nodes>}}), or, if "
        f"'{detected_tag}' is the device you mean to measure, set device: {detected_tag} (device: auto "
        "detects the machine Snakemake runs on)."
    )


def should_check_device(verify: str | bool, facts: Mapping[str, str]) -> bool:
    """Whether measuring jobs compare the declared device with the machine they run on.

    ``verify`` is ``placement.verify_device``: "auto" (under a batch scheduler only: locally the
    declared device may be a name the user chose for this machine), True/"always", False/"never".
    """
    if verify in (True, "always"):
        return True
    if verify in (False, "never"):
        return False
    if verify == "auto":
        return bool(facts.get("scheduler"))
    raise ConfigError(
        f"config key 'placement.verify_device' is {verify!r}; use auto, always or never"
    )


def check_placement(config_placement: Mapping | None) -> None:
    """Refuse unknown stages and resource names in ``placement``, naming the key and the choices."""
    for stage, resources in (config_placement or {}).items():
        if stage == "verify_device":
            should_check_device(resources, {})
            continue
        if stage not in STAGES:
            raise ConfigError(
                f"config key 'placement.{stage}' is not a stage; stages are {', '.join(STAGES)} "
                "(and verify_device)"
            )
        if resources is None:
            continue
        if not isinstance(resources, Mapping):
            raise ConfigError(
                f"config key 'placement.{stage}' is {resources!r}; give a mapping such as "
                "{slurm_partition: gpu, constraint: jetson-orin-nano}"
            )
        for key, value in resources.items():
            if key not in PLACEMENT_KEYS:
                raise ConfigError(
                    f"config key 'placement.{stage}.{key}' is not a placement resource; use "
                    f"{', '.join(PLACEMENT_KEYS)} (memory, time and CPUs belong in the profile)"
                )
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise ConfigError(
                    f"config key 'placement.{stage}.{key}' is {value!r}; give a string or an integer"
                )


def base_rule(rule: str, names=None) -> str | None:
    """The known rule ``rule`` is, or is generated from: rules made per backend are named
    ``<base>_<backend>`` (build_engine_onnxruntime, build_int8_engine_tensorrt). None if unknown."""
    names = RULE_STAGE if names is None else names
    if rule in names:
        return rule
    return next((base for base in sorted(names, key=len, reverse=True) if rule.startswith(base + "_")), None)


def is_measuring(rule: str) -> bool:
    """Whether ``rule`` (or the rule it is generated from) times the device it runs on."""
    return base_rule(rule, MEASURING_RULES) is not None


def rule_stage(rule: str) -> str:
    """The stage a rule belongs to; a rule this module does not know is an error naming it."""
    base = base_rule(rule)
    if base is None:
        raise ConfigError(
            f"rule '{rule}' has no placement stage; add it to workflow_scripts.fleet.placement.RULE_STAGE"
        )
    return RULE_STAGE[base]


def stage_placement(config_placement: Mapping | None, rule: str) -> dict[str, str | int]:
    """The scheduler resources of ``rule`` from the config's ``placement`` mapping.

    ``placement: {train: {slurm_partition: cpu}, device: {slurm_partition: edge, constraint:
    jetson-orin-nano}}`` gives train_model ``{"slurm_partition": "cpu"}`` and benchmark_latency
    ``{"slurm_partition": "edge", "constraint": "jetson-orin-nano"}``. A stage without an entry
    takes its fallback's (data -> train, export -> device); none at all gives {} (the cluster's
    default partition). The values are copied, so rules may not share one dict by accident.
    """
    check_placement(config_placement)
    placement = config_placement or {}
    stage = rule_stage(rule)
    while stage not in placement and stage in STAGE_FALLBACK:
        stage = STAGE_FALLBACK[stage]
    return dict(placement.get(stage) or {})


def check_job_device(rule: str, declared_tag: str | None, verify: str | bool, environ: Mapping[str, str],
                     detect: Callable[[], str]) -> dict[str, str]:
    """The device check of one job, as a shim runs it before any work; returns the scheduler facts.

    Only measuring rules (``is_measuring``) with a device in their outputs are checked, and only
    where ``should_check_device`` says so; ``detect`` (``lambda: detect_device_tag("auto")``) is
    called only then, so other jobs pay nothing.
    """
    facts = scheduler_facts(environ)
    if declared_tag and is_measuring(rule) and should_check_device(verify, facts):
        check_running_device(declared_tag, detect(), rule=rule, facts=facts)
    return facts


def probe_backends_while_planning(device: str, config_placement: Mapping | None) -> bool:
    """Whether backend availability (TensorRT, a GPU) is probed while planning the DAG.

    Not for a declared device whose measuring stages are placed on other nodes (``placement.device``
    or ``placement.export`` set): the planning machine (a cluster's login node, or a CPU node of the
    train stage planning its own job) says nothing about the device nodes, so a GPU backend must
    not be refused there. Each device job checks its backend where it runs (``check_backend_here``).
    With ``device: auto``, or without placement, the device is the machine that plans: it probes.
    """
    placement = config_placement or {}
    placed = bool(placement.get("device") or placement.get("export"))
    return not (device != "auto" and placed)


def check_backend_here(backend: str, available: tuple[bool, str], facts: Mapping[str, str]) -> None:
    """Refuse a job whose backend cannot run on the machine it landed on, naming the node.

    ``available`` is ``registry.backend(backend).available()`` evaluated in the job.
    """
    ok, reason = available
    if ok:
        return
    raise BackendUnavailable(
        f"backend {backend} cannot run where this job runs{_where(facts)}: {reason}. Install it on the "
        "device nodes, or send the device stage to nodes that have it (config placement.device)"
    )
