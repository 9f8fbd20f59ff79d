"""Running a TensorRT engine: one context, one CUDA stream, page-locked host buffers.

Two paths over the same buffers:

- :meth:`TensorRTRunner.run` is the *bare* path the latency samples time: copy in, execute,
  copy out, synchronise the stream; no CUDA events.
- :meth:`TensorRTRunner.timed_infer` records four CUDA events around the copies and the compute
  (trtexec's H2D/compute/D2H breakdown); the latency stage calls it in a separate pass, so the
  events never sit inside a latency sample.

CUDA comes from the runtime library Polygraphy already loads (``polygraphy.cuda``, a ctypes
wrapper around ``libcudart``): no pycuda, no cuda-python. The tensor dtypes are mapped with a
local table instead of ``trt.nptype``, which on TensorRT 8.5 (JetPack 5) refers to ``np.bool``,
gone since NumPy 1.24.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from ...errors import EdgePTQError
from .availability import import_tensorrt

# trt.DataType member name -> NumPy dtype. Names a TensorRT version lacks are simply absent there.
DTYPE_NAMES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


def numpy_dtype(trt_module: Any, trt_dtype: Any) -> np.dtype:
    """The NumPy dtype of a ``trt.DataType`` without ``trt.nptype`` (broken on 8.5 with NumPy >= 1.24)."""
    for name, dtype in DTYPE_NAMES.items():
        member = getattr(trt_module.DataType, name, None)
        if member is not None and member == trt_dtype:
            return np.dtype(dtype)
    raise EdgePTQError(
        f"engine tensor type {trt_dtype} has no NumPy equivalent; the runner feeds float32, "
        "float16, int8, int32, int64, uint8 or bool tensors"
    )


class _CudaEvents:
    """CUDA events through the CUDA runtime wrapper (ctypes, no extra dependencies)."""

    def __init__(self, cuda: Any, count: int) -> None:
        self._cuda = cuda.wrapper()
        self.events = []
        for _ in range(count):
            ptr = ctypes.c_void_p()
            self._cuda.check(self._cuda.handle.cudaEventCreate(ctypes.byref(ptr)))
            self.events.append(ptr.value)

    def record(self, index: int, stream_ptr: int) -> None:
        self._cuda.check(
            self._cuda.handle.cudaEventRecord(ctypes.c_void_p(self.events[index]), ctypes.c_void_p(stream_ptr))
        )

    def synchronize(self, index: int) -> None:
        self._cuda.check(self._cuda.handle.cudaEventSynchronize(ctypes.c_void_p(self.events[index])))

    def elapsed_ms(self, start: int, end: int) -> float:
        ms = ctypes.c_float()
        self._cuda.check(
            self._cuda.handle.cudaEventElapsedTime(
                ctypes.byref(ms), ctypes.c_void_p(self.events[start]), ctypes.c_void_p(self.events[end])
            )
        )
        return float(ms.value)

    def free(self) -> None:
        for ev in self.events:
            self._cuda.handle.cudaEventDestroy(ctypes.c_void_p(ev))
        self.events = []


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost): lets cudaMemcpyAsync run truly asynchronously."""

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda.wrapper()
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        ptr = ctypes.c_void_p()
        self._cuda.check(self._cuda.handle.cudaMallocHost(ctypes.byref(ptr), ctypes.c_size_t(nbytes)))
        self.ptr, self.nbytes = ptr.value, nbytes

    def array(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._cuda.handle.cudaFreeHost(ctypes.c_void_p(self.ptr))
        self.ptr, self.nbytes = 0, 0


@dataclass
class TimedResult:
    """Scores of one batch and where its time went on the GPU (CUDA-event milliseconds)."""

    scores: np.ndarray
    h2d_ms: float
    compute_ms: float
    d2h_ms: float

    @property
    def total_ms(self) -> float:
        """Copy in + compute + copy out."""
        return self.h2d_ms + self.compute_ms + self.d2h_ms


class TensorRTRunner:
    """One deserialised engine with its execution context, CUDA stream and reusable buffers.

    ``trt_module`` and ``cuda_module`` default to ``tensorrt`` and ``polygraphy.cuda``.
    """

    def __init__(
        self,
        engine_path: "str | os.PathLike",
        threads: Optional[int] = None,
        trt_module: Any = None,
        cuda_module: Any = None,
    ) -> None:
        trt = trt_module if trt_module is not None else import_tensorrt()
        if cuda_module is None:
            from polygraphy import cuda as cuda_module
        self._trt = trt
        self._cuda = cuda_module
        self.threads = threads  # TensorRT inference does not use CPU threads; kept for the record
        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EdgePTQError(
                f"TensorRT could not deserialise {engine_path}; an engine only loads with the "
                "TensorRT version and GPU that built it: rebuild it on this device"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgePTQError(f"{engine_path} has inputs {inputs} and outputs {outputs}; expected one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        in_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self._nchw = len(in_shape) == 4 and in_shape[1] == 3 and in_shape[3] != 3
        self._in_dtype = numpy_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self._out_dtype = numpy_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self._stream = cuda_module.Stream()
        self._d_in = cuda_module.DeviceArray.raw((0,))
        self._d_out = cuda_module.DeviceArray.raw((0,))
        self._h_in = PinnedBuffer(cuda_module)
        self._h_out = PinnedBuffer(cuda_module)
        self._events = _CudaEvents(cuda_module, 4)
        self._shape: Optional[Tuple[int, ...]] = None
        self._out_shape: Tuple[int, ...] = ()
        self._out_bytes = 0

    def _prepare(self, shape: Tuple[int, ...]) -> None:
        if shape == self._shape:
            return
        if not self.context.set_input_shape(self.input_name, shape):
            raise EdgePTQError(
                f"input shape {shape} is outside the engine's optimisation profile; rebuild with a "
                "larger tensorrt.max_batch_size"
            )
        self._out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        in_bytes = int(np.prod(shape)) * self._in_dtype.itemsize
        self._out_bytes = int(np.prod(self._out_shape)) * self._out_dtype.itemsize
        self._d_in.resize((in_bytes,))
        self._d_out.resize((self._out_bytes,))
        self._h_in.ensure(in_bytes)
        self._h_out.ensure(self._out_bytes)
        self.context.set_tensor_address(self.input_name, self._d_in.ptr)
        self.context.set_tensor_address(self.output_name, self._d_out.ptr)
        self._shape = shape

    def _stage_input(self, batch: np.ndarray) -> int:
        """Put the batch into pinned memory (engine dtype and layout); return its byte count."""
        x = np.asarray(batch, dtype=self._in_dtype)
        if self._nchw:
            x = x.transpose(0, 3, 1, 2)
        self._prepare(tuple(int(d) for d in x.shape))
        host_in = self._h_in.array(x.shape, self._in_dtype)
        np.copyto(host_in, x)
        return host_in.nbytes

    def _scores(self) -> np.ndarray:
        return self._h_out.array(self._out_shape, self._out_dtype).astype(np.float32, copy=True)

    def _execute(self, stream: int) -> None:
        if not self.context.execute_async_v3(stream):
            raise EdgePTQError("TensorRT execute_async_v3 failed; see the TensorRT log above")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class scores for one float32 NHWC batch in 0..255: the bare path, no CUDA events."""
        in_bytes = self._stage_input(batch)
        kind = self._cuda.MemcpyKind
        wrapper = self._cuda.wrapper()
        stream = self._stream.ptr
        wrapper.memcpy(self._d_in.ptr, self._h_in.ptr, in_bytes, kind.HostToDevice, stream)
        self._execute(stream)
        wrapper.memcpy(self._h_out.ptr, self._d_out.ptr, self._out_bytes, kind.DeviceToHost, stream)
        self._stream.synchronize()
        return self._scores()

    def timed_infer(self, batch: np.ndarray) -> TimedResult:
        """Run one batch, timing copy-in, compute and copy-out with CUDA events (the breakdown pass)."""
        in_bytes = self._stage_input(batch)  # into pinned memory, outside the timed region
        kind = self._cuda.MemcpyKind
        wrapper = self._cuda.wrapper()
        stream = self._stream.ptr
        ev = self._events
        ev.record(0, stream)
        wrapper.memcpy(self._d_in.ptr, self._h_in.ptr, in_bytes, kind.HostToDevice, stream)
        ev.record(1, stream)
        self._execute(stream)
        ev.record(2, stream)
        wrapper.memcpy(self._h_out.ptr, self._d_out.ptr, self._out_bytes, kind.DeviceToHost, stream)
        ev.record(3, stream)
        ev.synchronize(3)
        return TimedResult(
            scores=self._scores(),
            h2d_ms=ev.elapsed_ms(0, 1),
            compute_ms=ev.elapsed_ms(1, 2),
            d2h_ms=ev.elapsed_ms(2, 3),
        )

    def close(self) -> None:
        """Free device and pinned memory, events, stream, context and engine; safe to call twice."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._events.free()
        self._d_in.free()
        self._d_out.free()
        self._h_in.free()
        self._h_out.free()
        self._stream.free()
        # Destroy the context before the engine and the engine before the runtime.
        self.context = None
        self.engine = None
        self._runtime = None


def load_runner(engine_path: "str | os.PathLike", threads: Optional[int] = None) -> TensorRTRunner:
    """Load an engine into a :class:`TensorRTRunner` (``.run``, ``.timed_infer``, ``.close``).

    Not Polygraphy's ``TrtRunner``: that one marks every tensor for debugging on TensorRT 10 and
    allocates outputs through a callback at every call, overhead that would land in the latency
    being measured, and it cannot time the copies separately.
    """
    return TensorRTRunner(engine_path, threads)
