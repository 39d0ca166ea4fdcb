"""The export report as text: what `edgebvit export` prints (the JSON is `ExportReport.to_dict`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from edgebvit.converters.export import ExportReport

def _integer_lines(info: dict) -> List[str]:
    if not info or info.get("mode") in (None, "none"):
        note = info.get("note") if info else None
        lines = [f"integer: none ({note})"] if note else ["integer: none (float outside the binary convs)"]
        refused = (info or {}).get("refused")
        if refused:
            lines.append(f"  refused --integer {refused['mode']}: {refused['reason']}")
        return lines
    parts = ", ".join(f"{n} {k}" for k, n in sorted(info.get("replaced", {}).items()))
    lines = [f"integer: {info['mode']} ({parts or info.get('note') or 'nothing to rewrite'})"]
    lean = info.get("lean")
    if lean and (lean.get("moved_shifts") or lean.get("fused_pool_groups")):
        lines.append(f"  lean graph: {lean['moved_shifts']} shift(s) moved into neighbouring biases, "
                     f"{lean['fused_pool_groups']} pooling-branch group(s) as depthwise convs")
    cal = info.get("calibration")
    if cal:
        lines.append(f"  calibrated {cal['calibrated_tensors']} tensor ranges on {cal['images']} images from {cal['path']}")
    dead = info.get("dead_attention") or []
    if dead:
        lines.append(f"  warning: {len(dead)} attention core(s) have a probability scale alpha <= 0 and output only "
                     f"zeros (BiT's binarizer cannot recover once alpha is negative): {', '.join(dead)}")
    return lines


def _latency_lines(estimates: List[dict]) -> List[str]:
    out = []
    for e in estimates:
        parts = e["parts_ms"]
        out.append(f"estimated latency, {e['device']}, {e['threads']} thread: {e['total_ms']:.1f} ms "
                   f"(range {e['range_ms'][0]:.1f}-{e['range_ms'][1]:.1f}; binary {parts['binary']:.1f}, attention "
                   f"{parts['attention']:.1f}, other {parts['other']:.1f}; leave-one-out error median "
                   f"{e['loo_median_error']:.0%}, max {e['loo_max_error']:.0%})")
    if out:
        out.append("  estimates from published Larq Zoo latencies, not measurements (edgebvit bench measures)")
    return out


def format_export_report(report: ExportReport) -> str:
    from edgebvit.converters.inspect import format_summary
    from edgebvit.converters.precheck import not_checked
    from edgebvit.formatting import human_bytes

    ins = report.inspection
    lines = [f"exported {report.source} -> {report.tflite_path} ({human_bytes(ins['file_bytes'])}, "
             f"converted in {report.convert_seconds:.1f} s)"]
    if report.tflite_sha256:
        lines.append(f"sha256 {report.tflite_sha256} (source {report.source_sha256[:16]}...)")
    rw = report.rewrite
    if rw.get("rewritten"):
        lines.append(f"rewrite: {len(rw['rewritten'])} QuantDense -> 1x1 QuantConv2D ({', '.join(rw['rewritten'])})")
    for s in rw.get("skipped", []):
        lines.append(f"rewrite skipped: {s}")
    lines.extend(_integer_lines(report.integer))
    lines.append("")
    why = not_checked(report.findings)
    if why:
        lines.append(f"precheck: not applicable ({why})")
    else:
        warnings = [f for f in report.findings if f["severity"] == "warning"]
        infos = [f for f in report.findings if f["severity"] != "warning"]
        lines.append(f"precheck: {len(warnings)} warning(s), {len(infos)} note(s)")
        for f in report.findings:
            lines.append(f"  {f['severity']}: {f['layer']} ({f['layer_class']}): {f['message']}")
    lines.append("")
    lines.append(format_summary(ins))
    lines.extend(_latency_lines(report.latency_estimates))
    lines.append("")
    p = report.parity
    if p is None:
        lines.append("parity: skipped")
    else:
        kind = "synthetic random inputs (no --parity-data)" if p["synthetic_inputs"] else "held-out images"
        lines.append(f"parity on {p['samples']} {kind}: top-1 agreement {p['top1_agreement']:.2%}, "
                     f"max |diff| {p['max_abs_diff']:.3g}, mean |diff| {p['mean_abs_diff']:.3g}")
        if p.get("disagreements"):
            real = p["disagreements"] - p.get("ties", 0)
            lines.append(f"  {p['disagreements']} top-1 disagreement(s): {p.get('ties', 0)} tie(s) (Keras top-1 margin "
                         f"<= {p.get('tie_tolerance', 0.0):.3g}, not counted), {real} counted; "
                         f"agreement excluding ties {p.get('agreement_excluding_ties', p['top1_agreement']):.2%}")
        if p.get("keras_top1") is not None:
            lines.append(f"  top-1 accuracy: Keras {p['keras_top1']:.2%}, LCE {p['lce_top1']:.2%}")
        if p.get("indirect_bgemm"):
            lines.append("  (ran with the indirect BGEMM kernel: the model has grouped binary convs)")
        if p.get("degenerate"):
            lines.append(f"  relative logit error {p['relative_error']:.3g} (the gate for degenerate outputs)")
        for w in p.get("warnings", []):
            lines.append(f"  warning: {w}")
        if p.get("cap"):
            lines.append(f"  note: {p['cap']}")
    d = report.divergence
    if d:
        lines.append(f"  first diverging layer: {d['layer']} ({d['layer_class']}), relative diff {d['relative_diff']:.3g}, "
                     f"after {d['previous_layer'] or 'the input'} ({d['probes']} sub-models converted)")
        if d.get("note"):
            lines.append(f"  {d['note']}")
    lines.append(f"report: {report.report_path}")
    return "\n".join(lines)
