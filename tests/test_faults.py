"""Fault injection for training: kills at chosen points, a full disk, read-only and contended run
directories, truncated checkpoints, and every config source through one validation.

Each test drives the real `train()` / CLI on a toy .npz and checks what a user would see: a
one-line error with a non-zero exit, no lost or duplicated artifact, and a resumed run that is the
run it would have been.
"""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgebvit  # noqa: F401
from edgebvit.cli import cli

pytestmark = pytest.mark.slow
TINY = {"depths": 1, "embed_dims": 32, "num_heads": 1, "pool_branches": [3]}
EPOCHS = 3


@pytest.fixture(scope="module")
def toy(data):
    """conftest's toy 4-class .npz (64 train / 16 test 16x16 images)."""
    return data


def _cfg(data, **extra):
    return {"model": "binaryvit_tiny_32", "data": str(data), "epochs": EPOCHS, "batch_size": 16,
            "model_overrides": dict(TINY), "parity_images": 8,
            "augment": {"pad_crop": 2, "flip": True, "mixup_alpha": 0.2},
            "optim": {"learning_rate": 1e-3, "min_learning_rate": 1e-4}, **extra}


def _rows(run):
    return list(csv.DictReader((Path(run) / "metrics.csv").open()))


def _one_line_error(result, *needles):
    err = result.stderr if hasattr(result, "stderr") else ""
    assert result.exit_code != 0, result.output
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in (result.output + err)
    return lines[0]


KILL_AFTER_METRICS = textwrap.dedent("""
    # Die exactly between an epoch's metrics row and its checkpoint: BackupAndRestore's
    # epoch-end save of epoch 2 never happens.
    import os, signal, sys
    import edgebvit
    import tensorflow as tf
    from edgebvit.training.config import RunConfig, merge
    from edgebvit.training import train

    original = tf.keras.callbacks.BackupAndRestore.on_epoch_end
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, epoch, logs)
    tf.keras.callbacks.BackupAndRestore.on_epoch_end = on_epoch_end
    train(merge(RunConfig(), {CFG}), sys.argv[1], verbose=0)
""")


def test_kill_between_metrics_row_and_checkpoint_resumes_into_the_uninterrupted_run(tmp_path, toy):
    from edgebvit.training import train
    from edgebvit.training.config import RunConfig, merge

    reference = tmp_path / "reference"
    train(merge(RunConfig(), _cfg(toy)), reference, verbose=0, log=lambda m: None)

    run = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER_METRICS.replace("{CFG}", repr(_cfg(toy))))
    proc = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # The row of the epoch whose checkpoint was never written is there...
    assert [r["epoch"] for r in _rows(run)] == ["0", "1"]
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output[-3000:] + resumed.stderr[-2000:]
    # ...and after the resume every epoch has exactly one row, as in the uninterrupted run,
    # with the same numbers: the resumed epochs saw the same batches and augmentations.
    got, want = _rows(run), _rows(reference)
    assert [r["epoch"] for r in got] == [str(e) for e in range(EPOCHS)]
    for g, w in zip(got, want):
        for key in ("loss", "accuracy", "learning_rate"):
            assert float(g[key]) == pytest.approx(float(w[key]), rel=1e-4, abs=1e-6), (key, g, w)
    s_run = json.loads((run / "summary.json").read_text())
    s_ref = json.loads((reference / "summary.json").read_text())
    assert s_run["optimizer_steps"] == s_ref["optimizer_steps"]
    assert s_run["test_accuracy"] == pytest.approx(s_ref["test_accuracy"], abs=1e-6)


def test_second_process_on_the_same_run_is_refused(tmp_path, toy):
    from edgebvit.training.rundir import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        res = CliRunner().invoke(cli, ["train", "--out", str(run), "--data", str(toy), "--epochs", "1",
                                       "--set", "depths=1", "--set", "embed_dims=32"])
    line = _one_line_error(res, "is being trained by pid", str(os.getpid()))
    assert "another --out" in line
    assert not (run / "metrics.csv").exists()


