"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the four IDX files of Debian's package.

Debian's ``dataset-fashion-mnist`` installs ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
under ``/usr/share/datasets/fashion-mnist/``. Debian recompressed them, so the upstream ``.gz``
checksums do not apply: the SHA-256 of each file's *decompressed* contents is pinned instead
(the IDX bytes are the published ones). Official 60,000/10,000 train/test split, 28x28 gray,
10 classes; the validation split is carved from train by the shared code, like CIFAR-100's.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np

from workflow_scripts.data.sources import DatasetSource, SplitSource
from workflow_scripts.core.errors import DatasetUnavailable

log = logging.getLogger(__name__)

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
# A folder of this name inside resources_dir takes precedence over DEFAULT_DIR (a private copy).
RESOURCES_SUBDIR = "fashion-mnist"

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# SHA-256 of the decompressed IDX bytes, computed from Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1. Module-level so that tests (and private mirrors) can override them.
SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
COUNTS = {"train": 60000, "test": 10000}  # what the pinned files hold

NUM_CLASSES = 10
SIDE = 28
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one Fashion-MNIST uses


def resolve_folder(resources_dir: Path | str | None) -> Path:
    """``resources_dir/fashion-mnist`` if that folder exists, else Debian's ``DEFAULT_DIR``."""
    if resources_dir is not None:
        private = Path(resources_dir).expanduser() / RESOURCES_SUBDIR
        if private.is_dir():
            return private
    return DEFAULT_DIR


def load_fashion_mnist(resources_dir: Path | str | None, verify_checksums: bool = True,
                       work_dir: Path | str | None = None) -> DatasetSource:
    """The loader with the other sources' signature (``load_cifar100_source``'s): the files are read
    from ``resources_dir/fashion-mnist`` if that folder exists, else from Debian's ``DEFAULT_DIR``;
    nothing is extracted, so ``work_dir`` is unused."""
    return load_fashion_mnist_source(resolve_folder(resources_dir), verify_checksums)


