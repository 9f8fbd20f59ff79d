"""Reading prepared splits: the single source of truth for model input layout and range.

Every consumer (training, ONNX parity, calibration, evaluation, latency) takes its images
from here: float32 NHWC in 0..255; the models hold their own preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from workflow_scripts.core.errors import CorruptArtifact, DatasetUnavailable


def open_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a split's images (uint8) and load its labels; errors name the missing file."""
    data_dir = Path(data_dir)
    images_path, labels_path = data_dir / f"{split}_images.npy", data_dir / f"{split}_labels.npy"
    for path in (images_path, labels_path):
        if not path.exists():
            raise DatasetUnavailable(f"prepared data file {path} is missing; run the prepare_dataset rule (snakemake {path})")
    images = _load_array(images_path, mmap=True)
    labels = _load_array(labels_path, mmap=False)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise CorruptArtifact(f"{images_path} holds {images.dtype} {images.shape}, not uint8 N x S x S x 3 images; "
                              f"delete it and rerun the prepare_dataset rule (snakemake {images_path})")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptArtifact(f"{labels_path} holds {labels.dtype} {labels.shape}, not integer labels; "
                              f"delete it and rerun the prepare_dataset rule (snakemake {labels_path})")
    if len(images) != len(labels):
        raise DatasetUnavailable(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels; delete both and rerun")
    return images, labels


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """np.load without pickles; a truncated or corrupt file names itself and the rule that remakes it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptArtifact(
            f"prepared data file {path} is corrupt or truncated ({type(exc).__name__}); it is never read as a pickle. "
            f"Delete it and rerun the prepare_dataset rule (snakemake --forcerun prepare_dataset {path})") from exc


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
