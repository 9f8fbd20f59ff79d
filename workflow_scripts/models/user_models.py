"""Your own trained model into the workflow (config key user_models), in the job.

A ``.keras`` checkpoint becomes ``models/.../model.keras`` (where a trained model would be): copied byte
for byte when it already takes RGB 0..255 images, else wrapped with its preprocessing layers in front
(safe-mode layers only). An ONNX file becomes ``{device}/onnx/.../model.onnx`` (where the export would
be): copied byte for byte when it takes NHWC RGB 0..255 images, else with its preprocessing and an
NHWC-to-NCHW transpose in front, checked against the original with ONNX Runtime. A SavedModel folder
enters the same way, converted by tf2onnx first (Keras' safe mode refuses to wrap a SavedModel, so it
cannot become a ``model.keras``). Each records the source's SHA-256 and the preprocessing in
``source.json`` beside the model.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from workflow_scripts.core.artifacts import atomic_path, write_parquet, write_text
from workflow_scripts.data.data_io import open_split, read_meta, to_model_input
from workflow_scripts.core.errors import ModelLoadError
from workflow_scripts.core.registry import Preprocess
from workflow_scripts.core.user_inputs import content_digest, model_kind, read_model_contract

log = logging.getLogger(__name__)


def _preprocess(values: dict) -> Preprocess:
    fields = dict(values)
    for key in ("mean", "std"):
        if key in fields:
            fields[key] = tuple(float(v) for v in fields[key])
    return Preprocess(**fields)


def apply_preprocess(images: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """What the preprocessing does to float32 NHWC RGB 0..255 images (the reference of the parity checks)."""
    x = images[..., ::-1] if preprocess.channel_order == "bgr" else images
    x = x * np.float32(preprocess.scale) + np.float32(preprocess.offset)
    return ((x - np.asarray(preprocess.mean, np.float32)) / np.asarray(preprocess.std, np.float32)).astype(np.float32)


def _check_against_data(name: str, source: Path, classes: int | None, size: int | None, meta: dict) -> None:
    if size is not None and size != meta["input_size"]:
        raise ModelLoadError(f"user model {name!r} ({source}) takes {size}x{size} images, but the data are prepared "
                             f"at {meta['input_size']}x{meta['input_size']} (config key input_size)")
    if classes is not None and meta.get("labelled", True) and classes != meta["num_classes"]:
        raise ModelLoadError(f"user model {name!r} ({source}) has {classes} output classes, but dataset "
                             f"{meta['dataset']!r} has {meta['num_classes']}")


def import_keras_model(name: str, source: str | Path, model_path: str | Path, record_path: str | Path,
                       preprocess: dict, data_dir: str | Path) -> dict:
    """Bring a .keras file in as ``model_path`` (see the module docstring)."""
    import keras

    from workflow_scripts.models.zoo import load_keras_model, preprocessing_layers

    source, pre = Path(source), _preprocess(preprocess)
    meta = read_meta(data_dir)
    kind = model_kind(source)
    model = load_keras_model(source)  # safe mode: a file holding code is refused
    size = meta["input_size"]
    shape = model.input_shape
    if len(shape) != 4 or shape[3] != 3:
        raise ModelLoadError(f"user model {name!r} ({source}) takes inputs of shape {shape}; the data are "
                             f"N x {size} x {size} x 3 RGB images")
    _check_against_data(name, source, model.output_shape[-1], shape[1] if shape[1] == shape[2] else None, meta)
    digest = content_digest(source)
    if pre.is_identity():
        with atomic_path(model_path) as tmp:
            shutil.copyfile(source, tmp)
        how = "copied unchanged"
    else:
        inputs = keras.Input((size, size, 3), name="images")
        x = preprocessing_layers(inputs, pre, ("user_channel_order", "user_rescale", "user_normalize"))
        outputs = model(x)
        wrapped = keras.Model(inputs, outputs, name=f"{name}_with_preprocessing")
        images, _ = open_split(data_dir, "test")
        sample = to_model_input(images[:4])
        expected = model(apply_preprocess(sample, pre))
        diff = float(np.max(np.abs(np.asarray(wrapped(sample)) - np.asarray(expected))))
        log.info("preprocessing built into the model: max abs difference %.3g against preprocessing outside", diff)
        with atomic_path(model_path) as tmp:
            wrapped.save(tmp)
        how = "wrapped with its preprocessing"
    record = {"model": name, "source": str(source), "kind": kind, "source_sha256": digest,
              "preprocess": preprocess, "how": how}
    write_text(json.dumps(record, indent=2), record_path)
    log.info("user model %s: %s (%s, sha256 %s)", name, how, source, digest[:16])
    return record


def wrap_onnx(model, pre: Preprocess, layout: str):
    """An ONNX model taking NHWC RGB 0..255 ``images``: channel order, x * a + b per channel
    (a = scale / std, b = (offset - mean) / std) and an NHWC-to-NCHW transpose in front of ``model``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    original = [i for i in graph.input if i.name not in initializers][0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in original.type.tensor_type.shape.dim]
    nodes, current = [], "images"
    taken = {n for node in graph.node for n in list(node.input) + list(node.output)} | initializers

    def fresh(stem: str) -> str:
        candidate, k = f"edgeptq_{stem}", 0
        while candidate in taken:
            k += 1
            candidate = f"edgeptq_{stem}_{k}"
        taken.add(candidate)
        return candidate

    if pre.channel_order == "bgr":
        index = fresh("bgr_index")
        graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), index))
        out = fresh("bgr")
        nodes.append(helper.make_node("Gather", [current, index], [out], axis=3))
        current = out
    scale = np.float32(pre.scale) / np.asarray(pre.std, np.float32)
    shift = (np.float32(pre.offset) - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if not (np.all(scale == 1) and np.all(shift == 0)):
        for op, value, stem in (("Mul", scale, "scale"), ("Add", shift, "shift")):
            const = fresh(f"{stem}_value")
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), const))
            out = fresh(stem)
            nodes.append(helper.make_node(op, [current, const], [out]))
            current = out
    if layout == "NCHW":
        out = fresh("nchw")
        nodes.append(helper.make_node("Transpose", [current], [out], perm=[0, 3, 1, 2]))
        current = out
        batch, _, height, width = dims
    else:
        batch, height, width, _ = dims
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == original.name:
                node.input[k] = current
    for k, output in enumerate(graph.output):
        if output.name == original.name:  # an identity model: keep the output name
            graph.output[k].name = current
    new_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    new_input = helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                              [batch if batch else "N", height, width, 3])
    position = list(graph.input).index(original)
    graph.input.remove(original)
    graph.input.insert(position, new_input)
    onnx.checker.check_model(model)
    return model


