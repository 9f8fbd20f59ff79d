"""Reading prepared splits: the single source of truth for model input layout and range.

Every consumer (training, ONNX parity, calibration, evaluation, latency) takes its images
from here: float32 NHWC in 0..255; the models hold their own preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import DatasetUnavailable


def open_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a split's images (uint8) and load its labels; errors name the missing file."""
    data_dir = Path(data_dir)
    images_path, labels_path = data_dir / f"{split}_images.npy", data_dir / f"{split}_labels.npy"
    for path in (images_path, labels_path):
        if not path.exists():
            raise DatasetUnavailable(f"prepared data file {path} is missing; run the prepare_dataset rule (snakemake {path})")
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path)
    if len(images) != len(labels):
        raise DatasetUnavailable(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels; delete both and rerun")
    return images, labels


def read_meta(data_dir: str | Path) -> dict:
    """The prepared dataset's meta.json."""
    return json.loads((Path(data_dir) / "meta.json").read_text())


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NHWC in 0..255, the input every exported model takes."""
    return np.ascontiguousarray(images, dtype=np.float32)


def calibration_indices(num_available: int, num_images: int, seed: int) -> np.ndarray:
    """Which train images calibrate INT8: a seeded sample, sorted for sequential reads."""
    if num_images > num_available:
        raise DatasetUnavailable(
            f"config key 'calibration.num_images' asks for {num_images} images but the train split has "
            f"{num_available}; lower calibration.num_images to at most {num_available}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_available, size=num_images, replace=False))


def iter_batches(data_dir: str | Path, split: str, batch_size: int, limit: int = 0,
                 indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (float32 NHWC images, int64 labels) batches of a split, streaming from disk."""
    images, labels = open_split(data_dir, split)
    order = np.arange(len(labels)) if indices is None else np.asarray(indices)
    if limit:
        order = order[:limit]
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        yield to_model_input(images[chosen]), labels[chosen]
