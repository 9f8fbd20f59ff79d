"""Provenance columns carried by every result row."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import json
import os
import subprocess
from pathlib import Path
from typing import Mapping

import pandas as pd

from workflow_scripts.core.device import device_info

def package_version(name: str) -> str:
    """Installed version of a distribution, or '' when absent (read from metadata, no import)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.lru_cache(maxsize=1)
def git_state(repo: str | None = None) -> tuple[str, bool]:
    """The workflow's git commit and whether its tree had uncommitted changes."""
    cwd = repo or str(Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "", False
    if commit.returncode != 0:
        return "", False
    return commit.stdout.strip(), bool(status.stdout.strip())


def backend_version(backend: str) -> str:
    """Version of ``backend``'s runtime: the registry's packages for a registered backend (LiteRT's is
    ``ai-edge-litert``, not a package named ``litert``), else the package of that name ('' if absent)."""
    from workflow_scripts.core.registry import BACKENDS

    if backend in BACKENDS:
        return BACKENDS[backend].version()
    return package_version(backend)


def backend_version_columns() -> dict[str, str]:
    """``<backend>_version`` of every backend with a ``version_column`` (registry), in registry order."""
    from workflow_scripts.core.registry import BACKENDS

    return {f"{name}_version": package_version(entry.version_column)
            for name, entry in BACKENDS.items() if entry.version_column}


def provenance(device: str, backend: str, config_hash: str, settings: str = "",
               settings_hash: str = "") -> dict[str, object]:
    """Columns describing where, with what, under which settings and when a result was produced.

    ``config_hash`` hashes the whole config but the matrix lists; ``settings`` is the compact JSON of
    the settings that determine what the row measures (``config.comparable_settings``) and
    ``settings_hash`` its short hash; the summary compares ``settings`` across rows. '' when unknown.
    """
    info = device_info(device)
    commit, dirty = git_state()
    tf_version = package_version("tensorflow-cpu") or package_version("tensorflow")
    return {
        # Identity, hardware and power state of the device (empty where not readable).
        **info,
        "backend": backend,
        "backend_version": backend_version(backend),
        "tensorflow_version": tf_version,
        "tf2onnx_version": package_version("tf2onnx"),
        "onnx_version": package_version("onnx"),
        **backend_version_columns(),
        "git_commit": commit,
        "git_dirty": dirty,
        "config_hash": config_hash,
        "settings": settings,
        "settings_hash": settings_hash,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def row_settings(settings: Mapping | None, rule: str, threads: int | None) -> dict:
    """The settings one job's rows record: its ``settings`` param (``config.settings_param``: what
    Snakemake hashes for reruns), plus for the timed rules ``runtime.<rule>.threads``, the CPU threads the
    measurement really ran with (``benchmark.threads``, or the job's threads when that is 0), so rows
    measured with other ``--cores`` never mix silently. ``rule`` is used where the param names none."""
    from workflow_scripts.core.config import TIMED_RULES

    settings = json.loads(json.dumps(dict(settings or {})))
    # The logical rule (config.RULE_SETTINGS): build_engine_<backend> is build_engine.
    rule = settings.pop("rule", rule)
    if rule in TIMED_RULES:
        configured = settings.get("benchmark", {}).get("threads") if rule == "benchmark_latency" else 0
        settings["runtime"] = {rule: {"threads": int(configured or threads)}}
    return settings


def job_provenance(config: dict, rule: str, threads: int | None, labels: Mapping | None, settings: Mapping | None,
                   environ: Mapping[str, str] | None = None, **extra) -> dict:
    """Provenance columns of one job, for a Snakemake job (``shims.provenance_of``) and the on-device
    runner (``fleet.device_run``) alike: ``labels`` (the rule's provenance param: device and backend), the
    hash of the whole config, the settings that determine what this job's rows measure (``settings``:
    the rule's settings param; ``settings_hash``), where a scheduler ran it, and ``extra``."""
    from workflow_scripts.core.config import settings_hash, settings_json, short_hash
    from workflow_scripts.core.device import detect_device_tag
    # The scheduler's facts are read from the environment: empty columns outside a scheduler.
    from workflow_scripts.core.scheduler import scheduler_columns, scheduler_facts

    params = dict(labels or {})
    # Device-independent jobs (training, Keras evaluation) keep the device out of their params, so
    # copying results to another device does not rerun them; their rows still say where they ran.
    params.setdefault("device", detect_device_tag(config.get("device", "auto")))
    params.setdefault("backend", "keras")
    recorded = settings_json(row_settings(settings, rule, threads))
    facts = scheduler_columns(scheduler_facts(os.environ if environ is None else environ))
    return {**provenance(config_hash=settings_hash(config), settings=recorded, settings_hash=short_hash(recorded),
                         **params), **facts, **extra}


def with_provenance(frame: pd.DataFrame, prov: dict[str, object]) -> pd.DataFrame:
    """Return ``frame`` with provenance columns appended (values repeated on each row)."""
    out = frame.copy()
    for key, value in prov.items():
        out[key] = value
    return out
