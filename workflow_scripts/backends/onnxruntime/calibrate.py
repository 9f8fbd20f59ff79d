"""Fast INT8 calibration for the CPU backends: one inference pass, fixed-width histograms, vectorized KL search.

ONNX Runtime's own calibrators run the model with graph optimization off, keep every batch's
tensors, re-bin each tensor's histogram as its range widens (one ``np.histogram`` per tensor and
batch) and search the KL threshold in Python loops. This module computes the same ranges with:

1. **Ranges only (min-max)**: the model plus a ``ReduceMin``/``ReduceMax`` per calibrated tensor, run in
   an optimized session; only two scalars per tensor and batch leave the session.
2. **Histograms (entropy, percentile)**: one pass in an optimized session with every calibrated tensor
   as an output; per tensor and batch its min/max and one ``np.bincount`` into a *fixed-width*
   histogram (TensorRT's approach: no re-binning). The bin width is fixed by the first batch, as
   ONNX Runtime anchors its grid there; a wider later batch pads the count array with whole bins on
   both sides, so no count ever moves. (Fixing the width by the first batch is what makes one pass
   enough: a separate range pass first would only be needed for a width set by the global range.)
3. **Thresholds**: min-max as ONNX Runtime's ``MinMaxCalibrater``; percentile as its
   ``compute_percentile``; entropy as its ``get_entropy_threshold`` (the same reference and candidate
   distributions, 128 quantized bins, smoothing and KL divergence), vectorized over all candidate
   thresholds at once.

The stored histogram is 32 times finer than ONNX Runtime's entropy grid (128 bins over ± the anchor)
and twice as fine as its percentile grid (2048 bins); each method sums neighbouring bins into the grid
ONNX Runtime's ``HistogramCollector`` ends with for the same batches (every batch's range is recorded,
and :func:`_grown_grid` replays ORT's widening). The symmetric percentile (ORT collects |x| there)
folds the signed histogram at zero.

:class:`CalibrationStatistics` is the artifact of one model and one calibration image set, saved by
:func:`save_statistics` and read by :func:`load_statistics`; every INT8 variant of that model and image
set computes its ranges from it (:func:`tensor_ranges`) and hands them to ``quantize_static`` through
its public calibration cache (``calibration_cache_path``, a ``TensorsData`` written by
``save_tensors_data``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from workflow_scripts.backends.onnxruntime.thresholds import (  # noqa: F401 (re-exported: the calibration API)
    ENTROPY_BINS,
    FINE_PER_ENTROPY_BIN,
    HALF_FINE,
    PERCENTILE_BINS,
    _grown_grid,
    entropy_threshold,
    tensor_ranges,
    tensors_data,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def model_digest(model_path: str | Path) -> str:
    """sha256 of a model file: statistics are only valid for the model they were measured on."""
    return hashlib.sha256(Path(model_path).read_bytes()).hexdigest()


def calibration_tensors(model, op_types: Iterable[str] | None = None) -> list[str]:
    """The float tensors ONNX Runtime calibrates: inputs and outputs of the nodes of ``op_types``.

    The same selection as ``CalibraterBase.select_tensors_to_calibrate`` (default: every op type
    ``quantize_static`` can quantize), in graph order.
    """
    from onnx import TensorProto

    if op_types is None:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        op_types = set(QLinearOpsRegistry) | set(QDQRegistry)
    op_types = set(op_types)
    infos = {vi.name: vi for vi in model.graph.value_info}
    infos.update({o.name: o for o in model.graph.output})
    infos.update({i.name: i for i in model.graph.input})
    constants = {t.name for t in model.graph.initializer}
    chosen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for name in list(node.input) + list(node.output):
            info = infos.get(name)
            if (info is not None and name not in constants and info.type.HasField("tensor_type")
                    and info.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)):
                chosen[name] = None
    return list(chosen)


def _session(model, threads: int):
    """An optimized CPU session (ORT_ENABLE_ALL) for an in-memory model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _range_model(model, tensors: list[str]):
    """The model with two scalar outputs per tensor: its ReduceMin and ReduceMax over all axes."""
    import onnx
    from onnx import TensorProto, helper

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    del augmented.graph.output[:]
    for i, name in enumerate(tensors):
        for op in ("ReduceMin", "ReduceMax"):
            out = f"edgeptq_cal_{op}_{i}"
            augmented.graph.node.append(helper.make_node(op, [name], [out], keepdims=0, name=out))
            augmented.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, []))
    return augmented


