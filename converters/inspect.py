"""What a TFLite / LCE flatbuffer contains, as a report people read.

The reading is `edgebvit.flatbuffer` (one reader for export, inspect and bench); this module is
the presentation: the summary table that `edgebvit inspect` and `edgebvit export` both print
(`format_summary`, from a report or from its JSON form), the per-operator listing and the MAC chart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Union

from edgebvit.flatbuffer import (BINARY, FLOAT, INT8, PRECISIONS, FlatbufferReport, OpInfo, TensorInfo,
                                 read_flatbuffer)
from edgebvit.formatting import human_bytes, human_count

__all__ = ["BINARY", "FLOAT", "INT8", "PRECISIONS", "FlatbufferReport", "OpInfo", "TensorInfo", "format_layers",
           "format_report", "format_summary", "human_bytes", "human_count", "inspect_flatbuffer", "plot_macs"]


def inspect_flatbuffer(source: Union[str, Path, bytes]) -> FlatbufferReport:
    """Parse a .tflite file (path or bytes) into a FlatbufferReport; FlatbufferError if it is not one."""
    return read_flatbuffer(source)


def format_summary(report: Union[FlatbufferReport, Mapping]) -> str:
    """Operator counts, MACs by precision, binary share and size: what export and inspect print.

    Takes a FlatbufferReport or its `to_dict()` form (the `inspection` of an export report).
    """
    ins = report.to_dict() if isinstance(report, FlatbufferReport) else report
    lines = [f"{'operator':<22}{'count':>6}{'MACs':>14}  precision"]
    for r in ins["by_type"]:
        lines.append(f"{r['op_type']:<22}{r['count']:>6}{r['macs']:>14,}  {'/'.join(r['precisions'])}")
    m = ins["macs"]
    by_prec = m["by_precision_excluding_attention"]
    attention_int8 = m["by_precision"][INT8] - by_prec[INT8]
    lines.append("")
    lines.append(f"MACs in binary ops         {by_prec[BINARY]:>14,}")
    lines.append(f"MACs in int8 ops           {by_prec[INT8]:>14,}  (excluding attention)")
    lines.append(f"MACs in float ops          {by_prec[FLOAT]:>14,}  (excluding attention)")
    lines.append(f"MACs in attention matmuls  {m['attention']:>14,}  (activation x activation; "
                 f"{attention_int8 / m['attention'] if m['attention'] else 0.0:.0%} in int8)")
    per_block = ins.get("ops_per_block") or {}
    blocks = [(k, v) for k, v in per_block.items() if k != "other"]
    if blocks:
        counts = sorted({v for _, v in blocks})
        span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        lines.append(f"operators                  {sum(per_block.values()):>14,}  ({len(blocks)} blocks of {span}, "
                     f"{per_block.get('other', 0)} outside blocks)")
    lines.append(f"binary MAC share           {m['binary_share']:>14.1%}")
    lines.append(f"  excluding attention      {m['binary_share_excluding_attention']:>14.1%}")
    f32 = ins["float32_equivalent_bytes"]
    ratio = f32 / ins["file_bytes"] if ins["file_bytes"] else 0.0
    lines.append(f"file size                  {human_bytes(ins['file_bytes']):>14}  "
                 f"(float32 equivalent {human_bytes(f32)}, {ratio:.1f}x larger)")
    if ins.get("has_grouped_bconv"):
        lines.append("note: grouped LceBconv2d: run with the indirect BGEMM kernel (--use_indirect_bgemm=true)")
    if not any(r["op_type"].startswith("Lce") for r in ins["by_type"]):
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
