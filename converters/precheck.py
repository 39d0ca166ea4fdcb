"""Before conversion: which layers LCE will not turn into fast binary ops, and why.

The rules follow what was measured with larq-compute-engine 0.16.0 (docs/lce.md) and
the converter's patterns (docs/papers.md 4.1): only a ``QuantConv2D`` whose input is binarized
by ``larq.math.sign`` and whose kernel folds to +-alpha per output channel becomes ``LceBconv2d``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

WARNING, INFO = "warning", "info"
NOT_CHECKED = "not_checked"  # the one finding when the precheck cannot see any binary layer

# Quantizers whose forward pass is larq.math.sign (recognised by the converter's patterns).
_SIGN_QUANTIZERS = ("SteSign", "ApproxSign", "SwishSign")
_SIGN_NAMES = ("ste_sign", "approx_sign", "swish_sign")


@dataclass(frozen=True, kw_only=True)
class Finding:
    layer: str
    layer_class: str
    kind: str
    severity: str  # "warning": stays float or slow; "info": converts, with a caveat
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.layer} ({self.layer_class}): {self.message}"


def _all_layers(model):
    # Nested models and custom layers that own larq layers: visit every tracked sub-layer.
    return [l for l in model._flatten_layers(include_self=False, recursive=True)]


def _quantizer_name(q) -> str:
    if q is None:
        return "none"
    if isinstance(q, str):
        return q
    return getattr(q, "__name__", None) or type(q).__name__


def is_sign_quantizer(q) -> bool:
    """True when the quantizer's forward is larq.math.sign (or the tf.where form) on real inputs."""
    if q is None:
        return False
    if isinstance(q, str):
        return q in _SIGN_NAMES
    if type(q).__name__ in _SIGN_QUANTIZERS and type(q).__module__.startswith("larq"):
        return True
    # A custom quantizer: same values as larq.math.sign (sign(0) = +1), and a graph the converter
    # matches (a Sign op, or Select on GreaterEqual).
    import larq as lq
    import tensorflow as tf

    probe = tf.constant(np.concatenate([np.linspace(-3, 3, 61), [0.0, -1e-7, 1e-7]]).astype("float32"))
    try:
        values = np.asarray(q(probe))
        graph = tf.function(lambda t: q(t)).get_concrete_function(tf.TensorSpec([None], tf.float32)).graph
    except Exception:
        return False
    if values.shape != probe.shape or not np.array_equal(values, np.asarray(lq.math.sign(probe))):
        return False
    op_types = {op.type for op in graph.get_operations()}
    return "Sign" in op_types or ({"SelectV2", "GreaterEqual"} <= op_types) or ({"Select", "GreaterEqual"} <= op_types)


def is_binary_kernel(layer, quantizer, kernel) -> bool:
    """LCE's IsBinaryFilter on the folded kernel: |w / w[..., o]| == 1 (0.5%) per output channel, w != 0."""
    if quantizer is None:
        return False
    import tensorflow as tf

    try:
        # A tensor, not the Variable: larq's custom-gradient quantizers refuse variables.
        w = np.asarray(quantizer(tf.convert_to_tensor(kernel)))
    except Exception:
        return False
    w = w.reshape(-1, w.shape[-1])
    ref = w[0]
    if np.any(ref == 0):
        return False
    return bool(np.all(np.abs(np.abs(w / ref) - 1.0) <= 0.005))


def precheck(model, *, target: str = "arm") -> List[Finding]:
    """Every layer that will not become a (fast) binary op, with the reason. Empty = all clear."""
    import larq as lq

    findings: List[Finding] = []

    def add(layer, kind: str, severity: str, message: str) -> None:
        findings.append(Finding(layer=layer.name, layer_class=type(layer).__name__, kind=kind, severity=severity, message=message))

    layers = _all_layers(model)
    checked = 0  # larq layers with a quantizer: what the rules below are about
    for layer in layers:
        cls = type(layer).__name__
        if _is_quantized_larq_layer(layer):
            checked += 1
        if isinstance(layer, lq.layers.QuantDense):
            if layer.input_quantizer is not None or layer.kernel_quantizer is not None:
                if is_binary_dense(layer):
                    add(layer, "quant_dense", WARNING,
                        "QuantDense stays a float FULLY_CONNECTED (LCE has no binary dense op); "
                        "export --rewrite turns it into a 1x1 QuantConv2D")
                else:
                    add(layer, "quant_dense", WARNING,
                        f"QuantDense with input quantizer {_quantizer_name(layer.input_quantizer)} and kernel "
                        f"quantizer {_quantizer_name(layer.kernel_quantizer)} is not binary on both sides: it "
                        "stays a float FULLY_CONNECTED (the --rewrite skips it: no binary op to gain)")
            continue
        if isinstance(layer, lq.layers.QuantDepthwiseConv2D):
            add(layer, "quant_depthwise", WARNING,
                "QuantDepthwiseConv2D stays a float DEPTHWISE_CONV_2D (LCE has no binary depthwise conv)")
            continue
        if isinstance(layer, lq.layers.QuantConv2D):
            findings.extend(_check_conv(layer, target))
            continue
        if cls.startswith("Quant") and type(layer).__module__.startswith("larq") and (
            getattr(layer, "input_quantizer", None) is not None or getattr(layer, "kernel_quantizer", None) is not None
        ):
            add(layer, "unsupported_quant_layer", WARNING,
                f"{cls} has no LCE binary op; it converts to float ops")
    if not checked:
        findings.append(Finding(layer=model.name, layer_class=type(model).__name__, kind=NOT_CHECKED, severity=INFO,
                                message=f"could not check: {_why_not_checked(model, layers)}"))
    return findings


