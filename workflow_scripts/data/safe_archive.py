"""Extract tar archives without trusting their member names or types.

Only regular files and directories whose names stay inside the target are accepted; links,
devices, FIFOs, absolute names and ``..`` are refused before anything is written. Extraction
goes into a temporary sibling folder that is renamed onto the target once complete, together
with a marker; a target without a matching marker is extracted again.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from workflow_scripts.core.errors import DatasetUnavailable

MARKER = ".extraction-complete.json"
_COPY_BYTES = 1 << 20


class UnsafeArchiveMember(DatasetUnavailable, ValueError):
    """An archive member would escape the target, or is a link, device or other special file."""


def _archive_identity(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _checked_relpath(archive: Path, member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path relative to the target, or raise if it is not a plain file/dir inside it."""
    name = member.name
    if not (member.isreg() or member.isdir()):
        kind = (
            "symlink" if member.issym() else
            "hardlink" if member.islnk() else
            "device" if (member.ischr() or member.isblk()) else
            "FIFO" if member.isfifo() else f"type {member.type!r}"
        )
        raise UnsafeArchiveMember(
            f"refusing to extract {archive}: member {name!r} is a {kind}; only regular files and "
            f"directories are accepted. The archive is not the official one: delete it and download it again."
        )
    if "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveMember(
            f"refusing to extract {archive}: member {name!r} has an absolute path. "
            f"The archive is not the official one: delete it and download it again."
        )
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveMember(
            f"refusing to extract {archive}: member {name!r} contains '..' and could write outside "
            f"the target folder. The archive is not the official one: delete it and download it again."
        )
    if not parts:
        return None  # "./" itself: nothing to create
    return PurePosixPath(*parts)


def safe_extract_tar(
    archive: Path, target: Path, members_filter: Optional[Callable[[tarfile.TarInfo], bool]] = None
) -> list[Path]:
    """Extract ``archive`` into ``target`` (all members, or those ``members_filter`` accepts) and
    return the extracted regular files; an earlier complete extraction of the same archive is reused
    (the filter is not recorded in the marker: use one target per filter)."""
    archive = Path(archive).resolve()
    target = Path(target).resolve()
    if not archive.is_file():
        raise DatasetUnavailable(f"archive {archive} does not exist")
    identity = _archive_identity(archive)

    previous = _read_marker(target)
    if previous is not None and previous.get("identity") == identity:
        files = [target / rel for rel in previous.get("files", [])]
        if all(f.is_file() for f in files):
            return files

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extracting-", dir=target.parent))
    try:
        rel_files = _extract_into(archive, tmp, members_filter)
        with open(tmp / MARKER, "w") as fh:
            json.dump({"identity": identity, "files": rel_files}, fh)
        # Stale or partial target from an interrupted run, or an extraction of another archive.
        if target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target / rel for rel in rel_files]


def _read_marker(target: Path) -> dict | None:
    try:
        with open(target / MARKER) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _extract_into(archive: Path, dest: Path, members_filter) -> list[str]:
    """Stream through the archive once, checking each member before writing it under ``dest``."""
    rel_files: list[str] = []
    try:
        # Streaming mode reads a gzip archive in a single pass; each member is checked before
        # it is written, and everything goes into ``dest``, which is discarded on any refusal.
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                rel = _checked_relpath(archive, member)
                if rel is None or (members_filter is not None and not members_filter(member)):
                    continue
                out = dest.joinpath(*rel.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise DatasetUnavailable(f"{archive}: member {member.name!r} has no data")
                # Plain 0644 files: owner, permissions and setuid bits from the archive are ignored.
                with src, open(out, "wb") as fh:
                    shutil.copyfileobj(src, fh, _COPY_BYTES)
                rel_files.append(rel.as_posix())
    except DatasetUnavailable:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            raise DatasetUnavailable(f"cannot extract {archive} into {dest.parent}: {exc}") from exc
        raise DatasetUnavailable(
            f"cannot extract {archive}: the archive is truncated or corrupt ({type(exc).__name__}: {exc}). "
            f"Delete it and download it again."
        ) from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DatasetUnavailable(
            f"cannot extract {archive}: the archive is truncated or corrupt ({type(exc).__name__}: {exc}). "
            f"Delete it and download it again."
        ) from exc
    return list(dict.fromkeys(rel_files))  # a member repeated in the archive is one file
