"""Stand-ins for ``tensorrt`` and ``polygraphy.cuda`` where the real ones cannot run (no GPU here).

They implement only the calls the backend makes, with host memory standing in for device memory,
so the runner's buffer plumbing (dtypes, layouts, copies, which CUDA calls each path makes) runs
for real on a CPU. ``STUB_SOURCE`` is the same ``tensorrt`` stand-in as importable source, for the
availability probe, which runs in a child Python.
"""

from __future__ import annotations

import ctypes
import json
import types
from pathlib import Path

import numpy as np

STUB_SOURCE = '''
__version__ = "{version}"
FAIL_BUILDER = {fail_builder}

class Logger:
    ERROR = 1
    WARNING = 2
    def __init__(self, severity=None):
        self.severity = severity

class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0

class _Builder:
    platform_has_fast_fp16 = True
    platform_has_fast_int8 = True
    num_DLA_cores = 0
    def create_builder_config(self):
        return object()
    def create_network(self, flags=0):
        return object()

def Builder(logger):
    if FAIL_BUILDER:
        raise TypeError("pybind11::init(): factory function returned nullptr (CUDA initialization failure)")
    return _Builder()
'''


def write_stub_package(folder: Path, version: str = "10.3.0", fail_builder: bool = False) -> Path:
    """Write an importable ``tensorrt`` stand-in under ``folder``; return ``folder``."""
    pkg = Path(folder) / "tensorrt"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(STUB_SOURCE.format(version=version, fail_builder=fail_builder))
    return Path(folder)


# --- in-process stand-ins for the runner -------------------------------------------------------------


class DataType:
    FLOAT = "DataType.FLOAT"
    HALF = "DataType.HALF"
    INT8 = "DataType.INT8"
    INT32 = "DataType.INT32"
    BOOL = "DataType.BOOL"


def _nptype_like_tensorrt_8_5(dtype):
    # TensorRT 8.5's trt.nptype builds a table with np.bool, which NumPy 1.24 removed.
    raise AttributeError("module 'numpy' has no attribute 'bool'")


class _Engine:
    """Input [N,4,4,3] float32 'images' -> output [N,5] 'scores' = the first 5 values of each image."""

    def __init__(self, spec):
        self.spec = spec
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["images", "scores"][i]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "images" else "OUTPUT"

    def get_tensor_shape(self, name):
        return tuple(self.spec["input_shape"]) if name == "images" else (-1, 5)

    def get_tensor_dtype(self, name):
        return getattr(DataType, self.spec["dtype"])

    def get_tensor_profile_shape(self, name, profile_index):
        # (min, opt, max) shapes of optimization profile ``profile_index``, as TensorRT >= 8.5 gives them.
        assert name == "images" and profile_index == 0
        rest = tuple(self.spec["input_shape"][1:])
        lo, hi = self.spec.get("min_batch", 1), self.spec["max_batch"]
        return (lo, *rest), (lo, *rest), (hi, *rest)

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine):
        self.engine = engine
        self.shape = None
        self.addresses = {}
        self.executions = 0

    def set_input_shape(self, name, shape):
        spec = self.engine.spec
        if not spec.get("min_batch", 1) <= shape[0] <= spec["max_batch"]:
            return False  # TensorRT refuses a shape outside the profile (and keeps the old one)
        self.shape = tuple(shape)
        self.shapes_set = getattr(self, "shapes_set", []) + [tuple(shape)]
        return True

    def get_tensor_shape(self, name):
        return (self.shape[0], 5)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.executions += 1
        dtype = np.dtype({"FLOAT": np.float32, "HALF": np.float16}[self.engine.spec["dtype"]])
        count = int(np.prod(self.shape))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.addresses["images"])
        x = np.frombuffer(raw, dtype=dtype, count=count).reshape(self.shape[0], -1)
        out = (ctypes.c_byte * (self.shape[0] * 5 * dtype.itemsize)).from_address(self.addresses["scores"])
        np.frombuffer(out, dtype=dtype)[:] = x[:, :5].reshape(-1)
        return True


class _Logger:
    WARNING = 2
    ERROR = 1

    def __init__(self, severity=None):
        self.severity = severity


class _Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        spec = json.loads(data.decode())
        return _Engine(spec)


def fake_tensorrt(version: str = "8.5.2.2") -> types.SimpleNamespace:
    """An in-process ``tensorrt`` stand-in whose engine file is a JSON spec (see :func:`write_engine`)."""
    return types.SimpleNamespace(
        __version__=version,
        Logger=_Logger,
        DataType=DataType,
        nptype=_nptype_like_tensorrt_8_5,
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        IInt8EntropyCalibrator2=type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None}),
        IInt8LegacyCalibrator=type("IInt8LegacyCalibrator", (), {}),
        IInt8Calibrator=type("IInt8Calibrator", (), {}),
        Runtime=_Runtime,
        init_libnvinfer_plugins=lambda logger, namespace: True,
    )


def write_engine(path: Path, dtype: str = "FLOAT", max_batch: int = 8, min_batch: int = 1) -> Path:
    """An engine 'file' for the stand-in runtime; ``min_batch == max_batch`` is a DLA-style static batch."""
    path.write_text(json.dumps({"input_shape": [-1, 4, 4, 3], "dtype": dtype, "max_batch": max_batch,
                                "min_batch": min_batch}))
    return path


class FakeCuda:
    """``polygraphy.cuda`` stand-in: host memory as 'device' memory; records every CUDA call made."""

    class MemcpyKind:
        HostToDevice = "HostToDevice"
        DeviceToHost = "DeviceToHost"

    def __init__(self):
        self.calls = []
        self._buffers = {}
        cuda = self

        class Handle:
            def __getattr__(self, name):
                def call(*args):
                    cuda.calls.append(name)
                    if name == "cudaMallocHost":
                        buf = ctypes.create_string_buffer(int(args[1].value))
                        cuda._buffers[ctypes.addressof(buf)] = buf
                        args[0]._obj.value = ctypes.addressof(buf)
                    elif name == "cudaEventCreate":
                        args[0]._obj.value = 1000 + len(cuda.calls)
                    elif name == "cudaEventElapsedTime":
                        args[0]._obj.value = 0.25
                    return 0
                return call

        class Wrapper:
            handle = Handle()

            def check(self, status):
                assert status == 0

            def memcpy(self, dst, src, nbytes, kind, stream_ptr=None):
                cuda.calls.append(f"memcpy{kind}")
                ctypes.memmove(dst, src, nbytes)

        self._wrapper = Wrapper()

        class Stream:
            ptr = 77

            def synchronize(self):
                cuda.calls.append("streamSynchronize")

            def free(self):
                pass

        class DeviceArray:
            def __init__(self):
                self.ptr = 0
                self._buf = None

            @staticmethod
            def raw(shape):
                return DeviceArray()

            def resize(self, shape):
                self._buf = ctypes.create_string_buffer(max(int(shape[0]), 1))
                self.ptr = ctypes.addressof(self._buf)

            def free(self):
                self._buf = None

        self.Stream = Stream
        self.DeviceArray = DeviceArray

    def wrapper(self):
        return self._wrapper
