"""INT8 calibration for TensorRT: the data loader Polygraphy's Calibrator reads, and the cache.

TensorRT calibrates at the calibration profile's *optimum* shape (Polygraphy checks every batch
against it and silently ends calibration at the first batch that does not match). The images
arrive in batches of ``calibration.batch_size``, which has nothing to do with that shape, so
:class:`CalibrationData` re-chunks whatever it receives into batches of exactly the profile's
optimum batch: consecutive images are concatenated and split, and a short last chunk is filled up
with images from the start of the stream, so every calibration image is fed at least once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

LOG = logging.getLogger(__name__)


class CalibrationData:
    """Re-iterable data loader for Polygraphy's Calibrator: ``{input_name: batch}`` per batch.

    Each iteration calls ``calibration_batches()`` afresh (a plain generator could not be rewound
    when the calibrator resets) and yields float32, C-contiguous batches of exactly ``batch_size``
    images (NHWC in, transposed when ``layout`` is NCHW). After an iteration: ``yielded`` batches,
    ``images`` distinct images read, ``padded`` images repeated to fill the last batch.
    """

    def __init__(
        self,
        calibration_batches: Callable[[], Iterable[np.ndarray]],
        input_name: str,
        batch_size: int = 1,
        layout: str = "NHWC",
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
        self.calibration_batches = calibration_batches
        self.input_name = input_name
        self.batch_size = int(batch_size)
        self.layout = layout
        self.yielded = 0
        self.images = 0
        self.padded = 0
        self.input_metadata = None  # set by Polygraphy; unused here

    def _emit(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        self.yielded += 1
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        self.yielded = self.images = self.padded = 0
        size = self.batch_size
        pending: List[np.ndarray] = []
        pending_count = 0
        head: List[np.ndarray] = []  # the first `size` images, to fill a short last batch
        head_count = 0
        for batch in self.calibration_batches():
            batch = np.asarray(batch, dtype=np.float32)
            if batch.ndim != 4 or batch.shape[0] == 0:
                continue
            self.images += batch.shape[0]
            if head_count < size:
                head.append(batch[: size - head_count])
                head_count += head[-1].shape[0]
            pending.append(batch)
            pending_count += batch.shape[0]
            if pending_count < size:
                continue
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            full = (pending_count // size) * size
            for start in range(0, full, size):
                yield self._emit(joined[start:start + size])
            rest = joined[full:]
            pending, pending_count = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
        if pending_count:
            fill_from = np.concatenate(head)
            need = size - pending_count
            reps = -(-need // fill_from.shape[0])  # the stream may be shorter than one batch
            fill = np.concatenate([fill_from] * reps)[:need]
            self.padded = need
            LOG.info(
                "calibration: the last %d image(s) are topped up with %d from the start to make a "
                "batch of %d (TensorRT calibrates at the profile's optimum batch)",
                pending_count, need, size,
            )
            yield self._emit(np.concatenate(pending + [fill]))


# --- calibration cache -----------------------------------------------------------------------------


def calibration_metadata_path(cache_path: "str | os.PathLike") -> Path:
    """The JSON beside a calibration cache that records who wrote it (``<cache>.json``)."""
    return Path(f"{cache_path}.json")


def file_sha256(path: "str | os.PathLike") -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_calibration_metadata(
    cache_path: "str | os.PathLike",
    trt_version: str,
    device: str,
    onnx_sha256: Optional[str] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Record the TensorRT version, device tag (and model hash) that produced a calibration cache."""
    meta = {"tensorrt_version": trt_version, "device": device, "onnx_sha256": onnx_sha256}
    meta.update(extra or {})
    path = calibration_metadata_path(cache_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def calibration_cache_is_valid(
    cache_path: "str | os.PathLike",
    trt_version: str,
    device: str,
    onnx_sha256: Optional[str] = None,
) -> Tuple[bool, str]:
    """Whether a calibration cache may be reused here, and why (pure: reads, never deletes)."""
    cache = Path(cache_path)
    if not cache.is_file() or cache.stat().st_size == 0:
        return False, f"no calibration cache at {cache}"
    meta_path = calibration_metadata_path(cache)
    if not meta_path.is_file():
        return False, (
            f"calibration cache {cache} has no {meta_path.name}, so the TensorRT version and "
            "device that wrote it are unknown"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return False, f"calibration cache metadata {meta_path} is unreadable ({exc})"
    if not isinstance(meta, dict):
        return False, f"calibration cache metadata {meta_path} is not a JSON object"
    if meta.get("tensorrt_version") != trt_version:
        return False, (
            f"calibration cache {cache} was written by TensorRT {meta.get('tensorrt_version')}, "
            f"this is TensorRT {trt_version}"
        )
    if meta.get("device") != device:
        return False, (
            f"calibration cache {cache} was written on device {meta.get('device')!r}, "
            f"this is {device!r}"
        )
    if onnx_sha256 is not None and meta.get("onnx_sha256") not in (None, onnx_sha256):
        return False, f"calibration cache {cache} was written for a different ONNX model"
    return True, f"calibration cache {cache} matches TensorRT {trt_version} on {device!r}"


def prepare_calibration_cache(
    cache_path: "str | os.PathLike",
    trt_version: str,
    device: str,
    onnx_sha256: Optional[str] = None,
) -> bool:
    """Keep a valid cache (returns True) or delete an invalid one (returns False).

    A cache that exists but may not be reused is deleted with a warning. A ``<cache>.json`` left
    without its cache (the engine stage deletes the cache before each measured build, so each one
    calibrates afresh) is removed quietly: that is the expected state, not a problem.
    """
    valid, reason = calibration_cache_is_valid(cache_path, trt_version, device, onnx_sha256)
    cache = Path(cache_path)
    meta = calibration_metadata_path(cache)
    if valid:
        LOG.info("reusing %s", reason)
        return True
    if cache.exists():
        LOG.warning("deleting calibration cache and recalibrating: %s", reason)
        cache.unlink()
        if meta.exists():
            meta.unlink()
    else:
        if meta.exists():
            meta.unlink()  # metadata of a cache deleted on purpose: nothing to warn about
        LOG.info("%s; calibrating", reason)
    return False


def make_calibrator(data_loader: CalibrationData, cache_path: "str | os.PathLike", trt_module: Any = None):
    """Polygraphy Calibrator on IInt8EntropyCalibrator2 that reads/writes ``cache_path``."""
    from polygraphy.backend.trt import Calibrator

    from .availability import import_tensorrt

    trt = trt_module if trt_module is not None else import_tensorrt()
    return Calibrator(data_loader=data_loader, cache=str(cache_path), BaseClass=trt.IInt8EntropyCalibrator2)
