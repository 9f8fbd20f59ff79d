"""CIFAR-100 source from synthetic archives in both published formats."""

from __future__ import annotations

import functools
import http.server
import io
import socket
import tarfile
import threading

import numpy as np
import pytest

from tests.archive_factory import (
    CIFAR_FINE_NAMES,
    make_cifar100_binary_archive,
    make_cifar100_python_archive,
    md5_of,
    synthetic_cifar100,
)
from workflow_scripts.core.errors import DatasetUnavailable
from workflow_scripts.data.sources import cifar100, load_source

N_TRAIN, N_TEST, SEED = 30, 12, 7


def _python(tmp_path, seed=SEED, sub="res"):
    res = tmp_path / sub
    make_cifar100_python_archive(res / cifar100.PYTHON_ARCHIVE, N_TRAIN, N_TEST, seed)
    return res


def _binary(tmp_path, seed=SEED, sub="res"):
    res = tmp_path / sub
    make_cifar100_binary_archive(res / cifar100.BINARY_ARCHIVE, N_TRAIN, N_TEST, seed)
    return res


def _all_images(split):
    return np.stack([split.load_image(i) for i in range(len(split))])


def _expected_hwc(data):
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_shapes_labels_and_names(tmp_path, fmt):
    res = (_python if fmt == "python" else _binary)(tmp_path)
    src = cifar100.load_cifar100_source(res, False, tmp_path / "work")
    truth = synthetic_cifar100(N_TRAIN, N_TEST, SEED)
    assert src.name == "cifar100" and src.num_classes == 100
    assert set(src.splits) == {"train", "test"}
    assert src.class_names == CIFAR_FINE_NAMES
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        s = src.splits[split]
        assert len(s) == n
        assert s.labels.dtype == np.int64 and s.labels.shape == (n,)
        assert 0 <= s.labels.min() and s.labels.max() <= 99
        np.testing.assert_array_equal(s.labels, truth[split].fine)  # fine labels, not coarse
        img = s.load_image(0)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(_all_images(s), _expected_hwc(truth[split].data))


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_pixel_layout(tmp_path, fmt):
    # Row layout: 1024 red values, then 1024 green, then 1024 blue, each row-major 32x32.
    res = (_python if fmt == "python" else _binary)(tmp_path)
    src = cifar100.load_cifar100_source(res, False, tmp_path / "work")
    row = synthetic_cifar100(N_TRAIN, N_TEST, SEED)["test"].data[3]
    y, x = 5, 29
    r, g, b = row[y * 32 + x], row[1024 + y * 32 + x], row[2048 + y * 32 + x]
    assert tuple(src.splits["test"].load_image(3)[y, x]) == (r, g, b)
    assert (r, g, b) != (row[x * 32 + y], row[1024 + x * 32 + y], row[2048 + x * 32 + y])  # not transposed


def test_both_formats_identical(tmp_path):
    py = cifar100.load_cifar100_source(_python(tmp_path, sub="py"), False, tmp_path / "w1")
    bn = cifar100.load_cifar100_source(_binary(tmp_path, sub="bin"), False, tmp_path / "w2")
    assert py.class_names == bn.class_names
    for split in ("train", "test"):
        np.testing.assert_array_equal(py.splits[split].labels, bn.splits[split].labels)
        np.testing.assert_array_equal(_all_images(py.splits[split]), _all_images(bn.splits[split]))


def test_python_version_preferred_when_both_present(tmp_path):
    res = _python(tmp_path, seed=1)
    _binary(tmp_path, seed=2)
    src = load_source("cifar100", res, False, tmp_path / "work")
    np.testing.assert_array_equal(src.splits["train"].labels, synthetic_cifar100(N_TRAIN, N_TEST, 1)["train"].fine)


def test_checksums(tmp_path, monkeypatch):
    res = _binary(tmp_path)
    # The synthetic archive is not the published one: the real md5 refuses it.
    with pytest.raises(DatasetUnavailable, match=cifar100.MD5[cifar100.BINARY_ARCHIVE]):
        cifar100.load_cifar100_source(res, True, tmp_path / "work")
    monkeypatch.setitem(cifar100.MD5, cifar100.BINARY_ARCHIVE, md5_of(res / cifar100.BINARY_ARCHIVE))
    assert len(cifar100.load_cifar100_source(res, True, tmp_path / "work").splits["train"]) == N_TRAIN


def test_offline_error_names_both_archives(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(cifar100.URLS, cifar100.PYTHON_ARCHIVE, f"http://127.0.0.1:{port}/c.tar.gz")
    res = tmp_path / "empty"
    with pytest.raises(DatasetUnavailable) as err:
        cifar100.load_cifar100_source(res, True, tmp_path / "work")
    msg = str(err.value)
    assert cifar100.PYTHON_ARCHIVE in msg and cifar100.BINARY_ARCHIVE in msg and str(res.resolve()) in msg
    assert list(res.iterdir()) == []


def test_downloads_python_version_when_absent(tmp_path, monkeypatch):
    served = _python(tmp_path, sub="served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{cifar100.PYTHON_ARCHIVE}"
        monkeypatch.setitem(cifar100.URLS, cifar100.PYTHON_ARCHIVE, url)
        monkeypatch.setitem(cifar100.MD5, cifar100.PYTHON_ARCHIVE, md5_of(served / cifar100.PYTHON_ARCHIVE))
        res = tmp_path / "res"
        src = cifar100.load_cifar100_source(res, True, tmp_path / "work")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert (res / cifar100.PYTHON_ARCHIVE).is_file()
    assert len(src.splits["test"]) == N_TEST


def test_corrupt_binary_records(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    with tarfile.open(res / cifar100.BINARY_ARCHIVE, "w:gz") as tar:
        for name, data in (("train.bin", b"\x00" * 3073), ("test.bin", b""), ("fine_label_names.txt", b"a\n")):
            info = tarfile.TarInfo(f"cifar-100-binary/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetUnavailable, match="3074"):
        cifar100.load_cifar100_source(res, False, tmp_path / "work")
