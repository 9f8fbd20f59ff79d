"""Oxford-102 flowers source from synthetic files in the published formats."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from scipy.io import savemat

from tests.archive_factory import flowers102_color, flowers102_layout, make_flowers102_files
from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.sources import flowers102, load_source

N_IMAGES, SEED = 24, 3


@pytest.fixture
def files(tmp_path):
    res = tmp_path / "res"
    md5s = make_flowers102_files(res, N_IMAGES, SEED)
    return res, md5s


def test_official_splits_and_zero_based_labels(files, tmp_path):
    res, _ = files
    src = flowers102.load_flowers102_source(res, False, tmp_path / "work")
    layout = flowers102_layout(N_IMAGES, SEED)
    assert src.name == "oxford_flowers102" and src.num_classes == 102 and len(src.class_names) == 102
    assert set(src.splits) == {"train", "val", "test"}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        s = src.splits[split]
        assert len(s) == len(layout[key])
        assert s.labels.dtype == np.int64
        np.testing.assert_array_equal(s.labels, layout["labels"][layout[key] - 1] - 1)
        assert s.labels.min() >= 0 and s.labels.max() <= 101
    all_labels = np.concatenate([s.labels for s in src.splits.values()])
    assert {0, 101} <= set(all_labels.tolist())  # the labels 1 and 102 map to both ends
    assert sum(len(s) for s in src.splits.values()) == N_IMAGES


def test_images_decode_lazily_to_rgb_uint8(files, tmp_path):
    res, _ = files
    src = load_source("oxford_flowers102", res, False, tmp_path / "work")
    layout = flowers102_layout(N_IMAGES, SEED)
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        for i, image_id in enumerate(layout[key]):
            img = src.splits[split].load_image(i)
            w, h = layout["sizes"][image_id - 1]
            assert img.dtype == np.uint8 and img.shape == (h, w, 3)  # native size, HWC
            # The i-th image of the split is image_id's file: its flat colour survives JPEG closely.
            mean = img.reshape(-1, 3).mean(axis=0)
            assert np.abs(mean - np.array(flowers102_color(int(image_id)))).max() < 6


def test_checksums_checked(files, tmp_path, monkeypatch):
    res, md5s = files
    with pytest.raises(DatasetUnavailable, match="checksum mismatch"):
        flowers102.load_flowers102_source(res, True, tmp_path / "work")
    for name, md5 in md5s.items():
        monkeypatch.setitem(flowers102.MD5, name, md5)
    src = flowers102.load_flowers102_source(res, True, tmp_path / "work")
    assert len(src.splits["train"]) == len(flowers102_layout(N_IMAGES, SEED)["trnid"])


def test_missing_files_all_named(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in flowers102.URLS:
        monkeypatch.setitem(flowers102.URLS, name, f"http://127.0.0.1:{port}/{name}")
    res = tmp_path / "empty"
    with pytest.raises(DatasetUnavailable) as err:
        flowers102.load_flowers102_source(res, True, tmp_path / "work")
    msg = str(err.value)
    for name in ("102flowers.tgz", "imagelabels.mat", "setid.mat"):
        assert name in msg
    assert str(res.resolve()) in msg


def test_setid_out_of_range(files, tmp_path):
    res, _ = files
    savemat(str(res / "setid.mat"), {"trnid": np.array([[1, N_IMAGES + 1]]), "valid": np.array([[2]]),
                                     "tstid": np.array([[3]])})
    with pytest.raises(DatasetUnavailable, match="trnid"):
        flowers102.load_flowers102_source(res, False, tmp_path / "work")
