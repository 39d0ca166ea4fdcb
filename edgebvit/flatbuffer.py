"""The one TFLite / LCE flatbuffer reader: schema, LCE op vocabulary, precision, groups, MACs.

TensorFlow-free: TFLite's generated schema (``tensorflow/lite/python/schema_py_generated.py``) is
loaded by file path, so reading a flatbuffer costs milliseconds, and `flatbuffers.flexbuffers`
decodes the LCE custom options. `converters/inspect.py` (reports) and `edgebvit/bench/` (records)
both read flatbuffers through this module, so every number has one formula. It reads the file
itself, never an interpreter, so it also works on files the stock interpreter refuses because
of LCE custom ops. Per operator it reports type, shapes, MACs, precision, the constant bytes it
reads and its tensor names (TFLite names tensors after the Keras layers they came from, e.g.
``model/bc1/QuantConv2D``).

Facts this module relies on (measured with larq-compute-engine 0.16.0, docs/lce.md):
- ``LceBconv2d`` filters are int32 OHWI with the input channels bit-packed 32 per word; the
  unpacked input-channel count is the custom option ``channels_in``. There is no ``groups``
  option: a grouped bconv is one whose packed filter holds fewer words than ``channels_in``
  needs, which only happens for 32k channels per group (docs/lce.md, Grouped binary convolutions).
- A bconv whose only consumer is another binarizer writes bit-packed int32 output, so the
  output's last dimension is words, not channels: take the channel count from the filter.
- Activation x activation matmuls (attention) appear as ``BATCH_MATMUL`` or as a
  ``FULLY_CONNECTED`` whose weight input is not a constant (docs/lce.md, Attention matmuls).

One file on purpose (~430 lines): the issue this closes was two readers with two formulas; the
vocabulary, the parsing and the derived numbers stay together so they cannot drift apart again.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from edgebvit.errors import FlatbufferError

# ---- vocabulary ----------------------------------------------------------------------------
BINARY, INT8, FLOAT = "binary", "int8", "float"  # precision labels used in every report
PRECISIONS = (BINARY, INT8, FLOAT)
# The custom ops LCE emits; each counts as binary work (docs/lce.md, Lowering table).
LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
INTEGER_TENSOR_TYPES = ("INT8", "UINT8", "INT16")
_PADDING = {0: "SAME", 1: "VALID"}
_BLOCK_NAME = re.compile(r"(?:^|/)(block\d+|s\d+b\d+|ca\d+)_")
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
ITEMSIZE = {"FLOAT32": 4, "INT32": 4, "INT64": 8, "FLOAT16": 2, "INT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1}


def precision_of(op_type: str, input_dtype: Optional[str]) -> str:
    """binary for LCE's ops, int8 when the first non-constant input is an integer tensor, else float."""
    if op_type in LCE_OPS:
        return BINARY
    if input_dtype in INTEGER_TENSOR_TYPES:
        return INT8
    return FLOAT


