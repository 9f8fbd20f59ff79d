"""``quantize_static`` with its Python-level loops replaced by equivalent vectorized or indexed code.

Once the ranges are known (:mod:`workflow_scripts.backends.onnxruntime.calibrate`), ONNX Runtime's ``quantize_static`` is
the rest of an INT8 build, and at small inputs it costs more than the calibration. Its time goes to
per-element Python work, not to the graph:

- **Per-channel weight parameters**: ``QDQQuantizer._calc_initializer_quant_params`` calls
  ``compute_data_quant_params`` once per output channel (8,958 calls for MobileNetV3Small), and
  ``quantize_onnx_initializer`` quantizes each channel separately and concatenates them.
  :func:`per_channel_params` and :func:`quantize_per_channel` do the same arithmetic on all channels
  at once (the same numpy operations, elementwise, in the same dtypes).
- **Rewiring**: ``ONNXModel.replace_{input,output}_of_all_nodes`` visit every node and compare each
  of its inputs in Python (``replace_node_input``): O(tensors x nodes x inputs). The replacement
  first asks protobuf, in C, whether the node names the tensor.
- **Lookups**: ``find_by_name`` and ``ONNXModel.get_initializer`` scan the initializers in Python for
  every lookup (7,994 lookups for DenseNet169, most of them misses that scan all). The replacement
  keeps a name index per protobuf field that follows appends and is rebuilt on any other change
  (:class:`_NameIndex`); other sequences are scanned as before.
- **Re-checks**: ``ONNXModel.initializer_extend`` re-checks every initializer already in the model
  (``_check_init``: float 8 NaN patterns) each time it adds one: O(initializers squared). The
  replacement checks them all on its first call for a model, then only the ones it adds; the others
  were checked when they were added.

:func:`fast_quantize_static` patches these for the duration of a block and restores them on exit;
each patch is skipped where ONNX Runtime's module no longer has the shape it was written for. Every
case the vectorized code does not cover (overrides, block-wise, float 8, int4, ``min_real_range``)
goes to ONNX Runtime's own code. The output model is byte-identical to ``quantize_static``'s
(``tests/test_fast_quantize.py``).
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np

# The 8-bit types the vectorized per-channel path handles (onnx.TensorProto.INT8 / UINT8).
_INT8_TYPES = (3, 2)


def per_channel_params(data: np.ndarray, axis: int, quant_type: int, reduce_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """(zero points, scales) of symmetric per-channel quantization along ``axis``, for all channels at once.

    Elementwise the arithmetic of ONNX Runtime's ``compute_data_quant_params`` followed by
    ``compute_scale_zp(symmetric=True)`` on each channel: min/max in the data's dtype, the range
    widened to include 0 and made symmetric, ``scale = (rmax - rmin) / (qmax - qmin)`` in float64 and
    stored in the data's dtype, 1.0 and zero point 0 where the stored scale is below the dtype's
    smallest normal (smallest subnormal for float16), else the zero point ``round((qmin + qmax) / 2)``.
    """
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    channels = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
    qmin, qmax = get_qmin_qmax_for_qType(quant_type, reduce_range, symmetric=True)
    zero = np.array(0, dtype=data.dtype)
    rmin = np.minimum(channels.min(axis=1), zero)
    rmax = np.maximum(channels.max(axis=1), zero)
    absmax = np.maximum(np.abs(rmin), np.abs(rmax))
    rmin, rmax = -absmax, +absmax
    scale = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (
        np.array(qmax, dtype=np.float64) - np.array(qmin, dtype=np.float64))
    finfo = np.finfo(data.dtype)
    stored = scale.astype(data.dtype)
    degenerate = (stored < finfo.smallest_subnormal) if data.dtype == np.float16 else (scale < finfo.tiny)
    middle = np.array(np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)), dtype=qmin.dtype)
    zero_points = np.where(degenerate, np.array(0, dtype=qmin.dtype), middle).astype(qmin.dtype)
    scales = np.where(degenerate, np.array(1.0, dtype=data.dtype), stored).astype(data.dtype)
    return zero_points, scales


def quantize_per_channel(data: np.ndarray, axis: int, quant_type: int, scale: np.ndarray,
                         zero_point: np.ndarray) -> np.ndarray:
    """``quantize_nparray`` of each channel along ``axis`` with its own scale and zero point, in one pass."""
    from onnxruntime.quantization.quant_utils import ONNX_TYPE_TO_NP_TYPE, get_qmin_qmax_for_qType

    shape = [1] * data.ndim
    shape[axis] = data.shape[axis]
    qmin, qmax = get_qmin_qmax_for_qType(quant_type, reduce_range=False, symmetric=False)
    values = np.asarray((data.astype(np.float32) / np.asarray(scale).reshape(shape)).round()
                        + np.asarray(zero_point).reshape(shape))
    np.clip(values, qmin, qmax, out=values)
    return values.astype(ONNX_TYPE_TO_NP_TYPE[quant_type])


def _vectorizable(quantizer, name: str, info) -> bool:
    """Whether ONNX Runtime would take the plain per-channel branch for this tensor (and we can too)."""
    from onnxruntime.quantization.qdq_quantizer import QDQQuantTensorType

    return (info.tensor_type is QDQQuantTensorType.WEIGHT and info.axis is not None
            and name not in quantizer.tensor_quant_overrides
            and getattr(quantizer, "block_size", 0) == 0 and quantizer.min_real_range is None
            and quantizer.weight_qType in _INT8_TYPES)


def _patched_calc_initializer_quant_params(original):
    def _calc_initializer_quant_params(self):
        from onnxruntime.quantization.base_quantizer import QuantizationParams
        from onnxruntime.quantization.quant_utils import normalize_axis, tensor_proto_to_array

        initializers = {}
        for init in self.model.initializer():
            initializers.setdefault(init.name, init)
        fast, rest = {}, {}
        for name, info in self.tensors_to_quantize.items():
            init = initializers.get(name)
            if init is not None and _vectorizable(self, name, info):
                data = tensor_proto_to_array(init)
                valid, axis = normalize_axis(info.axis, data.ndim)
                if valid and data.size and data.shape[axis]:
                    zero_points, scales = per_channel_params(data, axis, self.weight_qType, self.reduce_range)
                    fast[name] = QuantizationParams(zero_point=zero_points, scale=scales,
                                                    quant_type=self.weight_qType, axis=axis)
                    continue
            rest[name] = info
        saved = self.tensors_to_quantize
        self.tensors_to_quantize = rest
        try:
            slow = original(self)
        finally:
            self.tensors_to_quantize = saved
        # ORT's order (tensors_to_quantize order) so that everything downstream is unchanged.
        merged = {}
        for name in saved:
            if name in fast:
                merged[name] = fast[name]
            elif name in slow:
                merged[name] = slow[name]
        return merged

    return _calc_initializer_quant_params


def _patched_quantize_onnx_initializer(original):
    def quantize_onnx_initializer(weight, quant_type, zero_point, scale, axis=None, quant_weight_name=None,
                                  block_size=0):
        if axis is None or block_size or quant_type not in _INT8_TYPES:
            return original(weight, quant_type, zero_point, scale, axis, quant_weight_name, block_size=block_size)
        import onnx
        from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX, tensor_proto_to_array

        data = tensor_proto_to_array(weight)
        quantized = quantize_per_channel(data, axis, quant_type, scale, zero_point)
        name = quant_weight_name if quant_weight_name else f"{weight.name}{TENSOR_NAME_QUANT_SUFFIX}"
        dtype = onnx.helper.tensor_dtype_to_np_dtype(quant_type)
        return onnx.numpy_helper.from_array(np.asarray(quantized, dtype=dtype).reshape(weight.dims), name)

    return quantize_onnx_initializer


class _NameIndex:
    """Positions by name of one protobuf repeated field (first occurrence), valid while the field only grows.

    The field is fingerprinted by its length and the identity of its last element (upb returns the same
    Python object for the same element): appended elements are indexed as they come; any other change
    (a removal, a reorder) rebuilds the index. A hit is checked against the element's name.
    """

    __slots__ = ("field", "count", "last", "positions")

    def __init__(self, field):
        self.field, self.count, self.last, self.positions = field, 0, None, {}
        self.extend()

    def current(self) -> bool:
        count = len(self.field)
        return count == self.count and (count == 0 or self.field[count - 1] is self.last)

    def extend(self) -> None:
        field, count = self.field, len(self.field)
        if self.count and (count < self.count or field[self.count - 1] is not self.last):
            self.count, self.positions = 0, {}  # not an append: index again from the start
        for position in range(self.count, count):
            self.positions.setdefault(field[position].name, position)
        self.count, self.last = count, field[count - 1] if count else None

    def find(self, name: str):
        if not self.current():
            self.extend()
        position = self.positions.get(name)
        if position is None:
            return None
        item = self.field[position]
        if item.name != name:  # renamed in place: index again and look once more
            self.count, self.positions = 0, {}
            self.extend()
            position = self.positions.get(name)
            return None if position is None else self.field[position]
        return item


_INDEXES: dict[int, _NameIndex] = {}  # by id() of the field; filled and cleared within fast_quantize_static


def _find_by_name(item_name, item_list):
    """ORT's find_by_name (the first item of that name, or None): indexed for protobuf repeated fields."""
    if type(item_list).__name__ != "RepeatedCompositeContainer":
        return next((item for item in item_list if item.name == item_name), None)
    index = _INDEXES.get(id(item_list))
    if index is None or index.field is not item_list:
        index = _INDEXES[id(item_list)] = _NameIndex(item_list)
    return index.find(item_name)


