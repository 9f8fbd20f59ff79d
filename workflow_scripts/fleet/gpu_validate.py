"""One-shot validation of the TensorRT backend on an NVIDIA machine (x86 GPU or Jetson).

    python -m workflow_scripts.fleet.gpu_validate [--iterations 200] [--keep DIR]

Prints one JSON line per stage: ``{"stage", "status": "ok"|"failed"|"skipped", "reason"?, ...}``.
Stages, in order:

1. ``versions``: Python, NumPy, TensorRT, Polygraphy, ONNX Runtime; the GPU or Jetson found.
   TensorRT counts as usable here only when Polygraphy imports too (the probe checks both).
2. ``pinned_memory``: a page-locked host buffer -> device -> host round trip through the
   runner's own CUDA helpers (``PinnedBuffer``, Polygraphy's ``DeviceArray`` and ``memcpy``).
3. ``gpu_sampler``: NVML (or tegrastats on Jetson) samples through ``gpu_monitor``.
4. ``build_fp32``, ``build_fp16``, ``build_int8``: engines of a small ONNX model with the
   workflow's default options, each compared with ONNX Runtime on the same inputs.
5. ``calibration_default_batches``: the INT8 build with the default batch sizes (profile
   optimum 1, calibration batches of 16) fed TensorRT more than zero batches, every image (the
   build calibrates afresh: a cache left in a ``--keep`` folder is removed first).
6. ``latency_bare_vs_timed``: median wall time of ``run`` (bare) against ``timed_infer`` (CUDA
   events), and the event breakdown.

Every stage that cannot run here is reported as skipped with the reason (on a machine without
TensorRT or a GPU: all of them). Exit status 1 when a stage failed, else 0. Needs only the
device-side dependency set (no TensorFlow, no Snakemake); takes well under 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

STAGES = (
    "versions",
    "pinned_memory",
    "gpu_sampler",
    "build_fp32",
    "build_fp16",
    "build_int8",
    "calibration_default_batches",
    "latency_bare_vs_timed",
)
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3}


class Skip(Exception):
    """A stage cannot run here; the message says why."""


def make_small_onnx(path: Path) -> Path:
    """images [N,8,8,3] NHWC -> Conv 3x3 (8) -> Relu -> GlobalAveragePool -> Gemm (10) -> Softmax."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(42)
    inits = [
        numpy_helper.from_array(np.array([0, 3, 1, 2], np.int64), "perm_unused"),
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) / 255).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((8, 10)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "gpu_validate",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])],
        initializer=inits[1:],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by TensorRT 8.5's ONNX parser (JetPack 5)
    save(model, str(path))
    return path


