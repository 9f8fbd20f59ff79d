"""Per-layer INT8 sensitivity and the ``int8-auto`` mixed-precision fallback.

Sensitivity uses ONNX Runtime's ``onnxruntime.quantization.qdq_loss_debug``: both the FP32 model
(pre-processed exactly as the INT8 build pre-processes it, so tensor and node names match) and the
QDQ model get every intermediate tensor as an output (``modify_model_output_intermediate_tensors``),
run on calibration images (``collect_activations``), and are matched tensor by tensor
(``create_activation_matching``). ``compute_activation_error`` gives, per quantized tensor, the
signal-to-quantization-noise ratio (SQNR, dB; higher is better):

- ``qdq_sqnr_db``: the tensor before versus after its own QuantizeLinear/DequantizeLinear pair
  (the rounding noise of that one activation);
- ``xmodel_sqnr_db``: the FP32 model's tensor versus the INT8 model's dequantized tensor (the
  error accumulated up to that point).

A node's ``degradation_db`` is the SQNR lost across it: the worst ``xmodel_sqnr_db`` of its
activation inputs minus that of its output. Nodes are ranked by it (largest first): the layers
whose weights and input quantization add most error, which ``int8-auto`` keeps in float first
(:mod:`workflow_scripts.calibration_study.int8_auto`, searched by :mod:`workflow_scripts.calibration_study.rescue_search`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
# SQNR at or above this is treated as exact when computing the SQNR lost across a node.
SQNR_CAP_DB = 60.0
# What ranks the groups: the SQNR lost across them, or that or their weight's own loss if larger.
RANK_BY = ("degradation_db", "score_db")


def _activations(model_path: Path, augmented: Path, batches: Callable[[], Iterator[np.ndarray]]) -> dict:
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    # collect_activations iterates its reader: a generator of feed dicts, one batch per run.
    feeds = ({input_name: batch} for batch in batches())
    return collect_activations(str(augmented), feeds, execution_providers=["CPUExecutionProvider"])


def layer_sensitivity(float_model: str | Path, qdq_model: str | Path,
                      batches: Callable[[], Iterator[np.ndarray]], work_dir: str | Path | None = None,
                      rank_by: str = "degradation_db") -> pd.DataFrame:
    """One row per node of ``float_model`` whose output the INT8 model quantizes, ranked (rank 1 = most sensitive).

    ``float_model`` must be the pre-processed FP32 model the INT8 model was quantized from
    (:func:`workflow_scripts.calibration_study.presets.prepare_model`).
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import compute_activation_error, create_activation_matching

    with tempfile.TemporaryDirectory(prefix="edgeptq-sens-", dir=work_dir) as tmp:
        tmp = Path(tmp)
        float_acts = _activations(Path(float_model), tmp / "float_aug.onnx", batches)
        qdq_acts = _activations(Path(qdq_model), tmp / "qdq_aug.onnx", batches)
    matching = create_activation_matching(qdq_acts, float_acts)
    errors = compute_activation_error(matching)
    float_proto = onnx.load(str(float_model), load_external_data=False)
    weights = weight_sqnr(float_proto, onnx.load(str(qdq_model), load_external_data=False))
    return rank_nodes(float_proto.graph, errors, weights=weights, rank_by=rank_by)


