"""What a TFLite / LCE flatbuffer contains, read from the flatbuffer itself.

Parses the file with TensorFlow's generated flatbuffer schema (no interpreter, so it also works on
files the stock interpreter refuses because of LCE custom ops) and reports per operator: type,
shapes, MACs, precision, the constant bytes it reads and its tensor names (TFLite names tensors
after the Keras layers they came from, e.g. ``model/bc1/QuantConv2D``).

Facts this module relies on (measured with larq-compute-engine 0.16.0, see the export report):
- ``LceBconv2d`` filters are int32 OHWI with the input channels bit-packed 32 per word; the
  unpacked input-channel count is the custom option ``channels_in`` (divided by the groups).
  There is no ``groups`` option: a grouped bconv is one whose packed filter holds fewer words
  than ``channels_in`` needs, which only happens for 32k channels per group.
- A bconv whose only consumer is another binarizer writes bit-packed int32 output, so the
  output's last dimension is words, not channels: take the channel count from the filter.
- Activation x activation matmuls (attention) appear as ``BATCH_MATMUL`` or as a
  ``FULLY_CONNECTED`` whose weight input is not a constant.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from edgebvit.errors import FlatbufferError

# Precision labels used everywhere in reports.
BINARY, INT8, FLOAT = "binary", "int8", "float"
PRECISIONS = (BINARY, INT8, FLOAT)

LCE_CUSTOM_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
_BINARY_OPS = frozenset(LCE_CUSTOM_OPS)
_INT8_TYPES = ("INT8", "UINT8", "INT16")
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: str  # TFLite TensorType name: FLOAT32, INT8, INT32, ...
    constant: bool
    nbytes: int  # bytes of its constant buffer (0 for activations)


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
    path: Optional[str]
    file_bytes: int
    ops: Tuple[OpInfo, ...]
    weight_bytes: int  # unique constant buffers read by ops
    float32_equivalent_bytes: int  # the file with every constant stored as float32
    input_shapes: Tuple[Tuple[int, ...], ...]
    input_types: Tuple[str, ...]
    output_shapes: Tuple[Tuple[int, ...], ...]
    output_types: Tuple[str, ...]

    # ---- derived numbers -------------------------------------------------------------------
    def by_type(self) -> List[TypeSummary]:
        acc: Dict[str, List[OpInfo]] = {}
        for op in self.ops:
            acc.setdefault(op.op_type, []).append(op)
        rows = [
            TypeSummary(
                op_type=t,
                count=len(ops),
                macs=sum(o.macs for o in ops),
                precisions=tuple(sorted({o.precision for o in ops})),
            )
            for t, ops in acc.items()
        ]
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
    def has_grouped_bconv(self) -> bool:
        return any(op.op_type == "LceBconv2d" and int(op.options.get("groups", 1)) > 1 for op in self.ops)

    @property
    def is_lce(self) -> bool:
        return any(op.op_type in _BINARY_OPS for op in self.ops)

    def to_dict(self) -> dict:
        def op_dict(op: OpInfo) -> dict:
            d = asdict(op)
            d["name"] = op.name
            return d

        return {
            "path": self.path,
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
            },
            "has_grouped_bconv": self.has_grouped_bconv,
            "ops": [op_dict(op) for op in self.ops],
        }


# ---- parsing -------------------------------------------------------------------------------

def _schema():
    from tensorflow.lite.python import schema_py_generated as schema  # lazy: pulls in TF

    return schema


def _enum_names(enum_cls) -> Dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_flatbuffer(source: Union[str, Path, bytes]) -> Tuple[bytes, Optional[str]]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), None
    path = Path(source)
    if not path.exists():
        raise FlatbufferError(f"{path}: no such file")
    if path.is_dir():
        raise FlatbufferError(f"{path}: is a directory, expected a .tflite file")
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise FlatbufferError(f"{path}: cannot read ({err.strerror})") from None


def inspect_flatbuffer(source: Union[str, Path, bytes]) -> FlatbufferReport:
    """Parse a .tflite file (path or bytes) into a FlatbufferReport; FlatbufferError if it is not one."""
    data, path = read_flatbuffer(source)
    label = path or "flatbuffer"
    if not data:
        raise FlatbufferError(f"{label}: file is empty")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError(f"{label}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        return _inspect(data, path)
    except FlatbufferError:
        raise
    except Exception as err:  # the generated reader raises whatever a bad offset produces
        raise FlatbufferError(f"{label}: corrupt or truncated TFLite flatbuffer") from None


def _buffer_nbytes(buf, file_len: int) -> int:
    if buf is None:
        return 0
    if buf.data is not None and len(buf.data):
        return int(len(buf.data))
    # Models over 2 GiB keep buffers after the flatbuffer (offset/size); count them too.
    offset, size = int(getattr(buf, "offset", 0) or 0), int(getattr(buf, "size", 0) or 0)
    if offset > 1 and size:
        if offset + size > file_len:
            raise FlatbufferError("buffer lies past the end of the file (truncated?)")
        return size
    return 0


def _inspect(data: bytes, path: Optional[str]) -> FlatbufferReport:
    schema = _schema()
    raw = schema.Model.GetRootAsModel(data, 0)
    for i in range(raw.BuffersLength()):
        # The generated reader slices silently past the end of a truncated file: check lengths.
        buf = raw.Buffers(i)
        n = buf.DataLength()
        if n and len(buf.DataAsNumpy()) != n:
            raise FlatbufferError(f"{path or 'flatbuffer'}: truncated TFLite flatbuffer (buffer {i} runs past the end)")
    model = schema.ModelT.InitFromObj(raw)
    if not model.subgraphs:
        raise FlatbufferError(f"{path or 'flatbuffer'}: no subgraphs")
    type_names = _enum_names(schema.TensorType)
    builtin_names = _enum_names(schema.BuiltinOperator)
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    buffer_bytes = [_buffer_nbytes(b, len(data)) for b in buffers]

    ops: List[OpInfo] = []
    seen_buffers: Dict[int, int] = {}  # buffer index -> float32-equivalent bytes
    for sg_index, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []

        def tinfo(i: int) -> TensorInfo:
            t = tensors[i]  # IndexError on a corrupt index -> FlatbufferError above
            nbytes = buffer_bytes[t.buffer] if 0 < t.buffer < len(buffer_bytes) else 0
            shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
            return TensorInfo(
                index=i,
                name=(t.name or b"").decode("utf-8", "replace"),
                shape=shape,
                dtype=type_names.get(t.type, str(t.type)),
                constant=nbytes > 0,
                nbytes=nbytes,
            )

        for op_index, op in enumerate(sg.operators or []):
            code = codes[op.opcodeIndex]
            builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
            op_type = code.customCode.decode() if code.customCode else builtin_names.get(builtin, str(builtin))
            ins = tuple(tinfo(i) for i in (op.inputs if op.inputs is not None else ()) if i >= 0)
            outs = tuple(tinfo(i) for i in (op.outputs if op.outputs is not None else ()) if i >= 0)
            options = _options(op, op_type)
            macs, attention = _macs(op_type, ins, outs, options)
            precision = _precision(op_type, ins)
            w_bytes = 0
            w_f32 = 0
            for t in ins:
                if not t.constant:
                    continue
                f32 = _float32_bytes(op_type, t, options)
                w_bytes += t.nbytes
                w_f32 += f32
                buf_index = tensors[t.index].buffer
                seen_buffers[buf_index] = max(seen_buffers.get(buf_index, 0), f32)
            ops.append(
                OpInfo(
                    index=op_index,
                    subgraph=sg_index,
                    op_type=op_type,
                    inputs=ins,
                    outputs=outs,
                    macs=int(macs),
                    precision=precision,
                    attention=attention,
                    weight_bytes=w_bytes,
                    weight_float32_bytes=w_f32,
                    options=options,
                )
            )

    weight_bytes = sum(buffer_bytes[i] for i in seen_buffers)
    main = model.subgraphs[0]
    main_tensors = main.tensors or []
    ins = [main_tensors[i] for i in (main.inputs if main.inputs is not None else ())]
    outs = [main_tensors[i] for i in (main.outputs if main.outputs is not None else ())]
    return FlatbufferReport(
        path=path,
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


def _bconv_groups(filt: TensorInfo, channels_in: int) -> int:
    # Packed filter: (O, kh, kw, ceil(Cin_per_group / 32)) int32 words. Only 32k channels per
    # group are legal for grouped bconvs, so channels_in // (words * 32) is the group count
    # (it is 0 or 1 for an ungrouped conv whose channels are not a multiple of 32).
    words = filt.shape[3] if len(filt.shape) == 4 else 0
    if filt.dtype != "INT32" or not words:
        # Unpacked float filter (only seen in reference/debug conversions): last dim = Cin/groups.
        return max(1, channels_in // words) if words else 1
    return max(1, channels_in // (words * 32))


def _macs(op_type: str, ins: Sequence[TensorInfo], outs: Sequence[TensorInfo], opts: Dict[str, object]) -> Tuple[int, bool]:
    if not outs or not ins:
        return 0, False
    out = outs[0].shape
    if op_type == "LceBconv2d" and len(ins) >= 2 and len(ins[1].shape) == 4:
        filt = ins[1]
        cin = int(opts.get("channels_in", 0))
        groups = _bconv_groups(filt, cin)
        opts["groups"] = groups
        o, kh, kw, _ = filt.shape
        return math.prod(out[:-1]) * o * kh * kw * (cin // groups), False
    if op_type == "CONV_2D" and len(ins) >= 2 and len(ins[1].shape) == 4:
        o, kh, kw, cin_g = ins[1].shape
        return math.prod(out[:-1]) * o * kh * kw * cin_g, False
    if op_type == "DEPTHWISE_CONV_2D" and len(ins) >= 2 and len(ins[1].shape) == 4:
        _, kh, kw, _ = ins[1].shape
        return math.prod(out) * kh * kw, False
    if op_type == "FULLY_CONNECTED" and len(ins) >= 2 and len(ins[1].shape) == 2:
        n_out, k = ins[1].shape
        # A weight computed at run time is an activation x activation product (attention).
        return math.prod(out) * k, not ins[1].constant
    if op_type == "BATCH_MATMUL" and len(ins) >= 2 and ins[0].shape:
        adj_x = bool(opts.get("adjX", False))
        k = ins[0].shape[-2] if adj_x else ins[0].shape[-1]
        both_const = ins[0].constant or ins[1].constant
        return math.prod(out) * k, not both_const
    return 0, False


def _precision(op_type: str, ins: Sequence[TensorInfo]) -> str:
    if op_type in _BINARY_OPS:
        return BINARY
    data = [t for t in ins if not t.constant]
    if data and data[0].dtype in _INT8_TYPES:
        return INT8
    return FLOAT


def _float32_bytes(op_type: str, t: TensorInfo, opts: Dict[str, object]) -> int:
    """Bytes of this constant if it were an unpacked float32 tensor."""
    n = math.prod(t.shape) if t.shape else max(1, t.nbytes // max(1, _itemsize(t.dtype)))
    if op_type == "LceBconv2d" and t.dtype == "INT32" and len(t.shape) == 4:
        cin = int(opts.get("channels_in", 0))
        groups = int(opts.get("groups", 1)) or 1
        o, kh, kw, _ = t.shape
        n = o * kh * kw * (cin // groups)
    return 4 * n


def _itemsize(dtype: str) -> int:
    return {"FLOAT32": 4, "INT32": 4, "INT64": 8, "FLOAT16": 2, "INT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1}.get(dtype, 4)


# ---- presentation --------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def format_summary(report: FlatbufferReport) -> str:
    """Operator counts, MACs by precision, binary share and size: the part export prints too."""
    lines = [f"{'operator':<22}{'count':>6}{'MACs':>14}  precision"]
    for r in report.by_type():
        lines.append(f"{r.op_type:<22}{r.count:>6}{r.macs:>14,}  {'/'.join(r.precisions)}")
    mp = report.macs_by_precision(include_attention=False)
    lines.append("")
    lines.append(f"MACs in binary ops         {report.binary_macs:>14,}")
    lines.append(f"MACs in int8 ops           {mp[INT8]:>14,}")
    lines.append(f"MACs in float ops          {mp[FLOAT]:>14,}  (excluding attention)")
    lines.append(f"MACs in attention matmuls  {report.attention_macs:>14,}  (activation x activation, float)")
    lines.append(f"binary MAC share           {report.binary_mac_share:>14.1%}")
    lines.append(f"  excluding attention      {report.binary_mac_share_excluding_attention:>14.1%}")
    ratio = report.float32_equivalent_bytes / report.file_bytes if report.file_bytes else 0.0
    lines.append(
        f"file size                  {human_bytes(report.file_bytes):>14}  "
        f"(float32 equivalent {human_bytes(report.float32_equivalent_bytes)}, {ratio:.1f}x larger)"
    )
    if report.has_grouped_bconv:
        lines.append("note: grouped LceBconv2d: run with the indirect BGEMM kernel (--use_indirect_bgemm=true)")
    if not report.is_lce:
        lines.append("note: no LCE binary ops in this flatbuffer")
    return "\n".join(lines)


def format_layers(report: FlatbufferReport, *, name_width: int = 48) -> str:
    lines = [f"{'#':>4}  {'operator':<18}{'precision':<9}{'MACs':>13}{'weights':>11}  output  name"]
    for op in report.ops:
        shape = "x".join(str(d) for d in op.outputs[0].shape) if op.outputs else "-"
        name = op.name if len(op.name) <= name_width else op.name[: name_width - 3] + "..."
        tag = " [attention]" if op.attention else ""
        lines.append(
            f"{op.index:>4}  {op.op_type:<18}{op.precision:<9}{op.macs:>13,}"
            f"{human_bytes(op.weight_bytes) if op.weight_bytes else '-':>11}  {shape}  {name}{tag}"
        )
    return "\n".join(lines)


def format_report(report: FlatbufferReport) -> str:
    head = f"{report.path or 'flatbuffer'}: {len(report.ops)} operators"
    io = ", ".join(f"{t} {list(s)}" for s, t in zip(report.input_shapes, report.input_types))
    return "\n".join([head, f"input: {io}", "", format_summary(report), "", format_layers(report)])


def plot_macs(report: FlatbufferReport, path: Union[str, Path]) -> Path:
    """Bar chart of MACs by precision for each operator that does arithmetic; written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgebvit.fileio import atomic_write_bytes

    ops = [op for op in report.ops if op.macs]
    colors = {BINARY: "#2b8cbe", INT8: "#7bccc4", FLOAT: "#e34a33"}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(ops) + 2), 4.5))
    xs = range(len(ops))
    for prec in PRECISIONS:
        vals = [op.macs if op.precision == prec else 0 for op in ops]
        if any(vals):
            ax.bar(xs, vals, color=colors[prec], label=prec)
    att = [i for i, op in enumerate(ops) if op.attention]
    if att:
        ax.bar(att, [ops[i].macs for i in att], color="none", edgecolor="black", hatch="//", label="attention")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{op.index}:{op.op_type}" for op in ops], rotation=90, fontsize=6)
    ax.set_ylabel("MACs")
    ax.set_title(f"MACs per operator (binary share {report.binary_mac_share:.1%})")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
