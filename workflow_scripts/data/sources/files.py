"""A user's own images (config key user_datasets): an image folder or an .npz of images and labels.

Folder layout, as Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder`` read it: one
subfolder per class (classes sorted by name), optionally under ``train/``, ``val/`` and ``test/``; image
files directly in the folder mean no labels. An ``.npz`` holds ``images`` (N x H x W or N x H x W x 3
uint8) and ``labels``, or ``train_images``/``test_images`` (``val_images`` optional) with their
``_labels``; it is read with ``allow_pickle=False``. Every image is checked before preparation: an
unreadable file is refused by name; images of mixed sizes are named in the log and resized, as the
built-in datasets are.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.core.user_inputs import IMAGE_SUFFIXES, SPLIT_FOLDERS, _images_in, content_digest
from workflow_scripts.data.sources import DatasetSource, SplitSource

log = logging.getLogger(__name__)


def load_user_source(name: str, path: str | Path) -> DatasetSource:
    """The source of user dataset ``name`` at ``path`` (folder or .npz), checked image by image."""
    path = Path(path)
    if not path.exists():
        raise DatasetUnavailable(f"user dataset {name!r}: {path} does not exist (config key user_datasets.{name}.path)")
    facts = {"source_path": str(path), "source_sha256": content_digest(path)}
    if path.is_file():
        source = _npz_source(name, path)
    else:
        source = _folder_source(name, path)
    source.facts.update(facts)
    return source


def _folder_split(name: str, folder: Path, classes: list[str] | None) -> tuple[list[Path], np.ndarray]:
    if classes is None:
        files = _images_in(folder)
        return files, np.full(len(files), -1, np.int64)
    files, labels = [], []
    for index, cls in enumerate(classes):
        found = _images_in(folder / cls)
        if not found:
            raise DatasetUnavailable(f"user dataset {name!r}: class folder {folder / cls} holds no image files "
                                     f"({', '.join(IMAGE_SUFFIXES)}); remove the empty class or add its images")
        files += found
        labels += [index] * len(found)
    return files, np.asarray(labels, np.int64)


def _folder_source(name: str, root: Path) -> DatasetSource:
    from workflow_scripts.core.user_inputs import read_data_contract

    contract = read_data_contract(name, root)
    classes = list(contract.class_names) if contract.num_classes is not None else None
    folders = {s: root / s for s in contract.splits} or {"all": root}
    splits, sizes = {}, Counter()
    examples: dict[tuple, Path] = {}
    for split, folder in folders.items():
        files, labels = _folder_split(name, folder, classes)
        for file in files:
            size = _check_image(name, file)
            sizes[size] += 1
            examples.setdefault(size, file)
        splits[split] = SplitSource(labels=labels, load_image=_loader(name, files))
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}: {n} images (e.g. {examples[(w, h)]})" for (w, h), n in sizes.most_common(4))
        log.warning("user dataset %r has images of %d sizes (%s); each is resized to the input size", name,
                    len(sizes), shown)
    source = DatasetSource(name=name, num_classes=len(classes or ()), splits=splits, class_names=classes or [],
                           labelled=classes is not None)
    source.facts["native_sizes"] = {f"{w}x{h}": n for (w, h), n in sizes.items()}
    return source


def _check_image(name: str, file: Path) -> tuple[int, int]:
    """The (width, height) of an image file, after checking it decodes; an unreadable file is named."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.load()
            return image.size
    except Exception as exc:  # PIL raises several types for a broken file
        raise DatasetUnavailable(f"user dataset {name!r}: cannot read image {file} ({type(exc).__name__}: {exc}); "
                                 "replace or remove it") from None


def _loader(name: str, files: list[Path]):
    from PIL import Image

    def load_image(i: int) -> np.ndarray:
        with Image.open(files[i]) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)

    return load_image


def _npz_source(name: str, path: Path) -> DatasetSource:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except (ValueError, OSError) as exc:
        raise DatasetUnavailable(f"user dataset {name!r}: {path} is not a readable .npz without pickles "
                                 f"({type(exc).__name__}: {exc})") from None
    prefixes = [""] if "images" in arrays else [f"{s}_" for s in SPLIT_FOLDERS if f"{s}_images" in arrays]
    labelled = all(f"{p}labels" in arrays for p in prefixes)
    splits = {}
    for prefix in prefixes:
        images = arrays[f"{prefix}images"]
        key = f"{path}[{prefix}images]"
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
            raise DatasetUnavailable(f"user dataset {name!r}: {key} is {images.dtype} {images.shape}; give uint8 images "
                                     "of N x H x W (gray) or N x H x W x 3 (RGB), values 0..255")
        if images.ndim == 4 and images.shape[3] == 1:
            images = images[..., 0]
        labels = arrays[f"{prefix}labels"].astype(np.int64) if labelled else np.full(len(images), -1, np.int64)
        if len(labels) != len(images):
            raise DatasetUnavailable(f"user dataset {name!r}: {path} holds {len(images)} {prefix}images but "
                                     f"{len(labels)} {prefix}labels")
        splits[prefix.rstrip("_") or "all"] = SplitSource(labels=labels, load_image=lambda i, im=images: np.asarray(im[i]))
    num_classes = int(max(s.labels.max() for s in splits.values() if len(s)) + 1) if labelled else 0
    if labelled:
        for split, source in splits.items():
            missing = sorted(set(range(num_classes)) - set(np.unique(source.labels).tolist()))
            if missing and split in ("all", "train"):
                raise DatasetUnavailable(f"user dataset {name!r}: class(es) {missing[:10]} of 0..{num_classes - 1} have "
                                         f"no images in {path} ({split}); every class needs images")
    return DatasetSource(name=name, num_classes=num_classes, splits=splits,
                         class_names=[str(c) for c in range(num_classes)], labelled=labelled)
