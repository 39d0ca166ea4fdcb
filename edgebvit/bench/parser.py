"""Parser for `lce_benchmark_model` output (TFLite's benchmark tool with LCE's ops registered).

The format comes from the tool's source, not from samples:
- tensorflow/lite/tools/benchmark/benchmark_model.cc: `The input model file size (MB): X`,
  `Initialized session in Xms.`, one `Running benchmark for at least ...` line before each of the
  warm-up and the regular loop, each loop ending in a `Stat::OutputToStream` line
  (`count=N first=F curr=C min=m max=M avg=A std=S`, or `count=N curr=C(all same)`, or `count=0`),
  then `Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A`,
  `Memory footprint delta from the start of the tool (MB): init=X overall=Y` and, with
  --report_peak_memory_footprint, `Overall peak memory footprint (MB) via periodic monitoring: Z`.
- profiling_listener.cc + profile_summary_formatter.cc + (tsl|tensorflow) stats_calculator.cc:
  `Profiling Info for Benchmark Initialization:` and `Operator-wise Profiling Info for Regular
  Benchmark Runs:`, each followed by tab-separated tables `==== Run Order ====`,
  `==== Top by Computation Time ====`, `Number of nodes executed: N`, `==== Summary by node type ====`.
  Older TF has a `[start]` column the newer one dropped, so columns are read from each header.

Each line is matched after stripping the prefixes builds and logcat add (`INFO: `,
`I tflite  : `, `11-21 18:17:32.728  1234  1234 I tflite  : `, `I/tflite  ( 1234): `); numbers
may be printed in exponent notation (`2.95034e+06`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from edgebvit.errors import DeviceError


class BenchmarkOutputError(DeviceError):
    """lce_benchmark_model output that is incomplete, failed, or not in the expected format."""


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"

_PREFIXES = [
    # logcat -v threadtime: date time pid tid level tag:
    re.compile(r"^\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*:\s?"),
    # logcat -v brief: I/tflite  ( 1234):
    re.compile(r"^[VDIWEF]/[^(:]+\(\s*\d+\):\s?"),
    # logcat -v tag / short: I tflite  :
    re.compile(r"^[VDIWEF]\s+[A-Za-z_][\w.-]*\s*:\s?"),
    # TFLite's own logging prefixes
    re.compile(r"^(?:INFO|WARN|WARNING|ERROR|VERBOSE):\s?"),
]


def strip_prefix(line: str) -> str:
    """Remove logcat/TFLite log prefixes (possibly stacked) from one line."""
    line = line.rstrip("\r\n")
    changed = True
    while changed:
        changed = False
        for pat in _PREFIXES:
            m = pat.match(line)
            if m and m.end() > 0:
                line = line[m.end():]
                changed = True
    return line


def _num(text: str) -> float:
    return float(text)


@dataclass(frozen=True, kw_only=True)
class RunStats:
    """One `Stat<int64_t>` line: microseconds."""

    count: int
    first_us: Optional[float] = None
    curr_us: Optional[float] = None
    min_us: Optional[float] = None
    max_us: Optional[float] = None
    avg_us: Optional[float] = None
    std_us: Optional[float] = None
    median_us: Optional[float] = None  # only builds whose Stat prints percentiles
    p95_us: Optional[float] = None


_STAT_KV = re.compile(r"\b(count|first|curr|min|max|avg|std|p5|median|p95)=(" + _NUM + ")")


def parse_stat_line(text: str) -> Optional[RunStats]:
    """Parse a `count=...` Stat line; None when the line is not one."""
    if not re.search(r"(?:^|\s)count=\d", text):
        return None
    kv = {k: _num(v) for k, v in _STAT_KV.findall(text)}
    count = int(kv["count"])
    if count == 0:
        return RunStats(count=0)
    if "min" not in kv:
        # `count=N curr=C(all same)` (or count=1): every run took the same time.
        c = kv.get("curr")
        return RunStats(count=count, first_us=c, curr_us=c, min_us=c, max_us=c, avg_us=c, std_us=0.0,
                        median_us=kv.get("median"), p95_us=kv.get("p95"))
    return RunStats(count=count, first_us=kv.get("first"), curr_us=kv.get("curr"), min_us=kv.get("min"),
                    max_us=kv.get("max"), avg_us=kv.get("avg"), std_us=kv.get("std"),
                    median_us=kv.get("median"), p95_us=kv.get("p95"))


@dataclass(frozen=True, kw_only=True)
class OpRow:
    """A row of the Run Order / Top by Computation Time tables (times in ms per call)."""

    node_type: str
    name: str
    avg_ms: float
    first_ms: Optional[float] = None
    start_ms: Optional[float] = None  # older TF only
    percent: Optional[float] = None
    cdf_percent: Optional[float] = None
    mem_kb: Optional[float] = None
    times_called: int = 1

    @property
    def per_run_ms(self) -> float:
        return self.avg_ms * max(self.times_called, 1)


@dataclass(frozen=True, kw_only=True)
class NodeTypeRow:
    """A row of the Summary by node type table (avg_ms is the type's total per run)."""

    node_type: str
    count: int
    avg_ms: float
    avg_percent: Optional[float] = None
    cdf_percent: Optional[float] = None
    mem_kb: Optional[float] = None
    times_called: Optional[int] = None


@dataclass(kw_only=True)
class ProfileTables:
    run_order: list = field(default_factory=list)
    top_by_time: list = field(default_factory=list)
    by_node_type: list = field(default_factory=list)
    nodes_executed: Optional[int] = None
    tables_seen: list = field(default_factory=list)


@dataclass(kw_only=True)
class LceBenchmarkOutput:
    inference: RunStats
    warmup: Optional[RunStats] = None
    model_size_mb: Optional[float] = None
    init_ms: Optional[float] = None
    init_us: Optional[float] = None
    first_inference_us: Optional[float] = None
    warmup_avg_us: Optional[float] = None
    inference_avg_us: Optional[float] = None
    mem_init_mb: Optional[float] = None
    mem_overall_mb: Optional[float] = None
    peak_mem_mb: Optional[float] = None
    profile: Optional[ProfileTables] = None
    init_profile: Optional[ProfileTables] = None
    params: dict = field(default_factory=dict)


_RE_SIZE = re.compile(r"The input model file size \(MB\):\s*(" + _NUM + ")")
_RE_INIT = re.compile(r"Initialized session in\s*(" + _NUM + r")\s*ms")
_RE_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*(" + _NUM + r"),\s*First inference:\s*(" + _NUM
    + r"),\s*Warmup \(avg\):\s*(" + _NUM + r"),\s*Inference \(avg\):\s*(" + _NUM + ")"
)
_RE_MEM = re.compile(
    r"Memory footprint delta from the start of the tool \(MB\):\s*init=(" + _NUM + r")\s+overall=(" + _NUM + ")"
)
_RE_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUM + ")")
_RE_RUNNING = re.compile(r"Running benchmark for at least")
_RE_TABLE = re.compile(r"={5,}\s*(Run Order|Top by Computation Time|Top by Memory Use|Summary by node type)\s*={5,}")
_RE_NODES = re.compile(r"Number of nodes executed:\s*(\d+)")
_RE_PARAM = re.compile(r"^([A-Z][A-Za-z0-9 ()/_-]*?):\s*\[(.*)\]\s*$")
_INIT_SECTION = "Profiling Info for Benchmark Initialization:"
_RUN_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs:"


