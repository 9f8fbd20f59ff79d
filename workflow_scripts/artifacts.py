"""Atomic artifact writing: a file appears under its final name only when complete.

A killed job therefore leaves at most a ``.tmp-*`` file, which Snakemake never treats as an
output, and ``--rerun-incomplete`` redoes the job.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd


def _check_writable(folder: Path) -> None:
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder {folder} is not writable; fix its permissions or set config key 'results_dir'")


@contextlib.contextmanager
def scratch_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); it is removed on exit unless published."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _check_writable(final.parent)
    # The temporary name ends with the final name so suffix-sensitive writers (Keras) accept it.
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{final.name}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


def publish(tmp: str | Path, path: str | Path) -> None:
    """Atomically move a finished temporary file to its final name."""
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    with scratch_path(path) as tmp:
        yield tmp
        publish(tmp, path)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to Parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def file_size_mb(path: str | Path) -> float:
    """File size in MB (10^6 bytes), the unit the study reports."""
    return Path(path).stat().st_size / 1e6
