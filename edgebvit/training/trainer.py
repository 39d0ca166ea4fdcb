"""The Keras model `fit` trains: the student, its loss terms, and a frozen teacher."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import tensorflow as tf

from edgebvit.models.regularizers import oscillation_regularizer
from edgebvit.training.distill import distillation_heads, distillation_loss


class Trainer(tf.keras.Model):
    """Wraps the student for `fit`: its own train step, so the saved model stays the plain student.

    Loss = w_ce * CE(labels) + w_kd * distill(teacher) + w_reg * L_re + the student's own losses,
    with the weights held in variables that `LossSchedule` sets at each epoch (the regularizer
    is switched on late, docs/papers.md 2.8). The teacher is frozen and runs with training=False.

    A student with DeiT's distillation head (a layer `head_dist`, docs/papers.md 3.1) is trained as
    DeiT trains it: the label term on the class head, the distillation term on the distillation
    head; its output, the mean of the two, is what accuracy (and the saved model) use.

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
        heads = distillation_heads(student)  # (class head, distillation head) logits, or None
        self._two_heads = (lambda x, training: heads(x, training=training)) if heads is not None else None
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

    def compute_losses(self, x, y, logits, dist_logits=None) -> Dict[str, tf.Tensor]:
        """The loss terms for one batch (replica-local means); `dist_logits`, the distillation
        head's, take the distillation term when the student has one (else `logits` take both)."""
        ce = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, logits, from_logits=True))
        terms = {"ce": ce, "loss": self.w_ce * ce}
        if self.teacher is not None and self.distill_mode != "none":
            teacher_logits = tf.stop_gradient(self.teacher(x, training=False))
            student_logits = logits if dist_logits is None else dist_logits
            kd = tf.reduce_mean(
                distillation_loss(self.distill_mode, student_logits, teacher_logits, self.temperature))
            terms["kd"] = kd
            terms["loss"] += self.w_kd * kd
        if self._reg_kernels is not None:
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
            if self._two_heads is None:
                logits = self.student(x, training=True)
                terms = self.compute_losses(x, y, logits)
            else:
                cls_logits, dist_logits = self._two_heads(x, training=True)
                terms = self.compute_losses(x, y, cls_logits, dist_logits)
                logits = (cls_logits + dist_logits) / 2.0  # the student's output, as it infers
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
