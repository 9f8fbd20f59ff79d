"""CIFAR-100 (Krizhevsky 2009) from either published archive: the "python" or the "binary" version.

Both carry the official 50000/10000 train/test split; the 100 fine labels are used. Images are
stored as three 32x32 colour planes (R, then G, then B) per row; they are kept planar in memory
and turned into 32x32x3 HWC one at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from workflow_scripts.data.sources import DatasetSource, SplitSource
from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.fetch import ensure_file
from workflow_scripts.data.safe_archive import safe_extract_tar
from workflow_scripts.data.safe_pickle import UnsafePickleError, safe_load_pickle

log = logging.getLogger(__name__)

PYTHON_ARCHIVE = "cifar-100-python.tar.gz"
BINARY_ARCHIVE = "cifar-100-binary.tar.gz"

# Module-level so that tests (and private mirrors) can override them.
MD5 = {
    PYTHON_ARCHIVE: "eb9058c3a382ffc7106e4002c42a8d85",
    BINARY_ARCHIVE: "03b5dce01913d631647c71ecec9e9cb8",
}
URLS = {
    PYTHON_ARCHIVE: "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    BINARY_ARCHIVE: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
}

NUM_CLASSES = 100
SIDE = 32
PIXELS = 3 * SIDE * SIDE
RECORD = 2 + PIXELS  # binary version: coarse label byte, fine label byte, pixels

_PY_MEMBERS = {f"cifar-100-python/{n}" for n in ("train", "test", "meta")}
_BIN_MEMBERS = {f"cifar-100-binary/{n}" for n in ("train.bin", "test.bin", "fine_label_names.txt")}


def load_cifar100_source(resources_dir: Path, verify_checksums: bool, work_dir: Path) -> DatasetSource:
    """CIFAR-100 with splits 'train' and 'test' from whichever archive is in ``resources_dir``
    (python version preferred); if neither is, the python version is downloaded."""
    resources_dir = Path(resources_dir).expanduser().resolve()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    if (resources_dir / PYTHON_ARCHIVE).is_file():
        kind = PYTHON_ARCHIVE
    elif (resources_dir / BINARY_ARCHIVE).is_file():
        kind = BINARY_ARCHIVE
    else:
        kind = PYTHON_ARCHIVE
    try:
        archive = ensure_file(kind, URLS[kind], MD5[kind], resources_dir, verify_checksums)
    except DatasetUnavailable as exc:
        if (resources_dir / kind).is_file():
            raise  # present but bad: the checksum message already says what to do
        raise DatasetUnavailable(
            f"CIFAR-100 is not available: neither {PYTHON_ARCHIVE} nor {BINARY_ARCHIVE} is in {resources_dir}, "
            f"and downloading {PYTHON_ARCHIVE} failed ({exc}). Put either {PYTHON_ARCHIVE} "
            f"({URLS[PYTHON_ARCHIVE]}) or {BINARY_ARCHIVE} ({URLS[BINARY_ARCHIVE]}) into {resources_dir}."
        ) from exc

    if kind == PYTHON_ARCHIVE:
        (train_x, train_y), (test_x, test_y), names = _read_python(archive, work_dir)
    else:
        (train_x, train_y), (test_x, test_y), names = _read_binary(archive, work_dir)
    log.info("CIFAR-100 from %s: %d train, %d test images", archive.name, len(train_y), len(test_y))
    return DatasetSource(
        name="cifar100",
        num_classes=NUM_CLASSES,
        splits={"train": _split(train_x, train_y), "test": _split(test_x, test_y)},
        class_names=names,
    )


def _split(planes: np.ndarray, labels: np.ndarray) -> SplitSource:
    def load_image(i: int) -> np.ndarray:
        # Row layout is R plane, G plane, B plane, each row-major 32x32 -> (3,32,32) -> HWC.
        return np.ascontiguousarray(planes[i].reshape(3, SIDE, SIDE).transpose(1, 2, 0))

    return SplitSource(labels=labels, load_image=load_image)


def _norm(name: str) -> str:
    while name.startswith("./"):  # some tar tools prefix members with "./"
        name = name[2:]
    return name


def _extract(archive: Path, work_dir: Path, wanted: set[str]) -> Path:
    # Absolute, because safe_extract_tar returns absolute paths that are made relative to it.
    target = (work_dir / archive.name.replace(".tar.gz", "")).resolve()
    files = safe_extract_tar(archive, target, members_filter=lambda m: _norm(m.name) in wanted)
    found = {f.relative_to(target).as_posix() for f in files}
    missing = sorted(wanted - found)
    if missing:
        raise DatasetUnavailable(
            f"{archive} lacks the member(s) {', '.join(missing)}: it is not the official archive. "
            f"Delete it and download it again."
        )
    return target


def _checked(archive: Path, member: str, data: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split's pixel rows and fine labels; return them as uint8 (n,3072) and int64 (n,)."""
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise DatasetUnavailable(
            f"{archive}: {member} holds pixel data of dtype {data.dtype} and shape {data.shape}, "
            f"expected uint8 (n, {PIXELS}); the archive is corrupt or not CIFAR-100"
        )
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(data):
        raise DatasetUnavailable(f"{archive}: {member} has {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetUnavailable(
            f"{archive}: {member} has fine labels in [{labels.min()}, {labels.max()}], expected 0..{NUM_CLASSES - 1}"
        )
    return data, labels


def _read_python(archive: Path, work_dir: Path):
    root = _extract(archive, work_dir, _PY_MEMBERS) / "cifar-100-python"

    def load(name: str) -> dict:
        path = root / name
        try:
            with open(path, "rb") as fh:
                obj = safe_load_pickle(fh)
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{path} (from {archive}): {exc}") from exc
        if not isinstance(obj, dict):
            raise DatasetUnavailable(f"{path} (from {archive}) is not a dict pickle; the archive is corrupt")
        return obj

    def split(name: str):
        d = load(name)
        try:
            data, labels = d[b"data"], d[b"fine_labels"]
        except KeyError as exc:
            raise DatasetUnavailable(f"{root / name} (from {archive}) lacks the key {exc.args[0]!r}") from exc
        return _checked(archive, name, np.asarray(data), np.asarray(labels))

    train, test = split("train"), split("test")
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in load("meta").get(b"fine_label_names", [])]
    return train, test, _class_names(archive, names)


def _read_binary(archive: Path, work_dir: Path):
    root = _extract(archive, work_dir, _BIN_MEMBERS) / "cifar-100-binary"

    def split(name: str):
        raw = np.fromfile(root / name, dtype=np.uint8)
        if raw.size % RECORD:
            raise DatasetUnavailable(
                f"{root / name} (from {archive}) is {raw.size} bytes, not a multiple of the {RECORD}-byte record; "
                f"the archive is corrupt"
            )
        rows = raw.reshape(-1, RECORD)
        # Byte 0 is the coarse label, byte 1 the fine label; the slice views share ``raw``.
        return _checked(archive, name, rows[:, 2:], rows[:, 1])

    train, test = split("train.bin"), split("test.bin")
    text = (root / "fine_label_names.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return train, test, _class_names(archive, names)


def _class_names(archive: Path, names: list[str]) -> list[str]:
    if len(names) != NUM_CLASSES:
        raise DatasetUnavailable(f"{archive} lists {len(names)} fine class names, expected {NUM_CLASSES}")
    return names
