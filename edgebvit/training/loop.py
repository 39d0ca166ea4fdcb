"""Training: a RunConfig in, a run directory out.

RUN_DIR/
  config.json           the resolved RunConfig
  checkpoints/          Keras BackupAndRestore state (model, optimizer, epoch): `--resume` continues here
  metrics.csv           one row per epoch (appended across resumes)
  metrics.json          the same, as JSON, written at the end
  tensorboard/          TensorBoard logs (loss terms, accuracy, learning rate, flip ratio)
  best.keras            the student at its best epoch (val_accuracy, else training accuracy)
  model.keras           the final (last-epoch) Keras model
  parity_images.npz     held-out test images (model-ready float32) + labels for export's parity check
  summary.json          test accuracy, timings, optimizer steps, parameter/MAC counts
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from edgebvit.config import RunConfig, describe
from edgebvit.data import Dataset, load_dataset, make_tf_dataset, normalize, split_validation
from edgebvit.distill import distillation_loss, load_teacher
from edgebvit.errors import EdgebvitError
from edgebvit.fileio import atomic_write_bytes, atomic_write_json

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
BEST_MODEL_FILE = "best.keras"
SUMMARY_FILE = "summary.json"
PARITY_FILE = "parity_images.npz"


@dataclass
class TrainResult:
    run_dir: Path
    test_accuracy: float
    test_loss: float
    train_seconds: float
    images_per_second: float
    epochs_run: int
    summary: Dict[str, Any]


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


def _subsample(ds: Dataset, cfg: RunConfig) -> Dataset:
    if cfg.max_train_samples:
        ds.x_train, ds.y_train = ds.x_train[: cfg.max_train_samples], ds.y_train[: cfg.max_train_samples]
    if cfg.max_test_samples:
        ds.x_test, ds.y_test = ds.x_test[: cfg.max_test_samples], ds.y_test[: cfg.max_test_samples]
    return ds


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
# The training model
# ------------------------------------------------------------------------------------------
class Trainer(tf.keras.Model):
    """Wraps the student for `fit`: its own train step, so the saved model stays the plain student.

    Loss = w_ce * CE(labels) + w_kd * distill(teacher) + w_reg * L_re + the student's own losses,
    with the weights held in variables that `LossSchedule` sets at each epoch (the regularizer
    is switched on late, papers.md 2.8). The teacher is frozen and runs with training=False.

    The steps are excluded from AutoGraph: Keras would otherwise convert the whole optimizer and
    distribution machinery on first trace (minutes on 2 cores for a 300-layer model).
    """

    def __init__(self, student: tf.keras.Model, *, teacher: Optional[tf.keras.Model] = None,
                 distill_mode: str = "none", temperature: float = 1.0,
                 reg_kernels: Optional[Callable[[], List[tf.Variable]]] = None, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.distill_mode = distill_mode if teacher is not None else "none"
        self.temperature = float(temperature)
        self._reg_kernels = reg_kernels  # a function, so Keras does not track the variables twice
        weight = dict(trainable=False, dtype=tf.float32, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.w_ce = tf.Variable(1.0, name="w_ce", **weight)
        self.w_kd = tf.Variable(0.0, name="w_kd", **weight)
        self.w_reg = tf.Variable(0.0, name="w_reg", **weight)
        self.quantize_kernels = tf.Variable(1.0, name="quantize_kernels", **weight)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.ce_tracker = tf.keras.metrics.Mean(name="ce")
        self.kd_tracker = tf.keras.metrics.Mean(name="kd")
        self.reg_tracker = tf.keras.metrics.Mean(name="reg")
        self.accuracy = tf.keras.metrics.CategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        # Listed so Keras resets them every epoch.
        return [self.loss_tracker, self.ce_tracker, self.kd_tracker, self.reg_tracker, self.accuracy]

    def call(self, x, training=False):
        return self.student(x, training=training)

    def compute_losses(self, x, y, logits) -> Dict[str, tf.Tensor]:
        """The loss terms for one batch (replica-local means)."""
        ce = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, logits, from_logits=True))
        terms = {"ce": ce, "loss": self.w_ce * ce}
        if self.teacher is not None and self.distill_mode != "none":
            teacher_logits = tf.stop_gradient(self.teacher(x, training=False))
            kd = tf.reduce_mean(distillation_loss(self.distill_mode, logits, teacher_logits, self.temperature))
            terms["kd"] = kd
            terms["loss"] += self.w_kd * kd
        if self._reg_kernels is not None:
            from edgebvit.models.regularizers import oscillation_regularizer

            reg = oscillation_regularizer(self._reg_kernels())
            terms["reg"] = reg
            terms["loss"] += self.w_reg * reg
        if self.student.losses:
            terms["loss"] += tf.add_n(self.student.losses)
        return terms

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        x, y = data
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            terms = self.compute_losses(x, y, logits)
            # Replica gradients are summed by the optimizer: scale each replica's mean loss.
            scaled = terms["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        self.loss_tracker.update_state(terms["loss"])
        self.ce_tracker.update_state(terms["ce"])
        out = {"loss": self.loss_tracker.result(), "ce": self.ce_tracker.result()}
        for key, tracker in (("kd", self.kd_tracker), ("reg", self.reg_tracker)):
            if key in terms:
                tracker.update_state(terms[key])
                out[key] = tracker.result()
        self.accuracy.update_state(y, logits)
        out["accuracy"] = self.accuracy.result()
        return out

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        x, y = data
        logits = self.student(x, training=False)
        self.loss_tracker.update_state(
            tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, logits, from_logits=True)))
        self.accuracy.update_state(y, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy.result()}


# ------------------------------------------------------------------------------------------
# Optimizers and schedules
# ------------------------------------------------------------------------------------------
def binary_kernels(model: tf.keras.Model):
    """The latent weights of 1-bit kernels (larq layers whose kernel quantizer has precision 1)."""
    from edgebvit.models.regularizers import binary_latent_kernels

    return binary_latent_kernels(model)


def make_schedule(cfg: RunConfig, steps_per_epoch: int):
    """Per-step cosine decay to min_learning_rate (or constant), after an optional linear warm-up."""
    o = cfg.optim
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(int(o.warmup_epochs * steps_per_epoch), total - 1)
    alpha = 1.0 if o.schedule == "constant" else o.min_learning_rate / o.learning_rate
    return tf.keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=o.learning_rate if warmup == 0 else 0.0,
        decay_steps=max(1, total - warmup),
        alpha=alpha,
        warmup_target=o.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(cfg: RunConfig, steps_per_epoch: int, model: tf.keras.Model):
    """Adam, AdamW or Bop (papers.md 1.7, 2.9; Helwegen et al. 2019 for Bop).

    Without weight decay (the papers' setting) Adam is Keras' legacy Adam: its fused per-variable
    update traces ~2.5x faster and steps ~40% faster here than the new optimizer's. With weight
    decay it is AdamW, never decaying the binary latent weights (their sign is what matters).
    Bop trains the binary kernels (flip a sign when the gradient's moving average exceeds the
    threshold) and Adam the float rest, through larq's CaseOptimizer.
    """
    o = cfg.optim
    schedule = make_schedule(cfg, steps_per_epoch)
    adam = dict(beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
    if o.optimizer == "bop":
        import larq as lq

        if not binary_kernels(model):
            raise EdgebvitError(f"optimizer bop trains binary kernels, but {cfg.model} has none; use adam")
        if o.weight_decay:
            raise EdgebvitError("optimizer bop does not take weight_decay; set optim.weight_decay=0")
        unmask_ste_for_bop(model)
        return lq.optimizers.CaseOptimizer(
            (lq.optimizers.Bop.is_binary_variable,
             lq.optimizers.Bop(threshold=o.bop_threshold, gamma=o.bop_gamma)),
            default_optimizer=tf.keras.optimizers.legacy.Adam(learning_rate=schedule, **adam),
        )
    if o.optimizer == "adam" or o.weight_decay == 0:
        return tf.keras.optimizers.legacy.Adam(learning_rate=schedule, **adam)
    opt = tf.keras.optimizers.AdamW(learning_rate=schedule, weight_decay=o.weight_decay, jit_compile=False, **adam)
    # Decay only float weights; BN/bias/shift-like vectors are excluded as is customary.
    opt.exclude_from_weight_decay(
        var_list=binary_kernels(model),
        var_names=["bias", "beta", "gamma", "embedding", "scale", "shift", "slope", "alpha"],
    )
    return opt


def unmask_ste_for_bop(model: tf.keras.Model) -> int:
    """Switch ScaledSign kernels to the unmasked straight-through gradient (see ScaledSign); the
    forward pass, and so the exported model, is unchanged. Returns how many were switched."""
    from edgebvit.models.layers import ScaledSign
    from edgebvit.models.regularizers import binary_layers

    switched = 0
    for layer in binary_layers(model):
        q = layer.kernel_quantizer
        if isinstance(q, ScaledSign) and q.ste_mask != "none":
            q.ste_mask = "none"
            switched += 1
    return switched


def _stepping_optimizer(opt):
    """larq's CaseOptimizer neither steps its own counter nor has a rate: its default (Adam) does."""
    import larq as lq

    return opt.default if isinstance(opt, lq.optimizers.CaseOptimizer) else opt


def current_learning_rate(opt) -> float:
    opt = _stepping_optimizer(opt)
    lr = opt.learning_rate
    return float(lr(opt.iterations) if callable(lr) else lr)


def optimizer_steps(opt) -> int:
    return int(_stepping_optimizer(opt).iterations.numpy())


# ------------------------------------------------------------------------------------------
# Per-epoch loss weights and the two-stage schedule
# ------------------------------------------------------------------------------------------
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


class _SwitchableQuantizer:
    """Kernel quantizer that passes the float weights through while the switch variable is 0.

    Stage 1 of the two-stage schedule (ReActNet, papers.md 3): binary activations, real weights.
    Installed on the QuantizedVariable only during training; the saved model keeps its quantizer.
    """

    def __init__(self, quantizer, switch: tf.Variable):
        self.quantizer = quantizer
        self.switch = switch

    def __call__(self, w):
        return tf.cond(self.switch > 0.5, lambda: self.quantizer(w), lambda: tf.identity(w))


def install_kernel_switch(student: tf.keras.Model, switch: tf.Variable) -> Callable[[], None]:
    """Make every binary kernel switchable; returns the function that restores the originals."""
    from edgebvit.models.regularizers import binary_layers

    restored = []
    for layer in binary_layers(student):
        var = layer.kernel
        restored.append((var, var.quantizer))
        var.quantizer = _SwitchableQuantizer(var.quantizer, switch)

    def restore():
        for v, q in restored:
            v.quantizer = q

    return restore


# ------------------------------------------------------------------------------------------
# Callbacks
# ------------------------------------------------------------------------------------------
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
        from edgebvit.models.regularizers import binary_layers

        self.layers = binary_layers(student)
        self._before: Optional[List[np.ndarray]] = None

    def _signs(self) -> List[np.ndarray]:
        from edgebvit.models.regularizers import latent

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
    """Saves the student to RUN_DIR/best.keras (atomically) whenever `monitor` improves."""

    def __init__(self, run_dir: Path, student: tf.keras.Model, monitor: str):
        super().__init__()
        self.path = run_dir / BEST_MODEL_FILE
        self.state_path = run_dir / "best.json"
        self.student = student
        self.monitor = monitor
        self.best = -math.inf
        if self.state_path.is_file():  # a resumed run keeps its best so far
            self.best = float(json.loads(self.state_path.read_text()).get("value", -math.inf))

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or float(value) <= self.best:
            return
        self.best = float(value)
        save_student(self.student, self.path)
        atomic_write_json(self.state_path, {"epoch": epoch + 1, "monitor": self.monitor, "value": self.best})


def save_student(student: tf.keras.Model, path: Path) -> None:
    """Save to a temporary .keras file, then rename: a killed save never leaves a broken model.

    The layers' configs carry their own kernel quantizers, so a stage switch installed on the
    variables never reaches the file.
    """
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    student.save(tmp)
    tmp.replace(path)


def _write_parity_images(run_dir: Path, ds: Dataset, n: int) -> None:
    """Save the first n test images, model-ready, for `edgebvit export`'s parity check."""
    buf = io.BytesIO()
    np.savez_compressed(buf, x=normalize(ds.x_test[:n]), y=ds.y_test[:n].astype(np.int64))
    atomic_write_bytes(run_dir / PARITY_FILE, buf.getvalue())


def _read_metrics_csv(path: Path):
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    # CSVLogger writes "NA" for keys missing in an epoch (e.g. no validation set).
    return [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v not in ("", "NA")}
            for r in rows]