def bconv_groups(filter_shape: Sequence[int], filter_dtype: str, channels_in: int) -> int:
    """Groups of an LceBconv2d from its OHWI filter and ``channels_in``.

    The filter's last dimension is the per-group input depth: int32 words of 32 bit-packed
    channels, or plain channels in an unpacked float filter (reference/debug conversions). Only
    32k channels per group are legal for grouped bconvs, so ``channels_in // per_group`` is the
    group count (0 or 1 for an ungrouped conv whose channels are not a multiple of 32).
    """
    words = int(filter_shape[3]) if len(filter_shape) == 4 else 0
    if words <= 0 or channels_in <= 0:
        return 1
    per_group = words * (32 if filter_dtype == "INT32" else 1)
    return max(1, channels_in // per_group)


# ---- schema --------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def schema():
    """TFLite's generated flatbuffer schema, loaded from TensorFlow's folder without importing TensorFlow."""
    spec = importlib.util.find_spec("tensorflow")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(root, "lite", "python", "schema_py_generated.py")
        if os.path.isfile(path):
            mod_spec = importlib.util.spec_from_file_location("_edgebvit_tflite_schema", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
    raise FlatbufferError("cannot read TFLite flatbuffers: TensorFlow's lite/python/schema_py_generated.py "
                          "was not found; install edgebvit's pinned tensorflow")


def _enum_names(enum_cls) -> Dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


# ---- what a flatbuffer holds ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: str  # TFLite TensorType name: FLOAT32, INT8, INT32, ...
    constant: bool
    nbytes: int  # bytes of its constant buffer (0 for activations)
    buffer: int = 0  # index of its buffer in the model


@dataclass(frozen=True, kw_only=True)
class OpInfo:
    index: int
    subgraph: int
    op_type: str  # builtin name, or the custom code for LCE ops
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    macs: int
    precision: str  # binary | int8 | float
    attention: bool  # activation x activation matmul
    weight_bytes: int  # constant buffers this op reads, as stored
    weight_float32_bytes: int  # the same constants if stored as float32 (unpacked)
    groups: int = 1  # LceBconv2d / CONV_2D groups
    options: Dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The most telling tensor name: the first output's."""
        return self.outputs[0].name if self.outputs else f"op{self.index}"


@dataclass(frozen=True, kw_only=True)
class TypeSummary:
    op_type: str
    count: int
    macs: int
    precisions: Tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class FlatbufferReport:
    """Everything read from one flatbuffer, with the numbers derived from it."""

    path: Optional[str]
    sha256: str
    file_bytes: int
    ops: Tuple[OpInfo, ...]
    weight_bytes: int  # unique constant buffers read by ops
    float32_equivalent_bytes: int  # the file with every constant stored as float32
    input_shapes: Tuple[Tuple[int, ...], ...]
    input_types: Tuple[str, ...]
    output_shapes: Tuple[Tuple[int, ...], ...]
    output_types: Tuple[str, ...]

    def by_type(self) -> List[TypeSummary]:
        acc: Dict[str, List[OpInfo]] = {}
        for op in self.ops:
            acc.setdefault(op.op_type, []).append(op)
        rows = [TypeSummary(op_type=t, count=len(ops), macs=sum(o.macs for o in ops),
                            precisions=tuple(sorted({o.precision for o in ops}))) for t, ops in acc.items()]
        return sorted(rows, key=lambda r: (-r.macs, -r.count, r.op_type))

    def op_counts(self) -> Dict[str, int]:
        return {r.op_type: r.count for r in self.by_type()}

    def macs_by_precision(self, *, include_attention: bool = True) -> Dict[str, int]:
        out = {p: 0 for p in PRECISIONS}
        for op in self.ops:
            if include_attention or not op.attention:
                out[op.precision] += op.macs
        return out

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def attention_macs(self) -> int:
        return sum(op.macs for op in self.ops if op.attention)

    @property
    def binary_macs(self) -> int:
        return sum(op.macs for op in self.ops if op.precision == BINARY)

    @property
    def binary_mac_share(self) -> float:
        return self.binary_macs / self.total_macs if self.total_macs else 0.0

    @property
    def binary_mac_share_excluding_attention(self) -> float:
        rest = self.total_macs - self.attention_macs
        return self.binary_macs / rest if rest else 0.0

    @property
    def attention_int8_share(self) -> float:
        """Share of the attention matmul MACs that run in int8 ops."""
        att = self.attention_macs
        return sum(op.macs for op in self.ops if op.attention and op.precision == INT8) / att if att else 0.0

    def ops_per_block(self) -> Dict[str, int]:
        """Operators per transformer block, from the Keras layer names TFLite keeps in tensor names
        (BinaryViT ``block3_...``, class attention ``ca0_...``, BHViT ``s2b1_...``); the rest
        (stem, merging, head) is ``other``."""
        out: Dict[str, int] = {}
        for op in self.ops:
            m = _BLOCK_NAME.search(op.name)
            key = m.group(1) if m else "other"
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def bconvs(self) -> Tuple[OpInfo, ...]:
        return tuple(op for op in self.ops if op.op_type == "LceBconv2d")

    @property
    def grouped_bconvs(self) -> int:
        """How many LceBconv2d are grouped (they need the indirect BGEMM kernel)."""
        return sum(1 for op in self.bconvs if op.groups > 1)

    @property
    def has_grouped_bconv(self) -> bool:
        return self.grouped_bconvs > 0

    @property
    def is_lce(self) -> bool:
        return any(op.op_type in LCE_OPS for op in self.ops)

    def to_dict(self) -> dict:
        def op_dict(op: OpInfo) -> dict:
            d = asdict(op)
            d["name"] = op.name
            return d

        return {
            "path": self.path,
            "sha256": self.sha256,
            "file_bytes": self.file_bytes,
            "float32_equivalent_bytes": self.float32_equivalent_bytes,
            "weight_bytes": self.weight_bytes,
            "inputs": [{"shape": list(s), "type": t} for s, t in zip(self.input_shapes, self.input_types)],
            "outputs": [{"shape": list(s), "type": t} for s, t in zip(self.output_shapes, self.output_types)],
            "op_counts": self.op_counts(),
            "by_type": [asdict(r) for r in self.by_type()],
            "macs": {
                "total": self.total_macs,
                "by_precision": self.macs_by_precision(),
                "by_precision_excluding_attention": self.macs_by_precision(include_attention=False),
                "attention": self.attention_macs,
                "binary_share": self.binary_mac_share,
                "binary_share_excluding_attention": self.binary_mac_share_excluding_attention,
                "attention_int8_share": self.attention_int8_share,
            },
            "ops_per_block": self.ops_per_block(),
            "has_grouped_bconv": self.has_grouped_bconv,
            "grouped_bconvs": self.grouped_bconvs,
            "ops": [op_dict(op) for op in self.ops],
        }


# ---- reading -------------------------------------------------------------------------------
def read_bytes(source: Union[str, Path, bytes]) -> Tuple[bytes, Optional[str]]:
    """The bytes of a flatbuffer given as a path or as bytes, with one-line errors for bad paths."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), None
    path = Path(source)
    if not path.exists():
        raise FlatbufferError(f"flatbuffer not found: {path} (no such file)")
    if path.is_dir():
        hint = f"; did you mean {path / 'model.tflite'}?" if (path / "model.tflite").is_file() else ""
        raise FlatbufferError(f"{path}: is a directory, expected a .tflite file{hint}")
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise FlatbufferError(f"{path}: cannot read ({err.strerror})") from None


def read_flatbuffer(source: Union[str, Path, bytes]) -> FlatbufferReport:
    """Parse a .tflite file (path or bytes); FlatbufferError (one line, naming the file) if it is not one."""
    return parse(*read_bytes(source))


def read_model_file(path: Union[str, Path]) -> Tuple[bytes, FlatbufferReport]:
    """The bytes of a .tflite file and what they hold, for callers that also ship the bytes (bench)."""
    data, label = read_bytes(path)
    return data, parse(data, label)


def parse(data: bytes, path: Optional[str] = None) -> FlatbufferReport:
    """Parse flatbuffer bytes; `path` names the file in errors and in the report."""
    label = path or "flatbuffer"
    if not data:
        raise FlatbufferError(f"{label}: file is empty")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError(f"{label}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        return _parse(data, path)
    except FlatbufferError:
        raise
    except Exception:  # noqa: BLE001 - the generated reader raises whatever a bad offset produces
        raise FlatbufferError(f"{label}: corrupt or truncated TFLite flatbuffer") from None


def _buffer_nbytes(buf, file_len: int, label: str) -> int:
    if buf is None:
        return 0
    if buf.data is not None and len(buf.data):
        return int(len(buf.data))
    # Models over 2 GiB keep buffers after the flatbuffer (offset/size); count them too.
    offset, size = int(getattr(buf, "offset", 0) or 0), int(getattr(buf, "size", 0) or 0)
    if offset > 1 and size:
        if offset + size > file_len:
            raise FlatbufferError(f"{label}: a buffer lies past the end of the file (truncated?)")
        return size
    return 0


def _parse(data: bytes, path: Optional[str]) -> FlatbufferReport:
    sch = schema()
    label = path or "flatbuffer"
    raw = sch.Model.GetRootAsModel(data, 0)
    for i in range(raw.BuffersLength()):
        # The generated reader slices silently past the end of a truncated file: check lengths.
        buf = raw.Buffers(i)
        n = buf.DataLength()
        if n and len(buf.DataAsNumpy()) != n:
            raise FlatbufferError(f"{label}: truncated TFLite flatbuffer (buffer {i} runs past the end)")
    model = sch.ModelT.InitFromObj(raw)
    if not model.subgraphs:
        raise FlatbufferError(f"{label}: no subgraphs")
    type_names = _enum_names(sch.TensorType)
    builtin_names = _enum_names(sch.BuiltinOperator)
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    buffer_bytes = [_buffer_nbytes(b, len(data), label) for b in buffers]

    ops: List[OpInfo] = []
    seen_buffers: Dict[int, int] = {}  # buffer index -> float32-equivalent bytes
    for sg_index, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []

        def tinfo(i: int) -> TensorInfo:
            t = tensors[i]  # IndexError on a corrupt index -> FlatbufferError above
            nbytes = buffer_bytes[t.buffer] if 0 < t.buffer < len(buffer_bytes) else 0
            shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
            return TensorInfo(index=i, name=(t.name or b"").decode("utf-8", "replace"), shape=shape,
                              dtype=type_names.get(t.type, str(t.type)), constant=nbytes > 0, nbytes=nbytes,
                              buffer=int(t.buffer))

        for op_index, op in enumerate(sg.operators or []):
            code = codes[op.opcodeIndex]
            builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
            op_type = code.customCode.decode() if code.customCode else builtin_names.get(builtin, str(builtin))
            ins = tuple(tinfo(i) for i in (op.inputs if op.inputs is not None else ()) if i >= 0)
            outs = tuple(tinfo(i) for i in (op.outputs if op.outputs is not None else ()) if i >= 0)
            options = _options(op, op_type)
            groups = _groups(op_type, ins, options)
            macs, attention = _macs(op_type, ins, outs, options, groups)
            # The first non-constant, non-boolean input decides; without one (SELECT_V2 between two
            # constants on a bool condition) the output's type does.
            data_in = next((t for t in ins if not t.constant and t.dtype != "BOOL"), None) or (outs[0] if outs else None)
            w_bytes = w_f32 = 0
            for t in ins:
                if not t.constant:
                    continue
                f32 = _float32_bytes(op_type, t, options, groups)
                w_bytes += t.nbytes
                w_f32 += f32
                seen_buffers[t.buffer] = max(seen_buffers.get(t.buffer, 0), f32)
            ops.append(OpInfo(index=op_index, subgraph=sg_index, op_type=op_type, inputs=ins, outputs=outs,
                              macs=int(macs), precision=precision_of(op_type, data_in.dtype if data_in else None),
                              attention=attention, weight_bytes=w_bytes, weight_float32_bytes=w_f32,
                              groups=groups, options=options))

    weight_bytes = sum(buffer_bytes[i] for i in seen_buffers)
    main = model.subgraphs[0]
    main_tensors = main.tensors or []
    ins = [main_tensors[i] for i in (main.inputs if main.inputs is not None else ())]
    outs = [main_tensors[i] for i in (main.outputs if main.outputs is not None else ())]
    return FlatbufferReport(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        file_bytes=len(data),
        ops=tuple(ops),
        weight_bytes=weight_bytes,
        float32_equivalent_bytes=len(data) - weight_bytes + sum(seen_buffers.values()),
        input_shapes=tuple(tuple(int(d) for d in t.shape) for t in ins),
        input_types=tuple(type_names.get(t.type, str(t.type)) for t in ins),
        output_shapes=tuple(tuple(int(d) for d in t.shape) for t in outs),
        output_types=tuple(type_names.get(t.type, str(t.type)) for t in outs),
    )


def _options(op, op_type: str) -> Dict[str, object]:
    opts: Dict[str, object] = {}
    if op.customOptions is not None and len(op.customOptions):
        from flatbuffers import flexbuffers

        decoded = flexbuffers.Loads(bytes(bytearray(op.customOptions)))
        if isinstance(decoded, dict):
            opts.update(decoded)
    elif op.builtinOptions is not None:
        for key, value in vars(op.builtinOptions).items():
            if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                value = value.item()  # numpy scalar -> JSON-friendly Python number
            if isinstance(value, (int, float, bool)):
                opts[key] = value
    if "padding" in opts and op_type in ("LceBconv2d", "LceBMaxPool2d", "CONV_2D", "DEPTHWISE_CONV_2D"):
        opts["padding"] = _PADDING.get(int(opts["padding"]), opts["padding"])
    for key in ("fused_activation_function", "fusedActivationFunction"):
        if key in opts:
            opts[key] = _ACTIVATION.get(int(opts[key]), opts[key])
    return opts


def _groups(op_type: str, ins: Sequence[TensorInfo], opts: Dict[str, object]) -> int:
    if op_type == "LceBconv2d" and len(ins) >= 2 and len(ins[1].shape) == 4:
        return bconv_groups(ins[1].shape, ins[1].dtype, int(opts.get("channels_in", 0) or 0))
    if op_type == "CONV_2D" and len(ins) >= 2 and len(ins[0].shape) == 4 and len(ins[1].shape) == 4:
        return max(1, ins[0].shape[3] // max(1, ins[1].shape[3]))
    return 1


def _macs(op_type: str, ins: Sequence[TensorInfo], outs: Sequence[TensorInfo], opts: Dict[str, object],
          groups: int) -> Tuple[int, bool]:
    if not outs or not ins:
        return 0, False
    out = outs[0].shape
    if op_type == "LceBconv2d" and len(ins) >= 2 and len(ins[1].shape) == 4:
        o, kh, kw, _ = ins[1].shape
        cin = int(opts.get("channels_in", 0) or 0)
        return math.prod(out[:-1]) * o * kh * kw * (cin // groups), False
    if op_type == "CONV_2D" and len(ins) >= 2 and len(ins[1].shape) == 4:
        o, kh, kw, cin_g = ins[1].shape
        return math.prod(out[:-1]) * o * kh * kw * cin_g, False
    if op_type == "DEPTHWISE_CONV_2D" and len(ins) >= 2 and len(ins[1].shape) == 4:
        _, kh, kw, _ = ins[1].shape
        return math.prod(out) * kh * kw, False
    if op_type == "FULLY_CONNECTED" and len(ins) >= 2 and len(ins[1].shape) == 2:
        _, k = ins[1].shape
        # A weight computed at run time is an activation x activation product (attention).
        return math.prod(out) * k, not ins[1].constant
    if op_type == "BATCH_MATMUL" and len(ins) >= 2 and ins[0].shape:
        adj_x = bool(opts.get("adjX", False))
        k = ins[0].shape[-2] if adj_x else ins[0].shape[-1]
        return math.prod(out) * k, not (ins[0].constant or ins[1].constant)
    return 0, False


def _float32_bytes(op_type: str, t: TensorInfo, opts: Dict[str, object], groups: int) -> int:
    """Bytes of this constant if it were an unpacked float32 tensor."""
    n = math.prod(t.shape) if t.shape else max(1, t.nbytes // max(1, ITEMSIZE.get(t.dtype, 4)))
    if op_type == "LceBconv2d" and t.dtype == "INT32" and len(t.shape) == 4:
        cin = int(opts.get("channels_in", 0) or 0)
        o, kh, kw, _ = t.shape
        n = o * kh * kw * (cin // groups)
    return 4 * n
