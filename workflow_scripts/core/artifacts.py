"""Atomic artifact writing: a file appears under its final name only when complete.

A killed job therefore leaves at most a ``.tmp-*`` file, which Snakemake never treats as an
output, and ``--rerun-incomplete`` redoes the job.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
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


def disk_full_error(path: str | Path, needed_bytes: int | None = None):
    """The DiskFull error for writing ``path``: the folder, the free space and (if known) the space needed."""
    from workflow_scripts.core.errors import DiskFull

    folder = Path(path).parent
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    need = f"{needed_bytes / 1e6:.1f} MB are needed, " if needed_bytes else ""
    return DiskFull(f"no space left on the device holding {folder} while writing {Path(path).name}: {need}"
                    f"{free / 1e6:.1f} MB are free; free some space (or set config key 'results_dir' to a "
                    "larger disk) and rerun; nothing partial was kept")


def ensure_free_space(path: str | Path, needed_bytes: int, margin_bytes: int = 16 * 2**20) -> None:
    """Refuse, before writing, when the disk holding ``path`` has less than ``needed_bytes`` (+ margin) free."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < needed_bytes + margin_bytes:
        raise disk_full_error(path, needed_bytes)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A full disk (ENOSPC, EDQUOT) becomes :class:`~workflow_scripts.core.errors.DiskFull` naming the
    folder; the scratch file is removed either way.
    """
    with scratch_path(path) as tmp:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full_error(path) from exc
            raise
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