# ------------------------------------------------------------------------------------------
def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, verbose: Optional[int] = None,
          log=print, extra_callbacks: Tuple[tf.keras.callbacks.Callback, ...] = ()) -> TrainResult:
    """Train `cfg.model` on `cfg.data`, writing everything into `run_dir` (see module docstring)."""
    run_dir = Path(run_dir)
    cfg.validate()
    # Multi-worker collectives must be set up before TensorFlow runs any op.
    strategy = make_strategy(cfg.strategy)
    cfg = prepare_run_dir(run_dir, cfg, resume=resume)
    log(("resuming" if resume else "run") + f" {run_dir} with config:\n{describe(cfg)}")
    ds = _subsample(load_dataset(cfg.data, data_dir=cfg.data_dir, image_size=cfg.image_size,
                                 channels=cfg.channels, seed=cfg.seed), cfg)
    ds, (x_val, y_val) = split_validation(ds, cfg.val_fraction, cfg.seed)
    log(ds.describe())
    if strategy.num_replicas_in_sync > 1:
        log(f"strategy {cfg.strategy}: {strategy.num_replicas_in_sync} replicas, "
            f"{cfg.batch_size // strategy.num_replicas_in_sync} images per replica per step")

    from edgebvit.models.profile import profile_model
    from edgebvit.models.regularizers import binary_latent_kernels

    tf.keras.utils.set_random_seed(cfg.seed)
    steps = math.ceil(len(ds.x_train) / cfg.batch_size)
    if cfg.steps_per_epoch:
        steps = min(steps, cfg.steps_per_epoch)
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

    train_ds = make_tf_dataset(ds.x_train, ds.y_train, batch_size=cfg.batch_size, training=True,
                               seed=cfg.seed, num_classes=ds.num_classes, augment=cfg.augment,
                               cache=cfg.cache).repeat()
    val_ds = None
    if len(x_val):
        val_ds = make_tf_dataset(x_val, y_val, batch_size=cfg.batch_size, training=False,
                                 num_classes=ds.num_classes, cache=cfg.cache)
    callbacks = [
        # First, so its epoch-end save happens before the CSV row: a kill between the two loses
        # a row, never repeats an epoch. Restores model, optimizer (hence schedule) and epoch.
        tf.keras.callbacks.BackupAndRestore(str(run_dir / "checkpoints"), delete_checkpoint=False),
        LossSchedule(cfg, log=log),
        LearningRateLogger(),
        FlipRatioLogger(student),
        BestModelSaver(run_dir, student, "val_accuracy" if val_ds is not None else "accuracy"),
        tf.keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True),
        tf.keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), update_freq="epoch", profile_batch=0),
        *extra_callbacks,
    ]
    if cfg.optim.stage1_epochs:
        # best.keras must hold the real quantizers: only save it once the weights are binary.
        callbacks[4] = _StageAwareBest(callbacks[4], cfg.optim.stage1_epochs)
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
    _write_parity_images(run_dir, ds, cfg.parity_images)
    metrics = _read_metrics_csv(run_dir / "metrics.csv")
    atomic_write_json(run_dir / "metrics.json", metrics)
    best = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").is_file() else None
    summary = {
        "model": cfg.model,
        "data": ds.describe(),
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "test_images": int(len(ds.x_test)),
        "epochs": len(metrics) or epochs_run,
        "epochs_this_session": epochs_run,
        "optimizer_steps": optimizer_steps(model.optimizer),
        "train_seconds_this_session": round(train_seconds, 1),
        "images_per_second": round(seen / train_seconds, 1) if train_seconds > 0 else None,
        "replicas": int(strategy.num_replicas_in_sync),
        "teacher": cfg.distill.teacher if cfg.distill.mode != "none" else None,
        "best": best,
        "model_stats": stats.to_dict(),
        "artifacts": {"model": MODEL_FILE, "best_model": BEST_MODEL_FILE if best else None,
                      "parity_images": PARITY_FILE, "metrics": "metrics.csv",
                      "tensorboard": "tensorboard", "checkpoints": "checkpoints"},
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return TrainResult(run_dir, test_acc, test_loss, train_seconds,
                       summary["images_per_second"] or 0.0, epochs_run, summary)


class _StageAwareBest(tf.keras.callbacks.Callback):
    """BestModelSaver that ignores the float-weight epochs of a two-stage schedule."""

    def __init__(self, inner: BestModelSaver, first_epoch: int):
        super().__init__()
        self.inner = inner
        self.first_epoch = first_epoch

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.first_epoch:
            self.inner.on_epoch_end(epoch, logs)
