"""The run directory: its layout, creating or reopening it, and the atomic writers training uses.

RUN_DIR/
  config.json           the resolved RunConfig
  checkpoints/          Keras BackupAndRestore state (model, optimizer, epoch): `--resume` continues here
  metrics.csv           one row per epoch (appended across resumes)
  metrics.json          the same, as JSON, written at the end
  tensorboard/          TensorBoard logs (loss terms, accuracy, learning rate, flip ratio)
  best.keras, best.json the student at its best epoch (val_accuracy, else training accuracy)
  model.keras           the final (last-epoch) Keras model
  parity_images.npz     held-out test images (model-ready float32) + labels for export's parity check
  summary.json          test accuracy, timings, optimizer steps, parameter/MAC counts (written last)

The file names live in `edgebvit.artifacts`, shared with export, which reads this directory.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import tensorflow as tf

from edgebvit.artifacts import CONFIG_FILE, PARITY_FILE, SUMMARY_FILE
from edgebvit.errors import EdgebvitError
from edgebvit.fileio import atomic_write_bytes, atomic_write_json
from edgebvit.training.config import RunConfig
from edgebvit.training.data import Dataset, normalize


def prepare_run_dir(run_dir: Path, cfg: RunConfig, *, resume: bool) -> RunConfig:
    """Create RUN_DIR for a new run, or load its saved config when resuming."""
    cfg_path = run_dir / CONFIG_FILE
    if resume:
        if not cfg_path.is_file():
            raise EdgebvitError(f"cannot resume: {run_dir} has no {CONFIG_FILE}; is it a run directory?")
        if (run_dir / SUMMARY_FILE).is_file():
            raise EdgebvitError(f"{run_dir} already finished (it has {SUMMARY_FILE}); nothing to resume")
        return RunConfig.load(cfg_path).validate()
    if run_dir.exists() and any(run_dir.iterdir()):
        if cfg_path.is_file() and not (run_dir / SUMMARY_FILE).is_file():
            raise EdgebvitError(
                f"{run_dir} holds an unfinished run; continue it with `edgebvit train --resume {run_dir}` "
                "or choose another --out"
            )
        raise EdgebvitError(f"{run_dir} is not empty; choose another --out or delete it")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, cfg.to_dict())
    return cfg


def save_student(student: tf.keras.Model, path: Path) -> None:
    """Save to a temporary .keras file, then rename: a killed save never leaves a broken model.

    The layers' configs carry their own kernel quantizers, so a stage switch installed on the
    variables never reaches the file.
    """
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    student.save(tmp)
    tmp.replace(path)


def write_parity_images(run_dir: Path, ds: Dataset, n: int) -> None:
    """Save the first n test images, model-ready, for `edgebvit export`'s parity check."""
    buf = io.BytesIO()
    np.savez_compressed(buf, x=normalize(ds.x_test[:n]), y=ds.y_test[:n].astype(np.int64))
    atomic_write_bytes(run_dir / PARITY_FILE, buf.getvalue())


def read_metrics_csv(path: Path):
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    # CSVLogger writes "NA" for keys missing in an epoch (e.g. no validation set).
    return [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v not in ("", "NA")}
            for r in rows]
