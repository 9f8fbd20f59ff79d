"""Fashion-MNIST source: the real Debian files (skipped with the reason where the package is absent)
and small hand-made IDX files in tmp for every error path."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pytest

from workflow_scripts.data.datasets import plan_splits, resize_image
from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.sources import fashion_mnist as fm

REAL = fm.DEFAULT_DIR
NAMES = [name for pair in fm.FILES.values() for name in pair]
needs_real = pytest.mark.skipif(
    not all((REAL / n).is_file() for n in NAMES),
    reason=f"Debian package {fm.DEBIAN_PACKAGE} is not installed ({REAL} lacks the IDX files)",
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08, ndim: int | None = None, dims=None) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    ndim = len(dims) if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + array.tobytes()


def write_gz(path, raw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(raw)


def make_small(folder, n_train=20, n_test=10, seed=0) -> dict:
    """Four valid IDX .gz files of a tiny Fashion-MNIST-shaped dataset; returns the arrays."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        img_name, lab_name = fm.FILES[split]
        write_gz(folder / img_name, idx_bytes(images))
        write_gz(folder / lab_name, idx_bytes(labels))
        data[split] = (images, labels)
    return data


# ---------------------------------------------------------------- the real files


@needs_real
def test_real_files_official_split_and_checksums():
    src = fm.load_fashion_mnist_source(REAL, verify_checksums=True)
    assert src.name == "fashion_mnist" and src.num_classes == 10
    assert src.class_names[0] == "T-shirt/top" and src.class_names[9] == "Ankle boot"
    assert set(src.splits) == {"train", "test"}  # no official val: the shared code carves it from train
    for split, n in fm.COUNTS.items():
        labels = src.splits[split].labels
        assert len(src.splits[split]) == n and labels.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, n // 10))
    assert src.splits["train"].labels[0] == 9  # the first training image is an ankle boot


@needs_real
def test_real_images_are_gray_as_rgb_and_resize_like_the_others():
    src = fm.load_fashion_mnist_source(REAL)
    img = src.splits["test"].load_image(0)
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert img.min() == 0 and img.max() > 200  # a dark background and a bright object
    big = resize_image(img, 64)
    assert big.shape == (64, 64, 3) and big.dtype == np.uint8


@needs_real
def test_real_validation_carved_from_train_stratified():
    src = fm.load_fashion_mnist_source(REAL)
    plan = plan_splits(src, val_fraction=0.15, test_fraction=0.15, seed=0)
    (train_src, train_idx), (val_src, val_idx), (test_src, test_idx) = (plan[k] for k in ("train", "val", "test"))
    assert train_src is val_src is src.splits["train"] and test_src is src.splits["test"]
    assert (len(train_idx), len(val_idx), len(test_idx)) == (51000, 9000, 10000)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    np.testing.assert_array_equal(np.bincount(src.splits["train"].labels[val_idx]), np.full(10, 900))


@needs_real
def test_real_file_truncated_copy_is_refused(tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(REAL / name, folder / name)
    raw = gzip.decompress((REAL / "t10k-labels-idx1-ubyte.gz").read_bytes())
    write_gz(folder / "t10k-labels-idx1-ubyte.gz", raw[:-100])
    with pytest.raises(DatasetUnavailable, match=r"t10k-labels-idx1-ubyte\.gz is truncated.*\(10000,\).*9900"):
        fm.load_fashion_mnist_source(folder)


# ---------------------------------------------------------------- small files, every error path


def test_small_valid_files_load_without_checksums(tmp_path):
    data = make_small(tmp_path)
    src = fm.load_fashion_mnist_source(tmp_path, verify_checksums=False)
    for split, (images, labels) in data.items():
        np.testing.assert_array_equal(src.splits[split].labels, labels.astype(np.int64))
        for i in (0, len(labels) - 1):
            np.testing.assert_array_equal(src.splits[split].load_image(i), np.repeat(images[i][:, :, None], 3, axis=2))


def test_checksum_mismatch_names_file_and_both_sums(tmp_path):
    make_small(tmp_path)
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DatasetUnavailable, match="checksum mismatch") as err:
        fm.load_fashion_mnist_source(tmp_path, verify_checksums=True)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg
    assert hashlib.sha256(raw).hexdigest() in msg and fm.SHA256["train-images-idx3-ubyte.gz"] in msg


def test_checksum_is_of_decompressed_contents(tmp_path, monkeypatch):
    # Recompressing (what Debian did) changes the .gz bytes but not the decompressed checksum.
    make_small(tmp_path)
    for name in NAMES:
        raw = gzip.decompress((tmp_path / name).read_bytes())
        monkeypatch.setitem(fm.SHA256, name, hashlib.sha256(raw).hexdigest())
        (tmp_path / name).write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))
    src = fm.load_fashion_mnist_source(tmp_path, verify_checksums=True)
    assert len(src.splits["train"]) == 20


def test_missing_files_name_package_and_folder(tmp_path):
    make_small(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetUnavailable) as err:
        fm.load_fashion_mnist_source(tmp_path)
    msg = str(err.value)
    assert "dataset-fashion-mnist" in msg and str(tmp_path) in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "train-images-idx3-ubyte.gz missing" not in msg  # only the missing one is listed as missing


