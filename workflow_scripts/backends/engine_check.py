"""The engine a job measures is the engine the build wrote: digests recorded at the build, checked at load.

The build (:func:`workflow_scripts.stages.engine.build_engine_benchmark`) records the SHA-256 of the engine
file and of each companion file (OpenVINO's ``.bin``) in its build table, ``{precision}_build.parquet``
beside the engine: columns ``engine_sha256`` and ``engine_<ext>_sha256``. Every load through
:func:`workflow_scripts.backends.get_backend` (latency, accuracy, the device side, the run-off) and the
summary call :func:`check_engine` first; a missing, empty, truncated or replaced file is refused with
its path, the cause, and the command that rebuilds it. Builds of older versions recorded no digest:
their engines are checked for presence and size only.

Light on purpose (hashlib and pandas only, no runtime import).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from workflow_scripts.core.errors import CorruptArtifact, EdgePTQError

log = logging.getLogger(__name__)

DIGEST_COLUMN = "engine_sha256"
_CHUNK = 4 * 2**20
# Files already checked in this process, by (path, size, mtime_ns) of each: a latency job loads the
# same engine once per round, and hashes it once.
_VERIFIED: set[tuple] = set()


class EngineMissing(EdgePTQError):
    """An engine (or a file that belongs to it) is not there."""


def digest_column(engine_path: str | Path, path: str | Path) -> str:
    """The build-table column holding ``path``'s digest: engine_sha256, or engine_<ext>_sha256 for a companion."""
    if Path(path) == Path(engine_path):
        return DIGEST_COLUMN
    return f"engine_{Path(path).suffix.lstrip('.')}_sha256"


def engine_files(backend: str, engine_path: str | Path) -> list[Path]:
    """The engine file and the files beside it that belong to it (registry entry ``companions``)."""
    from workflow_scripts.core.registry import backend as backend_entry

    engine = Path(engine_path)
    return [engine] + [engine.with_suffix(f".{ext}") for ext in backend_entry(backend).companions]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_digests(backend: str, engine_path: str | Path) -> dict[str, str]:
    """{column: sha256} of the engine and its companions, as the build table records them."""
    return {digest_column(engine_path, path): file_sha256(path) for path in engine_files(backend, engine_path)}


def build_table_of(engine_path: str | Path) -> Path:
    """The build table beside an engine (paths.engine_table('build')): ``<precision>_build.parquet``."""
    engine = Path(engine_path)
    return engine.with_name(f"{engine.stem}_build.parquet")


def rebuild_hint(engine_path: str | Path, device: str | None = None) -> str:
    """The commands that rebuild an engine (and then remeasure it)."""
    where = f" on the device that built it ({device})" if device else ""
    return (f"rebuild it{where}: snakemake --cores all -f {engine_path}, then snakemake --cores all to remeasure "
            "what depends on it")


def recorded_digests(engine_path: str | Path) -> dict[str, str]:
    """The digests the build recorded for ``engine_path`` ({} when its build table is absent or has none)."""
    table = build_table_of(engine_path)
    if not table.is_file():
        return {}
    import pandas as pd

    try:
        frame = pd.read_parquet(table)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise CorruptArtifact(f"{table} is not a readable Parquet table ({type(exc).__name__}); "
                              f"{rebuild_hint(engine_path)}") from exc
    columns = [c for c in frame.columns if c.startswith("engine_") and c.endswith("_sha256")]
    if not len(frame) or not columns:
        return {}
    last = frame.iloc[-1]
    return {c: str(last[c]) for c in columns if isinstance(last[c], str) and last[c]}


def check_engine(backend: str, engine_path: str | Path, device: str | None = None) -> None:
    """Refuse a missing, empty or changed engine (or companion), naming the file, the cause and the fix.

    Every file must exist and be non-empty; where the build recorded digests, each file's SHA-256
    must equal the recorded one (a file truncated, overwritten or copied from another build fails).
    """
    files = engine_files(backend, engine_path)
    for path in files:
        if not path.is_file():
            what = "the engine" if path == Path(engine_path) else f"a file of the engine {engine_path}"
            raise EngineMissing(f"{path} ({what}) is missing; {rebuild_hint(engine_path, device)}")
        if path.stat().st_size == 0:
            raise CorruptArtifact(f"{path} is empty (0 bytes): its build was cut short or the disk was full; "
                                  f"{rebuild_hint(engine_path, device)}")
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key in _VERIFIED:
        return
    recorded = recorded_digests(engine_path)
    if not recorded:
        log.info("%s: its build recorded no digest (built by an older version); checked for presence only",
                 engine_path)
    for path in files:
        want = recorded.get(digest_column(engine_path, path))
        if want is None:
            continue
        got = file_sha256(path)
        if got != want:
            raise CorruptArtifact(
                f"{path} is not the file its build wrote: its SHA-256 is {got[:16]}..., the build recorded "
                f"{want[:16]}... in {build_table_of(engine_path)} ({path.stat().st_size} bytes now; truncated, "
                f"overwritten or copied from another build); {rebuild_hint(engine_path, device)}")
    _VERIFIED.add(key)


def load_error(backend: str, engine_path: str | Path, exc: BaseException, device: str | None = None) -> CorruptArtifact:
    """What to say when a runtime cannot load an engine that passed :func:`check_engine`: every file
    of the engine with its size, the runtime's message, and the command that rebuilds it."""
    cause = " ".join(str(exc).split())[:300] or type(exc).__name__
    files = ", ".join(f"{p} ({os.path.getsize(p) if p.exists() else 0} bytes)" for p in engine_files(backend, engine_path))
    return CorruptArtifact(f"the {backend} engine {files} cannot be loaded: {type(exc).__name__}: {cause}. The "
                           f"file is damaged or truncated; {rebuild_hint(engine_path, device)}")


def check_summary_engines(files: dict[str, list[str]], results_dir: str | Path) -> dict[str, list[str]]:
    """The summary's file lists without the engines whose files are gone, each named in a warning;
    every engine left is checked against the digests its build recorded (a mismatch is refused).
    Only engines whose build recorded digests are checked (builds of older versions recorded none).

    The summary, the decision and the report then never name an engine a user could not deploy, and
    never report numbers measured on a file other than the one now beside them.
    """
    from workflow_scripts.core.discovery import engine_files_of, parse_result_path

    missing: set[tuple] = set()
    for table in files.get("build_files", []) or []:
        labels = parse_result_path(table, results_dir) or {}
        if labels.get("kind") != "build" or "precision" not in labels:
            continue
        engines = engine_files_of(table, results_dir)
        if not engines or not recorded_digests(engines[0]):
            # No digest recorded: a build of an older version (or hand-made tables), not checked here.
            continue
        cell = tuple(labels[k] for k in ("device", "backend", "dataset", "input_size", "model", "precision"))
        gone = [p for p in engines if not p.is_file()]
        if gone:
            missing.add(cell)
            log.warning("left out of the summary: %s is missing, so the rows of that engine are not summarized; %s",
                        ", ".join(map(str, gone)), rebuild_hint(engines[0], labels["device"]))
            continue
        check_engine(labels["backend"], engines[0], device=labels["device"])
    if not missing:
        return files

    def kept(path: str) -> bool:
        labels = parse_result_path(path, results_dir) or {}
        cell = tuple(labels.get(k) for k in ("device", "backend", "dataset", "input_size", "model", "precision"))
        return cell not in missing

    return {key: [p for p in found if kept(p)] for key, found in files.items()}
