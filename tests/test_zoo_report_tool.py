"""tools/zoo_export_report.py: the side-by-side table, its re-timing pass and its option checks."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import edgebvit  # noqa: F401  (legacy Keras before TensorFlow)
from edgebvit.flatbuffer import read_flatbuffer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "bench" / "tiny.tflite"


def _tool():
    spec = importlib.util.spec_from_file_location("zoo_export_report", ROOT / "tools" / "zoo_export_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_only_retimes_every_kept_flatbuffer_and_prints_the_ratio(tmp_path, capsys):
    tool = _tool()
    report = read_flatbuffer(TINY)
    modes = {}
    for mode in ("none", "attention"):
        shutil.copy(TINY, tmp_path / f"binaryvit_tiny_32.{mode}.tflite")
        modes[mode] = {**tool.flatbuffer_row(report, 4 * report.file_bytes), "exported_as": mode,
                       "parity_top1": 1.0, "parity_relative_error": 0.0}
    modes["full"] = {"refused": "ModelError: no calibration"}
    other = {"model": "bhvit_small", "keras_binary_convs": 0, "modes": {}}  # not matched: left as it is
    row = {"model": "binaryvit_tiny_32", "keras_binary_convs": 24, "modes": modes}
    (tmp_path / "zoo_export.json").write_text(json.dumps([row, other]))

    assert tool.main(["binaryvit_tiny_32", "--time-only", "--latency-runs", "3", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "zoo_export.json").read_text())
    timed = rows[0]["modes"]
    assert timed["none"]["host_ms_1thread"] > 0 and timed["attention"]["host_ms_1thread"] > 0
    assert "host_ms_1thread" not in timed["full"] and rows[1] == other
    table = (tmp_path / "zoo_export.md").read_text()
    ratio = timed["attention"]["host_ms_1thread"] / timed["none"]["host_ms_1thread"]
    assert f"({ratio:.2f}x)" in table and "(4.0x)" in table
    assert "| `binaryvit_tiny_32` | full | refused: ModelError: no calibration |" in table


@pytest.mark.parametrize("modes", ["attention,none", "none,int4", ""])
def test_modes_must_start_with_none_and_be_known(modes, tmp_path, capsys):
    assert _tool().main(["binaryvit_tiny_32", "--modes", modes, "--out", str(tmp_path)]) == 2
    assert "error: --modes must start with none" in capsys.readouterr().err


def test_time_only_without_a_table_is_a_one_line_error(tmp_path, capsys):
    assert _tool().main(["binaryvit_tiny_32", "--time-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read") and "run without --time-only first" in err and "\n" not in err
