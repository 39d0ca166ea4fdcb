"""End-to-end bench tests with a real converted model: local interpreter, and a real OpenSSH server
on 127.0.0.1 (python runner and lce_benchmark_model runner with a fake binary), plus the one-line
errors for unreachable hosts, refused logins, missing binaries and timeouts.

The sshd runs as the current user (root in CI) with a host key and a user key generated here;
tests skip with a reason only when /usr/sbin/sshd or ssh is not installed (CI installs them:
apt-get install -y openssh-server openssh-client).
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgebvit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from edgebvit.flatbuffer import read_model_file
from edgebvit.bench.harness import BenchOptions, run_bench
from edgebvit.bench.records import HOST_X86_NOTE, load_records
from edgebvit.cli import cli
from edgebvit.errors import DeviceError, EdgebvitError

DATA = Path(__file__).parent / "data" / "bench"
SSHD = "/usr/sbin/sshd"
HOSTILE = "a b;rm -rf ~'$(x)`"


def _convert(groups: int, cin: int) -> bytes:
    import larq as lq
    import larq_compute_engine as lce
    import tensorflow as tf

    inp = tf.keras.Input((8, 8, cin))
    x = lq.layers.QuantConv2D(32, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False, groups=groups)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dense(10)(x)
    model = tf.keras.Model(inp, x)
    return lce.convert_keras_model(model, inference_input_type=tf.float32, inference_output_type=tf.float32,
                                   target="arm", experimental_default_int8_range=None)


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> Path:
    """Input 8x8x32 -> binary 1x1 QuantConv2D(32) -> BN -> GAP -> Dense(10), converted by LCE."""
    path = tmp_path_factory.mktemp("bench_model") / "tiny.tflite"
    path.write_bytes(_convert(groups=1, cin=32))
    return path


@pytest.fixture(scope="session")
def grouped_tflite(tmp_path_factory) -> Path:
    """Same with 64 input channels in 2 groups of 32: a grouped LceBconv2d."""
    path = tmp_path_factory.mktemp("bench_model_grouped") / "grouped.tflite"
    path.write_bytes(_convert(groups=2, cin=64))
    return path


_LOAD_ORDER_SCRIPT = """
import sys
import edgebvit
from edgebvit.bench.interp_bench import load_lite_interpreter_class
import larq_compute_engine as lce
fb = open(sys.argv[1], "rb").read()
if sys.argv[2] == "bench-first":
    load_lite_interpreter_class()(fb, 1, False, False, False)
    lce.testing.Interpreter(fb, num_threads=1)
else:
    lce.testing.Interpreter(fb, num_threads=1)
    load_lite_interpreter_class()(fb, 1, False, False, False)
