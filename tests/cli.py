"""Driving the real snakemake CLI from tests: the tiny config, the runner, and the job-stats parser."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

from workflow_scripts.core import paths
from workflow_scripts.core.device import detect_device_tag

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
DEVICE = detect_device_tag()

# The smallest useful run. It sets every key config/config.yaml sets, because --configfile
# merges onto that file.
TINY = {
    "models": ["MobileNetV3Small"],
    "datasets": ["digits"],
    "precisions": ["fp32", "fp16", "int8"],
    "backends": ["onnxruntime"],
    "weights": "none",
    "input_size": 32,
    "train": {"epochs": 1, "batch_size": {"digits": 32, "cifar100": 32, "oxford_flowers102": 4}},
    "compression": {"warmup": 0, "repeats": 1},
    "calibration": {"num_images": 32, "batch_size": 16},
    "benchmark": {"warmup": 2, "iterations": 5, "min_duration_s": 0.0},
}
CELL = {"results": "results", "device": DEVICE, "backend": "onnxruntime", "dataset": "digits", "size": 32,
        "model": "MobileNetV3Small"}
DATA = paths.DATA_DIR.format(**CELL)
MODEL_DIR = paths.MODEL_DIR.format(**CELL)
ONNX_DIR = paths.ONNX_DIR.format(**CELL)
ENGINE_DIR = paths.ENGINE_DIR.format(**CELL)


def log_of(rule: str, of: str, precision: str = "fp32") -> str:
    """The log path (paths.log_file) of the tiny config's job of ``rule``."""
    return paths.log_file(rule, of, precision).format(**CELL)


def tiny(**overrides) -> dict:
    """A deep copy of TINY with top-level keys replaced."""
    config = copy.deepcopy(TINY)
    config.update(overrides)
    return config


def snakemake_command(workdir: Path, *args: str, config: dict | None = None, cores: int | None = 2) -> list[str]:
    """Write ``workdir/config.yaml`` and return the CLI command running the workflow there.

    ``cores=None`` leaves --cores out, as README commands that run no job do (--report, --unlock).
    """
    config_file = workdir / "config.yaml"
    config_file.write_text(yaml.safe_dump(config or TINY))
    # Targets must not follow --configfile directly (it takes several values), so an option goes between.
    between = ["--cores", str(cores)] if cores else ["--directory", str(workdir)]
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(config_file), *between, *args]


def snakemake(workdir: Path, *args: str, config: dict | None = None, env: dict | None = None,
              check: bool = True, timeout: int = 600, cores: int | None = 2) -> subprocess.CompletedProcess:
    """Run the workflow's CLI in ``workdir``; with ``check``, a failure raises with its output."""
    result = subprocess.run(snakemake_command(workdir, *args, config=config, cores=cores), capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def output_of(result: subprocess.CompletedProcess) -> str:
    """Everything the CLI printed."""
    return result.stdout + result.stderr


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run, as {rule: count}."""
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            inside = True
            continue
        if inside:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
    return counts
