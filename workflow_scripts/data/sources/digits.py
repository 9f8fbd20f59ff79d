"""scikit-learn's handwritten digits: real data shipped inside the package (offline quickstart)."""

from __future__ import annotations

import numpy as np

from workflow_scripts.data.sources import DatasetSource, SplitSource


def load_digits_source(resources_dir=None, verify_checksums: bool = True, work_dir=None) -> DatasetSource:
    """All 1797 8x8 digits as one 'all' split; values 0..16 are scaled to 0..255, gray to RGB.

    The arguments of the other loaders are accepted and unused: the data ship with scikit-learn."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)

    def load_image(i: int) -> np.ndarray:
        return np.repeat(images[i][:, :, None], 3, axis=2)

    return DatasetSource(
        name="digits",
        num_classes=10,
        splits={"all": SplitSource(labels=labels, load_image=load_image)},
        class_names=[str(d) for d in range(10)],
    )
