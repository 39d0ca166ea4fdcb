"""Keras/larq model -> LCE flatbuffer, with a report that explains what came out.

Pipeline: load (run directory or model file) -> precheck -> optional QuantDense rewrite ->
``lce.convert_keras_model`` -> write the .tflite atomically -> inspect the flatbuffer ->
parity on held-out images -> write ``<stem>.export.json`` -> raise ParityError if parity fails
(after the report is on disk, so the failure can be read).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgebvit.artifacts import MODEL_FILE, PARITY_FILE, TFLITE_FILE, export_report_name
from edgebvit.errors import DataError, EdgebvitError, ModelError, ParityError

TARGETS = ("arm", "xcore")
IO_TYPES = ("float32", "int8")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    output: Optional[Path] = None  # default: RUN_DIR/model.tflite, or next to the model file
    target: str = "arm"
    input_type: str = "float32"
    output_type: str = "float32"
    experimental_default_int8_range: Optional[Tuple[float, float]] = None
    rewrite: bool = True
    parity_images: int = 500  # 0 skips the parity gate
    parity_data: Optional[Path] = None
    min_agreement: float = 0.99
    locate_divergence: bool = True


@dataclass(frozen=True, kw_only=True)
class Source:
    model_path: Path
    run_dir: Optional[Path]
    parity_data: Optional[Path]
    default_output: Path


@dataclass(kw_only=True)
class ExportReport:
    source: str
    tflite_path: str
    report_path: str
    options: dict
    findings: List[dict] = field(default_factory=list)
    rewrite: dict = field(default_factory=dict)
    inspection: dict = field(default_factory=dict)
    parity: Optional[dict] = None
    divergence: Optional[dict] = None
    status: str = "ok"  # ok | parity_failed | parity_skipped
    convert_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- inputs --------------------------------------------------------------------------------

def resolve_source(path) -> Source:
    """A run directory (has model.keras) or a Keras model file / SavedModel directory."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or directory")
    if p.is_dir() and (p / MODEL_FILE).is_file():
        npz = p / PARITY_FILE
        return Source(model_path=p / MODEL_FILE, run_dir=p, parity_data=npz if npz.exists() else None,
                      default_output=p / TFLITE_FILE)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return Source(model_path=p, run_dir=None, parity_data=None, default_output=p.parent / f"{p.name}.tflite")
        raise ModelError(f"{p}: not a run directory (no {MODEL_FILE}) nor a SavedModel (no saved_model.pb)")
    if p.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{p}: expected a run directory, a .keras/.h5 file or a SavedModel directory")
    return Source(model_path=p, run_dir=None, parity_data=None, default_output=p.with_suffix(".tflite"))


def load_keras_model(path: Path):
    import tensorflow as tf

    import larq  # noqa: F401  (registers larq's layers and quantizers for deserialisation)

    try:
        import edgebvit.models  # noqa: F401  (registers edgebvit's custom layers)
    except ImportError:
        pass  # a plain larq model still loads; an edgebvit one fails below with Keras's reason
    try:
        model = tf.keras.models.load_model(str(path), compile=False)
    except Exception as err:  # Keras raises many types for a bad file
        raise ModelError(f"{path}: cannot load a Keras model ({_first_line(err)})") from None
    if not isinstance(model, tf.keras.Model):
        raise ModelError(f"{path}: not a Keras model (loaded a {type(model).__name__})")
    return model


def load_parity_data(path: Path, n: int, input_shape) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    try:
        with np.load(path) as data:
            if "x" not in data:
                raise DataError(f"{path}: no array 'x' (expected x: images, y: labels)")
            x = np.asarray(data["x"][:n], dtype=np.float32)
            y = np.asarray(data["y"][:n]) if "y" in data else None
    except EdgebvitError:
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot read parity images ({_first_line(err)})") from None
    want = tuple(int(d) for d in input_shape[1:] if d is not None)
    if len(x) == 0 or tuple(x.shape[1:]) != want:
        raise DataError(f"{path}: images have shape {tuple(x.shape[1:])}, the model wants {want}")
    return x, y


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else type(err).__name__
    return msg[:300]


# ---- conversion ----------------------------------------------------------------------------

def convert(model, options: ExportOptions) -> bytes:
    import larq_compute_engine as lce
    import tensorflow as tf

    if options.target not in TARGETS:
        raise ModelError(f"unknown target {options.target!r} (choose from {', '.join(TARGETS)})")
    types = {"float32": tf.float32, "int8": tf.int8}
    try:
        return lce.convert_keras_model(
            model,
            inference_input_type=types[options.input_type],
            inference_output_type=types[options.output_type],
            target=options.target,
            experimental_default_int8_range=options.experimental_default_int8_range,
        )
    except EdgebvitError:
        raise
    except Exception as err:
        raise ModelError(f"LCE converter failed: {_first_line(err)}") from None


