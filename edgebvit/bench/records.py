"""Benchmark records: one typed JSON object per measured configuration, appended to a JSONL file."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

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
    def from_dict(cls, d: dict) -> "BenchRecord":
        d = dict(d)
        if d.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"schema {d.get('schema')!r} is not {RECORD_SCHEMA!r}")
        d["latency"] = LatencyStats(**d["latency"])
        d["facts"] = DeviceFacts(**d["facts"])
        if d.get("op_split") is not None:
            d["op_split"] = OpSplit(**d["op_split"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def label(self) -> str:
        return (f"{Path(self.model_path).name} @ {self.device} [{self.runner}] "
                f"t{self.threads} xnn={'on' if self.xnnpack else 'off'} ibgemm={'on' if self.indirect_bgemm else 'off'}")


def append_records(path: Path, records: Iterable[BenchRecord]) -> Path:
    """Append records as JSON lines: one write per record under an exclusive lock.

    O_APPEND plus flock keeps lines whole when two benchmarks append to the same file at once;
    a crash can at worst leave one partial last line, which load_records reports by line number.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join((json.dumps(r.to_dict(), sort_keys=True) + "\n").encode("utf-8") for r in records)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
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
    """Read records from JSONL results files (or .bench.json files holding {"records": [...]})."""
    records = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise EdgebvitError(f"results file not found: {p}")
        text = p.read_text(encoding="utf-8", errors="replace")
        stripped = text.lstrip()
        if stripped.startswith("{") and '"records"' in stripped[:200] and not p.suffix == ".jsonl":
            try:
                items = [(i + 1, d) for i, d in enumerate(json.loads(text)["records"])]
            except (ValueError, KeyError, TypeError) as err:
                raise EdgebvitError(f"{p}: not a bench JSON file ({err})") from None
        else:
            items = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    items.append((lineno, json.loads(line)))
                except ValueError:
                    raise EdgebvitError(f"{p}:{lineno}: not a JSON record (truncated line?)") from None
        for lineno, d in items:
            try:
                records.append(BenchRecord.from_dict(d))
            except (TypeError, ValueError, KeyError) as err:
                raise EdgebvitError(f"{p}:{lineno}: not an edgebvit bench record ({err})") from None
    if not records:
        raise EdgebvitError("no bench records in " + ", ".join(str(p) for p in paths))
    return records
