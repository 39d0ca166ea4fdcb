"""Named training recipes: the official papers' settings as partial run configs (`--recipe NAME`).

Each recipe is a function of the global batch size (the papers scale the learning rate linearly
with it, `5e-4 * batch / 512`) returning nested config keys. A recipe never sets the model, the
data or the teacher; `--config FILE`, options and `key=value` overrides apply on top of it.
Where an ImageNet setting has no small-data equivalent here the substitute is named.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from edgebvit.errors import EdgebvitError


def binaryvit(batch_size: int) -> Dict[str, Any]:
    """BinaryViT (docs/papers.md 1.7): AdamW without weight decay (= Adam), lr 5e-4 x batch/512,
    per-step cosine to 1e-5, no warm-up, KD only at T = 1 from a float teacher; the
    augmentation is crop + flip (RandomResizedCrop's small-image counterpart: pad 4 and crop)."""
    return {
        "optim": {"optimizer": "adam", "learning_rate": 5e-4 * batch_size / 512, "min_learning_rate": 1e-5,
                  "schedule": "cosine", "warmup_epochs": 0.0, "weight_decay": 0.0},
        "augment": {"pad_crop": 4, "flip": True},
        "distill": {"mode": "soft", "temperature": 1.0, "weight": 1.0},
    }


def bhvit(batch_size: int) -> Dict[str, Any]:
    """BHViT (docs/papers.md 2.8-2.9): as BinaryViT with min-lr 1e-8, plus the paper's loss
    (1 - l - b) CE + l KD + b L_re with l = 0.8 and b = 0.1 switched on for the last 10%."""
    return {
        "optim": {"optimizer": "adam", "learning_rate": 5e-4 * batch_size / 512, "min_learning_rate": 1e-8,
                  "schedule": "cosine", "warmup_epochs": 0.0, "weight_decay": 0.0,
                  "regularizer_weight": 0.1, "regularizer_start": 0.9, "regularizer_mix": "paper"},
        "augment": {"pad_crop": 4, "flip": True},
        "distill": {"mode": "soft", "temperature": 1.0, "weight": 0.8},
    }


def deit(batch_size: int) -> Dict[str, Any]:
    """DeiT's float recipe (the teachers' in both repos): AdamW wd 0.05, lr 5e-4 x batch/512,
    5 warm-up epochs, RandAugment (2 ops, magnitude 9), mixup 0.8, cutmix 1.0, label smoothing
    0.1; no distillation (add `distill.mode=hard --teacher RUN_DIR` for DeiT's hard form).
    Drop-path and random erasing are not implemented here."""
    return {
        "optim": {"optimizer": "adamw", "learning_rate": 5e-4 * batch_size / 512, "min_learning_rate": 1e-5,
                  "schedule": "cosine", "warmup_epochs": 5.0, "weight_decay": 0.05},
        "augment": {"pad_crop": 4, "flip": True, "randaugment_ops": 2, "randaugment_magnitude": 9.0,
                    "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
        "distill": {"mode": "none"},
    }


RECIPES: Dict[str, Callable[[int], Dict[str, Any]]] = {"binaryvit": binaryvit, "bhvit": bhvit, "deit": deit}


def get_recipe(name: str, batch_size: int) -> Dict[str, Any]:
    try:
        return RECIPES[name](batch_size)
    except KeyError:
        raise EdgebvitError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}") from None