def _output_model(model, tensors: list[str]):
    """The model with every calibrated tensor as a graph output (and nothing else)."""
    import onnx

    infos = {vi.name: vi for vi in model.graph.value_info}
    infos.update({o.name: o for o in model.graph.output})
    infos.update({i.name: i for i in model.graph.input})
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    del augmented.graph.output[:]
    augmented.graph.output.extend(infos[name] for name in tensors)
    return augmented


@dataclass
class CalibrationStatistics:
    """Pass-1 ranges and pass-2 histograms of the calibrated tensors of one model on one image set."""

    tensors: list[str]
    batch_min: np.ndarray            # [tensors, batches] float32
    batch_max: np.ndarray            # [tensors, batches] float32
    images: int
    batch_sizes: list[int]
    model_sha256: str = ""
    # Fine histograms (pass 2), concatenated; tensor t has hist[offsets[t]:offsets[t+1]], 2*half_bins[t]
    # bins of width anchor[t] / HALF_FINE over ±half_bins[t] * width. Empty when only ranges were taken.
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    half_bins: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    hist: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timings: dict = field(default_factory=dict)

    @property
    def minimum(self) -> np.ndarray:
        return np.nanmin(self.batch_min, axis=1)

    @property
    def maximum(self) -> np.ndarray:
        return np.nanmax(self.batch_max, axis=1)

    @property
    def has_histograms(self) -> bool:
        return len(self.half_bins) == len(self.tensors)

    def fine_histogram(self, index: int) -> np.ndarray:
        return self.hist[self.offsets[index]:self.offsets[index + 1]]


def collect_statistics(model_path: str | Path, batches: Callable[[], Iterator[np.ndarray]], histograms: bool = True,
                       threads: int = 0, op_types: Iterable[str] | None = None) -> CalibrationStatistics:
    """Per-tensor, per-batch min/max and, with ``histograms``, fixed-width histograms, in one inference pass.

    ``model_path`` is the pre-processed model ``quantize_static`` will quantize (tensor names must match);
    ``batches()`` yields the float32 calibration batches. Without histograms (min-max) the ranges are
    reduced inside the session; with them every tensor leaves it once and is counted.
    """
    import onnx

    model = onnx.load(str(model_path))
    input_name = model.graph.input[0].name
    tensors = calibration_tensors(model, op_types)
    if histograms:
        return _collect_histograms(model, model_path, tensors, input_name, batches, threads)
    timings = {}
    started = time.perf_counter()
    session = _session(_range_model(model, tensors), threads)
    timings["session_s"] = time.perf_counter() - started
    mins, maxs, sizes = [], [], []
    started = time.perf_counter()
    progress = _progress(batches)
    for batch in batches():
        values = session.run(None, {input_name: batch})
        mins.append(np.asarray(values[0::2], dtype=np.float32))
        maxs.append(np.asarray(values[1::2], dtype=np.float32))
        sizes.append(int(len(batch)))
        progress.update(len(sizes), f"{sum(sizes):,} images")
    timings["run_s"] = time.perf_counter() - started
    progress.done(f"{len(sizes)} batches, {sum(sizes):,} images")
    _check_images(sizes)
    return CalibrationStatistics(tensors, np.stack(mins, axis=1), np.stack(maxs, axis=1), sum(sizes), sizes,
                                 model_digest(model_path), timings=timings)


def _progress(batches):
    """Progress lines of a calibration pass (every ~10 s; of a known total where ``batches`` carries
    ``total_batches``)."""
    from workflow_scripts.core.progress import Progress

    return Progress(log, "calibration pass", total=getattr(batches, "total_batches", None), unit="batches")


def _check_images(sizes: list[int]) -> None:
    if not sizes:
        from workflow_scripts.core.errors import ConfigError

        raise ConfigError("calibration received no images; check config key 'calibration.num_images'")


