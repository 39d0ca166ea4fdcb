#!/usr/bin/env python3
"""Check the import contracts in setup.cfg ([importlinter]) against the package as installed.

`models/` and `converters/` sit at the top of the tree but install as `edgebvit.models` and
`edgebvit.converters` (setup.cfg's package_dir). import-linter reads a package from one folder,
so this lays the three folders out as they are installed, in a temporary directory, and runs
`lint-imports` there. Exit status: import-linter's (non-zero when a contract is broken).

    python tools/lint_imports.py            # what `make test` runs
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"edgebvit": "edgebvit", "models": "edgebvit/models", "converters": "edgebvit/converters"}


def stage(root: Path, dest: Path) -> Path:
    """Copy the source tree under `root` into `dest` in its installed layout; returns `dest`."""
    for src, dst in LAYOUT.items():
        shutil.copytree(root / src, dest / dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
    return dest


def lint(staged: Path, config: Path = ROOT / "setup.cfg", *, contracts=(), **run_kwargs) -> subprocess.CompletedProcess:
    """Run lint-imports on a staged tree (only the contract ids in `contracts`, if given)."""
    env = {**os.environ, "PYTHONPATH": str(staged) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe) if exe.exists() else "lint-imports", str(config), "--no-cache"]
    for contract in contracts:
        cmd += ["--contract", contract]
    return subprocess.run(cmd, cwd=staged, env=env, **run_kwargs)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="edgebvit-imports-") as tmp:
        return lint(stage(ROOT, Path(tmp))).returncode


if __name__ == "__main__":
    sys.exit(main())