def weight_sqnr(float_model, qdq_model) -> dict[str, float]:
    """Per node with a quantized weight: the SQNR (dB) of its dequantized INT8 weight against the float one.

    The noise one node adds with clean inputs is bounded below by its weight's rounding noise: per-tensor
    scales on a depthwise convolution whose channels span very different ranges give a low SQNR here
    even where the accumulated error (``xmodel_sqnr_db``) has already collapsed to about 0 dB upstream,
    so the SQNR lost across the node shows nothing. ``float_model`` and ``qdq_model``: onnx.ModelProto.
    """
    from onnx import numpy_helper

    float_init = {t.name: t for t in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    q_init = {t.name: t for t in qdq_model.graph.initializer}
    producer = {o: n for n in qdq_model.graph.node for o in n.output}
    result = {}
    for node in qdq_model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        original = float_nodes.get(node.name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in q_init or original is None:
            continue
        if len(original.input) < 2 or original.input[1] not in float_init:
            continue
        w = numpy_helper.to_array(float_init[original.input[1]]).astype(np.float64)
        q = numpy_helper.to_array(q_init[dq.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(q_init[dq.input[1]]).astype(np.float64)
        zero = numpy_helper.to_array(q_init[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] in q_init else 0.0
        if q.shape != w.shape:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
        noise = float(((w - (q - zero) * scale) ** 2).sum())
        signal = float((w ** 2).sum())
        result[node.name] = SQNR_CAP_DB if noise == 0 else float(min(10 * np.log10(max(signal, 1e-30) / noise), SQNR_CAP_DB))
    return result


def _sqnr(errors: dict, tensor: str) -> float | None:
    entry = errors.get(tensor)
    return None if entry is None or "xmodel_err" not in entry else float(entry["xmodel_err"])


def rank_nodes(graph, errors: dict, cap_db: float = SQNR_CAP_DB, weights: dict | None = None,
               rank_by: str = "degradation_db") -> pd.DataFrame:
    """Rank the nodes of ``graph`` by the SQNR lost across them (see module docstring).

    ``weights`` (:func:`weight_sqnr`): per node, its INT8 weight's SQNR. A group's ``weight_sqnr_db`` is
    its worst; its ``score_db`` = max(``degradation_db``, cap - ``weight_sqnr_db``): the SQNR lost across
    it, or the loss its own weight rounding would cause on clean inputs if that is larger. Rank follows
    ``rank_by``: ``degradation_db`` (default) or ``score_db``.

    ONNX Runtime fuses some activations into the op before them (Conv -> Relu carries no QDQ in
    between), so a measured tensor is attributed to the *group* of nodes that produce it from the
    nearest measured tensors: e.g. Conv and Relu together. ``nodes`` lists the group (what
    ``int8-auto`` keeps in float); ``node`` is the group's last node, the producer of the tensor.
    """
    constants = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    measured = {name for name in errors if _sqnr(errors, name) is not None}
    rows = []
    for order, node in enumerate(graph.node):
        outputs = [o for o in node.output if o in measured]
        if not outputs:
            continue
        group, boundary, stack, seen = [node.name], [], [i for i in node.input if i and i not in constants], set()
        while stack:
            tensor = stack.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            if tensor in measured:
                boundary.append(_sqnr(errors, tensor))
            elif tensor in producer and len(group) < 6:
                upstream = producer[tensor]
                if not any(o in measured for o in upstream.output) and upstream.op_type != "Constant":
                    group.insert(0, upstream.name)
                    stack += [i for i in upstream.input if i and i not in constants]
        out = outputs[0]
        rows.append({
            "node": node.name, "op_type": node.op_type, "graph_order": order, "output_tensor": out,
            "nodes": list(dict.fromkeys(group)), "group_size": len(set(group)),
            "qdq_sqnr_db": float(errors[out].get("qdq_err", np.nan)),
            "xmodel_sqnr_db": _sqnr(errors, out),
            "input_sqnr_db": float(min(boundary)) if boundary else np.nan,
        })
    frame = pd.DataFrame(rows, columns=["node", "op_type", "graph_order", "output_tensor", "nodes", "group_size",
                                        "qdq_sqnr_db", "xmodel_sqnr_db", "input_sqnr_db"])
    # SQNR above the cap is numerically exact (an 8-bit quantizer gives at most ~50 dB); an
    # unmeasured input (the graph input) counts as clean.
    out_db = frame["xmodel_sqnr_db"].replace([np.inf, -np.inf], np.nan).fillna(cap_db).clip(upper=cap_db)
    in_db = frame["input_sqnr_db"].replace([np.inf, -np.inf], np.nan).fillna(cap_db).clip(upper=cap_db)
    frame["degradation_db"] = in_db - out_db
    weights = weights or {}
    frame["weight_sqnr_db"] = [min((weights[n] for n in nodes if n in weights), default=np.nan)
                               for nodes in frame["nodes"]]
    frame["score_db"] = np.fmax(frame["degradation_db"], cap_db - frame["weight_sqnr_db"])
    if rank_by not in RANK_BY:
        raise ValueError(f"config key 'calibration_study.sensitivity.rank_by' is {rank_by!r}; use one of {RANK_BY}")
    frame = frame.sort_values([rank_by, "xmodel_sqnr_db"], ascending=[False, True], kind="stable")
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame.reset_index(drop=True)


def ranked_groups(sensitivity: pd.DataFrame, exclude: Sequence[str] = ()) -> list[list[str]]:
    """The sensitivity table's node groups, most sensitive first, without nodes already in float."""
    groups, taken = [], set(exclude)
    for nodes in sensitivity.sort_values("rank")["nodes"]:
        group = [n for n in nodes if n not in taken]
        if group:
            groups.append(group)
            taken.update(group)
    return groups


def run_sensitivity(onnx_path: str | Path, qdq_engine: str | Path, data_dir: str | Path, num_images: int,
                    batch_size: int, seed: int, out_table: str | Path, labels: dict, provenance: dict,
                    prepared: str | Path | None = None, rank_by: str = "degradation_db") -> pd.DataFrame:
    """Sensitivity of the start variant's INT8 engine on calibration images of the train split; write Parquet.

    ``prepared``: the study's shared pre-processed model (made here when absent)."""
    from workflow_scripts.core.artifacts import write_parquet
    from workflow_scripts.calibration_study.presets import prepare_model
    from workflow_scripts.calibration_study.study import train_split_size
    from workflow_scripts.stages.engine import calibration_source
    from workflow_scripts.core.provenance import with_provenance

    import time

    started = time.perf_counter()
    num_images = min(num_images, train_split_size(data_dir))
    with tempfile.TemporaryDirectory(prefix="edgeptq-sens-", dir=Path(out_table).parent) as tmp:
        prepared = prepared or prepare_model(onnx_path, Path(tmp) / "prepared.onnx")
        frame = layer_sensitivity(prepared, qdq_engine, calibration_source(data_dir, num_images, batch_size, seed), tmp,
                                  rank_by=rank_by)
    for key, value in labels.items():
        frame[key] = value
    frame["sensitivity_images"] = num_images
    frame["rank_by"] = rank_by
    frame["sensitivity_s"] = time.perf_counter() - started  # part of int8-auto's search time
    write_parquet(with_provenance(frame, provenance), out_table)
    log.info("worst layers:\n%s", frame.head(10)[["rank", "node", "op_type", "degradation_db", "xmodel_sqnr_db"]]
             .to_string(index=False))
    return frame


