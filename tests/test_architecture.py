"""The one-way data flow is enforced: import-linter's contracts (setup.cfg) hold on the tree, and
a planted import against the flow breaks them."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "tools" / "lint_imports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_import_contracts_hold(tmp_path):
    tool = _tool()
    res = tool.lint(tool.stage(ROOT, tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("target,line,contract", [
    ("edgebvit/bench/report.py", "from edgebvit.models import create_model", "bench-reads-only-flatbuffers"),
    ("edgebvit/models/profile.py", "from edgebvit.training import train", "models-define-only"),
    ("edgebvit/converters/parity.py", "import edgebvit.training.loop", "export-and-training-apart"),
    ("edgebvit/training/loop.py", "from edgebvit.converters import export", "export-and-training-apart"),
    ("edgebvit/flatbuffer.py", "import tensorflow", "flatbuffer-reader-tensorflow-free"),
])
def test_a_wrong_import_breaks_its_contract(tmp_path, target, line, contract):
    tool = _tool()
    staged = tool.stage(ROOT, tmp_path)
    assert tool.lint(staged, contracts=[contract], capture_output=True, text=True).returncode == 0
    path = staged / target
    path.write_text(path.read_text() + f"\n{line}  # planted by the test\n")
    res = tool.lint(staged, contracts=[contract], capture_output=True, text=True)
    assert res.returncode == 1 and "0 kept, 1 broken" in res.stdout, res.stdout + res.stderr