def _split_row(raw: str, ncols: int) -> Optional[list]:
    """Split a table row into `ncols` cells: tab-separated as printed, whitespace as a fallback."""
    if "\t" in raw:
        cells = [c.strip() for c in raw[raw.index("\t"):].split("\t")][1:]
        if len(cells) > ncols:  # a tab inside the last (name) column
            cells = cells[: ncols - 1] + ["\t".join(cells[ncols - 1:])]
    else:
        parts = strip_prefix(raw).split()
        if len(parts) < ncols:
            return None
        cells = parts[: ncols - 1] + [" ".join(parts[ncols - 1:])]
    if len(cells) != ncols:
        return None
    return cells


def _header_columns(raw: str) -> list:
    return [c.strip().lower() for c in re.findall(r"\[([^\]]+)\]", raw)]


def _pct(text: str) -> float:
    return _num(text.rstrip("%").strip())


def _to_op_row(cols: list, cells: list) -> OpRow:
    d = dict(zip(cols, cells))
    return OpRow(
        node_type=d["node type"],
        name=d.get("name", ""),
        avg_ms=_num(d["avg ms"]),
        first_ms=_num(d["first"]) if "first" in d else None,
        start_ms=_num(d["start"]) if "start" in d else None,
        percent=_pct(d["%"]) if "%" in d else None,
        cdf_percent=_pct(d["cdf%"]) if "cdf%" in d else None,
        mem_kb=_num(d["mem kb"]) if "mem kb" in d else None,
        times_called=int(_num(d["times called"])) if "times called" in d else 1,
    )


