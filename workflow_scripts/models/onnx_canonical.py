"""Deterministic Keras -> ONNX export: the same .keras file gives the same model.onnx bytes in any process.

Why tf2onnx alone is not deterministic (tf2onnx 1.17; see docs/reliability.md, Reproducibility):

1. Node order follows memory addresses. Every optimizer pass ends with ``Graph.delete_unused_nodes``,
   which rebuilds the node list from ``extract_sub_graph_nodes`` = ``list(set_of_nodes)``. ``Node``
   has no ``__hash__``, so that order is the order of the nodes' ``id()``s, i.e. of their addresses,
   which differ from process to process. The next passes walk the nodes in that order, so they make
   different order-dependent choices: which of several equal constants ``merge_duplication`` keeps
   (and so which name survives), whether a no-op Reshape after a GlobalAveragePool gets removed (246
   vs 247 nodes for the tiny MobileNetV3Small), and how many names the (partly failing, hence
   rolled back) transpose optimizer draws from the name counter.
2. Generated names (``const_fold_opt__865``, ``Conv__305``, the batch dimension ``unk__335``) are
   numbered by a process-wide counter, ``tf2onnx.utils.INTERNAL_NAME``. It is never reset, and
   importing ``tf2onnx.rewriter.loop_rewriter_base`` (lazily, inside the first conversion) draws a
   name from it, so the first conversion of a process is numbered differently from later ones.

:func:`deterministic_tf2onnx` removes both causes for the duration of one conversion: the pruned
node list keeps the graph's current order (the set is only used to decide membership), and the
counter restarts at the same value after the late import has happened. :func:`canonicalize` then
makes the saved file independent of the exact counter values that remain (dense renumbering of the
generated suffixes, nodes in a topological order decided by names only, initializers sorted, doc
strings dropped). Neither step changes what the model computes: the first makes tf2onnx always
produce the same one of the graphs it produced anyway, the second only renames and reorders
(outputs bit-identical to plain tf2onnx's, tests/test_onnx_canonical.py).
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import re
from collections.abc import Iterator

# A tf2onnx-generated numeric suffix: "__" and a whole run of digits (make_name's "{name}__{counter}").
_GENERATED = re.compile(r"__(\d+)(?=\D|$)")


@contextlib.contextmanager
def deterministic_tf2onnx() -> Iterator[None]:
    """Within the block, tf2onnx orders nodes by graph position (not by address) and numbers names from 1.

    Not thread-safe: it patches ``tf2onnx.graph.Graph.extract_sub_graph_nodes`` and the module-level
    name counter while the block runs, and restores the method afterwards.
    """
    # loop_rewriter_base draws INVALID_INPUT_ID from the name counter when first imported: import it
    # before the counter is reset, so the first conversion of a process is numbered like later ones.
    import tf2onnx.graph
    import tf2onnx.rewriter.loop_rewriter_base
    import tf2onnx.utils

    graph_class = tf2onnx.graph.Graph
    original = graph_class.extract_sub_graph_nodes

    def in_graph_order(self, *args, **kwargs):
        found = original(self, *args, **kwargs)
        position = {id(node): index for index, node in enumerate(self.get_nodes())}
        return sorted(found, key=lambda node: (position.get(id(node), len(position)), node.name))

    counter = tf2onnx.utils.INTERNAL_NAME
    graph_class.extract_sub_graph_nodes = in_graph_order
    tf2onnx.utils.INTERNAL_NAME = 1
    try:
        yield
    finally:
        graph_class.extract_sub_graph_nodes = original
        # Later conversions in this process restart at 1 again; other tf2onnx users keep unique names.
        tf2onnx.utils.INTERNAL_NAME = max(counter, tf2onnx.utils.INTERNAL_NAME)


def _graphs(graph) -> Iterator:
    """``graph`` and every subgraph (If/Loop/Scan bodies) below it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _dims(value_infos) -> Iterator:
    for value in value_infos:
        if value.type.HasField("tensor_type"):
            yield from value.type.tensor_type.shape.dim


