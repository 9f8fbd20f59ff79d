import json

import numpy as np
import pytest

from workflow_scripts.data.data_io import calibration_indices, iter_batches, open_split
from workflow_scripts.data.datasets import prepare_dataset, resize_image, stratified_split
from workflow_scripts.core.errors import DatasetUnavailable


def test_prepared_digits_layout(digits_dir):
    meta = json.loads((digits_dir / "meta.json").read_text())
    assert meta["num_classes"] == 10
    total = sum(meta["counts"].values())
    assert total == 1797
    for split in ("train", "val", "test"):
        images, labels = open_split(digits_dir, split)
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        assert len(images) == meta["counts"][split]
        assert set(np.unique(labels)) == set(range(10)), "stratified: every class in every split"
        assert images.max() > 200 and images.min() == 0, "values span 0..255"
        # Gray digits become three equal channels.
        assert np.array_equal(images[..., 0], images[..., 2])
    assert abs(meta["counts"]["test"] / total - 0.15) < 0.01


def test_split_is_deterministic_and_seed_dependent(tmp_path, digits_dir):
    again = tmp_path / "again"
    prepare_dataset("digits", 32, again, tmp_path, True, 0.15, 0.15, seed=0)
    other = tmp_path / "other"
    prepare_dataset("digits", 32, other, tmp_path, True, 0.15, 0.15, seed=1)
    for split in ("train", "val", "test"):
        assert (digits_dir / f"{split}_images.npy").read_bytes() == (again / f"{split}_images.npy").read_bytes()
        assert (digits_dir / f"{split}_labels.npy").read_bytes() == (again / f"{split}_labels.npy").read_bytes()
    assert (digits_dir / "test_labels.npy").read_bytes() != (other / "test_labels.npy").read_bytes()


def test_stratified_split_keeps_class_shares():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    rest, held = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(rest, held)) == 0 and len(rest) + len(held) == 200
    assert np.bincount(labels[held]).tolist() == [20, 10, 6, 4]


def test_resize_keeps_range_and_shape():
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:6, 2:6] = 255
    out = resize_image(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and out.max() == 255 and out.min() == 0


def test_batches_are_float32_0_255_and_cover_the_split(digits_dir):
    _, labels = open_split(digits_dir, "test")
    seen = 0
    for images, batch_labels in iter_batches(digits_dir, "test", 64):
        assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3)
        assert 0.0 <= images.min() and images.max() <= 255.0
        seen += len(batch_labels)
    assert seen == len(labels)


def test_calibration_sample_is_seeded_and_bounded():
    a = calibration_indices(1000, 64, seed=0)
    assert np.array_equal(a, calibration_indices(1000, 64, seed=0))
    assert len(np.unique(a)) == 64 and a.max() < 1000
    with pytest.raises(DatasetUnavailable, match="calibration.num_images"):
        calibration_indices(50, 64, seed=0)


def test_missing_prepared_file_names_it(tmp_path):
    with pytest.raises(DatasetUnavailable, match="train_images.npy"):
        open_split(tmp_path, "train")


def test_a_dataset_too_small_for_its_splits_names_the_classes_and_the_key():
    import numpy as np

    from workflow_scripts.data.datasets import stratified_split
    from workflow_scripts.core.errors import DatasetUnavailable

    labels = np.array([0, 0, 0, 1, 1, 1, 2])  # class 2 has one image
    with pytest.raises(DatasetUnavailable) as info:
        stratified_split(labels, 0.3, 0, "dataset 'tiny'", "split.test_fraction")
    message = str(info.value)
    assert "dataset 'tiny'" in message and "class 2: 1" in message and "split.test_fraction" in message
    with pytest.raises(DatasetUnavailable, match="each side of the split"):
        stratified_split(np.repeat(np.arange(10), 3), 0.1, 0)  # 3 held-out images for 10 classes
    rest, held = stratified_split(np.repeat(np.arange(3), 4), 0.25, 0)
    assert len(held) == 3 and len(rest) == 9


def test_a_corrupt_prepared_array_names_itself_and_never_unpickles(tmp_path, digits_dir):
    import shutil

    import numpy as np

    from workflow_scripts.data.data_io import open_split
    from workflow_scripts.core.errors import CorruptArtifact

    folder = tmp_path / "data"
    shutil.copytree(digits_dir, folder)
    images = folder / "test_images.npy"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(CorruptArtifact, match=f"{images}.*prepare_dataset"):
        open_split(folder, "test")
    np.save(folder / "test_labels.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    shutil.copy(digits_dir / "test_images.npy", images)
    with pytest.raises(CorruptArtifact, match="never read as a pickle"):
        open_split(folder, "test")
