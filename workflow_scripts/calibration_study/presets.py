"""Exclusion presets of the calibration study: which nodes stay in float, found on the model quantize_static sees.

Resolved on the graph after ``quant_pre_process`` (the same call the ONNX Runtime INT8 build makes,
so node names match) and passed to ``quantize_static(nodes_to_exclude=...)``; ``op.<OpType>`` tokens
remove an op type from ``op_types_to_quantize``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

def prepare_model(onnx_path: str | Path, out: str | Path) -> Path:
    """The pre-processed model the ONNX Runtime backend quantizes (same call, so node names match)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(onnx_path), str(out), skip_symbolic_shape=False)
    return Path(out)


class _Graph:
    """Producer/consumer maps of an ONNX graph."""

    def __init__(self, model):
        self.nodes = list(model.graph.node)
        self.constants = {t.name for t in model.graph.initializer}
        self.constants |= {o for n in self.nodes if n.op_type == "Constant" for o in n.output}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def dynamic_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and i not in self.constants]


_ELEMENTWISE = {"Sigmoid", "HardSigmoid", "Add", "Clip", "Relu", "Mul", "Div", "Sub"}


def _swish_nodes(graph: _Graph) -> set[str]:
    """x * sigmoid(x), x * hard_sigmoid(x), and hard-swish decomposed as x * clip(x + 3, 0, 6) / 6."""
    found = set()
    for node in graph.nodes:
        if node.op_type != "Mul":
            continue
        inputs = graph.dynamic_inputs(node)
        if len(inputs) != 2:
            continue
        for x, gate in (inputs, inputs[::-1]):
            chain, tensor = [], gate
            for _ in range(4):
                producer = graph.producer.get(tensor)
                if producer is None or producer.op_type not in _ELEMENTWISE:
                    break
                dynamic = graph.dynamic_inputs(producer)
                if len(dynamic) != 1:
                    break
                chain.append(producer)
                if dynamic[0] == x:
                    # The gate must squash: sigmoid, hard sigmoid, or the clip of hard-swish.
                    if any(n.op_type in ("Sigmoid", "HardSigmoid", "Clip") for n in chain):
                        found.update([n.name for n in chain] + [node.name])
                    break
                tensor = dynamic[0]
    return found


def _squeeze_excite_nodes(graph: _Graph) -> set[str]:
    """From each GlobalAveragePool of X to the Mul that scales X by the gate: the whole SE branch."""
    found = set()
    for pool in graph.nodes:
        if pool.op_type not in ("GlobalAveragePool", "ReduceMean"):
            continue
        source = pool.input[0]
        branch, frontier = {pool.name}, list(pool.output)
        for _ in range(12):
            following = [c for t in frontier for c in graph.consumers.get(t, [])]
            closing = [c for c in following if c.op_type == "Mul" and source in c.input]
            if closing:
                found |= branch | {c.name for c in closing}
                break
            if not following:
                break
            branch |= {c.name for c in following}
            frontier = [o for c in following for o in c.output]
    return found


def _first_conv(graph: _Graph) -> set[str]:
    first = next((n for n in graph.nodes if n.op_type == "Conv"), None)
    return {first.name} if first is not None else set()


def _classifier(graph: _Graph) -> set[str]:
    last = [n for n in graph.nodes if n.op_type in ("Gemm", "MatMul")]
    return {last[-1].name} if last else set()


PRESET_FUNCTIONS = {"swish": _swish_nodes, "squeeze_excite": _squeeze_excite_nodes,
                    "first_conv": _first_conv, "classifier": _classifier}


def resolve_exclusions(model, tokens: Iterable[str]) -> tuple[list[str], list[str]]:
    """(op types, node names) to keep in float for the exclusion tokens on ``model`` (an onnx.ModelProto)."""
    graph = _Graph(model)
    op_types, nodes = [], set()
    for token in tokens:
        if token.startswith("op."):
            op_types.append(token[3:])
        else:
            matched = PRESET_FUNCTIONS[token](graph)
            if not matched:
                log.warning("exclusion preset %s matches no node of this model", token)
            nodes |= matched
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(set(op_types)), sorted(nodes, key=order.get)
