"""Dataset sources: where images and labels come from, before resizing and storage.

A source gives, per split, the labels and a function that loads one image as uint8
HxWx3 at its native size. ``workflow_scripts.data.datasets`` resizes and stores them.
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
    # False for a calibration-only folder: its labels are -1, accuracy is not measured.
    labelled: bool = True
    # What the source says of itself for meta.json (a user dataset's path and content digest).
    facts: dict = field(default_factory=dict)


def load_source(dataset: str, resources_dir: Path, verify_checksums: bool, work_dir: Path) -> DatasetSource:
    """Return the source of ``dataset`` (its loader from the registry); archives are read from (or
    fetched into) ``resources_dir``."""
    from workflow_scripts.core.registry import dataset_loader

    return dataset_loader(dataset)(Path(resources_dir), verify_checksums, Path(work_dir))
