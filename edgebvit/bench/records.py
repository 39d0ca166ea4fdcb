"""Benchmark records: one typed JSON object per measured configuration, appended to a JSONL file."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from edgebvit.bench.paths import RESULTS_FILE, writing
from edgebvit.errors import EdgebvitError
from edgebvit.flatbuffer import LCE_OPS

RECORD_SCHEMA = "edgebvit.bench/1"
HOST_X86_NOTE = "host reference kernels (x86-64): not ARM64 speed"

# Op classes for the time split: LCE's custom ops are the binary work (docs/lce.md, Lowering table).
BINARY_OPS = frozenset(LCE_OPS)
# The attention matmuls and softmax have no binary op in LCE; ops computing the attention
# probabilities are recognised by type (SOFTMAX, BATCH_MATMUL) or, for the float ops the converter
# unrolls them into (FULLY_CONNECTED per head, MUL, EXP, ...), by a node name inside an
# attention layer.
ATTENTION_TYPES = frozenset({"BATCH_MATMUL", "SOFTMAX"})
ATTENTION_NAME = re.compile(r"attn|attention", re.IGNORECASE)
DELEGATE_TYPES = frozenset({"TfLiteXNNPackDelegate", "DELEGATE"})


@dataclass(frozen=True, kw_only=True)
class DeviceFacts:
    architecture: str
    cpu_model: str
    os: str
    os_bits: Optional[int]
    cpu_count: Optional[int] = None
    hostname: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    """Per-inference latency in milliseconds over the timed runs (None: the tool did not report it)."""

    count: int
    mean_ms: float
    min_ms: Optional[float] = None
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    max_ms: Optional[float] = None
    std_ms: Optional[float] = None
    first_ms: Optional[float] = None

    @classmethod
    def from_samples_us(cls, samples_us: Sequence[float], first_us: Optional[float] = None) -> "LatencyStats":
        ms = sorted(float(v) / 1000.0 for v in samples_us)
        if not ms:
            raise EdgebvitError("no timed runs to summarise (use --runs 1 or more)")
        n = len(ms)
        mean = sum(ms) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in ms) / n)
        return cls(count=n, mean_ms=mean, min_ms=ms[0], median_ms=_quantile(ms, 0.5), p90_ms=_quantile(ms, 0.9),
                   max_ms=ms[-1], std_ms=std, first_ms=None if first_us is None else first_us / 1000.0)


def _quantile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method) of an already sorted sequence."""
    pos = (len(sorted_vals) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


@dataclass(frozen=True, kw_only=True)
class OpSplit:
    """Time per run (ms) split by op class, from lce_benchmark_model's op profiling."""

    binary_ms: float
    float_attention_ms: float
    other_float_ms: float
    delegate_ms: float = 0.0  # XNNPACK lumps float ops into one node; rerun with --xnnpack off to split
    by_type_ms: dict = field(default_factory=dict)
    source_table: str = ""

    @property
    def total_ms(self) -> float:
        return self.binary_ms + self.float_attention_ms + self.other_float_ms + self.delegate_ms


def classify_op(node_type: str, name: str = "") -> str:
    if node_type in BINARY_OPS:
        return "binary"
    if node_type in DELEGATE_TYPES or "Delegate" in node_type:
        return "delegate"
    if node_type in ATTENTION_TYPES or (name and ATTENTION_NAME.search(name)):
        return "attention"
    return "other"


def split_ops(profile) -> Optional[OpSplit]:
    """Split a parsed ProfileTables into binary / float attention / other float time per run."""
    if profile is None:
        return None
    sums = {"binary": 0.0, "attention": 0.0, "other": 0.0, "delegate": 0.0}
    by_type: dict = {}
    if profile.run_order:
        # Per-node rows carry names, so attention ops that are not BATCH_MATMUL/SOFTMAX are found.
        for row in profile.run_order:
            t = row.per_run_ms
            sums[classify_op(row.node_type, row.name)] += t
            by_type[row.node_type] = by_type.get(row.node_type, 0.0) + t
        source = "Run Order"
    elif profile.by_node_type:
        for row in profile.by_node_type:
            sums[classify_op(row.node_type)] += row.avg_ms
            by_type[row.node_type] = by_type.get(row.node_type, 0.0) + row.avg_ms
        source = "Summary by node type"
    else:
        return None
    return OpSplit(binary_ms=sums["binary"], float_attention_ms=sums["attention"], other_float_ms=sums["other"],
                   delegate_ms=sums["delegate"], by_type_ms=dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
                   source_table=source)


@dataclass(frozen=True, kw_only=True)
class BenchRecord:
    """One measured configuration of one model on one device."""

    model_path: str
    model_sha256: str
    model_bytes: int
    device: str  # "local", "ssh://user@host:port", "adb:serial"
    runner: str  # "local-interpreter", "python", "lce_benchmark_model"
    threads: int
    xnnpack: bool
    indirect_bgemm: bool
    warmup: int
    runs: int
    latency: LatencyStats
    facts: DeviceFacts
    tool: str
    tool_version: str
    edgebvit_version: str
    timestamp: str
    kernel_notes: list = field(default_factory=list)
    init_ms: Optional[float] = None
    memory_mb: Optional[dict] = None
    op_split: Optional[OpSplit] = None
    taskset: Optional[str] = None
    grouped_binary_convs: int = 0
    schema: str = RECORD_SCHEMA

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str = "bench record") -> "BenchRecord":
        """A record from its JSON form, every field type-checked; EdgebvitError (one line, starting
        with `where`, naming the field) for anything that is not a record this version wrote."""
        if not isinstance(d, dict):
            raise EdgebvitError(f"{where}: not an edgebvit bench record ({_describe(d)}, not a JSON object); "
                                "fix or delete this record")
        if d.get("schema") != RECORD_SCHEMA:
            raise EdgebvitError(f"{where}: not an edgebvit bench record (schema {d.get('schema')!r}, want "
                                f"{RECORD_SCHEMA!r}); fix or delete this record")
        return _build(cls, d, where, "")

    @property
    def label(self) -> str:
        return (f"{Path(self.model_path).name} @ {self.device} [{self.runner}] "
                f"t{self.threads} xnn={'on' if self.xnnpack else 'off'} ibgemm={'on' if self.indirect_bgemm else 'off'}")


