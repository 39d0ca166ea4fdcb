"""Knowledge distillation from a frozen float teacher (docs/papers.md 0, 1.7, 2.9 and 3 / DeiT).

Both binary papers train with ReActNet's distributional loss: soft cross-entropy of the student
against the teacher's softmax at temperature 1 and nothing else (`mode="soft"`, weight 1,
temperature 1). DeiT's soft form adds the label term, `(1-w) CE + w tau^2 KL`, and its hard form
uses the teacher's argmax as a second label, `(1-w) CE(y) + w CE(argmax teacher)` with w = 1/2.

The teacher is a finished run directory (`edgebvit train --model vit_tiny_32_fp --out T`, then
`--teacher T`); it is loaded frozen and always called with `training=False`, so its BatchNorm
statistics and weights never change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import tensorflow as tf

from edgebvit.artifacts import MODEL_FILE as TEACHER_MODEL_FILE  # a finished run directory holds it
from edgebvit.errors import EdgebvitError


def load_teacher(run_dir: str, *, input_shape: Tuple[int, ...], num_classes: int) -> tf.keras.Model:
    """Load RUN_DIR/model.keras as a frozen teacher and check it fits the student's data.

    Through the one safe loader (edgebvit.models.loading): no code from the file runs, whatever
    its real format (a Lambda layer in an HDF5 file named model.keras is refused).
    """
    from edgebvit.errors import ModelError
    from edgebvit.models.loading import load_keras_model

    path = Path(run_dir).expanduser()
    model_path = path / TEACHER_MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise EdgebvitError(
            f"teacher {run_dir} has no {TEACHER_MODEL_FILE}: pass a finished run directory "
            "(train one first, e.g. `edgebvit train --model vit_tiny_32_fp --out runs/teacher`)"
        )
    try:
        teacher = load_keras_model(model_path)
    except ModelError as exc:
        raise ModelError(f"cannot load teacher: {exc}") from None
    t_in = tuple(teacher.input_shape[1:])
    t_out = teacher.output_shape[-1]
    if t_in != tuple(input_shape):
        raise EdgebvitError(f"teacher {model_path} takes inputs {t_in}, the data gives {tuple(input_shape)}")
    if t_out != num_classes:
        raise EdgebvitError(f"teacher {model_path} predicts {t_out} classes, the data has {num_classes}")
    teacher.trainable = False
    return teacher


DIST_HEAD = "head_dist"  # DeiT's distillation head in a student (edgebvit.models.layers.blocks)


def distillation_heads(student: tf.keras.Model):
    """A model giving (class head, distillation head) logits of `student`, sharing its layers, when
    the student has DeiT's distillation head; None otherwise."""
    names = {layer.name for layer in student.layers}
    if DIST_HEAD not in names or "head" not in names:
        return None
    outputs = [student.get_layer("head").output, student.get_layer(DIST_HEAD).output]
    return tf.keras.Model(student.inputs, outputs, name=f"{student.name}_two_heads")


def soft_distillation_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor,
                           temperature: float = 1.0) -> tf.Tensor:
    """Per-example ``tau^2 * -sum_c softmax(t/tau)_c log softmax(s/tau)_c``.

    This is ReActNet's / BinaryViT's DistributionLoss at tau = 1; it differs from DeiT's
    ``tau^2 KL(teacher || student)`` only by the teacher's entropy, a constant with zero gradient.
    The teacher side is wrapped in stop_gradient so no gradient ever reaches the teacher.
    """
    t = tf.nn.softmax(tf.stop_gradient(teacher_logits) / temperature, axis=-1)
    log_s = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    return -(temperature ** 2) * tf.reduce_sum(t * log_s, axis=-1)


def hard_distillation_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor) -> tf.Tensor:
    """Per-example cross-entropy of the student against the teacher's argmax (DeiT hard)."""
    labels = tf.argmax(tf.stop_gradient(teacher_logits), axis=-1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits)


def distillation_loss(mode: str, student_logits: tf.Tensor, teacher_logits: tf.Tensor,
                      temperature: float = 1.0) -> tf.Tensor:
    """Per-example distillation term for `mode` ("soft" or "hard")."""
    if mode == "soft":
        return soft_distillation_loss(student_logits, teacher_logits, temperature)
    if mode == "hard":
        return hard_distillation_loss(student_logits, teacher_logits)
    raise EdgebvitError(f"unknown distillation mode {mode!r}; use soft or hard")
