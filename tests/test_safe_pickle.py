"""The restricted unpickler refuses hostile pickles (directly and inside a CIFAR-100 archive)
without running them, and still reads the Python 2 pickles CIFAR-100 ships."""

from __future__ import annotations

import builtins
import io
import os
import pickle

import numpy as np
import pytest

from tests.archive_factory import make_cifar100_python_archive, py2_pickle
from workflow_scripts.core.errors import DatasetUnavailable, EdgePTQError
from workflow_scripts.data.safe_pickle import safe_load_pickle
from workflow_scripts.data.sources import cifar100


class _SystemPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _ExecPayload:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (builtins.exec, (self.code,))


# os.system pickles as posix.system (nt.system on Windows).
HOSTILE = [("system", f"{os.system.__module__}.system"), ("exec", "__builtin__.exec")]  # protocol 2 uses the Python 2 module name


def _hostile(kind, marker):
    if kind == "system":
        payload = _SystemPayload(f"touch '{marker}'")
    else:
        payload = _ExecPayload(f"open({str(marker)!r}, 'w').close()")
    # A CIFAR-looking dict whose 'data' entry is the payload.
    return py2_pickle({b"data": payload, b"fine_labels": [0]})


@pytest.mark.parametrize("kind", ["system", "exec"])
def test_payload_is_live_with_plain_pickle(tmp_path, kind):
    # Control: the same bytes do run code under the standard unpickler, so the tests below
    # prove something when the marker file stays absent.
    marker = tmp_path / "control"
    pickle.loads(_hostile(kind, marker), encoding="bytes")
    assert marker.exists()


@pytest.mark.parametrize("kind, refused", HOSTILE)
def test_hostile_pickle_refused(tmp_path, kind, refused):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError) as err:
        safe_load_pickle(io.BytesIO(_hostile(kind, marker)))
    assert isinstance(err.value, EdgePTQError)
    assert refused in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind, refused", HOSTILE)
def test_hostile_pickle_inside_cifar_archive_refused(tmp_path, monkeypatch, kind, refused):
    marker = tmp_path / "pwned"
    res = tmp_path / "res"
    md5 = make_cifar100_python_archive(res / cifar100.PYTHON_ARCHIVE, 8, 4, seed=1,
                                       replace_members={"train": _hostile(kind, marker)})
    monkeypatch.setitem(cifar100.MD5, cifar100.PYTHON_ARCHIVE, md5)
    with pytest.raises(DatasetUnavailable) as err:
        cifar100.load_cifar100_source(res, True, tmp_path / "work")
    msg = str(err.value)
    assert refused in msg and "train" in msg
    assert not marker.exists()


def test_other_globals_refused():
    # numpy itself is allowed only for array reconstruction, not e.g. numpy.load.
    raw = b"\x80\x02cnumpy\nload\nq\x00."
    with pytest.raises(pickle.UnpicklingError, match="numpy.load"):
        safe_load_pickle(raw)


def test_reads_python2_style_cifar_pickle():
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    obj = safe_load_pickle(io.BytesIO(py2_pickle({b"data": data, b"fine_labels": [3, 99]})))
    assert set(obj) == {b"data", b"fine_labels"}  # bytes keys, as encoding='bytes' gives
    assert obj[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(obj[b"data"], data)
    assert obj[b"fine_labels"] == [3, 99]


def test_truncated_pickle_is_a_clear_error():
    raw = py2_pickle({b"data": np.zeros((4, 3072), np.uint8)})
    with pytest.raises(DatasetUnavailable, match="truncated or corrupt"):
        safe_load_pickle(raw[: len(raw) // 2])