def load_fashion_mnist_source(folder: Path | str = DEFAULT_DIR, verify_checksums: bool = True) -> DatasetSource:
    """Fashion-MNIST with splits 'train' (60,000) and 'test' (10,000) from the IDX ``.gz`` files in
    ``folder``. Images are 28x28 gray, returned as 28x28x3 RGB (the gray value in each channel)."""
    folder = Path(folder).expanduser()
    names = [name for pair in FILES.values() for name in pair]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DatasetUnavailable(
            f"Fashion-MNIST is not available: {', '.join(missing)} missing from {folder}. Install Debian's package "
            f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}), which puts the four files into {DEFAULT_DIR}, "
            f"or copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            f"t10k-labels-idx1-ubyte.gz into {folder}."
        )
    splits = {}
    for split, (images_name, labels_name) in FILES.items():
        images = read_idx(folder / images_name, ndim=3, verify_checksum=verify_checksums,
                          item_shape=(SIDE, SIDE))
        labels = read_idx(folder / labels_name, ndim=1, verify_checksum=verify_checksums)
        if images.shape[1:] != (SIDE, SIDE):
            raise DatasetUnavailable(
                f"{folder / images_name} holds images of {images.shape[1]}x{images.shape[2]} pixels, "
                f"expected {SIDE}x{SIDE}; it is not a Fashion-MNIST file"
            )
        if len(images) != len(labels):
            raise DatasetUnavailable(
                f"{folder / images_name} holds {len(images)} images but {folder / labels_name} {len(labels)} labels; "
                f"reinstall {DEBIAN_PACKAGE}"
            )
        if len(labels) and labels.max() >= NUM_CLASSES:
            raise DatasetUnavailable(
                f"{folder / labels_name} has labels up to {labels.max()}, expected 0..{NUM_CLASSES - 1}; "
                f"it is not a Fashion-MNIST file"
            )
        splits[split] = _split(images, labels.astype(np.int64))
    log.info("Fashion-MNIST from %s: %s", folder, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return DatasetSource(name="fashion_mnist", num_classes=NUM_CLASSES, splits=splits, class_names=list(CLASS_NAMES))


def _split(images: np.ndarray, labels: np.ndarray) -> SplitSource:
    def load_image(i: int) -> np.ndarray:
        return np.repeat(images[i][:, :, None], 3, axis=2)

    return SplitSource(labels=labels, load_image=load_image)


# The most data bytes one IDX file may declare (the real train images hold 47 MB): a header
# claiming more is refused before anything past it is decompressed.
MAX_DATA_BYTES = 256 * 2**20
_CHUNK = 4 * 2**20


def _reinstall_hint() -> str:
    return f"reinstall {DEBIAN_PACKAGE} (apt-get install --reinstall {DEBIAN_PACKAGE})"


def read_idx(path: Path, ndim: int, verify_checksum: bool = True, expected_sha256: str | None = None,
             item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decompress an IDX ``.gz`` file, parse its header strictly and return its uint8 array.

    The header is two zero bytes, the type code (0x08, unsigned byte), the number of dimensions
    (must equal ``ndim``), then one big-endian uint32 per dimension; the data must be exactly the
    product of the dimensions in bytes. The header is read and checked first (with ``item_shape``,
    the dimensions after the first too), and at most the size it declares (and never more than
    :data:`MAX_DATA_BYTES`) plus one byte is decompressed after it: a gzip bomb or a file of zeros
    is refused after a few bytes. With ``verify_checksum``, the SHA-256 of the decompressed bytes
    must equal ``expected_sha256`` (default: the pinned value for the file's name).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DatasetUnavailable(
                    f"{path} is truncated: {len(head)} decompressed bytes, too short for an IDX header")
            zero0, zero1, dtype, dims = head
            if zero0 != 0 or zero1 != 0:
                raise DatasetUnavailable(
                    f"{path} is not an IDX file: its magic number starts with bytes {zero0:#04x} {zero1:#04x}, "
                    "expected 0x00 0x00")
            if dtype != _UBYTE:
                raise DatasetUnavailable(
                    f"{path} has IDX type code {dtype:#04x}, expected {_UBYTE:#04x} (unsigned byte)")
            if dims != ndim:
                raise DatasetUnavailable(f"{path} has {dims} dimension(s) in its IDX header, expected {ndim}")
            header = 4 + 4 * ndim
            sizes = fh.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise DatasetUnavailable(f"{path} is truncated: {4 + len(sizes)} decompressed bytes, shorter than "
                                         f"its {header}-byte IDX header")
            shape = tuple(int.from_bytes(sizes[4 * k: 4 + 4 * k], "big") for k in range(ndim))
            if item_shape is not None and shape[1:] != tuple(item_shape):
                raise DatasetUnavailable(
                    f"{path} holds images of {'x'.join(map(str, shape[1:]))} pixels, expected "
                    f"{'x'.join(map(str, item_shape))}; it is not a Fashion-MNIST file")
            expected = int(np.prod(shape, dtype=np.int64))
            if expected > MAX_DATA_BYTES:
                raise DatasetUnavailable(
                    f"{path} declares shape {shape} in its IDX header ({expected / 1e6:.0f} MB of data), more than "
                    f"the {MAX_DATA_BYTES / 1e6:.0f} MB a Fashion-MNIST file can hold; it is not a Fashion-MNIST "
                    f"file: {_reinstall_hint()}")
            data = bytearray()
            while len(data) <= expected:
                chunk = fh.read(min(_CHUNK, expected + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetUnavailable(
            f"cannot decompress {path} ({type(exc).__name__}: {exc}): it is truncated or corrupt; {_reinstall_hint()}"
        ) from exc
    if len(data) != expected:
        if len(data) < expected:
            detail = f"it is truncated: its IDX header gives shape {shape} ({expected} bytes of data) but it holds {len(data)}"
        else:
            detail = (f"it is longer than its header says: its IDX header gives shape {shape} ({expected} bytes of "
                      "data) but more data follows")
        raise DatasetUnavailable(f"{path} is {detail.removeprefix('it is ')}; {_reinstall_hint()}")
    if verify_checksum:
        want = expected_sha256 if expected_sha256 is not None else SHA256.get(path.name)
        if want is None:
            raise DatasetUnavailable(f"no pinned checksum for {path.name}; it is not one of the four Fashion-MNIST files")
        digest = hashlib.sha256(head + sizes)
        digest.update(data)
        got = digest.hexdigest()
        if got != want:
            raise DatasetUnavailable(
                f"checksum mismatch for {path}: the SHA-256 of its decompressed contents is {got}, expected {want}. "
                f"Reinstall {DEBIAN_PACKAGE}, or set verify_checksums: false for a private copy whose contents differ."
            )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)
