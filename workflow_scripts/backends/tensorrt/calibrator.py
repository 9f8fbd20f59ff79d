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
        self.data_sha256: Optional[str] = None  # of the images read, after a complete iteration
        self.input_metadata = None  # set by Polygraphy; unused here

    def _emit(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        self.yielded += 1
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        self.yielded = self.images = self.padded = 0
        self.data_sha256 = None
        digest = hashlib.sha256()
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
            digest.update(np.ascontiguousarray(batch).tobytes())
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
        self.data_sha256 = digest.hexdigest()


def calibration_data_sha256(calibration_batches: Callable[[], Iterable[np.ndarray]]) -> str:
    """SHA-256 of the calibration images (float32, in stream order), as :class:`CalibrationData` hashes them.

    Independent of how the stream is cut into batches; it identifies the sample (dataset, split,
    ``calibration.num_images``, seed) whatever the caller passes along.
    """
    digest = hashlib.sha256()
    for batch in calibration_batches():
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 4 and batch.shape[0]:
            digest.update(np.ascontiguousarray(batch).tobytes())
    return digest.hexdigest()


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


# What makes two calibrations interchangeable: every key must be recorded and equal (None too).
IDENTITY_KEYS = (
    "tensorrt_version", "device", "onnx_sha256", "method", "num_images", "seed", "batch_size", "data_sha256",
)
# Keys that must be known (not None) on both sides: without them nothing can be compared.
REQUIRED_KEYS = ("tensorrt_version", "device", "onnx_sha256", "batch_size", "data_sha256")


def calibration_identity(
    trt_version: str,
    device: str,
    onnx_sha256: Optional[str],
    batch_size: int,
    method: Optional[str] = "entropy",
    num_images: Optional[int] = None,
    seed: Optional[int] = None,
) -> Dict[str, Any]:
    """The settings a calibration cache depends on (``data_sha256`` is added from the images).

    ``batch_size`` is the batch TensorRT calibrated at (the profile's optimum batch), ``method``
    the calibration method recorded for the row (TensorRT's calibrator is entropy only),
    ``num_images`` and ``seed`` the sample's settings when the caller knows them.
    """
    return {
        "tensorrt_version": str(trt_version), "device": str(device), "onnx_sha256": onnx_sha256,
        "method": method, "num_images": None if num_images is None else int(num_images),
        "seed": None if seed is None else int(seed), "batch_size": int(batch_size),
    }


def write_calibration_metadata(
    cache_path: "str | os.PathLike",
    identity: Dict[str, Any],
    facts: Optional[Dict[str, Any]] = None,
) -> Path:
    """Record who wrote a calibration cache (``identity``, with ``data_sha256``) and what it was fed."""
    meta = {**identity, **(facts or {})}
    path = calibration_metadata_path(cache_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_calibration_metadata(cache_path: "str | os.PathLike") -> Optional[Dict[str, Any]]:
    """The ``<cache>.json`` object, or None when it is missing or unreadable."""
    try:
        meta = json.loads(calibration_metadata_path(cache_path).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def calibration_cache_is_valid(
    cache_path: "str | os.PathLike",
    identity: Dict[str, Any],
    data_sha256: "Callable[[], str] | str | None" = None,
) -> Tuple[bool, str]:
    """Whether a calibration cache may be reused for ``identity``, and why (pure: reads, never deletes).

    Every key of :data:`IDENTITY_KEYS` must be recorded and equal; metadata without a model hash
    (or without any of :data:`REQUIRED_KEYS`) never matches. ``data_sha256`` (a string, or a
    callable computing it, called only once everything else matched) is the calibration images'
    hash; without it the cache cannot be shown to come from the same images and is not reused.
    """
    cache = Path(cache_path)
    if not cache.is_file() or cache.stat().st_size == 0:
        return False, f"no calibration cache at {cache}"
    meta_path = calibration_metadata_path(cache)
    if not meta_path.is_file():
        return False, (
            f"calibration cache {cache} has no {meta_path.name}, so the TensorRT version, device, "
            "model and images that wrote it are unknown"
        )
    meta = read_calibration_metadata(cache)
    if meta is None:
        return False, f"calibration cache metadata {meta_path} is unreadable or not a JSON object"
    wanted = dict(identity)
    missing = [k for k in REQUIRED_KEYS if k != "data_sha256" and (meta.get(k) is None or wanted.get(k) is None)]
    if missing:
        return False, (
            f"calibration cache {cache}: {', '.join(missing)} not recorded on both sides, so it cannot be matched"
        )
    for key in IDENTITY_KEYS:
        if key == "data_sha256" or meta.get(key) == wanted.get(key):
            continue
        if key == "onnx_sha256":
            return False, f"calibration cache {cache} was written for a different ONNX model"
        what = {"tensorrt_version": "TensorRT", "device": "device"}.get(key, key)
        return False, (
            f"calibration cache {cache} was written with {what} {meta.get(key)!r}, this build has "
            f"{what} {wanted.get(key)!r}"
        )
    digest = data_sha256() if callable(data_sha256) else data_sha256
    if digest is None or meta.get("data_sha256") is None:
        return False, f"calibration cache {cache}: the calibration images' hash is not known on both sides"
    if meta["data_sha256"] != digest:
        return False, f"calibration cache {cache} was calibrated on other images (data_sha256 differs)"
    return True, (
        f"calibration cache {cache} matches TensorRT {wanted['tensorrt_version']} on {wanted['device']!r}, "
        "this model and these calibration images"
    )


def prepare_calibration_cache(
    cache_path: "str | os.PathLike",
    identity: Dict[str, Any],
    data_sha256: "Callable[[], str] | str | None" = None,
) -> bool:
    """Keep a valid cache (returns True) or delete an invalid one (returns False).

    A cache that exists but may not be reused is deleted with a warning. A ``<cache>.json`` left
    without its cache (the engine stage deletes the cache before each measured build, so each one
    calibrates afresh) is removed quietly: that is the expected state, not a problem.
    """
    valid, reason = calibration_cache_is_valid(cache_path, identity, data_sha256)
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

    from workflow_scripts.backends.tensorrt.availability import import_tensorrt
    from workflow_scripts.backends.tensorrt.cudart import import_cuda

    import_cuda()  # the calibrator copies batches to the GPU through Polygraphy's CUDA wrapper

    trt = trt_module if trt_module is not None else import_tensorrt()
    return Calibrator(data_loader=data_loader, cache=str(cache_path), BaseClass=trt.IInt8EntropyCalibrator2)
