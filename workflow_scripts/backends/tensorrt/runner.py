"""Running a TensorRT engine: one context, one CUDA stream, page-locked host buffers.

Two paths over the same buffers:

- :meth:`TensorRTRunner.run` is the path the latency samples time. One sample is one ``run``
  call: the NHWC float32 batch converted to the engine's input dtype and layout (NCHW engines:
  a transpose) while it is copied into page-locked host memory (``np.copyto``), a
  ``cudaMemcpyAsync`` host to device, ``execute_async_v3``, a ``cudaMemcpyAsync`` device to host,
  ``cudaStreamSynchronize``, and a copy of the scores out of page-locked memory as float32. No
  CUDA events; ``set_input_shape`` only when the batch shape changes (never between samples).
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
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from workflow_scripts.core.errors import EdgePTQError
from workflow_scripts.backends.tensorrt.availability import import_tensorrt

LOG = logging.getLogger(__name__)

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
            from workflow_scripts.backends.tensorrt.cudart import import_cuda

            cuda_module = import_cuda()
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
        self.profile_batches = profile_batch_range(self.engine, self.input_name, in_shape)
        self.split_calls = 0  # run() calls whose batch had to be split or padded to fit the profile
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
                f"TensorRT refused input shape {shape} (profile batches {self.profile_batches}); "
                "the engine was built for another image size: rebuild it"
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
        """Class scores for one float32 NHWC batch in 0..255: the bare path, no CUDA events.

        A batch the engine's profile cannot take whole is run in parts: split into chunks of the
        profile's largest batch, and a chunk smaller than its smallest batch (a DLA engine's static
        batch; the last evaluation batch) topped up with copies of its last image, whose scores are
        dropped. Latency samples use the benchmark batch, which the profile always covers, so they
        never take this path.
        """
        lo, hi = self.profile_batches
        if not lo <= len(batch) <= hi:
            return self._run_in_parts(batch, lo, hi)
        return self._run_whole(batch)

    def _run_in_parts(self, batch: np.ndarray, lo: int, hi: int) -> np.ndarray:
        if len(batch) == 0:
            raise EdgePTQError("TensorRT runner was given an empty batch")
        self.split_calls += 1
        if self.split_calls == 1:
            LOG.info(
                "batches of %d images run in parts of %d..%d images (the engine's profile); scores of "
                "padding images are dropped", len(batch), lo, hi,
            )
        parts = []
        for start in range(0, len(batch), hi):
            part = np.asarray(batch[start:start + hi])
            count = len(part)
            if count < lo:
                part = np.concatenate([part, np.repeat(part[-1:], lo - count, axis=0)])
            parts.append(self._run_whole(part)[:count])
        return np.concatenate(parts)

    def _run_whole(self, batch: np.ndarray) -> np.ndarray:
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
        lo, hi = self.profile_batches
        if not lo <= len(batch) <= hi:
            raise EdgePTQError(
                f"timed_infer times one engine call, but a batch of {len(batch)} images is outside the "
                f"engine's profile ({lo}..{hi} images); use the benchmark batch (benchmark.batch_size)"
            )
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


def profile_batch_range(engine: Any, input_name: str, in_shape: Tuple[int, ...]) -> Tuple[int, int]:
    """(smallest, largest) batch the engine's first optimization profile accepts for its input.

    A static batch dimension is both; otherwise ``ICudaEngine.get_tensor_profile_shape(name, 0)``
    (TensorRT >= 8.5, as Polygraphy's engine inspector reads it) gives (min, opt, max) shapes.
    """
    if in_shape and int(in_shape[0]) > 0:
        return int(in_shape[0]), int(in_shape[0])
    lo, _opt, hi = engine.get_tensor_profile_shape(input_name, 0)
    return int(lo[0]), int(hi[0])


def load_runner(engine_path: "str | os.PathLike", threads: Optional[int] = None) -> TensorRTRunner:
    """Load an engine into a :class:`TensorRTRunner` (``.run``, ``.timed_infer``, ``.close``).

    Not Polygraphy's ``TrtRunner``: that one marks every tensor for debugging on TensorRT 10 and
    allocates outputs through a callback at every call, overhead that would land in the latency
    being measured, and it cannot time the copies separately.
    """
    return TensorRTRunner(engine_path, threads)
