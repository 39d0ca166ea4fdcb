"""The paths bench reads and writes: one check for every output, one translation of write failures.

Every artifact `edgebvit bench` writes (the JSON report, the JSONL results, the comparison chart;
`edgebvit inspect --plot` too) is declared as an `Output` and goes through `check_outputs` before
any work starts, so a wrong path costs nothing: an output may not be an input (the model, a
results file being compared, the benchmark binary, the ssh key: same resolved path or the same
file by `os.path.samefile`), its name must end in the suffix of what is written (no JSON into
`model.tflite`), no two outputs may share a file, and its folder must be one we can write to.
The writers themselves run inside `writing()`, which turns any OSError (permission, read-only
file system, immutable file, disk full) into one `EdgebvitError` line naming the file.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

from edgebvit.artifacts import CONFIG_FILE, TFLITE_FILE
from edgebvit.errors import EdgebvitError, FlatbufferError

RESULTS_FILE = "bench_results.jsonl"  # default --results, next to the flatbuffer


@dataclass(frozen=True)
class Output:
    """One file a command is about to write."""

    path: Path
    option: str  # the option that names it, e.g. "--out"
    what: str  # e.g. "the bench report (JSON)"
    suffixes: Tuple[str, ...]  # accepted name endings, lower case, e.g. (".json",)
    append: bool = False  # appended to in place (results) rather than replaced atomically


def _resolved(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError:  # pragma: no cover - realpath does not raise on Linux
        return Path(os.path.abspath(path))


def _same_file(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_outputs(outputs: Sequence[Output], inputs: Sequence[Tuple[str, Optional[Path]]] = ()) -> None:
    """Refuse, in one line, any output that would replace an input, has the wrong suffix, collides
    with another output, or lies in a folder that cannot be written. Call it before doing any work."""
    inputs = [(what, Path(p)) for what, p in inputs if p is not None]
    for i, out in enumerate(outputs):
        path = Path(out.path)
        label = f"{out.option} {path}"
        if path.is_dir():
            raise EdgebvitError(f"{label} is a directory; give a file name ending in {out.suffixes[0]} for {out.what}")
        for what, inp in inputs:
            if _same_file(path, inp):
                raise EdgebvitError(f"{label} is {what} ({inp}): refusing to overwrite an input; choose another "
                                    f"{out.option} path")
        if path.suffix.lower() not in out.suffixes:
            has = f"ends in {path.suffix}" if path.suffix else "has no suffix"
            raise EdgebvitError(f"{label}: {out.what} must go to a file whose name ends in "
                                f"{' or '.join(out.suffixes)}, and this one {has}; choose another {out.option} path")
        for other in outputs[:i]:
            if _same_file(path, Path(other.path)):
                raise EdgebvitError(f"{label} is also {other.option}: {out.what} and {other.what} need two files")
        _check_writable(out, label)


def _check_writable(out: Output, label: str) -> None:
    path = Path(out.path)
    if out.append and path.is_file():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # opens for append, writes nothing
        except OSError as err:
            raise EdgebvitError(f"{label}: cannot append to it ({describe_os_error(err)})") from None
        return
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise EdgebvitError(f"{label}: {folder} is not a directory; choose another {out.option} path")
    if folder == Path(os.path.abspath(path.parent)):
        try:  # the folder exists: prove it takes a new file, as the atomic write will need
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise EdgebvitError(f"{label}: cannot write in {folder} ({describe_os_error(err)}); choose another "
                                f"{out.option} path") from None
        return
    # The folder will be created: the first existing ancestor must take it.
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(folder, os.W_OK | os.X_OK):
        reason = "read-only file system" if read_only else "permission denied"
        raise EdgebvitError(f"{label}: cannot create its folder in {folder} ({reason}); choose another "
                            f"{out.option} path")


_REASONS = {
    errno.ENOSPC: "no space left on device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "read-only file system: write elsewhere",
    errno.EACCES: "permission denied: check the folder's permissions or write elsewhere",
    errno.EPERM: "operation not permitted (an immutable file or folder? see lsattr): write elsewhere",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent is not a directory",
    errno.ENOENT: "a parent folder vanished",
}


def describe_os_error(err: OSError) -> str:
    return _REASONS.get(err.errno, (err.strerror or str(err)).lower())


@contextmanager
def writing(path: Path, what: str = "") -> Iterator[None]:
    """Run a writer; an OSError becomes one line: `cannot write WHAT PATH: reason: what to do`."""
    try:
        yield
    except OSError as err:
        label = f"{what} {path}" if what else str(path)
        raise EdgebvitError(f"cannot write {label}: {describe_os_error(err)}") from None


def check_model_argument(path: Path) -> None:
    """The FILE argument of bench and inspect: a directory gets a "did you mean" pointing at its flatbuffer."""
    path = Path(path)
    if not path.is_dir():
        return
    candidate = path / TFLITE_FILE
    if candidate.is_file():
        raise FlatbufferError(f"{path} is a directory; did you mean {candidate}?")
    found = sorted(p for p in path.glob("*.tflite") if p.is_file())
    if len(found) == 1:
        raise FlatbufferError(f"{path} is a directory; did you mean {found[0]}?")
    if found:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise FlatbufferError(f"{path} is a directory; did you mean one of its .tflite files ({names})?")
    if (path / CONFIG_FILE).is_file():
        raise FlatbufferError(f"{path} is a directory; did you mean {candidate}? It does not exist yet: run "
                              f"`edgebvit export {path} --tflite` first")
    raise FlatbufferError(f"{path} is a directory, not a .tflite file; give the flatbuffer's path")


__all__ = ["Output", "RESULTS_FILE", "check_model_argument", "check_outputs", "describe_os_error", "writing"]
