"""The benchmark harness: expand a sweep, run it locally or on a device, return typed records.

Runners:
- local-interpreter: LCE's Python interpreter in this process (x86-64 runs reference kernels).
- lce_benchmark_model: LCE's benchmark binary on an ssh or adb device (the real ARM64 numbers).
- python: interp_bench.py copied to an ssh host that has numpy + larq_compute_engine.

Remote runs always work in a fresh `mktemp -d` dir that a `finally` removes, also after a
failure or a timeout. One file (~470 lines): the three runners share the sweep, the record
building and the clean-up, and read best side by side.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

import edgebvit
from edgebvit.bench import interp_bench
from edgebvit.bench.parser import BenchmarkOutputError, parse_benchmark_output
from edgebvit.bench.records import (HOST_X86_NOTE, BenchRecord, DeviceFacts, LatencyStats, split_ops)
from edgebvit.bench.transport import AdbTransport, Transport, make_transport, wrap_run
from edgebvit.errors import DeviceError, EdgebvitError, FlatbufferError
from edgebvit.flatbuffer import ITEMSIZE  # the reader's bytes per element, one table for both
from edgebvit.flatbuffer import FlatbufferReport, read_model_file

BINARY_NAME = "lce_benchmark_model"
X86_ARCHES = frozenset({"x86_64", "amd64", "AMD64", "i386", "i686", "x86"})
_TASKSET = re.compile(r"^(?:0[xX])?[0-9a-fA-F]+$")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    threads: int
    xnnpack: bool
    indirect_bgemm: bool


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    device: str = "local"
    runner: str = "auto"  # auto | binary | python
    threads: tuple = (1,)
    xnnpack: str = "off"  # on | off | both
    indirect_bgemm: str = "auto"  # auto | on | off
    runs: int = 50
    warmup: int = 5
    profile: bool = False
    taskset: Optional[str] = None
    timeout: int = 300  # per remote command, seconds
    connect_timeout: int = 10
    identity: Optional[Path] = None
    ssh_options: tuple = ()
    benchmark_binary: Optional[Path] = None
    remote_binary: Optional[str] = None
    remote_python: str = "python3"
    remote_tmp: Optional[str] = None


def expand_configs(opts: BenchOptions, summary: FlatbufferReport) -> list:
    """The sweep: threads x xnnpack x indirect-bgemm, in that nesting order."""
    if not opts.threads or any(int(t) < 1 for t in opts.threads):
        raise EdgebvitError("--threads wants positive integers, e.g. 1,2,4")
    xnn = {"on": (True,), "off": (False,), "both": (False, True)}.get(opts.xnnpack)
    if xnn is None:
        raise EdgebvitError(f"--xnnpack must be on, off or both, not {opts.xnnpack!r}")
    if opts.indirect_bgemm == "auto":
        # LCE's default BGEMM kernel refuses grouped binary convs; the indirect one runs them.
        ind = (summary.grouped_bconvs > 0,)
    elif opts.indirect_bgemm in ("on", "off"):
        ind = (opts.indirect_bgemm == "on",)
    else:
        raise EdgebvitError(f"--indirect-bgemm must be auto, on or off, not {opts.indirect_bgemm!r}")
    return [BenchConfig(threads=int(t), xnnpack=x, indirect_bgemm=i) for t in opts.threads for x in xnn for i in ind]


def resolve_runner(opts: BenchOptions) -> str:
    local = opts.device == "local"
    runner = opts.runner
    if runner == "auto":
        runner = "local-interpreter" if local else "binary"
    if runner not in ("local-interpreter", "binary", "python"):
        raise EdgebvitError(f"--runner must be auto, binary or python, not {opts.runner!r}")
    if local and runner != "local-interpreter":
        raise EdgebvitError("--runner binary/python need a remote --device (ssh://user@host or adb)")
    if runner == "python" and not opts.device.startswith("ssh://"):
        raise EdgebvitError("--runner python runs over ssh only: use --device ssh://user@host")
    if opts.profile and runner != "binary":
        raise EdgebvitError("--profile needs lce_benchmark_model's op profiler: use an ssh/adb --device with the binary runner")
    if opts.taskset is not None and not _TASKSET.match(opts.taskset):
        raise EdgebvitError(f"--taskset wants a hex CPU mask such as f0, not {opts.taskset!r}")
    if opts.runs < 1 or opts.warmup < 0:
        raise EdgebvitError("--runs must be at least 1 and --warmup at least 0")
    return runner


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _notes(arch: str, cfg: BenchConfig, summary: FlatbufferReport, runner: str) -> list:
    notes = []
    if arch in X86_ARCHES:
        notes.append(HOST_X86_NOTE)
    notes.append("indirect BGEMM kernel" if cfg.indirect_bgemm else "default BGEMM kernel")
    notes.append("XNNPACK delegate on" if cfg.xnnpack else "XNNPACK delegate off")
    if summary.grouped_bconvs:
        notes.append(f"{summary.grouped_bconvs} grouped binary conv(s): need the indirect BGEMM kernel")
    if runner in ("local-interpreter", "python"):
        notes.append("LCE Python interpreter: each timed call includes input/output copies")
    return notes


def _facts_from_script(d: dict) -> DeviceFacts:
    extra = {k: v for k, v in d.items() if k not in ("architecture", "cpu_model", "os", "os_bits", "cpu_count", "hostname")}
    return DeviceFacts(architecture=str(d.get("architecture", "unknown")), cpu_model=str(d.get("cpu_model", "unknown")),
                       os=str(d.get("os", "unknown")), os_bits=d.get("os_bits"), cpu_count=d.get("cpu_count"),
                       hostname=str(d.get("hostname", "")), extra=extra)


def _record(*, model_path: Path, summary: FlatbufferReport, opts: BenchOptions, cfg: BenchConfig, runner: str,
            facts: DeviceFacts, latency: LatencyStats, tool: str, tool_version: str, **extra) -> BenchRecord:
    return BenchRecord(
        model_path=str(model_path), model_sha256=summary.sha256, model_bytes=summary.file_bytes,
        device=opts.device, runner=runner, threads=cfg.threads, xnnpack=cfg.xnnpack,
        indirect_bgemm=cfg.indirect_bgemm, warmup=opts.warmup, runs=opts.runs, latency=latency, facts=facts,
        tool=tool, tool_version=tool_version, edgebvit_version=edgebvit.__version__, timestamp=_now(),
        kernel_notes=_notes(facts.architecture, cfg, summary, runner) + extra.pop("more_notes", []),
        taskset=opts.taskset, grouped_binary_convs=summary.grouped_bconvs, **extra)


def _refused_hint(cfg: BenchConfig, summary: FlatbufferReport) -> str:
    if summary.grouped_bconvs and not cfg.indirect_bgemm:
        return " (the model has grouped binary convs: use --indirect-bgemm on or auto)"
    return ""


# ---------------------------------------------------------------------------------------------
# local


def _parse_mask(mask: str) -> set:
    value = int(mask, 16)
    cpus = {i for i in range(value.bit_length()) if value >> i & 1}
    if not cpus:
        raise EdgebvitError(f"--taskset {mask} selects no CPU")
    return cpus


def run_local(model_path: Path, data: bytes, summary: FlatbufferReport, opts: BenchOptions, configs: Sequence[BenchConfig],
              log: Callable[[str], None]) -> list:
    facts = _facts_from_script(interp_bench.device_facts())
    old_affinity = None
    if opts.taskset:
        old_affinity = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, _parse_mask(opts.taskset))
        except OSError as err:
            raise EdgebvitError(f"--taskset {opts.taskset}: {err.strerror}") from None
    records = []
    try:
        for cfg in configs:
            log(f"local: threads={cfg.threads} xnnpack={cfg.xnnpack} indirect_bgemm={cfg.indirect_bgemm}")
            try:
                res = interp_bench.bench_one(data, threads=cfg.threads, xnnpack=cfg.xnnpack,
                                             indirect_bgemm=cfg.indirect_bgemm, warmup=opts.warmup, runs=opts.runs)
            except ImportError as err:
                raise EdgebvitError(f"larq_compute_engine is not importable here ({err}): install edgebvit's "
                                    "pinned larq-compute-engine, or benchmark on a device (--device ssh://... or "
                                    "adb)") from None
            except (RuntimeError, ValueError, OverflowError) as err:
                raise DeviceError(f"the LCE interpreter refused {model_path}: "
                                  f"{err}{_refused_hint(cfg, summary)}") from None
            except MemoryError:
                raise DeviceError(f"the LCE interpreter ran out of memory on {model_path}: is the flatbuffer "
                                  "corrupt? (edgebvit inspect shows its shapes)") from None
            records.append(_record(
                model_path=model_path, summary=summary, opts=opts, cfg=cfg, runner="local-interpreter", facts=facts,
                latency=LatencyStats.from_samples_us(res["latencies_us"], res["first_us"]),
                tool="larq_compute_engine.testing.Interpreter",
                tool_version=f"larq-compute-engine {facts.extra.get('larq_compute_engine', 'unknown')}",
                init_ms=res["init_us"] / 1000.0))
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
    return records


# ---------------------------------------------------------------------------------------------
# remote


_FACTS_SCRIPT = (
    'echo "arch=$(uname -m 2>/dev/null)"; echo "bits=$(getconf LONG_BIT 2>/dev/null)"; '
    'echo "os=$(uname -sr 2>/dev/null)"; echo "ncpu=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"; '
    'echo "host=$(uname -n 2>/dev/null)"; '
    'echo "cpu=$(grep -m1 -E \'^(model name|Hardware|Model)[[:space:]]*:\' /proc/cpuinfo 2>/dev/null | cut -d: -f2-)"; '
    'echo "part=$(grep -m1 -E \'^CPU part[[:space:]]*:\' /proc/cpuinfo 2>/dev/null | cut -d: -f2-)"; '
    'echo "android=$(getprop ro.product.model 2>/dev/null)"; echo "soc=$(getprop ro.soc.model 2>/dev/null)"'
)


def remote_facts(transport: Transport, *, timeout: float) -> DeviceFacts:
    """Device facts via one remote shell call (also the first contact: unreachable hosts fail here)."""
    proc = transport.run(_FACTS_SCRIPT, timeout=timeout)
    kv = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            kv[key.strip()] = value.strip()
    if "arch" not in kv:
        raise DeviceError(f"unexpected reply from {transport.name} to a uname call: {proc.stdout.strip()[:100]!r}")
    cpu = kv.get("cpu") or kv.get("soc") or (f"ARM CPU part {kv['part']}" if kv.get("part") else "unknown")
    extra = {"android_model": kv["android"]} if kv.get("android") else {}
    bits = int(kv["bits"]) if kv.get("bits", "").isdigit() else None
    ncpu = int(kv["ncpu"]) if kv.get("ncpu", "").isdigit() else None
    return DeviceFacts(architecture=kv.get("arch") or "unknown", cpu_model=cpu, os=kv.get("os") or "unknown",
                       os_bits=bits, cpu_count=ncpu, hostname=kv.get("host", ""), extra=extra)


class RemoteSession:
    """A remote temp dir that exists for the duration of a `with` block, removed in any case."""

    def __init__(self, transport: Transport, base: str, *, timeout: float, log: Callable[[str], None]):
        self.transport, self.base, self.timeout, self.log = transport, base, timeout, log
        self.workdir: Optional[str] = None

    def __enter__(self) -> "RemoteSession":
        self.workdir = self.transport.make_temp_dir(self.base, timeout=self.timeout)
        self.log(f"{self.transport.name}: work dir {self.workdir}")
        return self

    def path(self, name: str) -> str:
        return f"{self.workdir}/{name}"

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.workdir is None:
            return False
        try:
            self.transport.remove_dir(self.workdir, timeout=self.timeout)
            self.log(f"{self.transport.name}: removed {self.workdir}")
        except DeviceError as err:
            if exc is None:
                raise DeviceError(f"benchmark done but cleanup of {self.workdir} on {self.transport.name} failed: {err}") from None
            self.log(f"warning: could not remove {self.workdir} on {self.transport.name}: {err}")
        return False


def _remote_name(transport: Transport, local: Path) -> str:
    name = local.name
    if isinstance(transport, AdbTransport):
        # adb's sync protocol treats ',' specially and Android shells vary: keep device names plain.
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return name


def _timed_out(proc, transport: Transport, what: str, timeout: int) -> None:
    # 124 is `timeout`'s own status; other kills (OOM: 137) are reported as failures, not timeouts.
    if proc.returncode == 124:
        raise DeviceError(f"{what} on {transport.name} timed out after {timeout} s")


def _resolve_binary(transport: Transport, opts: BenchOptions) -> tuple:
    """(remote command, needs push) for lce_benchmark_model; checked before anything is pushed."""
    if opts.benchmark_binary is not None:
        local = Path(opts.benchmark_binary)
        if not local.is_file():
            raise DeviceError(f"--benchmark-binary not found: {local}")
        return None, local
    if opts.remote_binary:
        proc = transport.run(f"test -f {shlex.quote(opts.remote_binary)} && test -x {shlex.quote(opts.remote_binary)}",
                             timeout=opts.timeout)
        if proc.returncode != 0:
            raise DeviceError(f"--remote-binary {opts.remote_binary} is not an executable file on {transport.name}")
        return opts.remote_binary, None
    proc = transport.run(f"command -v {BINARY_NAME}", timeout=opts.timeout)
    found = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not found:
        raise DeviceError(f"{BINARY_NAME} not found on the PATH of {transport.name}: pass --benchmark-binary FILE "
                          "(pushed for the run) or --remote-binary PATH")
    return found[-1].strip(), None


def _binary_version(transport: Transport, remote_cmd: Optional[str], local: Optional[Path], timeout: float) -> str:
    import hashlib

    if local is not None:
        try:
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
        except OSError as err:
            raise DeviceError(f"--benchmark-binary {local}: cannot read ({err.strerror})") from None
        return f"sha256:{digest[:16]} (pushed {local.name})"
    proc = transport.run(f"sha256sum {shlex.quote(remote_cmd)} 2>/dev/null", timeout=timeout)
    digest = proc.stdout.split()[0] if proc.returncode == 0 and proc.stdout.split() else ""
    return f"sha256:{digest[:16]} ({remote_cmd})" if re.fullmatch(r"[0-9a-f]{64}", digest) else f"unknown ({remote_cmd})"


def binary_argv(binary: str, graph: str, cfg: BenchConfig, opts: BenchOptions) -> list:
    b = lambda v: "true" if v else "false"  # noqa: E731
    argv = [binary, f"--graph={graph}", f"--num_threads={cfg.threads}", f"--num_runs={opts.runs}",
            f"--warmup_runs={opts.warmup}", "--min_secs=0", "--warmup_min_secs=0",
            f"--use_xnnpack={b(cfg.xnnpack)}", f"--use_indirect_bgemm={b(cfg.indirect_bgemm)}"]
    if opts.profile:
        argv.append("--enable_op_profiling=true")
    return argv


def run_remote_binary(model_path: Path, summary: FlatbufferReport, opts: BenchOptions, configs: Sequence[BenchConfig],
                      transport: Transport, log: Callable[[str], None]) -> list:
    facts = remote_facts(transport, timeout=opts.timeout)
    remote_cmd, push_binary = _resolve_binary(transport, opts)
    tool_version = _binary_version(transport, remote_cmd, push_binary, opts.timeout)
    base = opts.remote_tmp or transport.default_tmp
    records = []
    with RemoteSession(transport, base, timeout=opts.timeout, log=log) as session:
        graph = session.path(_remote_name(transport, model_path))
        transport.push(model_path, graph, timeout=opts.timeout)
        if push_binary is not None:
            remote_cmd = session.path(BINARY_NAME)
            transport.push(push_binary, remote_cmd, timeout=opts.timeout, executable=True)
        for cfg in configs:
            log(f"{transport.name}: {BINARY_NAME} threads={cfg.threads} xnnpack={cfg.xnnpack} "
                f"indirect_bgemm={cfg.indirect_bgemm}")
            script = wrap_run(session.workdir, binary_argv(remote_cmd, graph, cfg, opts), timeout_s=opts.timeout,
                              taskset=opts.taskset)
            proc = transport.run(script, timeout=opts.timeout + opts.connect_timeout + 15)
            _timed_out(proc, transport, BINARY_NAME, opts.timeout)
            if proc.returncode in (126, 127):
                last = (proc.stdout + proc.stderr).strip().splitlines()
                raise DeviceError(f"{BINARY_NAME} could not be started on {transport.name}: "
                                  f"{last[-1].strip() if last else 'not found or not executable'}")
            try:
                out = parse_benchmark_output(proc.stdout + proc.stderr, expect_profile=opts.profile)
            except BenchmarkOutputError as err:
                raise BenchmarkOutputError(f"{transport.name}: {err}{_refused_hint(cfg, summary)}") from None
            inf = out.inference
            latency = LatencyStats(count=inf.count, mean_ms=inf.avg_us / 1000.0, min_ms=_ms(inf.min_us),
                                   median_ms=_ms(inf.median_us), p90_ms=None, max_ms=_ms(inf.max_us),
                                   std_ms=_ms(inf.std_us), first_ms=_ms(out.first_inference_us))
            notes = ["lce_benchmark_model reports min/mean/max/std only: no median or p90"]
            if opts.profile and cfg.xnnpack:
                notes.append("XNNPACK lumps float ops into one delegate node: rerun with --xnnpack off for the float split")
            memory = {k: v for k, v in (("init_mb", out.mem_init_mb), ("overall_mb", out.mem_overall_mb),
                                        ("peak_mb", out.peak_mem_mb)) if v is not None} or None
            records.append(_record(
                model_path=model_path, summary=summary, opts=opts, cfg=cfg, runner=BINARY_NAME, facts=facts,
                latency=latency, tool=BINARY_NAME, tool_version=tool_version, init_ms=out.init_ms, memory_mb=memory,
                op_split=split_ops(out.profile) if opts.profile else None, more_notes=notes))
    return records


def _ms(us: Optional[float]) -> Optional[float]:
    return None if us is None else us / 1000.0


def run_remote_python(model_path: Path, summary: FlatbufferReport, opts: BenchOptions, configs: Sequence[BenchConfig],
                      transport: Transport, log: Callable[[str], None]) -> list:
    import json

    remote_facts(transport, timeout=opts.timeout)  # first contact: unreachable/refused fail before any push
    base = opts.remote_tmp or transport.default_tmp
    script_local = Path(interp_bench.__file__)
    with RemoteSession(transport, base, timeout=opts.timeout, log=log) as session:
        graph = session.path(_remote_name(transport, model_path))
        script = session.path("interp_bench.py")
        transport.push(model_path, graph, timeout=opts.timeout)
        transport.push(script_local, script, timeout=opts.timeout)
        argv = [opts.remote_python, script, graph, "--warmup", str(opts.warmup), "--runs", str(opts.runs)]
        for cfg in configs:
            argv += ["--config", f"{cfg.threads},{int(cfg.xnnpack)},{int(cfg.indirect_bgemm)}"]
        log(f"{transport.name}: {opts.remote_python} interp_bench.py, {len(configs)} config(s)")
        proc = transport.run(wrap_run(session.workdir, argv, timeout_s=opts.timeout, taskset=opts.taskset),
                             timeout=opts.timeout + opts.connect_timeout + 15)
        _timed_out(proc, transport, "the python benchmark", opts.timeout)
        if proc.returncode == 127:
            raise DeviceError(f"remote python {opts.remote_python!r} not found on {transport.name}: pass --remote-python PATH")
        payload = None
        for line in proc.stdout.splitlines():
            if line.startswith(interp_bench.MARKER):
                try:
                    payload = json.loads(line[len(interp_bench.MARKER):])
                except ValueError:
                    payload = None
        if proc.returncode != 0 or payload is None:
            tail = [ln for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
            raise DeviceError(f"the python benchmark failed on {transport.name} (exit {proc.returncode}): "
                              f"{tail[-1].strip() if tail else 'no output'}")
    facts = _facts_from_script(payload.get("device", {}))
    records = []
    for cfg, res in zip(configs, payload.get("results", [])):
        if "error" in res:
            raise DeviceError(f"the LCE interpreter on {transport.name} refused {model_path}: "
                              f"{res['error']}{_refused_hint(cfg, summary)}")
        records.append(_record(
            model_path=model_path, summary=summary, opts=opts, cfg=cfg, runner="python", facts=facts,
            latency=LatencyStats.from_samples_us(res["latencies_us"], res.get("first_us")),
            tool="interp_bench.py (LCE Python interpreter)",
            tool_version=f"larq-compute-engine {facts.extra.get('larq_compute_engine', 'unknown')}",
            init_ms=res["init_us"] / 1000.0))
    if len(records) != len(configs):
        raise DeviceError(f"the python benchmark on {transport.name} returned {len(records)} of {len(configs)} results")
    return records


# A model input larger than this is a corrupt shape, not an edge model: refuse it before the
# interpreter (or the device) tries to allocate it.
MAX_INPUT_BYTES = 1 << 30


def check_inputs(model_path: Path, summary: FlatbufferReport) -> None:
    """FlatbufferError (one line, naming the file) for an input shape no benchmark can feed."""
    for i, (shape, dtype) in enumerate(zip(summary.input_shapes, summary.input_types)):
        if any(d < 0 for d in shape):
            raise FlatbufferError(f"{model_path}: input {i} has a negative dimension {list(shape)}: a corrupt "
                                  "flatbuffer? re-export it")
        nbytes = ITEMSIZE.get(dtype, 4)
        for d in shape:
            nbytes *= d
        if nbytes > MAX_INPUT_BYTES:
            raise FlatbufferError(f"{model_path}: input {i} of shape {list(shape)} needs {nbytes / 2**30:.1f} GiB "
                                  "per inference: a corrupt flatbuffer? re-export it")


def _check_unchanged(model_path: Path, summary: FlatbufferReport) -> None:
    """The remote runners push the file by path: make sure it is still the file the records name."""
    import hashlib

    try:
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    except OSError as err:
        raise FlatbufferError(f"{model_path}: cannot read it again after the benchmark ({err.strerror})") from None
    if digest != summary.sha256:
        raise FlatbufferError(f"{model_path} changed while it was benchmarked (sha256 {summary.sha256[:12]} -> "
                              f"{digest[:12]}): nothing written; rerun on the final file")


def run_bench(model_path: Path, opts: BenchOptions, *, log: Callable[[str], None] = lambda _m: None,
              preflight: Optional[Callable[[], None]] = None) -> list:
    """Benchmark one flatbuffer over the whole sweep; returns one BenchRecord per configuration.

    The options are checked first, then the file is read and validated once, by
    edgebvit.flatbuffer, before anything else uses it: the local interpreter gets those very bytes;
    a remote run re-checks the sha256 after pushing it. `preflight` (the CLI's output checks) runs
    after that and before any device is contacted.
    """
    model_path = Path(model_path)
    runner = resolve_runner(opts)
    data, summary = read_model_file(model_path)
    check_inputs(model_path, summary)
    configs = expand_configs(opts, summary)
    if preflight is not None:
        preflight()
    if runner == "local-interpreter":
        return run_local(model_path, data, summary, opts, configs, log)
    transport = make_transport(opts.device, identity=opts.identity, ssh_options=opts.ssh_options,
                               connect_timeout=opts.connect_timeout)
    if runner == "python":
        records = run_remote_python(model_path, summary, opts, configs, transport, log)
    else:
        records = run_remote_binary(model_path, summary, opts, configs, transport, log)
    _check_unchanged(model_path, summary)
    return records


__all__ = ["BenchConfig", "BenchOptions", "RemoteSession", "binary_argv", "check_inputs", "expand_configs",
           "remote_facts", "resolve_runner", "run_bench"]