class Validator:
    def __init__(self, workdir: Path, iterations: int, emit: Callable[[Dict[str, Any]], None]) -> None:
        self.workdir = workdir
        self.iterations = iterations
        self.emit = emit
        self.state: Dict[str, Any] = {}
        self.failed = False
        rng = np.random.default_rng(0)
        self.images = rng.uniform(0, 255, (64, 8, 8, 3)).astype(np.float32)

    # -- helpers --
    def backend(self):
        from workflow_scripts.backends import tensorrt as trt_backend

        ok, reason = trt_backend.is_available()
        if not ok:
            raise Skip(f"TensorRT cannot build here: {reason}")
        return trt_backend

    def onnx(self) -> Path:
        if "onnx" not in self.state:
            try:
                import onnx  # noqa: F401
            except ImportError as exc:
                raise Skip(f"the 'onnx' package is missing ({exc})")
            self.state["onnx"] = make_small_onnx(self.workdir / "small.onnx")
        return self.state["onnx"]

    def fresh_calibration_cache(self) -> Path:
        """The INT8 calibration cache path, with any cache (and its JSON) a previous run left removed."""
        from workflow_scripts.backends.tensorrt.calibrator import calibration_metadata_path

        cache = self.workdir / "small.int8.cache"
        for path in (cache, calibration_metadata_path(cache)):
            if path.exists():
                path.unlink()
        return cache

    def reference(self, batch: np.ndarray) -> np.ndarray:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Skip(f"onnxruntime is missing, nothing to compare with ({exc})")
        if "ort" not in self.state:
            self.state["ort"] = ort.InferenceSession(str(self.onnx()), providers=["CPUExecutionProvider"])
        return self.state["ort"].run(None, {"images": batch})[0]

    # -- stages --
    def stage_versions(self) -> Dict[str, Any]:
        from workflow_scripts.core.device import jetson_model, nvidia_gpu_name

        facts: Dict[str, Any] = {
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "jetson": jetson_model(), "gpu": nvidia_gpu_name(),
        }
        from workflow_scripts.backends.tensorrt.planning import validation_versions

        # Polygraphy, ONNX, ONNX Runtime (the reference), TensorRT and its probe: the backend's own list.
        facts.update(validation_versions(self.backend()))
        return facts

    def stage_pinned_memory(self) -> Dict[str, Any]:
        self.backend()
        from workflow_scripts.backends.tensorrt.cudart import import_cuda
        from workflow_scripts.backends.tensorrt.runner import PinnedBuffer

        cuda = import_cuda()

        data = np.arange(1 << 20, dtype=np.float32)
        h_in, h_out = PinnedBuffer(cuda), PinnedBuffer(cuda)
        d = cuda.DeviceArray.raw((data.nbytes,))
        stream = cuda.Stream()
        try:
            h_in.ensure(data.nbytes)
            h_out.ensure(data.nbytes)
            np.copyto(h_in.array(data.shape, data.dtype), data)
            w = cuda.wrapper()
            w.memcpy(d.ptr, h_in.ptr, data.nbytes, cuda.MemcpyKind.HostToDevice, stream.ptr)
            w.memcpy(h_out.ptr, d.ptr, data.nbytes, cuda.MemcpyKind.DeviceToHost, stream.ptr)
            stream.synchronize()
            back = h_out.array(data.shape, data.dtype).copy()
        finally:
            h_in.free()
            h_out.free()
            d.free()
            stream.free()
        if not np.array_equal(back, data):
            raise AssertionError("the 4 MiB pinned round trip came back different")
        return {"bytes": int(data.nbytes)}

    def stage_gpu_sampler(self) -> Dict[str, Any]:
        from workflow_scripts.measure.gpu_monitor import make_gpu_sampler

        sampler = make_gpu_sampler(1.0)
        if sampler is None:
            raise Skip("no GPU sampler: neither tegrastats (Jetson) nor NVML with a GPU is available")
        try:
            deadline = time.monotonic() + 5
            sample = sampler.sample()
            while not sample and time.monotonic() < deadline:
                time.sleep(0.2)
                sample = sampler.sample()
        finally:
            sampler.close()
        if not sample:
            raise AssertionError(f"{type(sampler).__name__} gave no values within 5 s")
        return {"sampler": type(sampler).__name__, "sample": sample}

    def _build(self, precision: str) -> Dict[str, Any]:
        trt_backend = self.backend()
        onnx_path = self.onnx()
        engine = self.workdir / f"small.{precision}.engine"
        calib = [self.images[i:i + 16] for i in range(0, len(self.images), 16)]
        # The workflow's defaults: optimum batch 1 (benchmark.batch_size), max from the schema.
        options = {"batch_size": 1, "device": "gpu-validate", "num_images": len(self.images), "seed": 0}
        if precision == "int8":
            # Calibrate every time, as the engine stage does: a cache left by an earlier run in a
            # --keep folder would be reused and calibration_default_batches would see 0 batches.
            options["calibration_cache"] = str(self.fresh_calibration_cache())
        facts = trt_backend.build_engine(onnx_path, engine, precision, lambda: iter(calib), options, self.workdir)
        runner = trt_backend.load_runner(engine)
        try:
            batch = self.images[:8]
            got = runner.run(batch)
            expected = self.reference(batch)
            agree = float((got.argmax(1) == expected.argmax(1)).mean())
            max_abs = float(np.abs(got - expected).max())
        finally:
            runner.close()
        self.state[f"engine_{precision}"] = engine
        self.state[f"facts_{precision}"] = facts
        out = {"build_s": facts["build_s"], "engine_bytes": facts["engine_bytes"], "max_abs_diff": max_abs,
               "top1_agreement": agree, "network_typing": facts.get("network_typing")}
        tol = TOLERANCE.get(precision)
        if tol is not None and max_abs > tol:
            raise AssertionError(f"{precision} differs from ONNX Runtime by {max_abs:.3g} (> {tol})")
        if tol is None and agree < 0.5:
            raise AssertionError(f"int8 top-1 agrees with ONNX Runtime on {agree:.0%} of 8 images")
        return out

    def stage_build_fp32(self):
        return self._build("fp32")

    def stage_build_fp16(self):
        return self._build("fp16")

    def stage_build_int8(self):
        return self._build("int8")

    def stage_calibration_default_batches(self) -> Dict[str, Any]:
        self.backend()
        facts = self.state.get("facts_int8")
        if facts is None:
            raise Skip("needs the engine of stage build_int8")
        if facts.get("network_typing") == "strong":
            raise Skip("this TensorRT builds INT8 from Q/DQ (strong typing): nothing is calibrated")
        fed, images = facts.get("calibration_batches_fed", 0), facts.get("calibration_images", 0)
        if not fed or images != len(self.images):
            raise AssertionError(
                f"calibration fed {fed} batches of {images} images; expected > 0 of {len(self.images)}"
            )
        return {k: facts.get(k) for k in ("calibration_batches_fed", "calibration_batch_size", "calibration_images",
                                          "calibration_images_padded", "calibration_cache_reused")}

    def stage_latency_bare_vs_timed(self) -> Dict[str, Any]:
        trt_backend = self.backend()
        engine = self.state.get("engine_fp32")
        if engine is None:
            raise Skip("needs the engine of stage build_fp32")
        runner = trt_backend.load_runner(engine)
        batch = self.images[:1]
        try:
            for _ in range(20):
                runner.run(batch)
                runner.timed_infer(batch)
            bare, timed, parts = [], [], []
            for _ in range(self.iterations):
                t0 = time.perf_counter()
                runner.run(batch)
                bare.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                parts.append(runner.timed_infer(batch))
                timed.append(time.perf_counter() - t0)
        finally:
            runner.close()
        return {
            "iterations": self.iterations,
            "bare_median_ms": float(np.median(bare) * 1e3),
            "timed_median_ms": float(np.median(timed) * 1e3),
            "h2d_median_ms": float(np.median([p.h2d_ms for p in parts])),
            "compute_median_ms": float(np.median([p.compute_ms for p in parts])),
            "d2h_median_ms": float(np.median([p.d2h_ms for p in parts])),
        }

    def run(self, stages=STAGES) -> None:
        for stage in stages:
            record: Dict[str, Any] = {"stage": stage}
            started = time.perf_counter()
            try:
                record.update(status="ok", **getattr(self, f"stage_{stage}")())
            except Skip as skip:
                record.update(status="skipped", reason=str(skip))
            except Exception as exc:  # noqa: BLE001 - report and go on with the next stage
                self.failed = True
                record.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc(limit=5))
            record["seconds"] = round(time.perf_counter() - started, 3)
            self.emit(record)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.fleet.gpu_validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="latency iterations per path (default 200)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the model and engines in this folder")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    args = parser.parse_args(argv)

    def emit(record: Dict[str, Any]) -> None:
        print(json.dumps(record, default=str), flush=True)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        validator = Validator(args.keep, args.iterations, emit)
        validator.run(args.stages)
    else:
        with tempfile.TemporaryDirectory(prefix="edgeptq-gpu-validate-") as tmp:
            validator = Validator(Path(tmp), args.iterations, emit)
            validator.run(args.stages)
    return 1 if validator.failed else 0


if __name__ == "__main__":
    sys.exit(main())
