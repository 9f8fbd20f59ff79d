"""Oxford 102 Flowers (Nilsback & Zisserman 2008) with its official train/val/test split.

Three published files: ``102flowers.tgz`` (``jpg/image_00001.jpg`` ...), ``imagelabels.mat``
(``labels``: 1..102 per image) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1-based
image ids). Images are decoded lazily, one per ``load_image`` call.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from workflow_scripts.data.sources import DatasetSource, SplitSource
from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.fetch import ensure_file
from workflow_scripts.data.safe_archive import safe_extract_tar

log = logging.getLogger(__name__)

IMAGES_ARCHIVE = "102flowers.tgz"
LABELS_FILE = "imagelabels.mat"
SETID_FILE = "setid.mat"

_BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
# Module-level so that tests (and private mirrors) can override them.
MD5 = {
    IMAGES_ARCHIVE: "52808999861908f626f3c1f4e79d11fa",
    LABELS_FILE: "e0620be6f572b9609742df49c70aed4d",
    SETID_FILE: "a5357ecc9cb78c4bef273ce3793fc85c",
}
URLS = {name: _BASE_URL + name for name in MD5}

NUM_CLASSES = 102
# Official split name in setid.mat -> split name used by the workflow.
SPLIT_KEYS = {"trnid": "train", "valid": "val", "tstid": "test"}
_JPG = re.compile(r"^(?:\./)*jpg/image_\d{5}\.jpg$")


def load_flowers102_source(resources_dir: Path, verify_checksums: bool, work_dir: Path) -> DatasetSource:
    """Oxford-102 with splits 'train', 'val', 'test' (setid.mat) and labels 0..101, from the three
    published files in ``resources_dir`` (downloaded there if missing)."""
    resources_dir = Path(resources_dir).expanduser().resolve()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    paths, problems = {}, []
    # Try every file before failing, so one message lists all that are missing.
    for name in (LABELS_FILE, SETID_FILE, IMAGES_ARCHIVE):
        try:
            paths[name] = ensure_file(name, URLS[name], MD5[name], resources_dir, verify_checksums)
        except DatasetUnavailable as exc:
            problems.append(str(exc))
    if problems:
        raise DatasetUnavailable("Oxford-102 flowers is not available:\n  " + "\n  ".join(problems))

    labels = _read_labels(paths[LABELS_FILE])
    split_ids = _read_setid(paths[SETID_FILE], len(labels))

    target = work_dir / "102flowers"
    files = safe_extract_tar(paths[IMAGES_ARCHIVE], target, members_filter=lambda m: bool(_JPG.match(m.name)))
    present = {f.name for f in files}
    jpg_dir = target / "jpg"

    splits = {}
    for key, split in SPLIT_KEYS.items():
        ids = split_ids[key]
        missing = [i for i in ids if _image_name(i) not in present]
        if missing:
            raise DatasetUnavailable(
                f"{paths[IMAGES_ARCHIVE]} lacks {len(missing)} image(s) listed in {SETID_FILE} '{key}', "
                f"e.g. jpg/{_image_name(missing[0])}; the archive is incomplete: delete it and download it again"
            )
        splits[split] = SplitSource(labels=labels[ids - 1], load_image=_image_loader(jpg_dir, ids))
    log.info("Oxford-102 flowers: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return DatasetSource(
        name="oxford_flowers102",
        num_classes=NUM_CLASSES,
        splits=splits,
        # The published files carry no class names; these name the official 1-based label ids.
        class_names=[f"class_{k:03d}" for k in range(1, NUM_CLASSES + 1)],
    )


def _image_name(image_id: int) -> str:
    return f"image_{int(image_id):05d}.jpg"


def _image_loader(jpg_dir: Path, ids: np.ndarray):
    def load_image(i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = jpg_dir / _image_name(ids[i])
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetUnavailable(f"cannot decode {path}: {exc}; delete {IMAGES_ARCHIVE} and download it again") from exc

    return load_image


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises several unrelated types for a corrupt file
        raise DatasetUnavailable(f"cannot read {path}: {exc}; delete it and download it again") from exc


def _read_labels(path: Path) -> np.ndarray:
    """Labels 1..102 per image from imagelabels.mat, returned 0-based as int64."""
    mat = _loadmat(path)
    if "labels" not in mat:
        raise DatasetUnavailable(f"{path} has no 'labels' variable; it is not the official {LABELS_FILE}")
    labels = np.asarray(mat["labels"]).reshape(-1).astype(np.int64)
    if labels.size == 0 or labels.min() < 1 or labels.max() > NUM_CLASSES:
        raise DatasetUnavailable(f"{path}: labels must lie in 1..{NUM_CLASSES}; it is not the official {LABELS_FILE}")
    return labels - 1


def _read_setid(path: Path, n_images: int) -> dict[str, np.ndarray]:
    """The 1-based image ids of each official split, checked against the number of labelled images."""
    mat = _loadmat(path)
    out = {}
    for key in SPLIT_KEYS:
        if key not in mat:
            raise DatasetUnavailable(f"{path} has no {key!r} variable; it is not the official {SETID_FILE}")
        ids = np.asarray(mat[key]).reshape(-1).astype(np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > n_images):
            raise DatasetUnavailable(
                f"{path}: {key!r} has image ids outside 1..{n_images} (the number of labels in {LABELS_FILE})"
            )
        out[key] = ids
    return out
