"""Thin Snakemake entry points: open the job's log, call one function with plain arguments."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Callable

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def setup_logging(log_path: str | None) -> logging.Logger:
    """Log to the job's log file and to stderr (so progress shows in the terminal)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return logging.getLogger("edgeptq")


def run(snakemake, job: Callable[[], object]) -> None:
    """Run ``job`` with logging set up; a known error is logged as one clear line and exits 1."""
    from ..errors import EdgePTQError

    log = setup_logging(snakemake.log[0] if snakemake.log else None)
    remove_stale_scratch(list(snakemake.output))
    try:
        check_device_of(snakemake)
        job()
    except (EdgePTQError, PermissionError) as exc:
        log.error("%s", exc)
        sys.exit(1)
    except Exception:
        log.exception("unexpected failure; the traceback follows")
        raise


def check_device_of(snakemake) -> dict:
    """A measuring job refuses to run on another device than its outputs are filed under (config key
    placement.verify_device), and a device job whose backend cannot run here says so, naming the node;
    returns the scheduler's facts of this job."""
    from ..device import detect_device_tag
    from ..placement import check_backend_here, check_job_device, rule_stage
    from ..registry import backend as backend_entry

    verify = (snakemake.config.get("placement") or {}).get("verify_device", "auto")
    facts = check_job_device(snakemake.rule, getattr(snakemake.wildcards, "device", None), verify, os.environ,
                             lambda: detect_device_tag("auto"))
    # The backend is checked here, on the job's node, when planning could not (a login node).
    name = getattr(snakemake.wildcards, "backend", None)
    if name and name != "onnx" and rule_stage(snakemake.rule) == "device":
        check_backend_here(name, backend_entry(name).available(), facts)
    return facts


def remove_stale_scratch(outputs: list[str]) -> None:
    """Delete ``.tmp-*`` scratch files of this job's outputs left by a killed earlier attempt.

    ``workflow_scripts.artifacts.scratch_path`` names them ``.tmp-<random>-<output name>`` beside
    the output; only this job writes those outputs, so no running job can own them.
    """
    from pathlib import Path

    for output in outputs:
        path = Path(output)
        if path.parent.is_dir():
            for stale in path.parent.glob(f".tmp-*-{path.name}"):
                # The random middle part never holds '-': '.tmp-x-a-b' is not a scratch file of 'b'.
                if stale.is_file() and "-" not in stale.name[len(".tmp-"):-len(path.name) - 1]:
                    stale.unlink(missing_ok=True)


def row_settings(snakemake) -> dict:
    """The settings this job's rows record: the rule's ``settings`` param (what Snakemake hashes for
    reruns, built by rules/common.smk from ``config.rule_settings``), plus for the timed rules
    ``runtime.<rule>.threads``, the CPU threads the measurement really ran with (``benchmark.threads``,
    or the job's threads when that is 0), so rows measured with other ``--cores`` never mix silently."""
    from ..config import TIMED_RULES

    settings = json.loads(json.dumps(dict(getattr(snakemake.params, "settings", {}) or {})))
    # The logical rule (config.RULE_SETTINGS): build_engine_<backend> is build_engine.
    rule = settings.pop("rule", getattr(snakemake, "rule", ""))
    if rule in TIMED_RULES:
        configured = settings.get("benchmark", {}).get("threads") if rule == "benchmark_latency" else 0
        settings["runtime"] = {rule: {"threads": int(configured or snakemake.threads)}}
    return settings


def provenance_of(snakemake, **extra) -> dict:
    """Provenance columns for this job: params' device/backend, the hash of the whole config, and the
    settings that determine what this job's rows measure (``settings``, ``settings_hash``)."""
    from ..config import settings_hash, settings_json, short_hash
    from ..device import detect_device_tag
    from ..placement import scheduler_columns, scheduler_facts
    from ..provenance import provenance

    params = dict(getattr(snakemake.params, "provenance", {}) or {})
    # Device-independent jobs (training, Keras evaluation) keep the device out of their params, so
    # copying results to another device does not rerun them; their rows still say where they ran.
    params.setdefault("device", detect_device_tag(snakemake.config.get("device", "auto")))
    params.setdefault("backend", "keras")
    settings = settings_json(row_settings(snakemake))
    # Where the scheduler ran this job (empty columns locally).
    facts = scheduler_columns(scheduler_facts(os.environ))
    return {**provenance(config_hash=settings_hash(snakemake.config), settings=settings,
                         settings_hash=short_hash(settings), **params), **facts, **extra}