def not_checked(findings) -> str:
    """The reason the precheck could not check anything ('' when it did). Findings or their dicts."""
    for f in findings:
        kind = f["kind"] if isinstance(f, dict) else f.kind
        if kind == NOT_CHECKED:
            message = f["message"] if isinstance(f, dict) else f.message
            return message.split("could not check: ", 1)[-1]
    return ""


def _is_quantized_larq_layer(layer) -> bool:
    if not type(layer).__module__.startswith("larq"):
        return False
    return any(getattr(layer, attr, None) is not None
               for attr in ("input_quantizer", "kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer"))


def _why_not_checked(model, layers) -> str:
    revived = [l for l in layers if type(l).__name__.startswith("Revived") or "saved_model" in type(l).__module__]
    if revived or type(model).__name__.startswith("Revived"):
        return ("its layers are SavedModel stand-ins (e.g. " + type((revived or [model])[0]).__name__ + "), not larq "
                "layers; export the .keras or .h5 file of the model so the layers can be seen")
    if not getattr(model, "_is_graph_network", False) and not layers:
        return f"{type(model).__name__} is not a functional model and tracks no layers"
    return ("no larq layer with a quantizer (QuantConv2D, QuantDense, ...): a float model, or binary layers of "
            "a kind the precheck does not know; nothing here is expected to become a binary op")


def is_binary_dense(layer) -> bool:
    """A QuantDense whose inputs are binarized by larq's sign and whose kernel folds to +-alpha."""
    if not getattr(layer, "built", False):
        return False
    return is_sign_quantizer(layer.input_quantizer) and is_binary_kernel(layer, layer.kernel_quantizer, layer.kernel)


def _check_conv(layer, target: str) -> List[Finding]:
    out: List[Finding] = []

    def add(kind: str, severity: str, message: str) -> None:
        out.append(Finding(layer=layer.name, layer_class=type(layer).__name__, kind=kind, severity=severity, message=message))

    iq, kq = layer.input_quantizer, layer.kernel_quantizer
    if iq is None and kq is None:
        return out
    if not layer.built:
        add("not_built", WARNING, "layer is not built; cannot check it")
        return out
    kernel = layer.kernel
    kh, kw, cin_g, cout = (int(d) for d in kernel.shape)
    groups = int(getattr(layer, "groups", 1) or 1)
    cin = cin_g * groups
    sign_in = is_sign_quantizer(iq)
    binary_k = is_binary_kernel(layer, kq, kernel)
    if iq is None:
        add("float_input", WARNING,
            f"no input quantizer: kernel {_quantizer_name(kq)} but float inputs, stays a float CONV_2D")
        return out
    if not sign_in:
        add("unrecognised_input_quantizer", WARNING,
            f"input quantizer {_quantizer_name(iq)} is not larq.math.sign (nor tf.where(x >= 0, 1, -1)); "
            "the converter will not recognise it, the conv stays float")
        return out
    if not binary_k:
        add("float_kernel", WARNING,
            f"kernel quantizer {_quantizer_name(kq)} does not fold to +-alpha per output channel; "
            "the conv stays a float CONV_2D between LceQuantize/LceDequantize")
        return out
    # It will be an LceBconv2d; flag the slow or failing variants.
    if groups > 1 and cin_g % 32:
        add("grouped_lt32", WARNING,
            f"grouped binary conv with {cin_g} input channels per group (groups={groups}); LCE needs a "
            "multiple of 32, the converter rejects it and the conv stays float")
    elif groups > 1:
        add("grouped_indirect_bgemm", INFO,
            f"grouped binary conv (groups={groups}) runs only with the indirect BGEMM kernel "
            "(use_indirect_bgemm=True / --use_indirect_bgemm=true)")
    pad_values = float(getattr(layer, "pad_values", 0.0) or 0.0)
    if str(layer.padding).lower() == "same" and (kh > 1 or kw > 1) and pad_values == 0.0:
        if target == "xcore":
            add("zero_padding", WARNING,
                "zero padding (padding='same', pad_values=0) is not converted for target xcore: stays float")
        else:
            add("zero_padding", WARNING,
                "zero padding (padding='same', pad_values=0) needs an edge correction: only float output "
                "without fused activation runs on the optimised kernel; prefer pad_values=1.0")
    if cin % 32:
        add("channels_in_not_multiple_of_32", INFO,
            f"{cin} input channels is not a multiple of 32: bit-packing pads to {-(-cin // 32) * 32}, wasted work")
    if cout % 8:
        add("channels_out_not_multiple_of_8", INFO,
            f"{cout} output channels is not a multiple of 8: slower kernels")
    return out