class _FineHistogram:
    """One tensor's histogram of bin width anchor / HALF_FINE, centred on zero, widened by whole bins (no re-binning).

    The anchor is the first batch's max |x| (the first non-zero one), as in ORT's collector; a batch beyond
    the current range pads the count array on both sides, so earlier counts keep their bins.
    """

    __slots__ = ("anchor", "scale", "half", "counts", "zeros")

    def __init__(self):
        self.anchor, self.scale, self.half, self.counts, self.zeros = np.float32(0), np.float32(0), 0, None, 0

    def reserve(self, size: int, absmax: np.float32) -> bool:
        """Anchor the grid, or widen it, for a batch of ``size`` values with this max |x|.

        False for an all-zero batch before the anchor (its values are kept in ``zeros``): nothing to count.
        """
        if self.counts is None:
            if absmax == 0:
                self.zeros += size
                return False
            self.anchor = np.float32(absmax)
            self.scale = np.float32(HALF_FINE) / self.anchor
            self.half = HALF_FINE
            self.counts = np.zeros(2 * HALF_FINE, np.int64)
            self.counts[HALF_FINE] += self.zeros  # earlier all-zero batches: their values sit in [0, width)
        need = int(np.ceil(np.float32(absmax) * self.scale)) + 1
        if need > self.half:
            grown = max(need, self.half + self.half // 4)
            counts = np.zeros(2 * grown, np.int64)
            counts[grown - self.half:grown + self.half] = self.counts
            self.counts, self.half = counts, grown
        return True

    def add(self, values: np.ndarray, absmax: np.float32) -> None:
        if not self.reserve(values.size, absmax):
            return
        # bin = floor(x / width) + half. |x| * scale < need - 1 <= half - 1, so x * scale + half lies in
        # (0, 2 * half - 1): truncation is the floor and no index leaves the array (no clipping pass).
        work = np.multiply(values.reshape(-1), self.scale, dtype=np.float32)
        work += np.float32(self.half)
        counts = np.bincount(work.astype(np.intp), minlength=2 * self.half)
        if len(counts) > 2 * self.half:  # float rounding at the very edge: fold into the last bin
            counts[2 * self.half - 1] += counts[2 * self.half:].sum()
            counts = counts[:2 * self.half]
        self.counts += counts


FUSE_MAX_ELEMENTS = 4096  # tensors up to this many values are counted together, one bincount per batch (measured best)


def _add_together(histograms: list[_FineHistogram], values: list[np.ndarray], absmax: np.ndarray) -> None:
    """``histogram.add`` for many small tensors at once: the same bins, with per-tensor work done per element.

    Each value's bin is computed exactly as in :meth:`_FineHistogram.add` (float32 ``x * scale + half``,
    truncated, the edge folded into the last bin), then shifted into its tensor's slice of one count
    array; a single ``bincount`` counts them all. At small inputs the per-call cost of numpy, not the
    values, dominated the count.
    """
    active = [(h, v) for h, v, bound in zip(histograms, values, absmax) if h.reserve(v.size, bound)]
    if not active:
        return
    sizes = np.array([v.size for _, v in active], np.int64)
    halves = np.array([h.half for h, _ in active], np.int64)
    offsets = np.zeros(len(active) + 1, np.int64)
    offsets[1:] = np.cumsum(2 * halves)
    work = np.concatenate([v.reshape(-1) for _, v in active]).astype(np.float32, copy=False)
    work *= np.repeat(np.array([h.scale for h, _ in active], np.float32), sizes)
    work += np.repeat(halves.astype(np.float32), sizes)
    bins = work.astype(np.intp)
    np.minimum(bins, np.repeat(2 * halves - 1, sizes), out=bins)
    bins += np.repeat(offsets[:-1], sizes)
    counts = np.bincount(bins, minlength=int(offsets[-1]))
    for (histogram, _), start, end in zip(active, offsets[:-1], offsets[1:]):
        histogram.counts += counts[start:end]


def _count_batch(fine: list[_FineHistogram], values: list[np.ndarray], pool) -> tuple[np.ndarray, np.ndarray]:
    """Min, max and histogram counts of one batch's tensors; large tensors as parallel tasks of ``pool``.

    Each histogram is touched by one task, so the counts do not depend on the order tasks run in.
    """
    def large(i):
        value = values[i]
        low, high = value.min(), value.max()
        fine[i].add(value, np.maximum(np.abs(np.float32(low)), np.abs(np.float32(high))))
        return low, high

    small = [i for i, value in enumerate(values) if value.size <= FUSE_MAX_ELEMENTS]

    def smalls():
        low = np.array([values[i].min() if values[i].size else 0 for i in small], np.float32)
        high = np.array([values[i].max() if values[i].size else 0 for i in small], np.float32)
        _add_together([fine[i] for i in small], [values[i] for i in small], np.maximum(np.abs(low), np.abs(high)))
        return low, high

    big = [i for i, value in enumerate(values) if value.size > FUSE_MAX_ELEMENTS]
    # the largest first: the tasks finish close together
    futures = {i: pool.submit(large, i) for i in sorted(big, key=lambda i: -values[i].size)}
    small_low, small_high = smalls()
    low, high = np.zeros(len(values), np.float32), np.zeros(len(values), np.float32)
    low[small], high[small] = small_low, small_high
    for i, future in futures.items():
        low[i], high[i] = future.result()
    return low, high


def _collect_histograms(model, model_path, tensors: list[str], input_name: str,
                        batches: Callable[[], Iterator[np.ndarray]], threads: int) -> CalibrationStatistics:
    """One pass; batch i is counted (large tensors in parallel) while the session runs batch i + 1."""
    from concurrent.futures import ThreadPoolExecutor

    timings = {}
    started = time.perf_counter()
    session = _session(_output_model(model, tensors), threads)
    timings["session_s"] = time.perf_counter() - started
    fine = [_FineHistogram() for _ in tensors]
    mins, maxs, sizes = [], [], []
    run_s = count_s = 0.0
    workers = max(1, int(threads) or (os.cpu_count() or 1))
    pending = None

    def finish() -> float:
        """Wait for the previous batch's counts; the seconds waited."""
        started = time.perf_counter()
        if pending is not None:
            low, high = pending.result()
            mins.append(low)
            maxs.append(high)
        return time.perf_counter() - started

    progress = _progress(batches)
    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as counter:
        for batch in batches():
            started = time.perf_counter()
            values = session.run(None, {input_name: batch})
            run_s += time.perf_counter() - started
            count_s += finish()
            pending = counter.submit(_count_batch, fine, values, pool)
            sizes.append(int(len(batch)))
            progress.update(len(sizes), f"{sum(sizes):,} images")
        count_s += finish()
    progress.done(f"{len(sizes)} batches, {sum(sizes):,} images")
    _check_images(sizes)
    timings.update(run_s=run_s, count_s=count_s)  # count_s: waiting for counting beyond the overlap
    halves = np.array([h.half for h in fine], np.int64)
    offsets = np.zeros(len(tensors) + 1, np.int64)
    offsets[1:] = np.cumsum(2 * halves)
    hist = np.concatenate([h.counts for h in fine if h.counts is not None] or [np.zeros(0, np.int64)])
    return CalibrationStatistics(tensors, np.stack(mins, axis=1), np.stack(maxs, axis=1), sum(sizes), sizes,
                                 model_digest(model_path), np.array([h.anchor for h in fine], np.float32), halves,
                                 offsets, hist, timings)


# --- thresholds ---------------------------------------------------------------------------------------

def save_statistics(stats: CalibrationStatistics, path: str | Path) -> Path:
    """Write the statistics as one .npz (atomically); :func:`load_statistics` reads it back."""
    from workflow_scripts.core.artifacts import atomic_path

    meta = {"format": FORMAT_VERSION, "tensors": stats.tensors, "images": stats.images,
            "batch_sizes": stats.batch_sizes, "model_sha256": stats.model_sha256, "timings": stats.timings}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8),
                                batch_min=stats.batch_min, batch_max=stats.batch_max, anchor=stats.anchor,
                                half_bins=stats.half_bins, offsets=stats.offsets, hist=stats.hist)
    return path


def load_statistics(path: str | Path, model_path: str | Path | None = None) -> CalibrationStatistics:
    """Read statistics written by :func:`save_statistics`; with ``model_path``, refuse those of another model."""
    with np.load(str(path)) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: calibration statistics format {meta.get('format')}, expected {FORMAT_VERSION}")
        stats = CalibrationStatistics(meta["tensors"], data["batch_min"], data["batch_max"], meta["images"],
                                      meta["batch_sizes"], meta["model_sha256"], data["anchor"], data["half_bins"],
                                      data["offsets"], data["hist"], meta.get("timings", {}))
    if model_path is not None and model_digest(model_path) != stats.model_sha256:
        raise ValueError(f"{path} was measured on another model than {model_path}; recompute it")
    return stats