def import_onnx_model(name: str, source: str | Path, onnx_path: str | Path, record_path: str | Path,
                      timings_path: str | Path, resources_path: str | Path, preprocess: dict,
                      data_dir: str | Path, parity_images: int, tolerance: float, monitor_interval_s: float,
                      provenance: dict, opset: int = 17) -> dict:
    """Bring an ONNX file (or a SavedModel folder, through tf2onnx at ``opset``) in as ``onnx_path`` with
    the export's tables (stage ``onnx_import``)."""
    import onnx
    import onnxruntime as ort
    import pandas as pd

    from workflow_scripts.measure.monitor import make_monitor, summarize_resources
    from workflow_scripts.core.provenance import with_provenance

    source, pre = Path(source), _preprocess(preprocess)
    meta = read_meta(data_dir)
    digest = content_digest(source)
    images, _ = open_split(data_dir, "test")
    sample = to_model_input(images[:max(2, parity_images)])
    monitor = make_monitor(monitor_interval_s)
    with monitor:
        monitor.stage = "onnx_import:measured:0"
        started = time.perf_counter()
        original = source
        if model_kind(source) == "savedmodel":  # a SavedModel enters as the ONNX tf2onnx makes of it
            scratch = tempfile.TemporaryDirectory(prefix=".tmp-savedmodel-", dir=Path(onnx_path).parent)
            source = Path(scratch.name) / "converted.onnx"
            savedmodel_to_onnx(name, original, source, opset, sample)
        contract = read_model_contract(source)
        _check_against_data(name, source, contract.num_classes, contract.input_size, meta)
        identity = pre.is_identity() and contract.layout == "NHWC"
        model = onnx.load(str(source))
        loaded = time.perf_counter()
        with atomic_path(onnx_path) as tmp:
            if identity:
                shutil.copyfile(source, tmp)
            else:
                onnx.save(wrap_onnx(model, pre, contract.layout), str(tmp))
            done = time.perf_counter()
            diff = _onnx_parity(name, source, tmp, sample, pre, contract.layout, ort)
            if not np.isfinite(diff) or diff > tolerance:
                raise ModelLoadError(f"user model {name!r}: the imported graph differs from {source} by {diff:.3g} "
                                     f"> export.parity_tolerance={tolerance}")
        monitor.stage = ""
    samples = monitor.frame()
    runs = pd.DataFrame([{"stage": "onnx_import", "run": 0, "warmup": False, "duration_s": done - started,
                          "load_s": loaded - started, "convert_s": done - loaded, "parity_max_abs_diff": diff,
                          "onnx_mb": Path(onnx_path).stat().st_size / 1e6,
                          "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
                          "source_sha256": digest}])
    for key, value in summarize_resources(samples).items():
        runs[key] = value
    write_parquet(with_provenance(runs, provenance), timings_path)
    write_parquet(with_provenance(samples, provenance), resources_path)
    if original != source:
        scratch.cleanup()
    record = {"model": name, "source": str(original), "kind": model_kind(original), "source_sha256": digest, "layout": contract.layout,
              "preprocess": preprocess, "how": "copied unchanged" if identity else "wrapped with its preprocessing"}
    write_text(json.dumps(record, indent=2), record_path)
    log.info("user model %s: %s (%s, sha256 %s, parity %.3g)", name, record["how"], original, digest[:16], diff)
    return record


