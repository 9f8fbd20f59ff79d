"""Keras -> ONNX with tf2onnx (the first PTQ stage), timed, monitored and checked for parity."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.core.artifacts import write_parquet
from workflow_scripts.measure.compression import timed_stage
from workflow_scripts.data.data_io import open_split, to_model_input
from workflow_scripts.core.errors import EdgePTQError
from workflow_scripts.models.zoo import load_keras_model
from workflow_scripts.measure.monitor import make_monitor, summarize_resources
from workflow_scripts.core.provenance import with_provenance

log = logging.getLogger(__name__)
INPUT_NAME = "images"


class ParityError(EdgePTQError):
    """The ONNX model's outputs differ from Keras' beyond the configured tolerance."""


def convert_to_onnx(model, onnx_path: str | Path, opset: int, canonical: bool = True) -> None:
    """Convert a loaded Keras model with an explicit NHWC float32 signature and a dynamic batch.

    With ``canonical`` (the workflow's way) the conversion is deterministic and the saved graph
    canonical (``onnx_canonical``): the same Keras model gives the same bytes in any process.
    ``canonical=False`` is tf2onnx's plain output, kept for comparison.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    from workflow_scripts.models.onnx_canonical import canonicalize, deterministic_tf2onnx

    # tf2onnx logs a harmless traceback from its transpose optimizer with Keras 3; keep logs readable.
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    shape = (None, *model.input_shape[1:])
    signature = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)
    if not canonical:
        tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset, output_path=str(onnx_path))
        return
    with deterministic_tf2onnx():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    onnx.save(canonicalize(proto), str(onnx_path))


def check_parity(model, onnx_path: str | Path, images: np.ndarray, tolerance: float) -> float:
    """Max abs difference between Keras and ONNX Runtime outputs; raises ParityError above ``tolerance``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: images})[0]
    keras_out = model(images, training=False).numpy()
    diff = float(np.max(np.abs(onnx_out - keras_out)))
    if not np.isfinite(diff) or diff > tolerance:
        raise ParityError(
            f"{onnx_path}: ONNX output differs from Keras by {diff:.3g} > export.parity_tolerance={tolerance}; "
            "try another export.opset, or raise the tolerance if the difference is expected"
        )
    return diff


def export_onnx(keras_path: str | Path, onnx_path: str | Path, timings_path: str | Path, resources_path: str | Path,
                data_dir: str | Path, opset: int, tolerance: float, parity_images: int, warmup: int, repeats: int,
                monitor_interval_s: float, provenance: dict) -> pd.DataFrame:
    """Time warmup+repeats conversions (model load included), keep the last, check parity, write tables."""
    from workflow_scripts.stages.train import configure_tensorflow

    configure_tensorflow(threads=0, seed=0)
    test_images, _ = open_split(data_dir, "test")
    sample = to_model_input(test_images[:parity_images])
    state = {}

    def produce(tmp: Path) -> dict:
        started = time.perf_counter()
        model = load_keras_model(keras_path)
        loaded = time.perf_counter()
        convert_to_onnx(model, tmp, opset)
        state["model"] = model
        return {"load_s": loaded - started, "convert_s": time.perf_counter() - loaded}

    def check(tmp: Path) -> dict:
        diff = check_parity(state["model"], tmp, sample, tolerance)
        log.info("parity: max abs diff %.3g over %d images (tolerance %g)", diff, len(sample), tolerance)
        return {"parity_max_abs_diff": diff}

    monitor = make_monitor(monitor_interval_s)
    with monitor:
        runs, facts = timed_stage("onnx_conversion", produce, onnx_path, warmup, repeats, monitor, check=check)
    samples = monitor.frame()
    runs["parity_max_abs_diff"] = facts["parity_max_abs_diff"]
    runs["onnx_mb"] = Path(onnx_path).stat().st_size / 1e6
    runs["opset"] = opset
    for key, value in summarize_resources(samples).items():
        runs[key] = value
    runs = with_provenance(runs, provenance)
    write_parquet(runs, timings_path)
    write_parquet(with_provenance(samples, provenance), resources_path)
    return runs