def test_failed_start_does_not_block_the_corrected_retry(tmp_path, toy):
    run = tmp_path / "run"
    # 16x16 images do not split into patches of 5: the model cannot be built, after the run
    # directory was created.
    bad = CliRunner().invoke(cli, ["train", "--out", str(run), "--data", str(toy), "--epochs", "1",
                                   "--set", "depths=1", "--set", "embed_dims=32", "--set", "patch_size=5",
                                   "--set", "pool_branches=[3]"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    good = CliRunner().invoke(cli, ["train", "--out", str(run), "--data", str(toy), "--epochs", "1",
                                    "--batch-size", "32", "--set", "depths=1", "--set", "embed_dims=32"])
    assert good.exit_code == 0, good.output[-2000:] + good.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["model_overrides"]["embed_dims"] == 32


def test_resume_refuses_every_other_option_and_dry_run_trains_nothing(tmp_path, toy):
    from edgebvit.training.config import RunConfig, merge
    from edgebvit.training.rundir import prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(run, merge(RunConfig(), _cfg(toy)), resume=False)
    for extra in (["--batch-size", "8"], ["--lr", "0.1"], ["--seed", "3"], ["--out", str(tmp_path / "x")],
                  ["--set", "depths=2"], ["--steps-per-epoch", "1"], ["epochs=5"]):
        res = CliRunner().invoke(cli, ["train", "--resume", str(run), *extra])
        _one_line_error(res, "--resume takes its settings from the run's config.json")
    dry = CliRunner().invoke(cli, ["train", "--resume", str(run), "--dry-run"])
    assert dry.exit_code == 0 and "binaryvit_tiny_32" in dry.output
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()


def test_truncated_checkpoint_on_resume_is_one_line(tmp_path, toy):
    from edgebvit.training import train
    from edgebvit.training.config import RunConfig, merge

    run = tmp_path / "run"
    train(merge(RunConfig(), _cfg(toy, epochs=1)), run, verbose=0, log=lambda m: None)
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    for shard in (run / "checkpoints" / "chief").glob("*.data-*"):
        shard.write_bytes(shard.read_bytes()[:100])
    for index in (run / "checkpoints" / "chief").glob("*.index"):
        index.write_bytes(index.read_bytes()[:20])
    res = CliRunner().invoke(cli, ["train", "--resume", str(run)])
    _one_line_error(res, "cannot resume", "unreadable", "delete")


def test_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, toy, monkeypatch):
    import tensorflow as tf

    original = tf.keras.callbacks.BackupAndRestore.on_epoch_end

    def full_disk(self, epoch, logs=None):
        # What TensorFlow leaves when the disk fills mid-save: a temporary shard directory.
        partial = Path(self.backup_dir) / "chief" / "ckpt-1_temp" / "part-00000-of-00001.data-00000-of-00001"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device", str(partial))

    monkeypatch.setattr(tf.keras.callbacks.BackupAndRestore, "on_epoch_end", full_disk)
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--out", str(run), "--data", str(toy), "--epochs", "2",
                                   "--set", "depths=1", "--set", "embed_dims=32"])
    _one_line_error(res, "disk full", "--resume", "partial checkpoint")
    assert not list(run.rglob("*_temp*"))
    monkeypatch.setattr(tf.keras.callbacks.BackupAndRestore, "on_epoch_end", original)


def _read_only_dir(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    return target


def test_read_only_output_directory_is_one_line(tmp_path, toy):
    target = _read_only_dir(tmp_path)
    try:
        res = CliRunner().invoke(cli, ["train", "--out", str(target / "run"), "--data", str(toy), "--epochs", "1"])
        _one_line_error(res, "cannot create run directory", "read-only file system")
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "0"], "epochs must be in [1, 100000]"),
    (["epochs=0"], "epochs must be in [1, 100000]"),
    (["--steps-per-epoch", "0"], "steps_per_epoch must be in [1, inf] or none"),
    (["steps_per_epoch=0"], "steps_per_epoch must be in [1, inf] or none"),
    (["max_train_samples=-5"], "max_train_samples must be in [1, inf] or none"),
    (["--lr", "-1"], "optim.learning_rate must be in (0, 10]"),
    (["optim.beta_1=1.0"], "optim.beta_1 must be in [0, 1)"),
    (["parity_images=-1"], "parity_images must be in [0, 100000]"),
    (["--seed", "-1"], "seed must be in [0, 2147483647]"),
    (["channels=2"], "channels must be 1 (grayscale) or 3 (RGB)"),
    (["epochs=three"], "config key epochs: expected int"),
    (["--set", "depths=abc"], "option depths: expected Union[int, Tuple[int, ...]]"),
    (["--set", "spt=maybe"], "option spt: expected bool"),
    (["--set", "embed_dims=30", "--set", "num_heads=4"], "does not split into 4 heads"),
])
def test_every_config_source_is_validated_the_same_way(tmp_path, toy, args, needle):
    res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "run"), "--data", str(toy), "--dry-run", *args])
    _one_line_error(res, needle)
    key = next((a.split("=")[0] for a in args if "=" in a and not a.startswith("--")), None)
    if key and not args[0].startswith("--set") and "three" not in args[0]:
        # the same value from a YAML config file gets the same message
        path = tmp_path / "run.yaml"
        value = args[0].split("=", 1)[1]
        if "." in key:
            section, name = key.split(".")
            path.write_text(f"{section}:\n  {name}: {value}\n")
        else:
            path.write_text(f"{key}: {value}\n")
        res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "run2"), "--data", str(toy), "--dry-run",
                                       "--config", str(path)])
        _one_line_error(res, needle)


@pytest.mark.parametrize("override,needle", [
    ("num_classes=5", "num_classes=5 contradicts the data"),
    ("input_shape=[32,32,1]", "input_shape=(32, 32, 1) contradicts the data"),
])
def test_overrides_contradicting_the_data_are_one_line(tmp_path, toy, override, needle):
    res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "run"), "--data", str(toy), "--epochs", "1",
                                   "--set", "depths=1", "--set", "embed_dims=32", "--set", override])
    _one_line_error(res, needle)


def test_bench_killed_mid_sweep_leaves_the_model_and_no_partial_record(tmp_path):
    """SIGKILL `edgebvit bench` while it measures: the model is untouched, and the results file
    holds whole records or nothing (records are appended in one locked write at the end)."""
    import hashlib
    import time

    model = tmp_path / "tiny.tflite"
    model.write_bytes((Path(__file__).parent / "data" / "bench" / "tiny.tflite").read_bytes())
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    results = tmp_path / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edgebvit", "bench", str(model), "--threads", "1,2",
                             "--warmup", "100000000", "--runs", "5", "--results", str(results), "--out", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(8)  # TensorFlow-free start-up is fast; by now it is deep in 10^8 warm-up runs
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # it was still measuring when killed
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before
    if results.exists():
        for line in results.read_text().splitlines():
            json.loads(line)  # every line a whole record
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not [p for p in leftovers if p.endswith(".tmp")], leftovers