print("ok")
"""


@pytest.mark.parametrize("order", ["bench-first", "parity-first"])
def test_bench_and_parity_interpreters_share_one_extension(tiny_tflite, order):
    """The bench loads LCE's interpreter extension by path; lce.testing.Interpreter imports it by
    name. In one process, in either order, both must work (pybind11 refuses a second load)."""
    res = subprocess.run([sys.executable, "-c", _LOAD_ORDER_SCRIPT, str(tiny_tflite), order],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def _invoke(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


# ----------------------------------------------------------------------------------------------
# local


@pytest.mark.slow
def test_local_bench_sweep_writes_report_and_records(tiny_tflite, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(tiny_tflite, model)
    result = _invoke(["bench", str(model), "--threads", "1,2", "--xnnpack", "both", "--runs", "7", "--warmup", "2"])
    assert result.exit_code == 0, result.output
    assert HOST_X86_NOTE in result.output  # this host is x86-64
    report = json.loads((tmp_path / "m.bench.json").read_text())
    recs = report["records"]
    assert [(r["threads"], r["xnnpack"]) for r in recs] == [(1, False), (1, True), (2, False), (2, True)]
    for r in recs:
        lat = r["latency"]
        assert lat["count"] == 7 and r["runner"] == "local-interpreter" and r["indirect_bgemm"] is False
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["max_ms"]
        assert r["model_sha256"] == read_model_file(model)[1].sha256
        assert r["facts"]["architecture"] and r["facts"]["os_bits"] in (32, 64)
        assert HOST_X86_NOTE in r["kernel_notes"]
    # Results are appended, not overwritten.
    _invoke(["bench", str(model), "--runs", "3"])
    assert len(load_records([tmp_path / "bench_results.jsonl"])) == 5


@pytest.mark.slow
def test_grouped_model_auto_indirect_bgemm(grouped_tflite, tiny_tflite, tmp_path):
    assert read_model_file(grouped_tflite)[1].grouped_bconvs == 1
    assert read_model_file(tiny_tflite)[1].grouped_bconvs == 0
    recs = run_bench(grouped_tflite, BenchOptions(runs=3, warmup=1))
    assert [r.indirect_bgemm for r in recs] == [True]
    with pytest.raises(DeviceError, match="grouped binary convs: use --indirect-bgemm on"):
        run_bench(grouped_tflite, BenchOptions(runs=3, warmup=1, indirect_bgemm="off"))
    result = _invoke(["bench", str(grouped_tflite), "--indirect-bgemm", "off", "--out", str(tmp_path / "r.json"),
                      "--results", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "r.jsonl").exists()


def test_local_taskset_pins_and_restores():
    before = os.sched_getaffinity(0)
    recs = run_bench(DATA / "tiny.tflite", BenchOptions(taskset="1", runs=2, warmup=0))
    assert recs[0].taskset == "1" and os.sched_getaffinity(0) == before
    with pytest.raises(EdgebvitError, match="hex CPU mask"):
        run_bench(DATA / "tiny.tflite", BenchOptions(taskset="cpu0"))


def test_bench_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    result = _invoke(["bench", str(bad)])
    assert result.exit_code == 2 and result.output.strip().startswith("error:") and "TFL3" in result.output
    result = _invoke(["bench", str(tmp_path / "missing.tflite")])
    assert result.exit_code == 2 and "not found" in result.output
    result = _invoke(["bench", str(bad), "--profile"])
    assert "error: --profile needs" in result.output


# ----------------------------------------------------------------------------------------------
# a real sshd on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"  # on the remote PATH (sshd SetEnv)
        self.bin.mkdir()
        self.port = _free_port()
        self.user = getpass.getuser()
        self.key = root / "user_key"
        self.wrong_key = root / "wrong_key"
        for key in (root / "host_key", self.key, self.wrong_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        shutil.copy(str(self.key) + ".pub", root / "authorized_keys")
        cfg = root / "sshd_config"
        cfg.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            f"SetEnv PATH={self.bin}:/usr/local/bin:/usr/bin:/bin",
        ]) + "\n")
        self.log = open(root / "sshd.log", "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg), "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("sshd did not start listening")

    @property
    def device(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def args(self, key=None) -> list:
        return ["--device", self.device, "--identity", str(key or self.key),
                "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null"]

    def options(self, **kw) -> BenchOptions:
        return BenchOptions(device=self.device, identity=self.key,
                            ssh_options=("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"), **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install -y openssh-server openssh-client)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        # Debian's sshd refuses to start without its privilege separation dir (the package's
        # service unit normally creates it at boot).
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _fake_binary(path: Path, fixture: str = "lce_benchmark_model_profile.txt", sleep: int = 0) -> Path:
    """A stand-in lce_benchmark_model: checks --graph exists, then prints captured-format output.

    Its output says which graph it was given, so the test sees the pushed path went through intact.
    """
    body = (DATA / fixture).read_text()
    plain = (DATA / "lce_benchmark_model_plain.txt").read_text()
    path.write_text(
        "#!/bin/sh\n"
        "graph=''; prof=0\n"
        'for a in "$@"; do case "$a" in --graph=*) graph="${a#--graph=}";; --enable_op_profiling=true) prof=1;; esac; done\n'
        'echo "INFO: fake lce_benchmark_model at $0"\n'
        f"sleep {sleep}\n"
        'if [ ! -s "$graph" ]; then echo "ERROR: Could not open \'$graph\'." >&2; echo "ERROR: Benchmarking failed." >&2; exit 1; fi\n'
        'echo "INFO: Loaded model $graph"\n'
        'if [ "$prof" = 1 ]; then\n'
        f"cat <<'__EOF_PROFILE__'\n{body}__EOF_PROFILE__\n"
        "else\n"
        f"cat <<'__EOF_PLAIN__'\n{plain}__EOF_PLAIN__\n"
        "fi\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _remote_base(tmp_path: Path) -> Path:
    base = tmp_path / f"remote {HOSTILE}"
    base.mkdir()
    return base


@pytest.mark.slow
def test_ssh_python_runner_real_model(sshd, tiny_tflite, tmp_path):
    model = tmp_path / f"{HOSTILE}.tflite"
    shutil.copy(tiny_tflite, model)
    base = _remote_base(tmp_path)
    results = tmp_path / "results.jsonl"
    result = _invoke(["bench", str(model), *sshd.args(), "--runner", "python", "--remote-python", sys.executable,
                      "--remote-tmp", str(base), "--threads", "1,2", "--runs", "5", "--warmup", "1",
                      "--results", str(results), "-v"])
    assert result.exit_code == 0, result.output
    recs = load_records([results])
    assert len(recs) == 2 and {r.threads for r in recs} == {1, 2}
    for r in recs:
        assert r.runner == "python" and r.device == sshd.device and r.latency.count == 5
        assert r.latency.median_ms is not None and r.latency.p90_ms is not None
        assert r.facts.extra["larq_compute_engine"] and r.model_sha256 == read_model_file(model)[1].sha256
        assert HOST_X86_NOTE in r.kernel_notes  # the "remote" is this x86-64 host
    # Pushed files went into one mktemp dir under the base, which is gone now.
    assert "work dir" in result.output and list(base.iterdir()) == []
    assert (tmp_path / f"{HOSTILE}.bench.json").is_file()


@pytest.mark.slow
def test_ssh_python_runner_missing_python(sshd, tiny_tflite, tmp_path):
    base = _remote_base(tmp_path)
    with pytest.raises(DeviceError, match="remote python .* not found"):
        run_bench(tiny_tflite, sshd.options(runner="python", remote_python="/nonexistent/python3",
                                            remote_tmp=str(base), runs=2))
    assert list(base.iterdir()) == []


def test_ssh_binary_runner_on_remote_path_with_profile(sshd, tiny_tflite, tmp_path):
    fake = _fake_binary(sshd.bin / "lce_benchmark_model")
    try:
        base = _remote_base(tmp_path)
        model = tmp_path / f"{HOSTILE}.tflite"
        shutil.copy(tiny_tflite, model)
        logs = []
        recs = run_bench(model, sshd.options(remote_tmp=str(base), profile=True, threads=(1, 4), runs=50, warmup=5),
                         log=logs.append)
    finally:
        fake.unlink()
    assert len(recs) == 2 and [r.threads for r in recs] == [1, 4]
    r = recs[0]
    assert r.runner == "lce_benchmark_model" and r.latency.count == 50
    assert r.latency.mean_ms == pytest.approx(1.7264) and r.latency.max_ms == pytest.approx(1.95034)
    assert r.latency.median_ms is None and r.latency.p90_ms is None  # the tool does not print them
    assert r.op_split.binary_ms == pytest.approx(0.048 + 0.402 + 0.144 + 0.511 + 0.027)
    assert r.op_split.float_attention_ms == pytest.approx(0.221 + 0.097 + 2 * 0.184)
    assert r.op_split.other_float_ms == pytest.approx(0.018 + 0.012 + 0.009)
    assert r.facts.architecture == os.uname().machine and str(fake) in r.tool_version
    assert r.memory_mb == {"init_mb": pytest.approx(1.23047), "overall_mb": 2.5}
    workdir = next(m.split("work dir ", 1)[1] for m in logs if "work dir " in m)
    assert workdir.startswith(str(base) + "/edgebvit-bench.")
    assert not Path(workdir).exists() and list(base.iterdir()) == []


def test_ssh_binary_runner_pushed_binary_cli(sshd, tiny_tflite, tmp_path):
    fake = _fake_binary(tmp_path / f"fake {HOSTILE} lce")
    base = _remote_base(tmp_path)
    result = _invoke(["bench", str(tiny_tflite), *sshd.args(), "--benchmark-binary", str(fake), "--remote-tmp",
                      str(base), "--xnnpack", "both", "--results", str(tmp_path / "r.jsonl"), "--out",
                      str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    recs = load_records([tmp_path / "r.jsonl"])
    assert [r.xnnpack for r in recs] == [False, True] and all(r.op_split is None for r in recs)
    assert all("pushed" in r.tool_version for r in recs)
    assert list(base.iterdir()) == []
    # --compare reads what was written and draws a chart.
    chart = tmp_path / "cmp.png"
    result = _invoke(["bench", "--compare", str(tmp_path / "r.jsonl"), str(tmp_path / "r.json"), "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ssh_unreachable_port_is_one_line(tiny_tflite, tmp_path):
    port = _free_port()  # nothing listens there
    result = _invoke(["bench", str(tiny_tflite), "--device", f"ssh://nobody@127.0.0.1:{port}",
                      "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
                      "--connect-timeout", "3"])
    if shutil.which("ssh") is None:
        pytest.skip("ssh client not installed")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach ssh://nobody@127.0.0.1:")
    assert "refused" in lines[0].lower()


def test_ssh_wrong_key_is_refused_login(sshd, tiny_tflite, tmp_path):
    base = _remote_base(tmp_path)
    result = _invoke(["bench", str(tiny_tflite), *sshd.args(key=sshd.wrong_key), "--remote-tmp", str(base)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: login refused by {sshd.device}")
    assert list(base.iterdir()) == []


def test_ssh_missing_binary_is_one_line_and_leaves_nothing(sshd, tiny_tflite, tmp_path):
    base = _remote_base(tmp_path)
    assert not (sshd.bin / "lce_benchmark_model").exists()
    result = _invoke(["bench", str(tiny_tflite), *sshd.args(), "--remote-tmp", str(base)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: lce_benchmark_model not found on the PATH of {sshd.device}: pass --benchmark-binary FILE "
        "(pushed for the run) or --remote-binary PATH"]
    with pytest.raises(DeviceError, match="is not an executable file"):
        run_bench(tiny_tflite, sshd.options(remote_binary=str(tmp_path / f"{HOSTILE}/lce"), remote_tmp=str(base)))
    assert list(base.iterdir()) == []


def test_ssh_timeout_is_one_line_and_cleans_up(sshd, tiny_tflite, tmp_path):
    slow = _fake_binary(tmp_path / "slow_lce", sleep=30)
    base = _remote_base(tmp_path)
    t0 = time.time()
    result = _invoke(["bench", str(tiny_tflite), *sshd.args(), "--benchmark-binary", str(slow), "--remote-tmp",
                      str(base), "--timeout", "2"])
    assert time.time() - t0 < 25
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: lce_benchmark_model on {sshd.device} timed out after 2 s"]
    assert list(base.iterdir()) == []


def test_ssh_failing_binary_output_is_reported(sshd, tiny_tflite, tmp_path):
    """A tool that reports an error is a one-line error quoting it, and still leaves nothing behind."""
    broken = tmp_path / "broken_lce"
    broken.write_text("#!/bin/sh\necho 'INFO: STARTING!'\necho 'ERROR: Could not open model.' >&2\nexit 1\n")
    broken.chmod(0o755)
    base = _remote_base(tmp_path)
    with pytest.raises(DeviceError, match="lce_benchmark_model failed: Could not open model."):
        run_bench(tiny_tflite, sshd.options(benchmark_binary=broken, remote_tmp=str(base)))
    assert list(base.iterdir()) == []
