"""Command construction for ssh and adb, quoting of hostile values, and the adb runner end to end
against a fake `adb` (no phone): every remote value reaches the device shell as one intact word."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edgebvit.bench.harness import BenchConfig, BenchOptions, binary_argv, run_bench
from edgebvit.bench.transport import AdbTransport, SshTarget, SshTransport, make_transport, wrap_run
from edgebvit.errors import DeviceError

DATA = Path(__file__).parent / "data" / "bench"
HOSTILE = "a b;rm -rf ~'$(x)`"


def _sh(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False).stdout


def test_wrap_run_keeps_hostile_words_intact(tmp_path):
    workdir = tmp_path / f"w {HOSTILE}"
    workdir.mkdir()
    canary = tmp_path / "canary"
    words = [HOSTILE, f"--graph={workdir}/{HOSTILE}.tflite", f"$(touch {canary})", "`touch x`", "*", "-n"]
    script = wrap_run(str(workdir), ["printf", "%s\\n", *words], timeout_s=10)
    assert _sh(script).splitlines() == words
    assert not canary.exists()
    # and cd really went into the hostile directory
    assert _sh(wrap_run(str(workdir), ["pwd"])).strip() == str(workdir)


def test_wrap_run_with_taskset_and_no_timeout():
    script = wrap_run("/d", ["bin", "x y"], taskset="f0")
    assert script == "cd /d || exit 97; exec taskset f0 bin 'x y' 2>&1"


@pytest.mark.parametrize("spec, host, user, port", [
    ("ssh://pi@raspberrypi.local", "raspberrypi.local", "pi", None),
    ("ssh://pi@10.0.0.5:2222", "10.0.0.5", "pi", 2222),
    ("ssh://board", "board", None, None),
    ("ssh://root@[::1]:22", "::1", "root", 22),
])
def test_ssh_target_parse(spec, host, user, port):
    t = SshTarget.parse(spec)
    assert (t.host, t.user, t.port) == (host, user, port)


@pytest.mark.parametrize("spec", [
    "ssh://-oProxyCommand=touch%20x",
    "ssh://pi@-oProxyCommand=x",
    "ssh://p;i@host",
    "ssh://pi@ho st",
    "ssh://pi@host:99999",
    "ssh://pi@host;rm",
    "pi@host",
])
def test_ssh_target_rejects_option_injection(spec):
    with pytest.raises(DeviceError):
        SshTarget.parse(spec)


def test_ssh_argv_is_a_list_with_destination_after_double_dash(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    t = SshTransport(target=SshTarget.parse("ssh://pi@board:2200"), identity=key, options=("StrictHostKeyChecking=no",),
                     connect_timeout=7)
    argv = t.argv("echo hi")
    assert argv[0] == "ssh" and argv[-3:] == ["--", "board", "echo hi"]
    for pair in (["-o", "BatchMode=yes"], ["-o", "ConnectTimeout=7"], ["-o", "StrictHostKeyChecking=no"],
                 ["-p", "2200"], ["-l", "pi"], ["-i", str(key)]):
        i = argv.index(pair[1])
        assert argv[i - 1] == pair[0]


@pytest.mark.parametrize("opt", ["NoEquals", "Bad Key=1", "-oProxy=x", "Key=a\nb"])
def test_ssh_option_validation(opt):
    with pytest.raises(DeviceError, match="invalid --ssh-option"):
        SshTransport(target=SshTarget.parse("ssh://h"), options=(opt,))


def test_remove_dir_refuses_foreign_paths():
    t = SshTransport(target=SshTarget.parse("ssh://h"))
    for path in ("/", "/tmp", "/home/pi", ""):
        with pytest.raises(ValueError):
            t.remove_dir(path, timeout=1)


def test_adb_command_construction_with_hostile_values(tmp_path):
    t = AdbTransport.parse("adb:emulator-5554")
    remote = f"/data/local/tmp/edgebvit-bench.X/{HOSTILE}"
    local = tmp_path / f"{HOSTILE}.tflite"
    assert t.push_argv(local, remote) == ["adb", "-s", "emulator-5554", "push", str(local.resolve()), remote]
    argv = binary_argv(f"/data/local/tmp/{HOSTILE}/lce_benchmark_model", remote,
                       BenchConfig(threads=4, xnnpack=True, indirect_bgemm=False),
                       BenchOptions(device="adb", runs=10, warmup=2, profile=True))
    script = wrap_run(f"/data/local/tmp/{HOSTILE}", argv, timeout_s=60, taskset="f0")
    shell = t.shell_argv(script)
    assert shell[:4] == ["adb", "-s", "emulator-5554", "shell"] and len(shell) == 5
    words = shlex.split(shell[4])
    assert words[:3] == ["cd", f"/data/local/tmp/{HOSTILE}", "||"]
    i = words.index("taskset")
    assert words[i: i + 3 + len(argv)][:2] == ["taskset", "f0"]
    assert words[i + 2: i + 2 + len(argv)] == argv
    assert f"--graph={remote}" in argv and "--num_threads=4" in argv and "--use_xnnpack=true" in argv
    assert "--enable_op_profiling=true" in argv and "--use_indirect_bgemm=false" in argv


@pytest.mark.parametrize("spec", ["adb:-s", "adb:a b", "adb:x;y", "adbx"])
def test_adb_serial_validation(spec):
    with pytest.raises(DeviceError):
        AdbTransport.parse(spec)


def test_unknown_device():
    with pytest.raises(DeviceError, match="unknown device"):
        make_transport("telnet://x")


FAKE_ADB = r'''#!{python}
"""Fake adb: logs argv, runs `shell SCRIPT` with sh -c, `push L R` with a copy."""
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
if os.environ.get("FAKE_ADB_MODE") == "nodevice":
    sys.stderr.write("error: no devices/emulators found\n"); sys.exit(1)
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "shell":
    assert len(args) == 2, args  # edgebvit hands adb one pre-quoted script
    sys.exit(subprocess.run(["sh", "-c", args[1]]).returncode)
if args[0] == "push":
    shutil.copyfile(args[1], args[2]); print(f"{{args[1]}}: 1 file pushed"); sys.exit(0)
sys.exit(2)
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    return log


def _fake_lce(path: Path) -> Path:
    body = (DATA / "lce_benchmark_model_profile.txt").read_text()
    path.write_text("#!/bin/sh\n"
                    'for a in "$@"; do case "$a" in --graph=*) g="${a#--graph=}";; esac; done\n'
                    '[ -s "$g" ] || { echo "ERROR: Could not open $g" >&2; exit 1; }\n'
                    f"cat <<'__EOF__'\n{body}__EOF__\n")
    path.chmod(0o755)
    return path


def test_adb_runner_end_to_end_with_fake_adb(fake_adb, tmp_path):
    model = tmp_path / f"{HOSTILE}.tflite"
    model.write_bytes((DATA / "tiny.tflite").read_bytes())
    base = tmp_path / f"device tmp {HOSTILE}"
    base.mkdir()
    binary = _fake_lce(tmp_path / f"lce {HOSTILE}")
    recs = run_bench(model, BenchOptions(device="adb:emulator-5554", benchmark_binary=binary, remote_tmp=str(base),
                                         profile=True, taskset="3", threads=(1, 2)))
    assert [r.threads for r in recs] == [1, 2] and recs[0].op_split.binary_ms > 0
    assert recs[0].device == "adb:emulator-5554" and recs[0].taskset == "3"
    assert list(base.iterdir()) == []  # pushed model and binary removed
    calls = [json.loads(line) for line in fake_adb.read_text().splitlines()]
    assert all(c[:2] == ["-s", "emulator-5554"] for c in calls)
    pushes = [c for c in calls if c[2] == "push"]
    assert len(pushes) == 2
    # the device-side model name is sanitised for adb's sync protocol; the binary is renamed
    assert {Path(p[4]).name for p in pushes} == {"a_b_rm_-rf_____x__.tflite", "lce_benchmark_model"}
    runs = [shlex.split(c[3]) for c in calls if c[2] == "shell" and "--num_threads=1" in c[3]]
    assert len(runs) == 1 and "taskset" in runs[0]
    graph = next(w for w in runs[0] if w.startswith("--graph="))
    assert graph.startswith(f"--graph={base}/edgebvit-bench.") and graph.endswith("/a_b_rm_-rf_____x__.tflite")


def test_adb_no_device_is_one_line(fake_adb, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_MODE", "nodevice")
    with pytest.raises(DeviceError, match="^cannot reach adb: no Android device connected$"):
        run_bench(DATA / "tiny.tflite", BenchOptions(device="adb"))


def test_adb_missing_binary(fake_adb, tmp_path, monkeypatch):
    base = tmp_path / "dev"
    base.mkdir()
    monkeypatch.setenv("PATH", str(Path(fake_adb.parent / "fakebin")) + ":/usr/bin:/bin")
    with pytest.raises(DeviceError, match="lce_benchmark_model not found on the PATH of adb"):
        run_bench(DATA / "tiny.tflite", BenchOptions(device="adb", remote_tmp=str(base)))
    assert list(base.iterdir()) == []