def test_empty_folder_fails_before_reading(tmp_path):
    with pytest.raises(DatasetUnavailable, match=r"apt-get install dataset-fashion-mnist"):
        fm.load_fashion_mnist_source(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "raw, match",
    [
        (bytes([1, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(10), "not an IDX file: its magic number"),
        (idx_bytes(np.zeros(10), type_code=0x0D), r"type code 0x0d, expected 0x08"),
        (idx_bytes(np.zeros((10, 1))), r"2 dimension\(s\) in its IDX header, expected 1"),
        (idx_bytes(np.zeros(10))[:-1], r"truncated: its IDX header gives shape \(10,\) \(10 bytes of data\) but it holds 9"),
        (idx_bytes(np.zeros(10)) + b"\x00", "longer than its header says"),
        (bytes([0, 0, 8, 1, 0, 0]), "shorter than its 8-byte IDX header"),
        (b"\x00\x00", "too short for an IDX header"),
    ],
    ids=["magic", "type", "ndim", "truncated", "trailing", "short-header", "tiny"],
)
def test_bad_idx_is_refused_naming_the_file(tmp_path, raw, match):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_gz(path, raw)
    with pytest.raises(DatasetUnavailable, match=match) as err:
        fm.read_idx(path, ndim=1, verify_checksum=False)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("cut", ["truncated-gzip", "not-gzip"])
def test_broken_gzip_is_refused_naming_the_file(tmp_path, cut):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = gzip.compress(idx_bytes(np.arange(1000) % 10))
    path.write_bytes(good[: len(good) // 2] if cut == "truncated-gzip" else b"IDX but not gzip at all")
    with pytest.raises(DatasetUnavailable, match="cannot decompress") as err:
        fm.read_idx(path, ndim=1, verify_checksum=False)
    assert str(path) in str(err.value)


def test_wrong_image_side_labels_and_counts(tmp_path):
    make_small(tmp_path)
    write_gz(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((20, 32, 32))))
    with pytest.raises(DatasetUnavailable, match="32x32 pixels, expected 28x28"):
        fm.load_fashion_mnist_source(tmp_path, verify_checksums=False)
    make_small(tmp_path)
    write_gz(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(19)))
    with pytest.raises(DatasetUnavailable, match="20 images but .* 19 labels"):
        fm.load_fashion_mnist_source(tmp_path, verify_checksums=False)
    make_small(tmp_path)
    write_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(10, 10)))
    with pytest.raises(DatasetUnavailable, match=r"labels up to 10, expected 0\.\.9"):
        fm.load_fashion_mnist_source(tmp_path, verify_checksums=False)


def test_resolve_folder_prefers_a_copy_in_resources(tmp_path):
    assert fm.resolve_folder(tmp_path) == fm.DEFAULT_DIR
    assert fm.resolve_folder(None) == fm.DEFAULT_DIR
    (tmp_path / "fashion-mnist").mkdir()
    assert fm.resolve_folder(tmp_path) == tmp_path / "fashion-mnist"


def test_loader_with_the_common_signature_reads_resources_copy(tmp_path):
    data = make_small(tmp_path / "res" / "fashion-mnist")
    src = fm.load_fashion_mnist(tmp_path / "res", False, tmp_path / "work")
    np.testing.assert_array_equal(src.splits["test"].labels, data["test"][1])
    assert not (tmp_path / "work").exists()  # nothing extracted


# ---------------------------------------------------------------- bounded decompression (issue 25, item 9)


class CountingGzip(gzip.GzipFile):
    """A GzipFile that counts the decompressed bytes handed out."""

    total = 0

    def read(self, size=-1):
        data = super().read(size)
        CountingGzip.total += len(data)
        return data


def zeros_gz(path, megabytes: int, prefix: bytes = b"") -> None:
    """A gzip of ``prefix`` then ``megabytes`` MB of zero bytes (compresses ~1000:1)."""
    with gzip.GzipFile(path, "wb", compresslevel=1) as fh:
        fh.write(prefix)
        block = bytes(2**20)
        for _ in range(megabytes):
            fh.write(block)


@pytest.fixture
def counting(monkeypatch):
    CountingGzip.total = 0
    monkeypatch.setattr(fm.gzip, "open", lambda path, mode="rb": CountingGzip(path, mode))
    return CountingGzip


def test_gzip_of_zeros_is_refused_from_its_header_without_decompressing_it(tmp_path, counting):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    zeros_gz(path, 64)
    with pytest.raises(DatasetUnavailable, match="type code 0x00, expected 0x08") as err:
        fm.read_idx(path, ndim=3, verify_checksum=False)
    assert str(path) in str(err.value)
    assert counting.total < 2**20, f"{counting.total} bytes decompressed to refuse a 4-byte header"


def test_valid_header_then_endless_data_decompresses_only_what_the_header_declares(tmp_path, counting):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    zeros_gz(path, 64, prefix=bytes([0, 0, 8, 1]) + (1000).to_bytes(4, "big"))
    with pytest.raises(DatasetUnavailable, match="longer than its header says"):
        fm.read_idx(path, ndim=1, verify_checksum=False)
    assert counting.total <= 8 + 1000 + 1


def test_header_declaring_more_than_a_fashion_mnist_file_holds_is_refused(tmp_path, counting):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    zeros_gz(path, 1, prefix=bytes([0, 0, 8, 1]) + (2**31).to_bytes(4, "big"))
    with pytest.raises(DatasetUnavailable, match=r"declares shape \(2147483648,\)") as err:
        fm.read_idx(path, ndim=1, verify_checksum=False)
    assert str(path) in str(err.value)
    assert counting.total == 8


def test_wrong_image_side_is_refused_from_the_header(tmp_path, counting):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    zeros_gz(path, 8, prefix=bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (100, 300, 300)))
    with pytest.raises(DatasetUnavailable, match="300x300 pixels, expected 28x28"):
        fm.read_idx(path, ndim=3, verify_checksum=False, item_shape=(28, 28))
    assert counting.total == 16
