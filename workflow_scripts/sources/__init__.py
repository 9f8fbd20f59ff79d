"""Dataset sources: where images and labels come from, before resizing and storage.

A source gives, per split, the labels and a function that loads one image as uint8
HxWx3 at its native size. ``workflow_scripts.datasets`` resizes and stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass
class SplitSource:
    """One split: ``labels`` (int64, shape (n,)) and ``load_image(i)`` -> uint8 HxWx3."""

    labels: np.ndarray
    load_image: Callable[[int], np.ndarray]

    def __len__(self) -> int:
        return int(len(self.labels))


@dataclass
class DatasetSource:
    """A dataset's splits ('train', 'test' and, where official, 'val') and its classes."""

    name: str
    num_classes: int
    splits: dict[str, SplitSource]
    class_names: list[str] = field(default_factory=list)


def load_source(dataset: str, resources_dir: Path, verify_checksums: bool, work_dir: Path) -> DatasetSource:
    """Return the source of ``dataset``; archives are read from (or fetched into) ``resources_dir``."""
    if dataset == "digits":
        from .digits import load_digits_source

        return load_digits_source()
    if dataset == "cifar100":
        from .cifar100 import load_cifar100_source

        return load_cifar100_source(Path(resources_dir), verify_checksums, Path(work_dir))
    if dataset == "oxford_flowers102":
        from .flowers102 import load_flowers102_source

        return load_flowers102_source(Path(resources_dir), verify_checksums, Path(work_dir))
    from ..errors import ConfigError

    raise ConfigError(
        f"unknown dataset {dataset!r} in config key 'datasets'; choose from digits, cifar100, oxford_flowers102"
    )
