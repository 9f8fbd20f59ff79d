"""Provenance columns carried by every result row."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import subprocess
from pathlib import Path

import pandas as pd

from workflow_scripts.core.device import device_info

PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "tensorrt", "polygraphy")


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
        "onnxruntime_version": package_version("onnxruntime"),
        "tensorrt_version": package_version("tensorrt"),
        "git_commit": commit,
        "git_dirty": dirty,
        "config_hash": config_hash,
        "settings": settings,
        "settings_hash": settings_hash,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def with_provenance(frame: pd.DataFrame, prov: dict[str, object]) -> pd.DataFrame:
    """Return ``frame`` with provenance columns appended (values repeated on each row)."""
    out = frame.copy()
    for key, value in prov.items():
        out[key] = value
    return out
