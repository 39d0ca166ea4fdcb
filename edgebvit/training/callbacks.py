"""Keras callbacks of a training run: per-epoch loss weights and stage, logging, best-model saving.

None of them does per-step work: everything happens at epoch boundaries.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import tensorflow as tf

from edgebvit.artifacts import BEST_MODEL_FILE, BEST_STATE_FILE
from edgebvit.fileio import atomic_write_json, atomic_write_text
from edgebvit.models.layers import binary_layers, latent
from edgebvit.training.config import RunConfig
from edgebvit.training.optim import current_learning_rate
from edgebvit.training.rundir import read_metrics_csv, save_student


@dataclass(frozen=True)
class EpochPlan:
    w_ce: float
    w_kd: float
    w_reg: float
    quantize_kernels: bool


def epoch_plan(cfg: RunConfig, epoch: int) -> EpochPlan:
    """Loss weights and stage for 0-based `epoch`; a pure function of it, so a resume agrees."""
    lam = cfg.distill.weight if cfg.distill.mode != "none" else 0.0
    w_ce, w_kd = 1.0 - lam, lam
    o = cfg.optim
    start = int(math.ceil(o.regularizer_start * cfg.epochs - 1e-9))
    beta = o.regularizer_weight if (o.regularizer_weight and epoch >= start) else 0.0
    if beta:
        if o.regularizer_mix == "paper":  # (1 - l - b) CE + l KD + b L_re
            w_ce = 1.0 - lam - beta
        else:  # (1 - b) (CE/KD mix) + b L_re; with KD only this is the code's 0.9 KD + 0.1 L_re
            w_ce, w_kd = w_ce * (1.0 - beta), w_kd * (1.0 - beta)
    return EpochPlan(w_ce, w_kd, beta, quantize_kernels=epoch >= o.stage1_epochs)


class LossSchedule(tf.keras.callbacks.Callback):
    """Sets the Trainer's loss weights and kernel-quantization switch at each epoch's start."""

    def __init__(self, cfg: RunConfig, log=print):
        super().__init__()
        self.cfg = cfg
        self.log = log
        self._last: Optional[EpochPlan] = None

    def on_epoch_begin(self, epoch, logs=None):
        plan = epoch_plan(self.cfg, epoch)
        trainer = self.model
        trainer.w_ce.assign(plan.w_ce)
        trainer.w_kd.assign(plan.w_kd)
        trainer.w_reg.assign(plan.w_reg)
        trainer.quantize_kernels.assign(1.0 if plan.quantize_kernels else 0.0)
        if self._last is not None and plan != self._last:
            self.log(f"epoch {epoch + 1}: loss weights ce={plan.w_ce:g} kd={plan.w_kd:g} reg={plan.w_reg:g}, "
                     f"{'binary' if plan.quantize_kernels else 'float'} weights")
        self._last = plan


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Adds the current learning rate to each epoch's logs (CSV and TensorBoard see it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class FlipRatioLogger(tf.keras.callbacks.Callback):
    """Fraction of binary weights whose sign changed during the epoch, as `flip_ratio`.

    larq 0.14's `lq.metrics.FlipRatio` is a per-step metric that layers only create when built
    inside `lq.context.metrics_scope(["flip_ratio"])`, and it adds an update to every training
    step; comparing the binarized kernels once per epoch costs nothing per step.
    """

    def __init__(self, student: tf.keras.Model):
        super().__init__()
        self.layers = binary_layers(student)
        self._before: Optional[List[np.ndarray]] = None

    def _signs(self) -> List[np.ndarray]:
        return [np.sign(layer.kernel_quantizer(tf.convert_to_tensor(latent(layer.kernel))).numpy())
                for layer in self.layers]

    def on_epoch_begin(self, epoch, logs=None):
        self._before = self._signs() if self.layers else None

    def on_epoch_end(self, epoch, logs=None):
        if self._before is None or logs is None:
            return
        after = self._signs()
        changed = sum(int(np.sum(a != b)) for a, b in zip(self._before, after))
        logs["flip_ratio"] = changed / max(1, sum(a.size for a in after))


class BestModelSaver(tf.keras.callbacks.Callback):
    """Saves the student to RUN_DIR/best.keras (atomically) whenever `monitor` improves.

    Epochs before `first_epoch` are ignored: in a two-stage schedule the first stage trains float
    weights, and best.keras must hold a model whose weights are binary.
    """

    def __init__(self, run_dir: Path, student: tf.keras.Model, monitor: str, *, first_epoch: int = 0):
        super().__init__()
        self.path = run_dir / BEST_MODEL_FILE
        self.state_path = run_dir / BEST_STATE_FILE
        self.student = student
        self.monitor = monitor
        self.first_epoch = int(first_epoch)
        self.best = -math.inf
        if self.state_path.is_file():  # a resumed run keeps its best so far
            self.best = float(json.loads(self.state_path.read_text()).get("value", -math.inf))

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if epoch < self.first_epoch or value is None or float(value) <= self.best:
            return
        self.best = float(value)
        save_student(self.student, self.path)
        atomic_write_json(self.state_path, {"epoch": epoch + 1, "monitor": self.monitor, "value": self.best})


class MetricsLogger(tf.keras.callbacks.Callback):
    """One CSV row per epoch in RUN_DIR/metrics.csv, rewritten atomically (CSVLogger's format).

    It runs before the checkpoint callback: a kill between the two leaves a row for an epoch the
    checkpoint does not have yet; that epoch is trained again on resume and its row replaced, so
    every epoch ends with exactly one row, as in an uninterrupted run. Rows of epochs at or after
    the one being (re)trained are dropped when an epoch ends.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        rows = [r for r in read_metrics_csv(self.path) if int(r["epoch"]) < epoch]
        row = {"epoch": epoch, **{k: float(v) for k, v in sorted((logs or {}).items())}}
        rows.append(row)
        keys = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, restval="NA", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())
