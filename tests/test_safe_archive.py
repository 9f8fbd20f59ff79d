"""safe_extract_tar on hostile, truncated and ordinary archives."""

from __future__ import annotations

import io
import tarfile

import pytest

from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.safe_archive import MARKER, safe_extract_tar


def _tar(path, entries):
    """entries: (name, kind, payload) with kind in file/dir/sym/lnk/chr; payload is data or link target."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            if kind in ("sym", "lnk"):
                info.linkname = payload
            tar.addfile(info)
    return path


def _only(parent, *names):
    """Assert ``parent`` holds exactly ``names`` (no leftovers, no temporary folders)."""
    assert sorted(p.name for p in parent.iterdir()) == sorted(names)


GOOD = ("a/one.txt", "file", b"one")


def test_extracts_regular_files_and_reuses_complete_extraction(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", [("a", "dir", None), GOOD, ("./a/b/two.txt", "file", b"two")])
    target = tmp_path / "out"
    files = safe_extract_tar(arc, target)
    assert sorted(f.relative_to(target).as_posix() for f in files) == ["a/b/two.txt", "a/one.txt"]
    assert (target / "a/b/two.txt").read_bytes() == b"two"
    assert (target / MARKER).is_file()
    _only(tmp_path, "ok.tar.gz", "out")

    # A complete extraction of the same archive is reused as it is.
    (target / "sentinel").write_text("kept")
    assert sorted(safe_extract_tar(arc, target)) == sorted(files)
    assert (target / "sentinel").exists()


def test_interrupted_extraction_is_redone(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", [GOOD])
    target = tmp_path / "out"
    safe_extract_tar(arc, target)
    # Simulate an extraction that never completed: no marker, a partial file.
    (target / MARKER).unlink()
    (target / "a/one.txt").write_bytes(b"o")
    safe_extract_tar(arc, target)
    assert (target / "a/one.txt").read_bytes() == b"one"
    assert (target / MARKER).is_file()


def test_members_filter(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", [GOOD, ("a/skip.bin", "file", b"x")])
    files = safe_extract_tar(arc, tmp_path / "out", members_filter=lambda m: m.name.endswith(".txt"))
    assert [f.name for f in files] == ["one.txt"]
    assert not (tmp_path / "out/a/skip.bin").exists()


@pytest.mark.parametrize(
    "entry, words",
    [
        (("../evil", "file", b"pwned"), ["../evil", ".."]),
        (("a/../../evil", "file", b"pwned"), ["a/../../evil", ".."]),
        (("ABS", "file", b"pwned"), ["absolute"]),
        (("link", "sym", "ABSDIR"), ["link", "symlink"]),
        (("hard", "lnk", "ABS"), ["hard", "hardlink"]),
        (("dev", "chr", None), ["dev", "device"]),
    ],
)
def test_unsafe_members_are_refused(tmp_path, entry, words):
    outside = tmp_path / "evil"
    name, kind, payload = entry
    name = name.replace("ABS", str(outside))
    payload = payload.replace("ABSDIR", str(tmp_path)).replace("ABS", str(outside)) if isinstance(payload, str) else payload
    entries = [GOOD, (name, kind, payload)]
    if kind == "sym":
        entries.append(("link/evil", "file", b"pwned"))  # would land in tmp_path if the link existed
    arc = _tar(tmp_path / "bad.tar.gz", entries)
    with tarfile.open(arc) as tar:
        assert name in tar.getnames()  # the hostile name really is in the archive
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises((DatasetUnavailable, ValueError)) as err:
        safe_extract_tar(arc, work / "target")
    msg = str(err.value)
    for word in words:
        assert word in msg
    assert str(arc) in msg
    assert not outside.exists()
    _only(tmp_path, "bad.tar.gz", "work")
    _only(work)  # neither the target nor a temporary folder is left


def test_truncated_archive(tmp_path):
    arc = tmp_path / "cut.tar.gz"
    _tar(arc, [GOOD, ("a/big.bin", "file", bytes(range(256)) * 4000)])
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    work = tmp_path / "work"
    with pytest.raises(DatasetUnavailable, match="truncated or corrupt") as err:
        safe_extract_tar(arc, work / "target")
    assert str(arc) in str(err.value)
    _only(work)


def test_not_an_archive(tmp_path):
    arc = tmp_path / "junk.tar.gz"
    arc.write_bytes(b"this is not a tar archive at all" * 10)
    with pytest.raises(DatasetUnavailable, match="junk.tar.gz"):
        safe_extract_tar(arc, tmp_path / "target")
    assert not (tmp_path / "target").exists()
