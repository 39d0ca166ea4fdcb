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
  calibration_images.npz  training images (model-ready float32) for export's int8 ranges
  summary.json          test accuracy, timings, optimizer steps, parameter/MAC counts (written last)

The file names live in `edgebvit.artifacts`, shared with export, which reads this directory.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from edgebvit.artifacts import CALIBRATION_FILE, CHECKPOINT_DIR, CONFIG_FILE, METRICS_CSV, PARITY_FILE, SUMMARY_FILE
from edgebvit.errors import EdgebvitError
from edgebvit.fileio import atomic_write_bytes, atomic_write_json
from edgebvit.training.config import RunConfig
from edgebvit.training.data import Dataset, normalize, parity_sample
from edgebvit.training.dataset import calibration_sample


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive advisory lock (flock) on RUN_DIR/.lock, held while one process trains the run.

    A second `edgebvit train` on the same run directory is refused instead of interleaving its
    checkpoints and metric rows with the first one's. The kernel drops the lock when the process
    dies, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EdgebvitError(f"cannot lock run directory {self.path.parent}: {os_error_text(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise EdgebvitError(f"{self.path.parent} is being trained by {'pid ' + holder if holder.isdigit() else holder}; "
                                "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def os_error_text(exc: OSError) -> str:
    """An OSError as a few words a user can act on (disk full, read-only, permission, ...)."""
    hints = {errno.ENOSPC: "disk full; free space", errno.EDQUOT: "disk quota exceeded; free space",
             errno.EROFS: "read-only file system; choose another location",
             errno.EACCES: "permission denied; choose a writable location",
             errno.EPERM: "operation not permitted (immutable?); choose a writable location"}
    return hints.get(exc.errno, exc.strerror or str(exc))


def has_started(run_dir: Path) -> bool:
    """Whether a run directory holds any training progress (a checkpoint or a metrics row)."""
    ckpt = run_dir / CHECKPOINT_DIR
    return (ckpt.is_dir() and any(ckpt.iterdir())) or bool(read_metrics_csv(run_dir / METRICS_CSV))


def resume_config(run_dir: Path) -> RunConfig:
    """The saved config of an unfinished run, validated; one-line errors for anything else."""
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise EdgebvitError(f"cannot resume: {run_dir} has no {CONFIG_FILE}; is it a run directory?")
    if (run_dir / SUMMARY_FILE).is_file():
        raise EdgebvitError(f"{run_dir} already finished (it has {SUMMARY_FILE}); nothing to resume")
    return RunConfig.load(cfg_path).validate()


def prepare_run_dir(run_dir: Path, cfg: RunConfig, *, resume: bool, lock: Optional[RunLock] = None) -> RunConfig:
    """Create RUN_DIR for a new run, or load its saved config when resuming (under `lock`).

    A directory whose config.json never got as far as a checkpoint or a metrics row (the run
    failed or was killed while loading data or building the model) is not an unfinished run:
    a new `edgebvit train --out` with it replaces that config instead of blocking the retry.
    """
    cfg_path = run_dir / CONFIG_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgebvitError(f"cannot create run directory {run_dir}: {os_error_text(exc)}") from None
    if not run_dir.is_dir():
        raise EdgebvitError(f"{run_dir} is not a directory; choose another --out")
    if not resume and not cfg_path.is_file() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise EdgebvitError(f"{run_dir} is not empty; choose another --out or delete it")
    if lock is not None:
        lock.acquire()
    try:
        return _claim(run_dir, cfg, resume=resume)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _claim(run_dir: Path, cfg: RunConfig, *, resume: bool) -> RunConfig:
    cfg_path = run_dir / CONFIG_FILE
    if resume:
        return resume_config(run_dir)
    if cfg_path.is_file():
        if (run_dir / SUMMARY_FILE).is_file():
            raise EdgebvitError(f"{run_dir} holds a finished run; choose another --out or delete it")
        if has_started(run_dir):
            raise EdgebvitError(
                f"{run_dir} holds an unfinished run; continue it with `edgebvit train --resume {run_dir}` "
                "or choose another --out"
            )
    try:
        atomic_write_json(cfg_path, cfg.to_dict())
    except OSError as exc:
        raise EdgebvitError(f"cannot write {cfg_path}: {os_error_text(exc)}") from None
    return cfg


_EPOCH_KEY = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"  # BackupAndRestore's epoch counter


def checkpoint_epoch(run_dir: Path) -> int:
    """The epoch a resumed run starts at: one after the last epoch BackupAndRestore saved (0: none).

    A checkpoint that cannot be read (truncated, from another TensorFlow, half-deleted) is a
    one-line error naming it, rather than a traceback from deep inside `fit`.
    """
    chief = run_dir / CHECKPOINT_DIR / "chief"
    latest = tf.train.latest_checkpoint(str(chief)) if chief.is_dir() else None
    if latest is None:
        return 0
    try:
        reader = tf.train.load_checkpoint(latest)
        saved = int(reader.get_tensor(_EPOCH_KEY))
    except (tf.errors.OpError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EdgebvitError(f"cannot resume {run_dir}: its checkpoint {latest} is unreadable ({first}); "
                            f"delete {run_dir / CHECKPOINT_DIR} to restart from epoch 1") from None
    return saved + 1 if saved >= 0 else 0


def remove_partial_checkpoints(run_dir: Path) -> int:
    """Delete what an interrupted checkpoint or model save left half-written (TensorFlow's
    `*_temp*` shards, edgebvit's `.*.tmp*` files), so a full disk is not kept full by them."""
    removed = 0
    for root in (run_dir / CHECKPOINT_DIR, run_dir):
        if not root.is_dir():
            continue
        for p in list(root.rglob("*_temp*")) + list(root.glob(".*.tmp*")):
            try:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def save_student(student: tf.keras.Model, path: Path) -> None:
    """Save to a temporary .keras file, then rename: a killed save never leaves a broken model.

    The layers' configs carry their own kernel quantizers, so a stage switch installed on the
    variables never reaches the file. A failed save (disk full) removes its temporary file.
    """
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        student.save(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parity_images(run_dir: Path, ds: Dataset, n: int, *, seed: int = 0) -> None:
    """Save n test images, model-ready, for `edgebvit export`'s parity check: a seeded random
    sample across every class (the first n would cover only the first classes of a folder)."""
    x, y = parity_sample(ds, n, seed)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=normalize(x), y=np.asarray(y, np.int64))
    atomic_write_bytes(run_dir / PARITY_FILE, buf.getvalue())


def write_calibration_images(run_dir: Path, ds: Dataset, n: int, *, seed: int = 0) -> None:
    """Save n training images, model-ready, for `edgebvit export --integer full` (per-tensor
    int8 ranges): a seeded stratified sample of the training split, never test images, so the
    parity gate and the test accuracy are not measured on the data the ranges came from."""
    x, y = calibration_sample(ds, n, seed)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=normalize(x), y=np.asarray(y, np.int64))
    atomic_write_bytes(run_dir / CALIBRATION_FILE, buf.getvalue())


def read_metrics_csv(path: Path):
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    # CSVLogger writes "NA" for keys missing in an epoch (e.g. no validation set).
    return [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v not in ("", "NA")}
            for r in rows]