def _to_type_row(cols: list, cells: list) -> NodeTypeRow:
    d = dict(zip(cols, cells))
    return NodeTypeRow(
        node_type=d["node type"],
        count=int(_num(d["count"])),
        avg_ms=_num(d["avg ms"]),
        avg_percent=_pct(d["avg %"]) if "avg %" in d else None,
        cdf_percent=_pct(d["cdf %"]) if "cdf %" in d else None,
        mem_kb=_num(d["mem kb"]) if "mem kb" in d else None,
        times_called=int(_num(d["times called"])) if "times called" in d else None,
    )


def parse_benchmark_output(text: str, *, expect_profile: bool = False) -> LceBenchmarkOutput:
    """Parse the combined stdout+stderr of one lce_benchmark_model run.

    Raises BenchmarkOutputError naming the first required line that is missing (truncated
    output), or quoting the tool's own error when it reports one.
    """
    raw_lines = text.splitlines()
    lines = [strip_prefix(x) for x in raw_lines]

    errors = [ln.strip() for raw, ln in zip(raw_lines, lines) if re.search(r"(?:^|\s)ERROR:", raw) and ln.strip()]
    failed = any("Benchmarking failed" in ln for ln in lines)

    out: dict = {"params": {}}
    stat_lines: list = []
    running_seen = 0
    section = "run"  # tables before any section marker count as the regular-run profile
    subgraph_ok = True
    profiles = {"init": ProfileTables(), "run": ProfileTables()}
    table: Optional[str] = None
    cols: list = []

    for raw, ln in zip(raw_lines, lines):
        s = ln.strip()
        if _INIT_SECTION in s:
            section, table, subgraph_ok = "init", None, True
            continue
        if _RUN_SECTION in s:
            section, table, subgraph_ok = "run", None, True
            continue
        if s.startswith("Subgraph (index:") and s.endswith(":"):
            subgraph_ok, table = False, None  # only the primary graph's ops are split
            continue
        if s.startswith("Primary graph"):
            subgraph_ok, table = True, None
            continue
        if s.startswith("Delegate internal:"):
            subgraph_ok, table = False, None
            continue
        m = _RE_TABLE.search(s)
        if m:
            table, cols = m.group(1), []
            if subgraph_ok:
                profiles[section].tables_seen.append(table)
            continue
        m = _RE_NODES.search(s)
        if m:
            table = None
            if subgraph_ok:
                profiles[section].nodes_executed = int(m.group(1))
            continue
        if table is not None:
            if not s:
                table = None  # each table ends with a blank line
                continue
            if not cols:
                cols = _header_columns(s)
                if "node type" not in cols:
                    raise BenchmarkOutputError(f"unexpected header in the '{table}' table: {s[:120]!r}")
                continue
            cells = _split_row(raw, len(cols))
            if cells is None:
                raise BenchmarkOutputError(f"malformed row in the '{table}' table (truncated output?): {s[:120]!r}")
            if not subgraph_ok or table == "Top by Memory Use":
                continue
            try:
                if table == "Summary by node type":
                    profiles[section].by_node_type.append(_to_type_row(cols, cells))
                elif table == "Run Order":
                    profiles[section].run_order.append(_to_op_row(cols, cells))
                else:
                    profiles[section].top_by_time.append(_to_op_row(cols, cells))
            except (KeyError, ValueError):
                raise BenchmarkOutputError(f"malformed row in the '{table}' table: {s[:120]!r}") from None
            continue

        if _RE_RUNNING.search(s):
            running_seen += 1
            continue
        if s.startswith("Timings (microseconds):") or s.startswith("Memory (bytes):") or "Timings (microseconds):" in s:
            continue  # the profiler's own summary, not the benchmark loop
        st = parse_stat_line(s)
        if st is not None:
            stat_lines.append(st)
            continue
        for key, pat in (("size", _RE_SIZE), ("init", _RE_INIT), ("peak", _RE_PEAK)):
            m = pat.search(s)
            if m:
                out[key] = _num(m.group(1))
        m = _RE_TIMINGS.search(s)
        if m:
            out["timings"] = tuple(_num(g) for g in m.groups())
        m = _RE_MEM.search(s)
        if m:
            out["mem"] = (_num(m.group(1)), _num(m.group(2)))
        m = _RE_PARAM.match(s)
        if m:
            out["params"][m.group(1).strip()] = m.group(2)

    if failed or (errors and "timings" not in out):
        detail = errors[0] if errors else "Benchmarking failed."
        raise BenchmarkOutputError(f"lce_benchmark_model failed: {detail}")
    if not stat_lines:
        raise BenchmarkOutputError(
            "lce_benchmark_model output has no 'count=... avg=...' timing line (truncated, or not lce_benchmark_model output)"
        )
    if "timings" not in out:
        raise BenchmarkOutputError(
            "lce_benchmark_model output is missing the 'Inference timings in us:' line (truncated output?)"
        )
    # The regular loop's Stat line is the last one; the warm-up loop's comes just before it.
    inference = stat_lines[-1]
    warmup = stat_lines[-2] if len(stat_lines) >= 2 else None
    if inference.count == 0:
        raise BenchmarkOutputError("lce_benchmark_model ran 0 timed inferences (count=0); raise --runs")

    profile = profiles["run"] if (profiles["run"].tables_seen or profiles["run"].by_node_type) else None
    init_profile = profiles["init"] if profiles["init"].tables_seen else None
    if expect_profile:
        if profile is None:
            raise BenchmarkOutputError(
                "lce_benchmark_model output is missing the '==== Run Order ====' op-profiling table "
                "(was --enable_op_profiling=true passed?)"
            )
        for needed in ("Run Order", "Summary by node type"):
            if needed not in profile.tables_seen:
                raise BenchmarkOutputError(
                    f"lce_benchmark_model output is missing the '==== {needed} ====' op-profiling table (truncated output?)"
                )
        if not profile.by_node_type:
            raise BenchmarkOutputError("the '==== Summary by node type ====' table has no rows (truncated output?)")

    timings = out["timings"]
    mem = out.get("mem")
    return LceBenchmarkOutput(
        inference=inference,
        warmup=warmup,
        model_size_mb=out.get("size"),
        init_ms=out.get("init"),
        init_us=timings[0],
        first_inference_us=timings[1],
        warmup_avg_us=timings[2],
        inference_avg_us=timings[3],
        mem_init_mb=mem[0] if mem else None,
        mem_overall_mb=mem[1] if mem else None,
        peak_mem_mb=out.get("peak"),
        profile=profile,
        init_profile=init_profile,
        params=out["params"],
    )
