"""Automatic rewrites before conversion, each proven to keep the model's outputs.

``rewrite_quant_dense``: LCE has no binary dense op, so a ``QuantDense`` becomes a float
FULLY_CONNECTED. The same layer written as a 1x1 ``QuantConv2D`` on a (B, 1, N, C) grid becomes
``LceBconv2d``. The rewrite rebuilds the functional graph node by node (the rank changes, which
``clone_model`` cannot express), sharing every other layer and its weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from edgebvit.converters.precheck import is_binary_dense
from edgebvit.errors import ModelError


@dataclass(frozen=True, kw_only=True)
class RewriteResult:
    model: object  # tf.keras.Model (the original when nothing changed)
    rewritten: Tuple[str, ...] = ()  # names of the QuantDense layers replaced
    skipped: Tuple[str, ...] = field(default_factory=tuple)  # "name: reason"
    max_abs_diff: Optional[float] = None  # Keras outputs before vs after on a random batch

    @property
    def changed(self) -> bool:
        return bool(self.rewritten)


def _conv_from_dense(dense):
    import larq as lq
    import tensorflow as tf

    cfg = dense.get_config()
    conv = lq.layers.QuantConv2D(
        filters=dense.units,
        kernel_size=1,
        padding="valid",
        activation=cfg.get("activation"),
        use_bias=dense.use_bias,
        input_quantizer=dense.input_quantizer,
        kernel_quantizer=dense.kernel_quantizer,
        kernel_constraint=dense.kernel_constraint,
        name=dense.name,  # the old layer is not in the new model; keep the name users know
        dtype=dense.dtype_policy if hasattr(dense, "dtype_policy") else dense.dtype,
    )
    cin = int(dense.kernel.shape[0])
    conv.build(tf.TensorShape([None, 1, None, cin]))
    weights = [dense.kernel.numpy().reshape(1, 1, cin, dense.units)]
    if dense.use_bias:
        weights.append(dense.bias.numpy())
    conv.set_weights(weights)
    return conv


def _apply_as_conv(dense, x):
    """Call a QuantDense's 1x1-conv twin on `x`, reshaping (B, C) / (B, N, C) to a grid and back."""
    import tensorflow as tf

    rank = x.shape.rank
    conv = _conv_from_dense(dense)
    cin = int(dense.kernel.shape[0])
    if rank == 4:
        return conv(x)
    if rank == 2:
        h = tf.keras.layers.Reshape((1, 1, cin), name=f"{dense.name}_to_grid")(x)
        h = conv(h)
        return tf.keras.layers.Reshape((dense.units,), name=f"{dense.name}_from_grid")(h)
    n = x.shape[1] if x.shape[1] is not None else -1
    h = tf.keras.layers.Reshape((1, n, cin), name=f"{dense.name}_to_grid")(x)
    h = conv(h)
    return tf.keras.layers.Reshape((n, dense.units), name=f"{dense.name}_from_grid")(h)


def _rebuild(model, rewritten: List[str], skipped: List[str]):
    """Re-run `model`'s functional graph on fresh inputs, replacing QuantDense nodes."""
    import larq as lq
    import tensorflow as tf

    from edgebvit.converters.graph import rebuild_graph

    def visit(node, args, kwargs):
        layer = node.layer
        if isinstance(layer, lq.layers.QuantDense) and not is_binary_dense(layer):
            skipped.append(_skip_reason(layer))
        elif isinstance(layer, lq.layers.QuantDense) and not kwargs and len(args) == 1:
            rank = args[0].shape.rank
            if rank in (2, 3, 4) and args[0].shape[-1] is not None:
                rewritten.append(layer.name)
                return _apply_as_conv(layer, args[0])
            skipped.append(f"{layer.name}: input rank {rank} not supported")
        elif isinstance(layer, tf.keras.Model) and getattr(layer, "_is_graph_network", False):
            return _rebuild(layer, rewritten, skipped)(*args, **kwargs)
        return None

    return rebuild_graph(model, visit)


def _skip_reason(layer) -> str:
    from edgebvit.converters.precheck import _quantizer_name

    iq, kq = layer.input_quantizer, layer.kernel_quantizer
    if iq is None and kq is None:
        return f"{layer.name}: float QuantDense (no input or kernel quantizer), left as is: rewriting gains nothing"
    return (f"{layer.name}: not binary on both sides (input quantizer {_quantizer_name(iq)}, kernel quantizer "
            f"{_quantizer_name(kq)}), left as is: as a conv it would still be float, with extra reshapes")


def rewrite_quant_dense(model, *, check: bool = True, atol: float = 1e-4, seed: int = 0) -> RewriteResult:
    """Replace every binary QuantDense (1-bit sign inputs and kernel) by an equivalent 1x1 QuantConv2D.

    A QuantDense that is float, or quantized but not binary on both inputs and kernel, would not
    become an LceBconv2d either way: it is left alone and listed in `skipped` with the reason.

    With `check`, the Keras outputs of both models on a random batch must agree within `atol`
    (relative to the output scale), else ModelError: a rewrite must never change the model.
    """
    import larq as lq
    import tensorflow as tf

    dense = [l for l in model._flatten_layers(include_self=False, recursive=True) if isinstance(l, lq.layers.QuantDense)]
    if not dense:
        return RewriteResult(model=model)
    if not any(is_binary_dense(l) for l in dense):
        return RewriteResult(model=model, skipped=tuple(_skip_reason(l) for l in dense))
    if not getattr(model, "_is_graph_network", False):
        raise ModelError(
            f"model {model.name!r} is subclassed; QuantDense layers cannot be rewritten automatically "
            "(write them as 1x1 QuantConv2D, or export with --no-rewrite)"
        )
    rewritten: List[str] = []
    skipped: List[str] = []
    new_model = _rebuild(model, rewritten, skipped)
    if not rewritten:
        return RewriteResult(model=model, skipped=tuple(skipped))
    diff = None
    if check:
        rng = np.random.default_rng(seed)
        feeds = []
        for t in model.inputs:
            shape = [2 if d is None else int(d) for d in t.shape]
            feeds.append(rng.normal(size=shape).astype(t.dtype.as_numpy_dtype))
        before = tf.nest.flatten(model(feeds if len(feeds) > 1 else feeds[0], training=False))
        after = tf.nest.flatten(new_model(feeds if len(feeds) > 1 else feeds[0], training=False))
        diff = 0.0
        for a, b in zip(before, after):
            a, b = np.asarray(a), np.asarray(b)
            scale = max(1.0, float(np.abs(a).max()))
            diff = max(diff, float(np.abs(a - b).max()))
            if a.shape != b.shape or np.abs(a - b).max() > atol * scale:
                raise ModelError(
                    f"QuantDense rewrite changed the model's outputs (max diff {float(np.abs(a - b).max()):.3g}); "
                    "export with --no-rewrite"
                )
    return RewriteResult(model=new_model, rewritten=tuple(rewritten), skipped=tuple(skipped), max_abs_diff=diff)
