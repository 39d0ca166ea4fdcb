"""Output of bench records: a table for the terminal, the JSON report of a run, a PNG chart for comparisons.

Every artifact names the sha256 of the flatbuffer(s) it describes: the report in `model_sha256`,
the chart in its bar labels (short) and its PNG text metadata (full), the table in its footer.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import edgebvit
from edgebvit import fileio
from edgebvit.bench.paths import writing
from edgebvit.bench.records import HOST_X86_NOTE, BenchRecord

REPORT_SCHEMA = "edgebvit.bench.report/1"


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(records: Sequence[BenchRecord]) -> str:
    """One row per record; an x86 host's rows carry the reference-kernel label above the table."""
    header = ["model", "device", "runner", "arch", "thr", "xnn", "ibgemm", "mean ms", "median", "p90", "min", "runs"]
    rows = []
    for r in records:
        rows.append([Path(r.model_path).name, r.device, r.runner, r.facts.architecture, str(r.threads),
                     "on" if r.xnnpack else "off", "on" if r.indirect_bgemm else "off", _f(r.latency.mean_ms),
                     _f(r.latency.median_ms), _f(r.latency.p90_ms), _f(r.latency.min_ms), str(r.latency.count)])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = []
    if any(HOST_X86_NOTE in r.kernel_notes for r in records):
        lines.append(f"NOTE: {HOST_X86_NOTE}")
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    splits = [r for r in records if r.op_split is not None]
    if splits:
        lines.append("")
        lines.append("op time split per run (ms): binary | float attention | other float | XNNPACK delegate (unsplit)")
        for r in splits:
            s = r.op_split
            lines.append(f"  t{r.threads} xnn={'on' if r.xnnpack else 'off'} {Path(r.model_path).name} @ {r.device}: "
                         f"{s.binary_ms:.3f} | {s.float_attention_ms:.3f} | {s.other_float_ms:.3f} | {s.delegate_ms:.3f}")
    facts = {(r.device, r.facts.architecture, r.facts.cpu_model, r.facts.os_bits, r.tool_version) for r in records}
    lines.append("")
    for device, arch, cpu, bits, tool in sorted(facts, key=str):
        lines.append(f"{device}: {arch}, {cpu}, {bits if bits else '?'}-bit, {tool}")
    for name, sha in models_of(records):
        lines.append(f"{name}: sha256 {sha}")
    return "\n".join(lines)


def models_of(records: Sequence[BenchRecord]) -> list:
    """(file name, sha256) of each distinct flatbuffer the records describe, in first-seen order."""
    seen = {}
    for r in records:
        seen.setdefault((Path(r.model_path).name, r.model_sha256), None)
    return list(seen)


def write_report(path: Path, model_path: Path, records: Sequence[BenchRecord]) -> Path:
    """The JSON report of one run: the flatbuffer (path, sha256, bytes) and its records; atomic."""
    if len({r.model_sha256 for r in records}) != 1:
        raise ValueError("a bench report describes the records of one flatbuffer")  # a caller's bug
    report = {"schema": REPORT_SCHEMA, "model": str(model_path), "model_sha256": records[0].model_sha256,
              "model_bytes": records[0].model_bytes,
              "edgebvit_version": edgebvit.__version__,
              "records": [r.to_dict() for r in records]}
    with writing(path, "bench report"):
        return fileio.atomic_write_json(path, report)


def write_chart(records: Sequence[BenchRecord], path: Path) -> Path:
    """Horizontal bars of mean latency (whiskers min..max) and, when profiled, the op-class split."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI or over ssh
    import matplotlib.pyplot as plt

    labels = [f"{r.label} [sha256 {r.model_sha256[:12]}]" for r in records]
    means = [r.latency.mean_ms for r in records]
    # max(0, ...): a mean rounded a hair below the minimum must not become a negative whisker.
    lo = [max(0.0, r.latency.mean_ms - (r.latency.min_ms if r.latency.min_ms is not None else r.latency.mean_ms))
          for r in records]
    hi = [max(0.0, (r.latency.max_ms if r.latency.max_ms is not None else r.latency.mean_ms) - r.latency.mean_ms)
          for r in records]
    has_split = any(r.op_split is not None for r in records)
    fig_h = 1.2 + 0.45 * len(records)
    fig, axes = plt.subplots(1, 2 if has_split else 1, figsize=(14 if has_split else 10, fig_h), squeeze=False)
    ax = axes[0][0]
    y = list(range(len(records)))
    colors = ["tab:gray" if HOST_X86_NOTE in r.kernel_notes else "tab:blue" for r in records]
    ax.barh(y, means, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("latency per inference (ms): mean, whiskers min..max")
    title = "edgebvit bench"
    if any(HOST_X86_NOTE in r.kernel_notes for r in records):
        title += f" (grey: {HOST_X86_NOTE})"
    ax.set_title(title, fontsize=9)
    if has_split:
        ax2 = axes[0][1]
        parts = [("binary ops", "binary_ms", "tab:green"), ("float attention", "float_attention_ms", "tab:red"),
                 ("other float", "other_float_ms", "tab:orange"), ("XNNPACK (unsplit)", "delegate_ms", "tab:purple")]
        left = [0.0] * len(records)
        for name, attr, color in parts:
            vals = [getattr(r.op_split, attr) if r.op_split is not None else 0.0 for r in records]
            ax2.barh(y, vals, left=left, color=color, label=name)
            left = [a + b for a, b in zip(left, vals)]
        ax2.set_yticks(y)
        ax2.set_yticklabels([""] * len(records))
        ax2.invert_yaxis()
        ax2.set_xlabel("op time per run (ms), from --profile")
        ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata=chart_metadata(records))
    plt.close(fig)
    with writing(path, "chart"):
        return fileio.atomic_write_bytes(path, buf.getvalue())


def chart_metadata(records: Sequence[BenchRecord]) -> dict:
    """PNG text chunks naming what the chart shows: each flatbuffer's file name and full sha256."""
    models = models_of(records)
    return {"Title": "edgebvit bench",
            "Description": "mean latency per configuration of: " + ", ".join(f"{n} (sha256 {s})" for n, s in models),
            "Software": f"edgebvit {edgebvit.__version__}",
            "edgebvit.model_sha256": " ".join(s for _, s in models)}
