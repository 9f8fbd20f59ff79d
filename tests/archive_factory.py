"""Build small dataset files in the official published formats, for tests.

Each ``make_*`` writes files under the published names and returns their md5, so a test can
either pass ``verify_checksums=False`` or put these md5s into the source module's ``MD5`` dict.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR_FINE_NAMES = [f"fine_{k:02d}" for k in range(100)]
CIFAR_COARSE_NAMES = [f"coarse_{k:02d}" for k in range(20)]


def md5_of(path: Path) -> str:
    """Hex md5 of a file."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_tar_gz(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> str:
    """Write a .tar.gz with the given directory entries and regular-file members; return its md5."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return md5_of(path)


@dataclass
class CifarSplit:
    """Synthetic CIFAR-style split: ``data`` (n, 3072) uint8 as R,G,B planes; fine/coarse labels."""

    data: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray


def synthetic_cifar100(n_train: int, n_test: int, seed: int) -> dict[str, CifarSplit]:
    """Deterministic random images and labels for 'train' and 'test' (same seed, same data)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).astype(np.int64)
        coarse = fine // 5
        out[split] = CifarSplit(data=data, fine=fine, coarse=coarse)
    return out


class _Py2StylePickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``bytes`` as Python 2 ``str`` opcodes, as cPickle did for
    the published CIFAR files; such pickles need ``encoding='bytes'`` to load in Python 3."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    def _save_native_str(self, obj: str) -> None:
        # Python 2's native str was bytes: dtype codes like 'u1' were pickled as byte strings too.
        self._save_py2_str(obj.encode("latin-1"))

    def save_global(self, obj, name=None):
        # numpy 1.x under Python 2 named the reconstructor by its old public module path.
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_native_str


def py2_pickle(obj) -> bytes:
    """Pickle ``obj`` the way Python 2's cPickle (protocol 2) would have, bytes as py2 str."""
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def make_cifar100_python_archive(path: Path, n_train: int = 40, n_test: int = 20, seed: int = 0,
                                 replace_members: dict[str, bytes] | None = None) -> str:
    """Write ``cifar-100-python.tar.gz``-format data (python-2 pickles of bytes-keyed dicts); return
    its md5. ``replace_members`` ('train', 'test', 'meta') swaps in raw bytes, e.g. a hostile pickle."""
    data = synthetic_cifar100(n_train, n_test, seed)
    members = {}
    for split in ("train", "test"):
        s = data[split]
        members[f"cifar-100-python/{split}"] = py2_pickle({
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(s.fine))],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": [int(v) for v in s.fine],
            b"coarse_labels": [int(v) for v in s.coarse],
            b"data": s.data,
        })
    members["cifar-100-python/meta"] = py2_pickle({
        b"fine_label_names": [n.encode() for n in CIFAR_FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in CIFAR_COARSE_NAMES],
    })
    for name, raw in (replace_members or {}).items():
        members[f"cifar-100-python/{name}"] = raw
    return write_tar_gz(path, members, dirs=("cifar-100-python",))


def make_cifar100_binary_archive(path: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> str:
    """Write ``cifar-100-binary.tar.gz``-format data (<coarse><fine><3072 pixels> records); return its md5."""
    data = synthetic_cifar100(n_train, n_test, seed)
    members = {}
    for split in ("train", "test"):
        s = data[split]
        rows = np.concatenate(
            [s.coarse.astype(np.uint8)[:, None], s.fine.astype(np.uint8)[:, None], s.data], axis=1
        )
        members[f"cifar-100-binary/{split}.bin"] = rows.tobytes()
    members["cifar-100-binary/fine_label_names.txt"] = ("\n".join(CIFAR_FINE_NAMES) + "\n").encode()
    members["cifar-100-binary/coarse_label_names.txt"] = ("\n".join(CIFAR_COARSE_NAMES) + "\n").encode()
    return write_tar_gz(path, members, dirs=("cifar-100-binary",))


def flowers102_layout(n_images: int, seed: int) -> dict:
    """Deterministic labels (1..102), split ids (1-based) and image sizes for ``n_images`` images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 103, size=n_images).astype(np.int64)
    labels[:3] = [1, 102, 50]  # make both ends of the label range appear
    perm = rng.permutation(np.arange(1, n_images + 1))
    n_trn = max(1, n_images // 4)
    n_val = max(1, n_images // 4)
    sizes = [(int(rng.integers(20, 48)), int(rng.integers(20, 48))) for _ in range(n_images)]  # (w, h)
    return {
        "labels": labels,
        "trnid": np.sort(perm[:n_trn]),
        "valid": np.sort(perm[n_trn:n_trn + n_val]),
        "tstid": np.sort(perm[n_trn + n_val:]),
        "sizes": sizes,
    }


def flowers102_color(image_id: int) -> tuple[int, int, int]:
    """The flat RGB colour of synthetic image ``image_id`` (JPEG keeps a flat colour within a few levels)."""
    return ((image_id * 37) % 256, (image_id * 91 + 40) % 256, (image_id * 53 + 200) % 256)


def make_flowers102_files(folder: Path, n_images: int = 24, seed: int = 0) -> dict[str, str]:
    """Write ``102flowers.tgz`` (real JPEGs), ``imagelabels.mat`` and ``setid.mat`` into ``folder``;
    return {file name: md5}."""
    from PIL import Image
    from scipy.io import savemat

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = flowers102_layout(n_images, seed)
    members = {}
    for image_id in range(1, n_images + 1):
        w, h = layout["sizes"][image_id - 1]
        buf = io.BytesIO()
        Image.new("RGB", (w, h), flowers102_color(image_id)).save(buf, format="JPEG", quality=95)
        members[f"jpg/image_{image_id:05d}.jpg"] = buf.getvalue()
    md5s = {"102flowers.tgz": write_tar_gz(folder / "102flowers.tgz", members, dirs=("jpg",))}
    # Shapes and dtypes as in the published files: (1, n) rows.
    savemat(str(folder / "imagelabels.mat"), {"labels": layout["labels"].astype(np.uint8)[None, :]})
    savemat(str(folder / "setid.mat"), {k: layout[k].astype(np.uint16)[None, :] for k in ("trnid", "valid", "tstid")})
    md5s["imagelabels.mat"] = md5_of(folder / "imagelabels.mat")
    md5s["setid.mat"] = md5_of(folder / "setid.mat")
    return md5s