def _get_initializer(self, name):
    return _find_by_name(name, self.model.graph.initializer)


def _replace_input_of_all_nodes(self, old_input_name, new_input_name):
    from onnxruntime.quantization.onnx_model import ONNXModel

    for node in self.model.graph.node:
        if old_input_name in node.input:
            ONNXModel.replace_node_input(node, old_input_name, new_input_name)


def _replace_output_of_all_nodes(self, old_output_name, new_output_name):
    from onnxruntime.quantization.onnx_model import ONNXModel

    for node in self.model.graph.node:
        if old_output_name in node.output:
            ONNXModel.replace_node_output(node, old_output_name, new_output_name)


def _initializer_extend(self, inits):
    if len(inits) == 0:
        raise ValueError("Can add an empty list.")
    if not getattr(self, "_edgeptq_initializers_checked", False):
        for init in self.initializer():
            self._check_init(init, "gain")
        self._edgeptq_initializers_checked = True
    for init in inits:
        self._check_init(init)
        self.model.graph.initializer.append(init)


def _patches(vectorize: bool) -> list[tuple[object, str, object]]:
    from onnxruntime.quantization import qdq_quantizer
    from onnxruntime.quantization.onnx_model import ONNXModel

    patches: list[tuple[object, str, object]] = []
    if all(hasattr(ONNXModel, n) for n in ("replace_input_of_all_nodes", "replace_output_of_all_nodes",
                                           "replace_node_input", "replace_node_output")):
        patches += [(ONNXModel, "replace_input_of_all_nodes", _replace_input_of_all_nodes),
                    (ONNXModel, "replace_output_of_all_nodes", _replace_output_of_all_nodes)]
    if all(hasattr(ONNXModel, n) for n in ("initializer_extend", "_check_init", "initializer")):
        patches.append((ONNXModel, "initializer_extend", _initializer_extend))
    if hasattr(ONNXModel, "get_initializer"):
        patches.append((ONNXModel, "get_initializer", _get_initializer))
    for module_name in ("onnx_model", "qdq_quantizer", "base_quantizer", "onnx_quantizer", "operators.conv", "operators.matmul",
                        "operators.gemm"):
        try:
            module = importlib.import_module(f"onnxruntime.quantization.{module_name}")
        except ImportError:
            continue
        if hasattr(module, "find_by_name"):
            patches.append((module, "find_by_name", _find_by_name))
    quantizer = getattr(qdq_quantizer, "QDQQuantizer", None)
    if vectorize and quantizer is not None and hasattr(quantizer, "_calc_initializer_quant_params"):
        patches.append((quantizer, "_calc_initializer_quant_params",
                        _patched_calc_initializer_quant_params(quantizer._calc_initializer_quant_params)))
    if vectorize and hasattr(qdq_quantizer, "quantize_onnx_initializer"):
        patches.append((qdq_quantizer, "quantize_onnx_initializer",
                        _patched_quantize_onnx_initializer(qdq_quantizer.quantize_onnx_initializer)))
    return patches


@contextlib.contextmanager
def fast_quantize_static(vectorize: bool = True):
    """Within the block, ``quantize_static`` runs the faster equivalents above; restored on exit.

    ``vectorize=False`` keeps only the rewiring and lookup patches (the earlier ``fast_graph_rewrites``).
    """
    patches = _patches(vectorize)
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, function in patches:
        setattr(owner, name, function)
    try:
        yield
    finally:
        _INDEXES.clear()
        for owner, name, function in saved:
            setattr(owner, name, function)