# ---- validation on load: a record read back is as typed as one just measured -----------------
_AT_LEAST_ONE = frozenset({"threads", "latency.count"})
_STR_LISTS = frozenset({"kernel_notes"})


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _describe(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, list):
        return "a JSON array"
    if isinstance(v, dict):
        return "a JSON object"
    return type(v).__name__


_WANT = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a JSON array",
         dict: "a JSON object"}


def _bad(where: str, name: str, want: str, v: object) -> EdgebvitError:
    return EdgebvitError(f"{where}: field {name!r} must be {want}, not {_describe(v)}; fix or delete this record")


def _value(tp, v: object, where: str, name: str) -> object:
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if v is None:
            return None
        tp = args[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise _bad(where, name, "a JSON object", v)
        return _build(tp, v, where, name + ".")
    want = _WANT.get(tp, getattr(tp, "__name__", str(tp)))
    if tp is bool:
        ok = isinstance(v, bool)
    elif tp is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif tp is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        want = "a finite number"
        v = float(v) if ok else v
    else:
        ok = isinstance(v, tp)
    if not ok:
        raise _bad(where, name, want, v)
    if tp in (int, float):
        low = 1 if name in _AT_LEAST_ONE else 0
        if v < low:
            raise _bad(where, name, "at least 1" if low else "zero or more", v)
    if name in _STR_LISTS and not all(isinstance(item, str) for item in v):
        raise _bad(where, name, "a list of strings", next(item for item in v if not isinstance(item, str)))
    return v


def _build(cls, d: dict, where: str, prefix: str):
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise EdgebvitError(f"{where}: missing field {name!r}; fix or delete this record")
            continue
        kwargs[f.name] = _value(hints[f.name], d[f.name], where, name)
    return cls(**kwargs)  # unknown keys are ignored: a later edgebvit may add fields


def check_results_file(path: Path) -> None:
    """Refuse to append to a file that is not a bench results file (a model, a report, notes...).

    Looks at the first line only: it must be a bench record, or the torn start of one (the
    only line of a file whose first append was killed).
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise EdgebvitError(f"--results {path}: cannot read it ({err.strerror}); choose another --results "
                            "path") from None
    if not head.strip():
        return
    first, newline, _ = head.lstrip(b"\n").partition(b"\n")
    problem = None
    if b"\0" in head:
        problem = "it holds binary data"
    else:
        try:
            d = json.loads(first.decode("utf-8"))
        except ValueError:
            if newline or not first.startswith(b'{"'):
                problem = "its first line is not a JSON record"
        else:
            if not isinstance(d, dict) or d.get("schema") != RECORD_SCHEMA:
                problem = f"its first line is not an {RECORD_SCHEMA} record"
    if problem:
        raise EdgebvitError(f"--results {path} is not a bench results file ({problem}): refusing to append to it; "
                            f"choose another --results path, e.g. {path.with_name(RESULTS_FILE)}")



def append_records(path: Path, records: Iterable[BenchRecord]) -> Path:
    """Append records as JSON lines: one write per record under an exclusive lock.

    O_APPEND plus flock keeps lines whole when two benchmarks append to the same file at once;
    a crash can at worst leave one partial last line, which load_records reports by line number.
    Refuses a file that is not a results file (check_results_file); any OSError (permissions,
    read-only or full disk) is one EdgebvitError line naming the file.
    """
    path = Path(path)
    data = b"".join((json.dumps(r.to_dict(), sort_keys=True) + "\n").encode("utf-8") for r in records)
    with writing(path, "bench results"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                check_results_file(path)  # under the lock: what we append to is what we checked
                # A previous writer killed mid-line would glue our first record onto its fragment.
                size = os.fstat(fd).st_size
                if size:
                    with open(path, "rb") as f:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            data = b"\n" + data
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return path


def load_records(paths: Sequence[Path]) -> list:
    """Read records from JSONL results files (or .bench.json reports holding {"records": [...]}).

    Every record is validated (records.BenchRecord.from_dict); a bad one is a one-line
    EdgebvitError naming the file, the line (or record number) and the field.
    """
    records = []
    for p in paths:
        p = Path(p)
        for where, d in _read_items(p):
            records.append(BenchRecord.from_dict(d, where))
    if not records:
        raise EdgebvitError("no bench records in " + ", ".join(str(p) for p in paths))
    return records


def _read_items(p: Path) -> list:
    """(where, decoded JSON) for each record in a results file or a bench report."""
    if p.is_dir():
        hint = p / RESULTS_FILE
        raise EdgebvitError(f"{p} is a directory; did you mean {hint}?" if hint.is_file() else
                            f"{p} is a directory, not a results file (.jsonl or .bench.json)")
    if not p.is_file():
        raise EdgebvitError(f"results file not found: {p}")
    if p.suffix.lower() == ".tflite":
        raise EdgebvitError(f"{p} is a flatbuffer, not a results file: drop --compare to benchmark it")
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise EdgebvitError(f"{p}: cannot read ({err.strerror})") from None
    whole_err = None
    if p.suffix.lower() != ".jsonl" and text.lstrip().startswith("{"):
        try:
            whole = json.loads(text)
        except ValueError as err:  # JSON lines, or a broken report
            whole, whole_err = None, err
        if isinstance(whole, dict) and "records" in whole:
            recs = whole["records"]
            if not isinstance(recs, list):
                raise EdgebvitError(f"{p}: 'records' must be a JSON array of bench records, not {_describe(recs)}")
            return [(f"{p}: record {i}", d) for i, d in enumerate(recs, 1)]
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append((f"{p}:{lineno}", json.loads(line)))
        except ValueError as err:
            if lineno == 1 and whole_err is not None and p.suffix.lower() == ".json" and line.strip() == "{":
                # A pretty-printed report, not JSON lines: say where the document breaks.
                msg, at = getattr(whole_err, "msg", whole_err), getattr(whole_err, "lineno", "?")
                raise EdgebvitError(f"{p}: not valid JSON ({msg} at line {at}): a truncated or edited bench "
                                    "report?") from None
            raise EdgebvitError(f"{p}:{lineno}: not a JSON record (truncated line?): {getattr(err, 'msg', err)}; "
                                "fix or delete this line") from None
    return items
