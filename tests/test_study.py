"""`edgebvit study`: a two-rung, one-seed, few-step study, killed midway, resumed, tabulated."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli

from edgebvit.study.ladders import LADDERS, get_ladder
from edgebvit.errors import EdgebvitError


def test_ladders_name_registered_models():
    from edgebvit.models.registry import list_models

    names = set(list_models())
    for lad in LADDERS.values():
        assert lad.rungs and len({r.key for r in lad.rungs}) == len(lad.rungs)
        for r in lad.rungs:
            assert r.model in names, (lad.name, r.key, r.model)
    assert [r.paper for r in LADDERS["binaryvit"].rungs] == [48.5, 56.4, 60.2, 61.8, 67.7, 70.6]
    assert [r.key for r in get_ladder("binaryvit", ("pyramid", "cls")).rungs] == ["cls", "pyramid"]
    with pytest.raises(EdgebvitError, match="no rung 'nope'"):
        get_ladder("binaryvit", ("nope",))
    with pytest.raises(EdgebvitError, match="unknown ladder"):
        get_ladder("nope")


def test_study_kill_resume_table(tmp_path, data):
    out = tmp_path / "study"
    args = [sys.executable, "-m", "edgebvit", "study", "binaryvit", "--rungs", "cls,affine", "--out", str(out),
            "--data", str(data), "--epochs", "2", "--eval-images", "16", "--seeds", "0",
            "steps_per_epoch=2", "image_size=32", "channels=1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = out / "cls" / "seed0" / "summary.json"
    deadline = time.time() + 600
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.is_file(), "the first rung never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # midway: the first run done, its export or the second run not
    proc.wait()
    assert not (out / "table.csv").exists()
    kept = first.stat().st_mtime_ns

    res = run_cli(*args[3:])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "finished, kept" in res.stdout
    assert first.stat().st_mtime_ns == kept
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["rung"], r["model"], r["seed"]) for r in rows] == [
        ("cls", "binaryvit_tiny_32_cls", "0"), ("affine", "binaryvit_tiny_32", "0")]
    for r in rows:
        assert int(r["binary_params"]) > 0 and float(r["flatbuffer_kib"]) > 0 and int(r["operators"]) > 0
        assert r["eval_images"] == "16" and 0.0 <= float(r["flatbuffer_test_accuracy"]) <= 100.0
        assert float(r["top1_agreement"]) >= 90.0
    md = (out / "table.md").read_text()
    assert "| 1 binary DeiT (class token) | binaryvit_tiny_32_cls |" in md and "| 48.5 |" in md and "| 61.8 |" in md
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No --batch-size: each run got train's short-budget batch, recorded in its config and summary.
    assert "batch auto" in md
    for rung in ("cls", "affine"):
        run = out / rung / "seed0"
        assert json.loads((run / "config.json").read_text())["batch_size"] == 32
        assert json.loads((run / "summary.json").read_text())["batch_size"] == 32

    # --table-only rebuilds the same rows from the finished runs, training nothing.
    before = (out / "table.csv").read_text()
    (out / "table.csv").unlink()
    res = run_cli("study", "binaryvit", "--table-only", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "table.csv").read_text() == before and "(--table-only)" in (out / "table.md").read_text()
    res = run_cli("study", "binaryvit", "--table-only", "--out", str(tmp_path / "nothing"))
    assert res.returncode != 0 and "not a study folder" in res.stderr.strip().splitlines()[-1]

    # Same folder, other budget: refused in one line, nothing touched.
    bad = run_cli(*[a if a != "2" else "3" for a in args[3:]])
    assert bad.returncode != 0 and "other settings (epochs differ)" in bad.stderr.strip().splitlines()[-1]
