"""`train()` end to end on a tiny binary model: Bop, the two-stage schedule, BHViT's regularizer,
augmentation and the run directory (best/last model, metrics, TensorBoard)."""
import csv
import json

import larq as lq
import numpy as np
import pytest

import edgebvit  # noqa: F401
import tensorflow as tf

from edgebvit.training.config import RunConfig, merge
from edgebvit.models.layers import binary_layers, latent
from edgebvit.training import train

pytestmark = pytest.mark.slow

TINY = {"depths": 1, "embed_dims": 32, "num_heads": 1, "pool_branches": [3]}


class StageProbe(tf.keras.callbacks.Callback):
    """Records, per epoch, whether a binary layer's kernel reads as its float latent or binarized."""

    def __init__(self):
        super().__init__()
        self.float_weights = []

    def on_train_batch_end(self, batch, logs=None):
        if batch:
            return
        layer = binary_layers(self.model.student)[0]
        with lq.context.quantized_scope(True):
            read = layer.kernel.value().numpy()
        self.float_weights.append(bool(np.allclose(read, latent(layer.kernel).numpy())))


def test_two_stage_regularizer_augment_and_run_dir(tmp_path, data):
    cfg = merge(RunConfig(), {
        "model": "binaryvit_tiny_32", "model_overrides": TINY, "data": str(data), "epochs": 3,
        "batch_size": 16, "steps_per_epoch": 2, "val_fraction": 0.25, "parity_images": 4,
        "optim": {"stage1_epochs": 1, "regularizer_weight": 0.1, "regularizer_start": 0.5,
                  "regularizer_mix": "scale", "warmup_epochs": 1},
        "augment": {"pad_crop": 2, "flip": True, "randaugment_ops": 1, "mixup_alpha": 0.4,
                    "label_smoothing": 0.1},
    })
    probe = StageProbe()
    result = train(cfg, tmp_path / "run", extra_callbacks=(probe,), verbose=0, log=lambda *_: None)
    run = tmp_path / "run"
    assert probe.float_weights == [True, False, False]  # stage 1 float weights, then binary
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"loss", "ce", "reg", "accuracy", "val_accuracy", "learning_rate", "flip_ratio"} <= set(rows[0])
    # The regularizer enters the loss from 0-based epoch ceil(0.5 * 3) = 2 on.
    ce, loss = [float(r["ce"]) for r in rows], [float(r["loss"]) for r in rows]
    assert loss[0] == pytest.approx(ce[0], rel=1e-5)
    assert loss[2] != pytest.approx(ce[2], rel=1e-3)
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-3, rel=1e-4) and lrs[2] < lrs[1] < lrs[0]  # warm-up then cosine
    assert 0.0 <= float(rows[1]["flip_ratio"]) <= 1.0
    # The saved models carry the real binary quantizer (the stage switch never reaches the file).
    import edgebvit.models  # noqa: F401

    for name in ("model.keras", "best.keras"):
        m = tf.keras.models.load_model(run / name)
        assert type(binary_layers(m)[0].kernel.quantizer).__name__ == "ScaledSign"
    best = json.loads((run / "best.json").read_text())
    assert best["monitor"] == "val_accuracy" and best["epoch"] >= 2  # stage-1 epochs never "best"
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    assert result.summary["optimizer_steps"] == 6


def test_bop_flips_binary_kernels_and_adam_trains_the_rest(tmp_path, data):
    cfg = merge(RunConfig(), {
        "model": "binaryvit_tiny_32", "model_overrides": TINY, "data": str(data), "epochs": 1,
        "batch_size": 16, "steps_per_epoch": 3, "parity_images": 4,
        "optim": {"optimizer": "bop", "bop_threshold": 1e-8, "bop_gamma": 1e-2, "learning_rate": 1e-2},
    })

    class Keep(tf.keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.binary = [latent(layer.kernel).numpy() for layer in binary_layers(self.model.student)]
            self.head = self.model.student.get_layer("head").kernel.numpy()
            self.opt = self.model.optimizer
            self.masks = {layer.kernel_quantizer.ste_mask for layer in binary_layers(self.model.student)}

    keep = Keep()
    result = train(cfg, tmp_path / "run", extra_callbacks=(keep,), verbose=0, log=lambda *_: None)
    assert isinstance(keep.opt, lq.optimizers.CaseOptimizer)
    # Bop writes signs: every binary latent weight is exactly +-1 after its first step.
    assert all(set(np.unique(w)) <= {-1.0, 1.0} for w in keep.binary)
    assert keep.masks == {"none"}  # no STE mask that would freeze minority signs under Bop
    assert result.summary["optimizer_steps"] == 3
    assert np.isfinite(result.test_loss)


def test_adamw_never_decays_binary_kernels():
    from edgebvit.models import create_model
    from edgebvit.training import make_optimizer

    student = create_model("binaryvit_tiny_32", input_shape=(16, 16, 1), num_classes=4, **TINY)
    cfg = merge(RunConfig(), {"optim": {"optimizer": "adamw", "weight_decay": 0.05}})
    opt = make_optimizer(cfg, 10, student)
    opt.build(student.trainable_variables)
    decayed = {v.name for v in student.trainable_variables if opt._use_weight_decay(v)}
    binary = {v.name for v in binary_layers(student) for v in [v.kernel]}
    assert binary and not binary & decayed
    assert "stem_conv/kernel:0" in decayed and "head/kernel:0" in decayed
    assert not any("bias" in n or "gamma" in n or "beta" in n for n in decayed)
    # Without weight decay the papers' AdamW is Adam: the fast legacy optimizer.
    plain = make_optimizer(merge(RunConfig(), {"optim.optimizer": "adamw"}), 10, student)
    assert isinstance(plain, tf.keras.optimizers.legacy.Adam)
