"""Just enough of a .tflite reader for the benchmark: op counts and grouped binary convolutions.

Uses TF's generated schema (tensorflow/lite/python/schema_py_generated.py) loaded by file path,
so TensorFlow itself is not imported (seconds saved per bench), and `flatbuffers.flexbuffers`
for LceBconv2d's custom options. converters/inspect.py is the full inspector; this stays
self-contained on purpose so bench reads only the flatbuffer.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from edgebvit.errors import FlatbufferError

_INT32 = 2  # TensorType.INT32: LCE stores binary filters bit-packed, 32 channels per word


@lru_cache(maxsize=1)
def _schema():
    spec = importlib.util.find_spec("tensorflow")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "lite", "python", "schema_py_generated.py")
        if os.path.isfile(path):
            mod_spec = importlib.util.spec_from_file_location("_edgebvit_tflite_schema", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
    from tensorflow.lite.python import schema_py_generated  # noqa: PLC0415 - slow fallback

    return schema_py_generated


@lru_cache(maxsize=1)
def _builtin_names() -> dict:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True, kw_only=True)
class BconvInfo:
    channels_in: int
    filter_shape: tuple
    groups: int


@dataclass(frozen=True, kw_only=True)
class ModelSummary:
    sha256: str
    size_bytes: int
    op_counts: dict = field(default_factory=dict)
    bconvs: tuple = ()

    @property
    def grouped_bconvs(self) -> int:
        return sum(1 for b in self.bconvs if b.groups > 1)


def _bconv_groups(options: dict, filter_shape: tuple, filter_type: int) -> int:
    if isinstance(options.get("groups"), int) and options["groups"] > 0:
        return int(options["groups"])
    cin = options.get("channels_in")
    if not isinstance(cin, int) or len(filter_shape) != 4 or filter_shape[3] <= 0:
        return 1
    # OHWI filter; its I is the per-group input depth (bit-packed: 32 channels per int32 word).
    per_group = filter_shape[3] * (32 if filter_type == _INT32 else 1)
    return max(1, math.ceil(cin / per_group))


def read_model_summary(data: bytes) -> ModelSummary:
    """Count operators and read every LceBconv2d's channels/groups from flatbuffer bytes."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError("not a TFLite flatbuffer (missing the TFL3 identifier)")
    schema = _schema()
    from flatbuffers import flexbuffers

    names = _builtin_names()
    try:
        model = schema.Model.GetRootAs(data, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            custom = oc.CustomCode()
            if custom:
                codes.append(custom.decode("utf-8", "replace"))
            else:
                code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
                codes.append(names.get(code, f"BUILTIN_{code}"))
        counts: dict = {}
        bconvs = []
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                op = sg.Operators(o)
                name = codes[op.OpcodeIndex()]
                counts[name] = counts.get(name, 0) + 1
                if name != "LceBconv2d":
                    continue
                raw = bytes(op.CustomOptionsAsNumpy().tobytes()) if op.CustomOptionsLength() else b""
                options = flexbuffers.Loads(raw) if raw else {}
                if not isinstance(options, dict):
                    options = {}
                filt = sg.Tensors(op.Inputs(1)) if op.InputsLength() > 1 else None
                shape = tuple(int(v) for v in filt.ShapeAsNumpy()) if filt is not None and filt.ShapeLength() else ()
                ftype = int(filt.Type()) if filt is not None else -1
                bconvs.append(BconvInfo(channels_in=int(options.get("channels_in", 0) or 0), filter_shape=shape,
                                        groups=_bconv_groups(options, shape, ftype)))
    except FlatbufferError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise FlatbufferError(f"cannot read the TFLite flatbuffer ({type(err).__name__}: {err})") from None
    return ModelSummary(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                        op_counts=dict(sorted(counts.items())), bconvs=tuple(bconvs))


def read_model_file(path: Path) -> tuple:
    """Return (bytes, ModelSummary) for a .tflite path, with one-line errors for bad input."""
    path = Path(path)
    if not path.is_file():
        raise FlatbufferError(f"flatbuffer not found: {path}")
    data = path.read_bytes()
    return data, read_model_summary(data)