def _onnx_parity(name: str, source: Path, imported: Path, sample: np.ndarray, pre: Preprocess, layout: str,
                 ort) -> float:
    """Max abs difference between the imported graph on raw images and the original on preprocessed ones;
    a graph that cannot take a batch of several images is refused naming the fix."""
    def run(path, batch):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch})[0]

    reference = apply_preprocess(sample, pre)
    if layout == "NCHW":
        reference = np.ascontiguousarray(reference.transpose(0, 3, 1, 2))
    try:
        return float(np.max(np.abs(run(imported, sample) - run(source, reference))))
    except Exception as exc:  # ORT raises its own types for a shape it cannot take
        raise ModelLoadError(f"user model {name!r}: {source} did not run on a batch of {len(sample)} images "
                             f"({type(exc).__name__}: {str(exc)[:300]}); the workflow batches images, so export the "
                             "model with a dynamic batch axis (e.g. torch.onnx.export(..., dynamic_axes={'input': "
                             "{0: 'N'}}))") from None


def savedmodel_to_onnx(name: str, source: Path, out: Path, opset: int, sample: np.ndarray) -> float:
    """Convert a SavedModel's serving signature (one image input, one output) to ONNX with tf2onnx; return
    the max abs difference of the two on ``sample`` (refused above 1e-3). TensorFlow runs the SavedModel's
    graph (no Python code is loaded); Keras' safe mode refuses to wrap one, so it never becomes model.keras."""
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from workflow_scripts.models.onnx_canonical import canonicalize, deterministic_tf2onnx

    try:
        loaded = tf.saved_model.load(str(source))  # kept referenced: the signature uses its variables
        function = loaded.signatures["serving_default"]
    except Exception as exc:
        raise ModelLoadError(f"user model {name!r}: cannot load the SavedModel {source} ({type(exc).__name__}: "
                             f"{str(exc)[:300]}); it needs a serving_default signature") from None
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1:
        raise ModelLoadError(f"user model {name!r}: the SavedModel {source} takes {len(inputs)} inputs "
                             f"({sorted(inputs)}); the workflow feeds one image tensor")
    (key, spec), = inputs.items()
    if spec.shape.rank != 4 or spec.shape[3] != 3:
        raise ModelLoadError(f"user model {name!r}: the SavedModel {source} takes {spec.shape}; the workflow feeds "
                             "N x H x W x 3 images (NHWC)")

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape[1:]], tf.float32, name="images")])
    def serve(images):
        outputs = function(**{key: images})
        if len(outputs) != 1:
            raise ModelLoadError(f"user model {name!r}: the SavedModel {source} has {len(outputs)} outputs; the "
                                 "workflow reads one class-score output")
        return next(iter(outputs.values()))

    with deterministic_tf2onnx():
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset)
    with atomic_path(out) as tmp:
        onnx.save(canonicalize(proto), str(tmp))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = sample[:2]
    diff = float(np.max(np.abs(session.run(None, {session.get_inputs()[0].name: batch})[0] - serve(batch).numpy())))
    if not np.isfinite(diff) or diff > 1e-3:
        raise ModelLoadError(f"user model {name!r}: tf2onnx's conversion of {source} differs from TensorFlow by {diff:.3g}")
    log.info("SavedModel %s converted with tf2onnx (opset %d), max abs difference %.3g", source, opset, diff)
    del loaded
    return diff
