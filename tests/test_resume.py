"""Kill a run (SIGKILL, no cleanup) inside its second epoch, resume it with `edgebvit train --resume`,
and check the finished run: all epochs once each, optimizer steps and schedule continuing."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STEPS = 4  # 64 images / batch 16
EPOCHS = 3


def _data(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "toy.npz"
    np.savez(p, x_train=rng.integers(0, 256, (64, 16, 16), dtype=np.uint8), y_train=np.arange(64) % 4,
             x_test=rng.integers(0, 256, (20, 16, 16), dtype=np.uint8), y_test=np.arange(20) % 4)
    return p


KILLER = textwrap.dedent("""
    import os, signal, sys
    import edgebvit
    import tensorflow as tf
    from edgebvit.training.config import RunConfig, merge
    from edgebvit.training import train

    class KillInSecondEpoch(tf.keras.callbacks.Callback):
        # SIGKILL ourselves after the second epoch's second step: nothing gets to clean up.
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = merge(RunConfig(), {CFG})
    train(cfg, sys.argv[1], extra_callbacks=(KillInSecondEpoch(),), verbose=2)
""")


def test_killed_run_resumes_at_the_right_epoch(tmp_path):
    data = _data(tmp_path)
    run = tmp_path / "run"
    cfg = {"model": "binaryvit_tiny_32", "data": str(data), "epochs": EPOCHS, "batch_size": 16,
           "model_overrides": {"depths": 1, "embed_dims": 32, "num_heads": 1, "pool_branches": [3]},
           "parity_images": 8, "optim": {"learning_rate": 1e-3, "min_learning_rate": 1e-4}}
    script = tmp_path / "killer.py"
    script.write_text(KILLER.replace("{CFG}", repr(cfg)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, env=env,
                           timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stdout[-2000:] + first.stderr[-3000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0"]  # epoch 1 finished, epoch 2 did not
    assert not (run / "summary.json").exists() and not (run / "model.keras").exists()

    # The CLI in this process (TensorFlow is already loaded here; only the kill needs a subprocess).
    from click.testing import CliRunner

    import edgebvit  # noqa: F401
    from edgebvit.cli import cli

    runner = CliRunner()
    refused = runner.invoke(cli, ["train", "--out", str(run), "--data", str(data)])
    assert refused.exit_code != 0 and "--resume" in refused.stderr
    resumed = runner.invoke(cli, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output[-3000:] + resumed.stderr[-2000:]
    assert "resuming" in resumed.output
    summary = json.loads((run / "summary.json").read_text())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    assert summary["epochs"] == EPOCHS and summary["epochs_this_session"] == EPOCHS - 1
    # The optimizer's step counter continued from the checkpoint: one epoch before the kill,
    # two after it; the half-done epoch's steps were rolled back, not counted twice.
    assert summary["optimizer_steps"] == EPOCHS * STEPS
    # The learning rate each epoch ended with is the uninterrupted cosine schedule's.
    total, lr0, alpha = EPOCHS * STEPS, 1e-3, 0.1
    for r in rows:
        step = (int(r["epoch"]) + 1) * STEPS
        want = lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) + alpha)
        assert float(r["learning_rate"]) == pytest.approx(want, rel=1e-4)
    assert (run / "model.keras").is_file() and (run / "best.keras").is_file()
    with np.load(run / "parity_images.npz") as z:
        assert z["x"].shape == (8, 16, 16, 1)
    again = runner.invoke(cli, ["train", "--resume", str(run)])
    assert again.exit_code != 0 and "already finished" in again.stderr
