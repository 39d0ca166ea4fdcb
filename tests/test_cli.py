"""The CLI as a new user meets it: help everywhere, and one-line errors for bad input."""
import numpy as np
import pytest
from click.testing import CliRunner

import edgebvit
from edgebvit.cli import cli

from conftest import run_cli

COMMANDS = ["train", "export", "inspect", "bench", "models", "study"]


def test_version_and_help():
    runner = CliRunner()
    res = runner.invoke(cli, ["--version"])
    assert res.exit_code == 0 and edgebvit.__version__ in res.output
    res = runner.invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and len(res.output.splitlines()) > 3


def _assert_one_line_error(proc, *needles):
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    last = err.splitlines()[-1]
    assert last.startswith("error: ") or last.startswith("Error: "), err
    for n in needles:
        assert n in last, (n, last)


def test_unknown_model_name_is_one_line(tmp_path):
    proc = run_cli("train", "--model", "no_such_vit", "--out", tmp_path / "r")
    _assert_one_line_error(proc, "unknown model 'no_such_vit'", "edgebvit models")
    assert not (tmp_path / "r").exists(), "a bad model name must not leave a run directory"


def test_unknown_model_option_is_one_line(tmp_path):
    proc = run_cli("train", "--model", "binaryvit_tiny_32", "--set", "no_such_option=3", "--out", tmp_path / "r")
    _assert_one_line_error(proc, "no_such_option")


def test_wrong_data_paths_are_one_line(tmp_path):
    proc = run_cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r")
    _assert_one_line_error(proc, "unknown data")
    proc = run_cli("train", "--data", "fashion_mnist", "--data-dir", tmp_path / "missing", "--out", tmp_path / "r2")
    _assert_one_line_error(proc, "does not exist")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    proc = run_cli("train", "--data", "fashion_mnist", "--data-dir", empty, "--out", tmp_path / "r3")
    _assert_one_line_error(proc, "fashion_mnist not found", "dataset-fashion-mnist")


def test_empty_image_folder_is_one_line(tmp_path):
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    proc = run_cli("train", "--data", root, "--out", tmp_path / "r")
    _assert_one_line_error(proc, "no readable images")


def test_corrupt_image_is_named_by_path(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    proc = run_cli("train", "--data", root, "--out", tmp_path / "r")
    _assert_one_line_error(proc, "broken.png")


def test_corrupt_tflite_and_missing_run_dir_are_one_line(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00" * 64)
    for args in (["inspect", bad], ["bench", bad], ["export", tmp_path / "no_run", "--tflite"]):
        _assert_one_line_error(run_cli(*args))


def test_models_lists_the_quickstart_model():
    res = CliRunner().invoke(cli, ["models", "binaryvit_tiny_32", "--json"])
    assert res.exit_code == 0, res.output
    import json

    rows = json.loads(res.output[res.output.index("["):])
    (row,) = rows
    assert row["name"] == "binaryvit_tiny_32"
    assert row["binary_params"] > 500_000 and row["binary_mac_share"] > 0.9
