"""Optimizers and learning-rate schedules (docs/papers.md 1.7, 2.9; Helwegen et al. 2019 for Bop)."""
from __future__ import annotations

import tensorflow as tf

from edgebvit.errors import EdgebvitError
from edgebvit.models.layers import ReCUSign, binary_latent_kernels, set_ste_mask
from edgebvit.training.config import RunConfig


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
    """Adam, AdamW or Bop (docs/papers.md 1.7, 2.9; Helwegen et al. 2019).

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

        if not binary_latent_kernels(model):
            raise EdgebvitError(f"optimizer bop trains binary kernels, but {cfg.model} has none; use adam")
        if o.weight_decay:
            raise EdgebvitError("optimizer bop does not take weight_decay; set optim.weight_decay=0")
        if any(isinstance(getattr(layer, "kernel_quantizer", None), ReCUSign) for layer in model.submodules):
            raise EdgebvitError(f"optimizer bop needs unclipped straight-through gradients, but {cfg.model} uses ReCU "
                                "(recu=true), which clips them, so minority signs could never flip back; "
                                "use adam or recu=false")
        set_ste_mask(model, "none")  # see ScaledSign: Bop must reach the minority signs
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
        var_list=binary_latent_kernels(model),
        var_names=["bias", "beta", "gamma", "embedding", "scale", "shift", "slope", "alpha"],
    )
    return opt


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
