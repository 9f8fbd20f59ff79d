"""Prepare a dataset: deterministic stratified splits, resized uint8 images stored for streaming.

Each split is written as ``{split}_images.npy`` (uint8, N x S x S x 3, values 0..255) through a
memory map, one image at a time, so preparation never holds a split in memory; readers map
the file and stream batches (``workflow_scripts.data.data_io``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from workflow_scripts.core.artifacts import atomic_path, disk_full_error, ensure_free_space, write_text
from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.sources import DatasetSource, SplitSource, load_source

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "val", "test")


def stratified_split(labels: np.ndarray, fraction: float, seed: int, what: str = "the dataset",
                     key: str = "split.val_fraction") -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with ``fraction`` of every class held out, deterministically.

    A split the classes cannot fill (a class with one image, or fewer held-out images than
    classes) is refused naming ``what``, the class counts and config key ``key``.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    held = int(np.ceil(fraction * len(labels)))
    if not len(counts) or counts.min() < 2 or held < len(classes) or len(labels) - held < len(classes):
        smallest = ", ".join(f"class {c}: {n}" for c, n in sorted(zip(classes, counts), key=lambda cn: cn[1])[:5])
        raise DatasetUnavailable(
            f"{what} is too small for a stratified split with {key} = {fraction}: {len(labels)} images in "
            f"{len(classes)} classes (fewest: {smallest}); each class needs at least 2 images and each side of the "
            f"split at least one per class ({len(classes)} images). Use a dataset with more images per class, or "
            f"change {key} so that {fraction} x {len(labels)} >= {len(classes)}")
    rest, held_out = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(rest), np.sort(held_out)


def plan_splits(source: DatasetSource, val_fraction: float, test_fraction: float, seed: int) -> dict[str, tuple[SplitSource, np.ndarray]]:
    """Map train/val/test to (source split, indices into it), carving missing splits deterministically."""
    splits = source.splits
    if "all" in splits:
        everything = splits["all"]
        rest, test = stratified_split(everything.labels, test_fraction, seed, f"dataset {source.name!r}",
                                      "split.test_fraction")
        inner_train, inner_val = stratified_split(everything.labels[rest], val_fraction / (1 - test_fraction), seed,
                                                  f"dataset {source.name!r} (after the test split)")
        return {"train": (everything, rest[inner_train]), "val": (everything, rest[inner_val]), "test": (everything, test)}
    plan = {"test": (splits["test"], np.arange(len(splits["test"])))}
    if "val" in splits:
        plan["train"] = (splits["train"], np.arange(len(splits["train"])))
        plan["val"] = (splits["val"], np.arange(len(splits["val"])))
    else:
        train, val = stratified_split(splits["train"].labels, val_fraction, seed,
                                      f"the train split of dataset {source.name!r}")
        plan["train"] = (splits["train"], train)
        plan["val"] = (splits["val"] if "val" in splits else splits["train"], val)
    return plan


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 HxWx3 (or HxW) image to size x size x 3 with bilinear filtering."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[:2] == (size, size):
        return image.astype(np.uint8, copy=False)
    return np.asarray(Image.fromarray(image.astype(np.uint8)).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def write_split(split: SplitSource, indices: np.ndarray, size: int, images_path: Path, labels_path: Path, name: str) -> None:
    """Resize and store the chosen images of one split through a memory map (bounded memory).

    The whole file is reserved on disk first: writing a memory map onto a full disk kills the
    process with SIGBUS, so a short disk is refused up front (DiskFull, naming the space needed).
    """
    total = len(indices)
    started = time.monotonic()
    needed = total * size * size * 3
    ensure_free_space(images_path, needed)
    with atomic_path(images_path) as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, size, size, 3))
        _reserve(tmp, images_path, needed)
        for n, index in enumerate(indices):
            images[n] = resize_image(split.load_image(int(index)), size)
            if (n + 1) % 2000 == 0 or n + 1 == total:
                log.info("%s: %d/%d images (%.0f s)", name, n + 1, total, time.monotonic() - started)
        images.flush()
        del images
    with atomic_path(labels_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, split.labels[indices].astype(np.int64))


def _reserve(tmp: Path, final: Path, needed: int) -> None:
    """Allocate the memory-mapped file's blocks now, so a full disk fails here and not as SIGBUS later."""
    import os

    if not hasattr(os, "posix_fallocate"):
        return
    with open(tmp, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.path.getsize(tmp))
        except OSError as exc:
            import errno

            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full_error(final, needed) from exc
            # Filesystems without fallocate (EOPNOTSUPP): the free-space check above stands alone.


def prepare_dataset(dataset: str, size: int, out_dir: str | Path, resources_dir: str | Path, verify_checksums: bool,
                    val_fraction: float, test_fraction: float, seed: int, user_path: str | None = None) -> dict:
    """Read ``dataset`` from its source, split, resize to ``size`` and store under ``out_dir``; return meta.

    ``user_path``: the folder or .npz of a user dataset (config key user_datasets). Without labels
    (a calibration-only folder) every split holds all its images, labelled -1: calibration draws
    from train, latency from test, and accuracy is not measured."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if user_path:
        from workflow_scripts.data.sources.files import load_user_source

        source = load_user_source(dataset, user_path)
    else:
        source = load_source(dataset, Path(resources_dir), verify_checksums, Path(resources_dir) / "extracted")
    if source.labelled:
        plan = plan_splits(source, val_fraction, test_fraction, seed)
    else:
        split = next(iter(source.splits.values())) if len(source.splits) == 1 else source.splits.get("all")
        if split is None:  # unlabelled split folders: each keeps its own images
            plan = {name: (source.splits.get(name, source.splits["train"]),
                           np.arange(len(source.splits.get(name, source.splits["train"])))) for name in SPLIT_NAMES}
        else:
            plan = {name: (split, np.arange(len(split))) for name in SPLIT_NAMES}
    counts = {}
    for name in ("train", "val", "test"):
        split, indices = plan[name]
        write_split(split, indices, size, out / f"{name}_images.npy", out / f"{name}_labels.npy", f"{dataset}/{name}")
        counts[name] = int(len(indices))
    meta = {
        "dataset": dataset,
        "input_size": size,
        "num_classes": source.num_classes,
        "class_names": source.class_names,
        "counts": counts,
        "seed": seed,
        "layout": "NHWC uint8 0..255",
        "labelled": source.labelled,
        **source.facts,
    }
    write_text(json.dumps(meta, indent=2), out / "meta.json")
    return meta
