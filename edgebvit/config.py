"""The run configuration: one typed dataclass, saved as RUN_DIR/config.json and read back on resume."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from edgebvit.errors import EdgebvitError


@dataclass
class RunConfig:
    """Everything a training run depends on. Defaults are the quickstart's."""

    model: str = "binaryvit_tiny_32"
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    data: str = "fashion_mnist"
    data_dir: Optional[str] = None
    image_size: int = 32  # images are padded / resized to this square size
    channels: int = 3  # for image folders (built-in datasets bring their own)
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5  # cosine decay floor (the papers' min-lr)
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0  # the papers train binary ViTs without weight decay
    label_smoothing: float = 0.0
    val_fraction: float = 0.0
    seed: int = 0
    steps_per_epoch: Optional[int] = None  # cap per epoch (smoke tests); None = full epoch
    max_train_samples: Optional[int] = None
    max_test_samples: Optional[int] = None
    parity_images: int = 500  # held-out test images saved for the export parity check

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EdgebvitError(f"unknown run config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise EdgebvitError(f"{path} not found: is this an edgebvit run directory?") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise EdgebvitError(f"{path} is not a valid run config: {exc}") from None