def _rename_all(model, rename) -> None:
    """Apply ``rename`` to every node, tensor, initializer and symbolic dimension name of every graph."""
    for graph in _graphs(model.graph):
        for node in graph.node:
            node.name = rename(node.name)
            node.input[:] = [rename(name) for name in node.input]
            node.output[:] = [rename(name) for name in node.output]
        for tensor in graph.initializer:
            tensor.name = rename(tensor.name)
        for sparse in graph.sparse_initializer:
            sparse.values.name = rename(sparse.values.name)
            sparse.indices.name = rename(sparse.indices.name)
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            value.name = rename(value.name)
        for dim in _dims(list(graph.input) + list(graph.output) + list(graph.value_info)):
            if dim.HasField("dim_param"):
                dim.dim_param = rename(dim.dim_param)


def _names(model) -> set[str]:
    names: set[str] = set()
    _rename_all(model, lambda name: names.add(name) or name)
    names.discard("")
    return names


def _topological_order(graph) -> list:
    """Nodes in a topological order that depends on names and edges only (ready nodes by smallest name)."""
    producer = {out: index for index, node in enumerate(graph.node) for out in node.output if out}
    waiting = [0] * len(graph.node)
    consumers: dict[int, list[int]] = {}
    for index, node in enumerate(graph.node):
        for source in {producer[name] for name in node.input if name in producer}:
            waiting[index] += 1
            consumers.setdefault(source, []).append(index)
    key = [(node.name, tuple(node.output), node.op_type) for node in graph.node]
    ready = [(key[i], i) for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, index = heapq.heappop(ready)
        order.append(index)
        for consumer in consumers.get(index, []):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, (key[consumer], consumer))
    if len(order) != len(graph.node):
        raise ValueError("the ONNX graph has a cycle; it cannot be sorted topologically")
    return [graph.node[i] for i in order]


def canonicalize(model):
    """The same ``onnx.ModelProto`` in a canonical form (modified in place and returned).

    - tf2onnx's generated ``__<n>`` suffixes are renumbered 1, 2, 3, ... in the order of their old
      numbers, so names no longer depend on how far the process-wide counter had got; the rest of
      every name (the Keras/TensorFlow layer path) is kept, the graph's input and output names entirely;
    - nodes of the main graph are put in a topological order decided by node names alone (a graph
      with subgraphs keeps its order, since subgraphs may read outer tensors);
    - initializers and value_info are sorted by name; doc strings are dropped.
    """
    graph = model.graph
    keep = {value.name for value in list(graph.input) + list(graph.output)}
    names = _names(model)
    numbers = sorted({int(n) for name in names - keep for n in _GENERATED.findall(name)})
    dense = {old: new for new, old in enumerate(numbers, start=1)}
    renamed = {name: name if name in keep else _GENERATED.sub(lambda m: f"__{dense[int(m.group(1))]}", name)
               for name in names}
    if len(set(renamed.values())) != len(renamed):
        raise ValueError("renumbering the generated ONNX names would merge two of them")
    _rename_all(model, lambda name: renamed.get(name, name))

    model.doc_string = ""
    for sub in _graphs(graph):
        sub.doc_string = ""
        for node in sub.node:
            node.doc_string = ""
        _reorder(sub.initializer, sorted(sub.initializer, key=lambda item: item.name))
        _reorder(sub.value_info, sorted(sub.value_info, key=lambda item: item.name))
    if all(sub is graph for sub in _graphs(graph)):
        _reorder(graph.node, _topological_order(graph))
    return model


def _reorder(container, ordered: list) -> None:
    """Replace a repeated message field's items by ``ordered`` (copies: the originals are removed)."""
    copies = [copy.deepcopy(item) for item in ordered]
    del container[:]
    container.extend(copies)
