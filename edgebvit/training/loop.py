"""`train()`: a RunConfig in, a run directory out (layout: edgebvit/training/rundir.py).

Order of work: validate the config, set up the distribution strategy (before any op runs), create
or reopen the run directory, load the data, build student / teacher / optimizer under the
strategy, install the two-stage kernel switch if asked, `fit` with the run's callbacks, evaluate
on the test split, then write model.keras, the parity images, metrics and summary.json (last).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from edgebvit.artifacts import (BEST_MODEL_FILE, BEST_STATE_FILE, CALIBRATION_FILE, CHECKPOINT_DIR, CONFIG_FILE, METRICS_CSV,
                                METRICS_JSON, MODEL_FILE, PARITY_FILE, SUMMARY_FILE, TENSORBOARD_DIR)
from edgebvit.errors import EdgebvitError
from edgebvit.fileio import atomic_write_json
from edgebvit.models.layers import binary_latent_kernels, fused, install_kernel_switch
from edgebvit.training.callbacks import (BestModelSaver, FlipRatioLogger, LearningRateLogger, LossSchedule,
                                         MetricsLogger, epoch_plan)
from edgebvit.training.config import AUTO_BATCH_RULE, RunConfig, auto_batch_size, describe
from edgebvit.training.data import Dataset, load_dataset, make_tf_dataset, split_validation, subsample
from edgebvit.training.distill import load_teacher
from edgebvit.training.optim import make_optimizer, optimizer_steps
from edgebvit.training.pipeline import steps_in_epoch, training_dataset
from edgebvit.training.rundir import (RunLock, checkpoint_epoch, os_error_text, prepare_run_dir, read_metrics_csv,
                                      remove_partial_checkpoints, save_student, write_calibration_images,
                                      write_parity_images)
from edgebvit.training.trainer import Trainer

CALIBRATION_IMAGES = 256  # training images kept for `export --integer full` (per-tensor int8 ranges)


@dataclass
class TrainResult:
    run_dir: Path
    test_accuracy: float
    test_loss: float
    train_seconds: float
    images_per_second: float
    epochs_run: int
    summary: Dict[str, Any]


def build_model(cfg: RunConfig, ds: Dataset):
    from edgebvit.models import create_model

    overrides = dict(cfg.model_overrides)
    overrides.setdefault("input_shape", ds.input_shape)
    overrides.setdefault("num_classes", ds.num_classes)
    return create_model(cfg.model, **overrides)


# ------------------------------------------------------------------------------------------
# Distribution
# ------------------------------------------------------------------------------------------
def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local GPUs, else all logical CPUs) or
    `multi_worker` (synchronous all-reduce across the machines TF_CONFIG lists)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise EdgebvitError(
                "strategy multi_worker needs TF_CONFIG: set it on every machine to "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": I}}'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise EdgebvitError(f"TF_CONFIG is not valid JSON: {exc}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise EdgebvitError(f"unknown strategy {name!r}; use default, mirrored or multi_worker")


# ------------------------------------------------------------------------------------------
def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, verbose: Optional[int] = None,
          log=print, extra_callbacks: Tuple[tf.keras.callbacks.Callback, ...] = ()) -> TrainResult:
    """Train `cfg.model` on `cfg.data`, writing everything into `run_dir` (see rundir.py)."""
    run_dir = Path(run_dir)
    cfg.validate()
    _check_distillation_head(cfg)
    # Multi-worker collectives must be set up before TensorFlow runs any op.
    strategy = make_strategy(cfg.strategy)
    lock = RunLock(run_dir)
    cfg = prepare_run_dir(run_dir, cfg, resume=resume, lock=lock)
    try:
        return _train_locked(cfg, run_dir, strategy, resume=resume, verbose=verbose, log=log,
                             extra_callbacks=extra_callbacks)
    except OSError as exc:  # disk full, read-only or vanished directory while training or saving
        removed = remove_partial_checkpoints(run_dir)
        where = exc.filename or run_dir
        raise EdgebvitError(f"cannot write {where}: {os_error_text(exc)}"
                            + (f" (removed {removed} partial checkpoint file(s))" if removed else "")
                            + f"; then continue with `edgebvit train --resume {run_dir}`") from None
    except tf.errors.OpError as exc:
        if "No space left" not in str(exc) and "Read-only file system" not in str(exc):
            raise
        removed = remove_partial_checkpoints(run_dir)
        reason = "disk full; free space" if "No space left" in str(exc) else "read-only file system"
        raise EdgebvitError(f"cannot write a checkpoint in {run_dir}: {reason}"
                            + (f" (removed {removed} partial checkpoint file(s))" if removed else "")
                            + f"; then continue with `edgebvit train --resume {run_dir}`") from None
    finally:
        lock.release()


def _check_distillation_head(cfg: RunConfig) -> None:
    """A student with DeiT's distillation head needs a teacher, and both of its heads a non-zero
    loss weight in every epoch (the class head learns only from the label term, the distillation
    head only from the teacher's): checked before any file is written."""
    from edgebvit.models.registry import resolve_config

    overrides = {k: v for k, v in cfg.model_overrides.items() if k not in ("input_shape", "num_classes")}
    if not getattr(resolve_config(cfg.model, **overrides), "distill_token", False):
        return
    deit = "DeiT's form: --teacher RUN_DIR distill.mode=hard distill.weight=0.5"
    if cfg.distill.mode == "none":
        raise EdgebvitError(f"model {cfg.model} has a distillation head, trained on a teacher's labels: "
                            f"pass a teacher ({deit})")
    for epoch in range(cfg.epochs):
        plan = epoch_plan(cfg, epoch)
        if plan.w_ce <= 0 or plan.w_kd <= 0:
            head = "class head (label weight" if plan.w_ce <= 0 else "distillation head (teacher weight"
            weight = plan.w_ce if plan.w_ce <= 0 else plan.w_kd
            raise EdgebvitError(f"model {cfg.model}: its {head} {weight:g} in epoch {epoch + 1}) would never "
                                f"train, but inference averages it in; set distill.weight between 0 and 1 "
                                f"({deit})")


def _check_data_fits_model(cfg: RunConfig, ds: Dataset) -> None:
    """`--set num_classes` / `input_shape` must agree with the data they will be trained on."""
    given = cfg.model_overrides
    if "num_classes" in given and int(given["num_classes"]) != ds.num_classes:
        raise EdgebvitError(f"num_classes={given['num_classes']} contradicts the data: {ds.name} has "
                            f"{ds.num_classes} classes; drop --set num_classes (it is taken from the data)")
    if "input_shape" in given and tuple(given["input_shape"]) != tuple(ds.input_shape):
        raise EdgebvitError(f"input_shape={tuple(given['input_shape'])} contradicts the data: {ds.name} images are "
                            f"{'x'.join(map(str, ds.input_shape))}; drop --set input_shape or change image_size/channels")


class _StartEpochGuard(tf.keras.callbacks.Callback):
    """The input stream was built for `first_epoch`: make sure fit (after BackupAndRestore) agrees."""

    def __init__(self, first_epoch: int):
        super().__init__()
        self.first_epoch = first_epoch
        self._checked = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._checked and epoch != self.first_epoch:
            raise RuntimeError(f"checkpoint restored epoch {epoch}, the input stream starts at {self.first_epoch}")
        self._checked = True


def _train_locked(cfg: RunConfig, run_dir: Path, strategy, *, resume: bool, verbose: Optional[int], log,
                  extra_callbacks) -> TrainResult:
    log(("resuming" if resume else "run") + f" {run_dir} with config:\n{describe(cfg)}")
    ds = load_dataset(cfg.data, data_dir=cfg.data_dir, image_size=cfg.image_size, channels=cfg.channels,
                      seed=cfg.seed)
    # Seeded, class-stratified samples: a subset never means "the first classes".
    ds = subsample(ds, max_train=cfg.max_train_samples, max_test=cfg.max_test_samples, seed=cfg.seed)
    ds, (x_val, y_val) = split_validation(ds, cfg.val_fraction, cfg.seed)
    log(ds.describe())
    _check_data_fits_model(cfg, ds)
    if cfg.batch_size is None:
        # Resolved from the data once and recorded, so config.json says what the run trained at.
        cfg.batch_size = auto_batch_size(len(ds.x_train), cfg.epochs)
        log(f"batch size {cfg.batch_size} (auto for {len(ds.x_train)} images x {cfg.epochs} epochs: "
            f"{AUTO_BATCH_RULE}; docs/study.md)")
        atomic_write_json(run_dir / CONFIG_FILE, cfg.to_dict())
    if strategy.num_replicas_in_sync > 1:
        log(f"strategy {cfg.strategy}: {strategy.num_replicas_in_sync} replicas, "
            f"{cfg.batch_size // strategy.num_replicas_in_sync} images per replica per step")

    from edgebvit.models.profile import profile_model

    tf.keras.utils.set_random_seed(cfg.seed)
    fused.set_enabled(cfg.kernels == "fused")  # read when fit traces the train step
    steps = steps_in_epoch(len(ds.x_train), cfg.batch_size, cfg.steps_per_epoch)
    with strategy.scope():
        student = build_model(cfg, ds)
        teacher = None
        if cfg.distill.mode != "none":
            teacher = load_teacher(cfg.distill.teacher, input_shape=ds.input_shape, num_classes=ds.num_classes)
            log(f"teacher {cfg.distill.teacher}: {teacher.count_params():,} parameters, frozen; "
                f"{cfg.distill.mode} distillation, weight {cfg.distill.weight:g}, "
                f"temperature {cfg.distill.temperature:g}")
        reg_kernels = (lambda: binary_latent_kernels(student)) if cfg.optim.regularizer_weight else None
        model = Trainer(student, teacher=teacher, distill_mode=cfg.distill.mode,
                        temperature=cfg.distill.temperature, reg_kernels=reg_kernels)
        model.compile(optimizer=make_optimizer(cfg, steps, student))
    stats = profile_model(student)
    log(f"model {cfg.model}: {stats.total_params:,} parameters ({stats.binary_params:,} binary), "
        f"{stats.binary_mac_share:.1%} of layer MACs binary")
    restore_quantizers = (install_kernel_switch(student, model.quantize_kernels)
                          if cfg.optim.stage1_epochs else (lambda: None))

    first_epoch = checkpoint_epoch(run_dir) if resume else 0
    train_ds = training_dataset(ds.x_train, ds.y_train, batch_size=cfg.batch_size, steps_per_epoch=steps,
                                first_epoch=first_epoch, epochs=cfg.epochs, seed=cfg.seed,
                                num_classes=ds.num_classes, augment=cfg.augment)
    val_ds = None
    if len(x_val):
        val_ds = make_tf_dataset(x_val, y_val, batch_size=cfg.batch_size, training=False,
                                 num_classes=ds.num_classes, cache=cfg.cache)
    callbacks = [
        _StartEpochGuard(first_epoch),
        LossSchedule(cfg, log=log),
        LearningRateLogger(),
        FlipRatioLogger(student),
        # best.keras must hold binary weights: a two-stage schedule's float epochs are not candidates.
        BestModelSaver(run_dir, student, "val_accuracy" if val_ds is not None else "accuracy",
                       first_epoch=cfg.optim.stage1_epochs),
        # The metrics row is written before the checkpoint: a kill between the two repeats the
        # epoch on resume, and its row is replaced, so no row is ever lost or duplicated.
        MetricsLogger(run_dir / METRICS_CSV),
        # Restores model, optimizer (hence schedule) and epoch on resume.
        tf.keras.callbacks.BackupAndRestore(str(run_dir / CHECKPOINT_DIR), delete_checkpoint=False),
        tf.keras.callbacks.TensorBoard(str(run_dir / TENSORBOARD_DIR), update_freq="epoch", profile_batch=0),
        *extra_callbacks,
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    try:
        history = model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, validation_data=val_ds,
                            callbacks=callbacks, verbose=verbose)
    finally:
        restore_quantizers()
    train_seconds = time.perf_counter() - start
    epochs_run = len(history.epoch)
    seen = epochs_run * steps * cfg.batch_size

    test_ds = make_tf_dataset(ds.x_test, ds.y_test, batch_size=256, training=False,
                              num_classes=ds.num_classes, cache=False)
    test = model.evaluate(test_ds, verbose=0, return_dict=True)
    test_loss, test_acc = float(test["loss"]), float(test["accuracy"])

    save_student(student, run_dir / MODEL_FILE)
    write_parity_images(run_dir, ds, cfg.parity_images, seed=cfg.seed)
    write_calibration_images(run_dir, ds, CALIBRATION_IMAGES, seed=cfg.seed)
    metrics = read_metrics_csv(run_dir / METRICS_CSV)
    atomic_write_json(run_dir / METRICS_JSON, metrics)
    best_state = run_dir / BEST_STATE_FILE
    best = json.loads(best_state.read_text()) if best_state.is_file() else None
    summary = {
        "model": cfg.model,
        "data": ds.describe(),
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "test_images": int(len(ds.x_test)),
        "epochs": len(metrics) or epochs_run,
        "epochs_this_session": epochs_run,
        "optimizer_steps": optimizer_steps(model.optimizer),
        "batch_size": cfg.batch_size,
        "train_seconds_this_session": round(train_seconds, 1),
        "images_per_second": round(seen / train_seconds, 1) if train_seconds > 0 else None,
        "replicas": int(strategy.num_replicas_in_sync),
        "teacher": cfg.distill.teacher if cfg.distill.mode != "none" else None,
        "best": best,
        "model_stats": stats.to_dict(),
        "artifacts": {"model": MODEL_FILE, "best_model": BEST_MODEL_FILE if best else None,
                      "parity_images": PARITY_FILE, "calibration_images": CALIBRATION_FILE,
                      "metrics": METRICS_CSV,
                      "tensorboard": TENSORBOARD_DIR, "checkpoints": CHECKPOINT_DIR},
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return TrainResult(run_dir, test_acc, test_loss, train_seconds,
                       summary["images_per_second"] or 0.0, epochs_run, summary)
