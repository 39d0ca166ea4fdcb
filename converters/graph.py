"""Rebuilding a functional Keras graph node by node: the one walk both graph rewrites use
(`rewrites.py` turns QuantDense into 1x1 convs, `integer.py` builds the integer graph).

`clone_model` cannot change a tensor's rank or put new layers between two nodes; re-running the
graph on fresh inputs can. Every layer the visitor does not replace is shared with the original
model (same object, same weights).
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

# visit(node, args, kwargs) -> the node's new outputs, or None to call its layer as it is
Visitor = Callable[[object, tuple, dict], Optional[object]]


def rebuild_graph(model: tf.keras.Model, visit: Visitor, *,
                  wrap_input: Optional[Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = None,
                  name: Optional[str] = None) -> tf.keras.Model:
    """Re-run `model`'s functional graph on fresh Inputs, asking `visit` about every node.

    `wrap_input(old, new)` may put something between each new input and the graph.
    """
    # A rebuilt model's inputs (a rewrite before this one) may carry no tensor name: the input
    # layer's name is the same one.
    new_inputs = [tf.keras.Input(type_spec=t.type_spec, name=(t.name or t.node.layer.name).split(":")[0])
                  for t in model.inputs]
    tensor_dict = {}
    usage = model._tensor_usage_count
    for x, y in zip(model.inputs, new_inputs):
        tensor_dict[str(id(x))] = [wrap_input(x, y) if wrap_input else y] * usage[str(id(x))]
    for depth in sorted(model._nodes_by_depth.keys(), reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensor_dict for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensor_dict)
            outputs = visit(node, args, kwargs)
            if outputs is None:
                outputs = node.layer(*args, **kwargs)
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensor_dict[x_id] = [y] * usage[x_id]
    outs = [tensor_dict[str(id(x))].pop() for x in model.outputs]
    return tf.keras.Model(new_inputs, tf.nest.pack_sequence_as(model._nested_outputs, outs), name=name or model.name)
