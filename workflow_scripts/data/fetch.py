"""Find a dataset archive in the resources folder, or download it there with its md5 checked.

A download is written under a temporary name in the same folder and renamed only after its
checksum matches, so the final name never points at a partial or corrupt file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

from workflow_scripts.core.errors import DatasetUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# Long enough for slow mirrors, short enough that a stalled transfer fails instead of hanging.
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
LOG_EVERY_S = 5.0


def file_md5(path: Path) -> str:
    """Return the hex md5 of the file at ``path``, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manual_instructions(filename: str, folder: Path, url: str) -> str:
    return f"download {url} yourself and save it as {folder / filename} (file name {filename!r} in folder {folder})"


def ensure_file(filename: str, url: str, md5: str | None, resources_dir: Path, verify_checksums: bool = True) -> Path:
    """Return ``resources_dir/filename``, downloading it from ``url`` if absent; the md5 is checked
    unless ``verify_checksums`` is False (or ``md5`` is None). Raises DatasetUnavailable."""
    folder = Path(resources_dir).expanduser().resolve()
    target = folder / filename
    check = bool(verify_checksums) and bool(md5)

    if target.is_file():
        if check:
            actual = file_md5(target)
            if actual.lower() != str(md5).lower():
                raise DatasetUnavailable(
                    f"checksum mismatch for {target}: expected md5 {md5}, got {actual}. The file is "
                    f"corrupt, truncated or a different version: delete it and let the workflow download it "
                    f"again ({url}), or, if it comes from a private mirror you trust, set "
                    f"verify_checksums: false in the config."
                )
        return target

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetUnavailable(f"cannot create the folder {folder} for {filename!r}: {exc}") from exc
    _download(filename, url, md5 if check else None, folder, target)
    return target


def _download(filename: str, url: str, md5: str | None, folder: Path, target: Path) -> None:
    import requests
    import urllib3

    log.info("downloading %s from %s into %s", filename, url, folder)
    # A hidden temporary name in the destination folder: os.replace is then atomic, and a
    # partial file can never be mistaken for the archive.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _stream(requests, url, out, filename)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, urllib3.exceptions.HTTPError) as exc:
            raise DatasetUnavailable(
                f"cannot download {filename!r} from {url}: no network, server unreachable or connection lost ({exc}). "
                f"To run offline, {_manual_instructions(filename, folder, url)}."
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise DatasetUnavailable(
                f"download of {filename!r} from {url} failed: {exc}. Retry later, or "
                f"{_manual_instructions(filename, folder, url)}."
            ) from exc
        except OSError as exc:
            raise DatasetUnavailable(f"cannot write {filename!r} into {folder}: {exc}") from exc
        if md5 is not None and actual.lower() != md5.lower():
            raise DatasetUnavailable(
                f"checksum mismatch for {filename!r} downloaded from {url}: expected md5 {md5}, got {actual}; "
                f"the file was discarded. Retry the download, or, for a private mirror you trust, set "
                f"verify_checksums: false in the config."
            )
        os.replace(tmp, target)
    except BaseException:
        # Any failure, including KeyboardInterrupt, leaves nothing half-written behind.
        tmp.unlink(missing_ok=True)
        raise
    log.info("saved %s", target)


def _stream(requests, url: str, out, filename: str) -> str:
    """Copy the body at ``url`` into ``out``; return its md5. Progress goes to tqdm or the log."""
    digest = hashlib.md5()
    with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = _progress_bar(total, filename)
        done = 0
        last_log = time.monotonic()
        try:
            # Raw bytes, not iter_content: a server that labels a .tar.gz "Content-Encoding: gzip"
            # must not get it decompressed, or the md5 (and the archive) would be wrong.
            for chunk in resp.raw.stream(CHUNK_BYTES, decode_content=False):
                if not chunk:
                    continue
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                elif time.monotonic() - last_log >= LOG_EVERY_S:
                    last_log = time.monotonic()
                    share = f" ({100.0 * done / total:.0f}%)" if total else ""
                    log.info("%s: %.1f MB%s", filename, done / 1e6, share)
        finally:
            if bar is not None:
                bar.close()
        if total is not None and done != total:
            raise requests.exceptions.ConnectionError(f"connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def _progress_bar(total: int | None, filename: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=filename, leave=False)
