"""Run commands on, and copy files to, a benchmark device over ssh or adb.

Rules this module keeps (tested): processes are started with argument lists (never shell=True);
every value that ends up inside a *remote* shell command line (paths, binary names, user flags)
goes through shlex.quote; the ssh destination is validated and placed after `--` so it can never
be read as an option. Failures become one-line DeviceErrors.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from edgebvit.errors import DeviceError

REMOTE_DIR_PREFIX = "edgebvit-bench."
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9._-]*)|\[[0-9A-Fa-f:.%A-Za-z]+\])$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_SERIAL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]*$")
_OPT_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def remote_command(argv: Sequence[str]) -> str:
    """A POSIX shell command line that runs exactly `argv` (each word single-quoted as needed)."""
    return shlex.join(str(a) for a in argv)


def wrap_run(workdir: str, argv: Sequence[str], *, timeout_s: Optional[int] = None, taskset: Optional[str] = None) -> str:
    """Remote script: cd into the work dir, run argv under `timeout` (when the device has it),
    pinned with `taskset` if asked, stderr merged into stdout so log lines keep their order."""
    cmd = list(argv)
    if taskset:
        cmd = ["taskset", taskset] + cmd
    inner = remote_command(cmd)
    script = f"cd {shlex.quote(workdir)} || exit 97; "
    if timeout_s:
        # The remote `timeout` stops the benchmark even if our ssh/adb client is killed first.
        script += (f"if command -v timeout >/dev/null 2>&1; then exec timeout {int(timeout_s)} {inner} 2>&1; "
                   f"else exec {inner} 2>&1; fi")
    else:
        script += f"exec {inner} 2>&1"
    return script


@dataclass(frozen=True, kw_only=True)
class SshTarget:
    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    @classmethod
    def parse(cls, spec: str) -> "SshTarget":
        if not spec.startswith("ssh://"):
            raise DeviceError(f"not an ssh device: {spec!r} (want ssh://user@host[:port])")
        rest = spec[len("ssh://"):].rstrip("/")
        user = None
        if "@" in rest:
            user, rest = rest.rsplit("@", 1)
            if not _USER.match(user):
                raise DeviceError(f"invalid ssh user in {spec!r}")
        port = None
        m = re.match(r"^(\[[^\]]+\]|[^:]+)(?::(\d+))?$", rest)
        if not m:
            raise DeviceError(f"invalid ssh device {spec!r} (want ssh://user@host[:port])")
        host = m.group(1)
        if m.group(2):
            port = int(m.group(2))
            if not 0 < port < 65536:
                raise DeviceError(f"invalid ssh port in {spec!r}")
        if not _HOST.match(host) or host.startswith("-"):
            raise DeviceError(f"invalid ssh host in {spec!r}")
        return cls(host=host.strip("[]"), user=user, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"


class Transport:
    """What the runners need from a device: a remote shell, a file push, a temp dir."""

    name: str
    default_tmp: str = "/tmp"

    def run(self, script: str, *, timeout: float, stdin_path: Optional[Path] = None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def push(self, local: Path, remote: str, *, timeout: float, executable: bool = False) -> None:
        raise NotImplementedError

    def make_temp_dir(self, base: str, *, timeout: float) -> str:
        pattern = base.rstrip("/") + "/" + REMOTE_DIR_PREFIX + "XXXXXXXX"
        proc = self.run(f"mktemp -d {shlex.quote(pattern)}", timeout=timeout)
        path = proc.stdout.strip()
        if proc.returncode != 0 or "\n" in path or not path.startswith(base.rstrip("/") + "/" + REMOTE_DIR_PREFIX):
            raise DeviceError(f"cannot create a temp dir under {base} on {self.name}: "
                              f"{_last_line(proc.stderr or proc.stdout) or 'mktemp failed'}")
        return path

    def remove_dir(self, path: str, *, timeout: float) -> None:
        # Refuse anything that is not a dir this module created: a cleanup must never widen.
        if REMOTE_DIR_PREFIX not in path.rsplit("/", 1)[-1]:
            raise ValueError(f"refusing to remove {path!r}: not an edgebvit temp dir")
        self.run(f"rm -rf -- {shlex.quote(path)}", timeout=timeout)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _spawn(argv: list, *, timeout: float, stdin_path: Optional[Path], what: str) -> subprocess.CompletedProcess:
    stdin = open(stdin_path, "rb") if stdin_path is not None else subprocess.DEVNULL
    try:
        return subprocess.run(argv, stdin=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what} timed out after {timeout:g} s") from None
    except FileNotFoundError:
        raise DeviceError(f"{argv[0]} not found on this machine's PATH (install it to benchmark on {what})") from None
    finally:
        if stdin_path is not None:
            stdin.close()


def _decode(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    proc.stdout = proc.stdout.decode("utf-8", "replace") if isinstance(proc.stdout, bytes) else proc.stdout
    proc.stderr = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else proc.stderr
    return proc


@dataclass(kw_only=True)
class SshTransport(Transport):
    target: SshTarget
    identity: Optional[Path] = None
    options: Sequence[str] = field(default_factory=tuple)  # "Key=Value" strings
    connect_timeout: int = 10
    ssh: str = "ssh"

    def __post_init__(self) -> None:
        self.name = str(self.target)
        for opt in self.options:
            key, sep, value = opt.partition("=")
            if not sep or not _OPT_KEY.match(key) or "\n" in value:
                raise DeviceError(f"invalid --ssh-option {opt!r} (want KEY=VALUE, e.g. StrictHostKeyChecking=accept-new)")
        if self.identity is not None and not Path(self.identity).is_file():
            raise DeviceError(f"ssh identity file not found: {self.identity}")

    def base_argv(self) -> list:
        argv = [self.ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", "LogLevel=ERROR"]
        for opt in self.options:
            argv += ["-o", opt]
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        return argv + ["--", self.target.host]

    def argv(self, script: str) -> list:
        return self.base_argv() + [script]

    def run(self, script: str, *, timeout: float, stdin_path: Optional[Path] = None) -> subprocess.CompletedProcess:
        proc = _decode(_spawn(self.argv(script), timeout=timeout, stdin_path=stdin_path, what=self.name))
        if proc.returncode == 255:
            raise self._ssh_error(proc.stderr)
        return proc

    def _ssh_error(self, stderr: str) -> DeviceError:
        err = _last_line(stderr)
        low = stderr.lower()
        if "permission denied" in low or "too many authentication failures" in low:
            return DeviceError(f"login refused by {self.name} ({err}); check the user and --identity KEY")
        if "host key verification failed" in low:
            return DeviceError(f"host key of {self.name} is not trusted ({err}); connect once with ssh, or pass "
                               "--ssh-option StrictHostKeyChecking=accept-new")
        for needle in ("connection refused", "timed out", "no route to host", "could not resolve", "network is unreachable",
                       "connection closed", "connection reset"):
            if needle in low:
                return DeviceError(f"cannot reach {self.name}: {err}")
        return DeviceError(f"ssh to {self.name} failed: {err or 'exit status 255'}")

    def push(self, local: Path, remote: str, *, timeout: float, executable: bool = False) -> None:
        # `cat >` over the ssh channel: no scp/sftp remote-path parsing, works on any POSIX shell.
        script = f"cat > {shlex.quote(remote)}"
        if executable:
            script += f" && chmod 755 {shlex.quote(remote)}"
        proc = self.run(script, timeout=timeout, stdin_path=Path(local))
        if proc.returncode != 0:
            raise DeviceError(f"copying {Path(local).name} to {self.name} failed: "
                              f"{_last_line(proc.stderr) or f'exit status {proc.returncode}'}")


@dataclass(kw_only=True)
class AdbTransport(Transport):
    serial: Optional[str] = None
    adb: str = "adb"
    default_tmp: str = "/data/local/tmp"

    @classmethod
    def parse(cls, spec: str, **kw) -> "AdbTransport":
        if spec == "adb":
            return cls(serial=None, **kw)
        if not spec.startswith("adb:"):
            raise DeviceError(f"not an adb device: {spec!r} (want adb or adb:SERIAL)")
        serial = spec[len("adb:"):]
        if not _SERIAL.match(serial):
            raise DeviceError(f"invalid adb serial in {spec!r}")
        return cls(serial=serial, **kw)

    def __post_init__(self) -> None:
        self.name = "adb" + (f":{self.serial}" if self.serial else "")

    def base_argv(self) -> list:
        return [self.adb] + (["-s", self.serial] if self.serial else [])

    def shell_argv(self, script: str) -> list:
        # adb joins its shell arguments with spaces for the device's sh: hand it one quoted script.
        return self.base_argv() + ["shell", script]

    def push_argv(self, local: Path, remote: str) -> list:
        # adb push sends the remote path over the sync protocol: no shell parses it, so no quoting.
        return self.base_argv() + ["push", str(Path(local).resolve()), remote]

    def _check_adb(self, proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        # adb's own failures come on stderr as "error: ..." / "adb: ..." with a non-zero status;
        # the benchmark's output is merged into stdout by wrap_run, so it cannot be mistaken for them.
        first = (proc.stderr or "").strip().splitlines()[:1]
        if proc.returncode != 0 and first and first[0].lower().startswith(("error:", "adb:")):
            low = first[0].lower()
            if "no devices/emulators" in low:
                msg = "no Android device connected"
            elif "unauthorized" in low:
                msg = "device unauthorized: accept the USB debugging prompt on the phone"
            else:
                msg = first[0]
            raise DeviceError(f"cannot reach {self.name}: {msg}")
        return proc

    def run(self, script: str, *, timeout: float, stdin_path: Optional[Path] = None) -> subprocess.CompletedProcess:
        proc = _decode(_spawn(self.shell_argv(script), timeout=timeout, stdin_path=stdin_path, what=self.name))
        return self._check_adb(proc)

    def push(self, local: Path, remote: str, *, timeout: float, executable: bool = False) -> None:
        proc = self._check_adb(_decode(_spawn(self.push_argv(local, remote), timeout=timeout, stdin_path=None,
                                              what=self.name)))
        if proc.returncode != 0:
            raise DeviceError(f"adb push of {Path(local).name} to {self.name} failed: {_last_line(proc.stderr or proc.stdout)}")
        if executable:
            self.run(f"chmod 755 {shlex.quote(remote)}", timeout=timeout)


def make_transport(device: str, *, identity: Optional[Path] = None, ssh_options: Sequence[str] = (),
                   connect_timeout: int = 10) -> Transport:
    if device.startswith("ssh://"):
        return SshTransport(target=SshTarget.parse(device), identity=identity, options=tuple(ssh_options),
                            connect_timeout=connect_timeout)
    if device == "adb" or device.startswith("adb:"):
        if shutil.which("adb") is None:
            raise DeviceError("adb not found on PATH: install Android platform-tools to benchmark on a phone")
        return AdbTransport.parse(device)
    raise DeviceError(f"unknown device {device!r}: use local, ssh://user@host[:port] or adb[:serial]")