def export(path, options: ExportOptions = ExportOptions()) -> ExportReport:
    """Convert MODEL (run dir or model file) and write the flatbuffer and its JSON report."""
    from edgebvit.converters.inspect import inspect_flatbuffer
    from edgebvit.converters.parity import check_parity, disagreeing_samples, locate_divergence
    from edgebvit.converters.precheck import precheck
    from edgebvit.converters.rewrites import rewrite_quant_dense
    from edgebvit.fileio import atomic_write_bytes, atomic_write_json

    for name, value in (("input type", options.input_type), ("output type", options.output_type)):
        if value not in IO_TYPES:
            raise ModelError(f"unknown {name} {value!r} (choose from {', '.join(IO_TYPES)})")
    src = resolve_source(path)
    out = Path(options.output) if options.output else src.default_output
    if out.suffix != ".tflite":
        raise ModelError(f"{out}: the output file must end in .tflite")
    report_path = out.with_name(export_report_name(out.stem))

    # Parity inputs are resolved before the slow conversion so bad data fails fast.
    parity_file = Path(options.parity_data) if options.parity_data else src.parity_data
    if options.parity_data and not parity_file.exists():
        raise DataError(f"{parity_file}: no such file")
    if src.run_dir is not None and options.parity_images > 0 and parity_file is None:
        raise DataError(f"{src.run_dir}: no {PARITY_FILE} (pass --parity-data NPZ, or --parity-images 0 to skip parity)")

    model = load_keras_model(src.model_path)
    x = y = None
    synthetic = False
    if options.parity_images > 0:
        if parity_file is not None:
            x, y = load_parity_data(parity_file, options.parity_images, model.input_shape)
        else:
            # A bare model file without --parity-data: random inputs still catch conversion bugs,
            # but they are labelled synthetic in the report.
            synthetic = True
            shape = [options.parity_images] + [int(d) for d in model.input_shape[1:]]
            x = np.random.default_rng(0).normal(size=shape).astype(np.float32)

    findings = precheck(model, target=options.target)
    rewrite_info = {"enabled": options.rewrite, "rewritten": [], "skipped": []}
    if options.rewrite:
        rw = rewrite_quant_dense(model)
        rewrite_info.update(rewritten=list(rw.rewritten), skipped=list(rw.skipped), max_abs_diff=rw.max_abs_diff)
        if rw.changed:
            model = rw.model
            findings = precheck(model, target=options.target)

    t0 = time.perf_counter()
    flatbuffer = convert(model, options)
    convert_seconds = time.perf_counter() - t0
    atomic_write_bytes(out, flatbuffer)
    inspection = inspect_flatbuffer(flatbuffer)

    report = ExportReport(
        source=str(path),
        tflite_path=str(out),
        report_path=str(report_path),
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        findings=[asdict(f) for f in findings],
        rewrite=rewrite_info,
        inspection=_inspection_dict(inspection, out),
        convert_seconds=convert_seconds,
    )
    failure = None
    if x is None:
        report.status = "parity_skipped"
    else:
        parity = check_parity(model, flatbuffer, x, y, synthetic=synthetic)
        report.parity = parity.to_dict()
        if parity.top1_agreement < options.min_agreement:
            report.status = "parity_failed"
            failure = f"parity failed: top-1 agreement {parity.top1_agreement:.2%} < {options.min_agreement:.2%}"
            if options.locate_divergence:
                bad = disagreeing_samples(model, flatbuffer, x)
                div = locate_divergence(model, bad, lambda m: convert(m, options))
                if div is not None:
                    report.divergence = div.to_dict()
                    failure += f"; first diverging layer: {div.layer} ({div.layer_class})"
            failure += f" (report: {report_path})"
    atomic_write_json(report_path, report.to_dict())
    if failure:
        err = ParityError(failure)
        err.report = report  # the CLI prints the full report before the one-line error
        raise err
    return report


def _inspection_dict(inspection, out: Path) -> dict:
    d = inspection.to_dict()
    d["path"] = str(out)
    return d


# ---- presentation --------------------------------------------------------------------------

def format_export_report(report: ExportReport) -> str:
    from edgebvit.converters.inspect import format_summary
    from edgebvit.formatting import human_bytes

    ins = report.inspection
    lines = [f"exported {report.source} -> {report.tflite_path} ({human_bytes(ins['file_bytes'])}, "
             f"converted in {report.convert_seconds:.1f} s)"]
    rw = report.rewrite
    if rw.get("rewritten"):
        lines.append(f"rewrite: {len(rw['rewritten'])} QuantDense -> 1x1 QuantConv2D ({', '.join(rw['rewritten'])})")
    for s in rw.get("skipped", []):
        lines.append(f"rewrite skipped: {s}")
    warnings = [f for f in report.findings if f["severity"] == "warning"]
    infos = [f for f in report.findings if f["severity"] != "warning"]
    lines.append("")
    lines.append(f"precheck: {len(warnings)} warning(s), {len(infos)} note(s)")
    for f in report.findings:
        lines.append(f"  {f['severity']}: {f['layer']} ({f['layer_class']}): {f['message']}")
    lines.append("")
    lines.append(format_summary(ins))
    lines.append("")
    p = report.parity
    if p is None:
        lines.append("parity: skipped")
    else:
        kind = "synthetic random inputs (no --parity-data)" if p["synthetic_inputs"] else "held-out images"
        lines.append(f"parity on {p['samples']} {kind}: top-1 agreement {p['top1_agreement']:.2%}, "
                     f"max |diff| {p['max_abs_diff']:.3g}, mean |diff| {p['mean_abs_diff']:.3g}")
        if p.get("keras_top1") is not None:
            lines.append(f"  top-1 accuracy: Keras {p['keras_top1']:.2%}, LCE {p['lce_top1']:.2%}")
        if p.get("indirect_bgemm"):
            lines.append("  (ran with the indirect BGEMM kernel: the model has grouped binary convs)")
    d = report.divergence
    if d:
        lines.append(f"  first diverging layer: {d['layer']} ({d['layer_class']}), relative diff {d['relative_diff']:.3g}, "
                     f"after {d['previous_layer'] or 'the input'} ({d['probes']} sub-models converted)")
        if d.get("note"):
            lines.append(f"  {d['note']}")
    lines.append(f"report: {report.report_path}")
    return "\n".join(lines)
