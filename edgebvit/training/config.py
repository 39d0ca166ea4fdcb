"""The run configuration: typed dataclasses, saved as RUN_DIR/config.json and read back on resume.

A run is the top-level `RunConfig` (model, data, epochs, ...) plus four sections that make up a
training recipe: `optim` (optimizer, schedule, BHViT's regularizer, two-stage), `augment`,
`distill` and nothing else. The CLI fills it in this order, later wins:

1. the dataclass defaults (the quickstart's),
2. a named recipe (`--recipe binaryvit`, see edgebvit/training/recipes.py),
3. a YAML/JSON file (`--config FILE`, same nesting as config.json, any subset of keys),
4. command-line options and `key=value` overrides (`optim.learning_rate=5e-4`, or just
   `learning_rate=5e-4` when the field name is unique across sections).
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgebvit.errors import EdgebvitError

OPTIMIZERS = ("adam", "adamw", "bop")
SCHEDULES = ("cosine", "constant")
DISTILL_MODES = ("none", "soft", "hard")
REGULARIZER_MIXES = ("paper", "scale")
STRATEGIES = ("default", "mirrored", "multi_worker")
KERNELS = ("fused", "reference")


@dataclass
class OptimConfig:
    """Optimizer and schedule (docs/papers.md 1.7, 2.8, 2.9; ReActNet's two steps in 3)."""

    optimizer: str = "adam"  # adam | adamw (decoupled decay, never on binary kernels) | bop
    learning_rate: float = 1e-3  # peak; for bop, the Adam rate of the non-binary variables
    min_learning_rate: float = 1e-5  # cosine decay floor (the papers' min-lr)
    schedule: str = "cosine"  # cosine (per step) | constant
    warmup_epochs: float = 0.0  # linear warm-up from 0 (the binary recipes use none)
    weight_decay: float = 0.0  # the papers train binary ViTs without weight decay
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    bop_threshold: float = 1e-8  # Bop's flip threshold tau
    bop_gamma: float = 1e-4  # Bop's adaptivity rate (moving-average factor)
    # BHViT's oscillation regularizer L_re = mean_layers mean_i ||w_i| - 1| (docs/papers.md 2.8).
    regularizer_weight: float = 0.0  # beta; 0 disables it
    regularizer_start: float = 0.9  # fraction of the epochs after which it is on (paper: last 10%)
    regularizer_mix: str = "paper"  # paper: (1-l-b)CE + l KD + b L_re | scale: (1-b)(base) + b L_re (code)
    # Two-stage schedule: the first `stage1_epochs` train binary activations with float weights.
    stage1_epochs: int = 0


@dataclass
class AugmentConfig:
    """Training-time augmentation; runs in tf.data only, never in the exported model."""

    pad_crop: int = 0  # zero-pad by this many pixels and crop back at random; 0 = off
    flip: bool = False  # random horizontal flip
    randaugment_ops: int = 0  # RandAugment: ops per image; 0 = off
    randaugment_magnitude: float = 9.0  # 0..30 as in RandAugment
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing weight; 0 = off
    cutmix_alpha: float = 0.0  # 0 = off; with both on, each batch picks one (mix_switch_prob)
    mix_switch_prob: float = 0.5  # chance a batch uses cutmix when both are on
    mix_prob: float = 1.0  # chance a batch is mixed at all
    label_smoothing: float = 0.0


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen float teacher (docs/papers.md 0 and 3, DeiT)."""

    teacher: Optional[str] = None  # a finished run directory (its model.keras)
    mode: str = "none"  # none | soft | hard
    # soft: (1-w) CE + w tau^2 KL(teacher || student) at temperature tau; w=1, tau=1 is the
    #       official binary recipe (KD only); DeiT's soft form uses tau=3, w=0.1.
    # hard: (1-w) CE(y) + w CE(argmax teacher), DeiT's hard distillation with w=0.5.
    temperature: float = 1.0
    weight: float = 1.0


@dataclass
class RunConfig:
    """Everything a training run depends on. Defaults are the quickstart's."""

    model: str = "binaryvit_tiny_32"
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    data: str = "fashion_mnist"
    data_dir: Optional[str] = None
    image_size: int = 32  # images are padded / resized to this square size
    channels: int = 3  # for image folders (built-in datasets bring their own)
    val_fraction: float = 0.0
    cache: bool = True  # cache the decoded dataset in memory (tf.data .cache())
    epochs: int = 3
    # Global batch (split across replicas under a strategy). None = auto, resolved once the data
    # is loaded (auto_batch_size below): 128, or 32 for a short budget (docs/study.md).
    batch_size: Optional[int] = None
    seed: int = 0
    steps_per_epoch: Optional[int] = None  # cap per epoch (smoke tests); None = full epoch
    max_train_samples: Optional[int] = None
    max_test_samples: Optional[int] = None
    parity_images: int = 500  # held-out test images saved for the export parity check
    strategy: str = "default"  # default | mirrored | multi_worker (TF_CONFIG)
    # fused: the layers' XLA-fused training kernels (same function, fewer memory passes,
    # docs/training_speed.md); reference: the plain TensorFlow graphs of the layers.
    kernels: str = "fused"
    recipe: Optional[str] = None  # the named recipe this config started from (a record)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        return merge(cls(), d)

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise EdgebvitError(f"{path} not found: is this an edgebvit run directory?") from None
        except json.JSONDecodeError as exc:
            raise EdgebvitError(f"{path} is not a valid run config: {exc}") from None

    def validate(self) -> "RunConfig":
        """Check every value, whatever source it came from (defaults, recipe, YAML/JSON file,
        options, KEY=VALUE, a saved config.json): one validation path; raises EdgebvitError."""
        for key, (lo, hi, lo_open, hi_open) in NUMERIC_RANGES.items():
            value = get_value(self, key)
            if value is None and key in OPTIONAL_KEYS:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or (
                    value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi)):
                raise EdgebvitError(f"{key} must be in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
                                    f"{' or none' if key in OPTIONAL_KEYS else ''}, got {value!r}")
        if self.channels not in (1, 3):
            raise EdgebvitError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        if not isinstance(self.model, str) or not self.model:
            raise EdgebvitError("model must be a registered model name (see `edgebvit models`)")
        if not isinstance(self.data, str) or not self.data:
            raise EdgebvitError("data must be a dataset name, an .npz file or an image folder")
        o, k = self.optim, self.distill
        checks = [
            (o.optimizer in OPTIMIZERS, f"optim.optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (o.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}"),
            (o.regularizer_mix in REGULARIZER_MIXES,
             f"optim.regularizer_mix must be one of {', '.join(REGULARIZER_MIXES)}"),
            (k.mode in DISTILL_MODES, f"distill.mode must be one of {', '.join(DISTILL_MODES)}"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}"),
            (self.kernels in KERNELS, f"kernels must be one of {', '.join(KERNELS)}"),
            (o.min_learning_rate <= o.learning_rate, "optim.min_learning_rate must be in [0, learning_rate]"),
            (o.stage1_epochs < self.epochs or o.stage1_epochs == 0,
             "optim.stage1_epochs must be smaller than epochs"),
            (k.mode == "none" or k.teacher, f"distill.mode={k.mode} needs a teacher (--teacher RUN_DIR)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise EdgebvitError(msg)
        if o.regularizer_weight and o.regularizer_mix == "paper" and k.mode != "none":
            if k.weight + o.regularizer_weight > 1:
                raise EdgebvitError(
                    "with regularizer_mix=paper the loss is (1-l-b)CE + l KD + b L_re: "
                    f"distill.weight + optim.regularizer_weight = {k.weight + o.regularizer_weight:g} > 1; "
                    "lower one of them or use regularizer_mix=scale (the official code's 0.9 KD + 0.1 L_re)"
                )
        return self


# The short-budget rule (docs/study.md, measured with `edgebvit study recipe`): a run that would
# take fewer than SHORT_BUDGET_STEPS optimizer steps at batch 128 trains at batch 32 instead
# (4x the steps over the same images). binaryvit_tiny_32 on 4,000 Fashion-MNIST images x 3
# epochs: 94 steps at 128 give 53.6% test accuracy, 375 steps at 32 give 74.2 +- 1.9% (3 seeds);
# the float CNN gains too, less (81.7 -> 85.7%). Runs of >= 500 steps at 128 (the quickstart has 625) keep batch 128.
DEFAULT_BATCH_SIZE = 128
SHORT_BUDGET_BATCH_SIZE = 32
SHORT_BUDGET_STEPS = 500


AUTO_BATCH_RULE = (f"{DEFAULT_BATCH_SIZE}, or {SHORT_BUDGET_BATCH_SIZE} when {DEFAULT_BATCH_SIZE} would give "
                   f"fewer than {SHORT_BUDGET_STEPS} optimizer steps")


def auto_batch_size(n_images: int, epochs: int) -> int:
    """The batch a run gets when none is given: 128, or 32 when 128 would mean a short budget
    (< SHORT_BUDGET_STEPS optimizer steps over `epochs` passes of `n_images`). A steps_per_epoch
    cap (smoke runs) is not counted: a capped run trains at the batch its full run would."""
    steps = epochs * -(-n_images // DEFAULT_BATCH_SIZE)
    return DEFAULT_BATCH_SIZE if steps >= SHORT_BUDGET_STEPS else SHORT_BUDGET_BATCH_SIZE


# The range of every numeric key: (low, high, low excluded, high excluded). One table, checked by
# RunConfig.validate for every source of a value; `edgebvit train --help` options use the same keys.
_INF = float("inf")
NUMERIC_RANGES = {
    "image_size": (1, 4096, False, False),
    "val_fraction": (0, 1, False, True),
    "epochs": (1, 100_000, False, False),
    "batch_size": (1, 1 << 20, False, False),
    "seed": (0, 2 ** 31 - 1, False, False),
    "steps_per_epoch": (1, _INF, False, False),
    "max_train_samples": (1, _INF, False, False),
    "max_test_samples": (1, _INF, False, False),
    "parity_images": (0, 100_000, False, False),
    "optim.learning_rate": (0, 10, True, False),
    "optim.min_learning_rate": (0, 10, False, False),
    "optim.warmup_epochs": (0, 100_000, False, False),
    "optim.weight_decay": (0, 10, False, False),
    "optim.beta_1": (0, 1, False, True),
    "optim.beta_2": (0, 1, False, True),
    "optim.epsilon": (0, 1, True, False),
    "optim.bop_threshold": (0, 1, True, False),
    "optim.bop_gamma": (0, 1, True, False),
    "optim.regularizer_weight": (0, 1, False, True),
    "optim.regularizer_start": (0, 1, False, False),
    "optim.stage1_epochs": (0, 100_000, False, False),
    "augment.pad_crop": (0, 1024, False, False),
    "augment.randaugment_ops": (0, 16, False, False),
    "augment.randaugment_magnitude": (0, 30, False, False),
    "augment.mixup_alpha": (0, 100, False, False),
    "augment.cutmix_alpha": (0, 100, False, False),
    "augment.mix_switch_prob": (0, 1, False, False),
    "augment.mix_prob": (0, 1, False, False),
    "augment.label_smoothing": (0, 1, False, True),
    "distill.temperature": (0, 1000, True, False),
    "distill.weight": (0, 1, False, False),
}
OPTIONAL_KEYS = frozenset({"batch_size", "steps_per_epoch", "max_train_samples", "max_test_samples"})


def _num(v: float) -> str:
    return "inf" if v == _INF else (str(int(v)) if float(v).is_integer() else f"{v:g}")


def get_value(cfg: "RunConfig", key: str) -> Any:
    """The value of a dotted key (`optim.learning_rate`) or a top-level one (`epochs`)."""
    target = cfg
    for part in key.split("."):
        target = getattr(target, part)
    return target


# Keys of config.json files written before the sections existed.
_LEGACY_KEYS = {
    "learning_rate": "optim.learning_rate",
    "min_learning_rate": "optim.min_learning_rate",
    "warmup_epochs": "optim.warmup_epochs",
    "weight_decay": "optim.weight_decay",
    "label_smoothing": "augment.label_smoothing",
}


def _section_types(cls) -> Dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert a value from JSON/YAML/the command line against the field's type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin in (dict, Dict) or hint is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise EdgebvitError(f"config key {key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _flatten(d: Dict[str, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    out: List[Tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in _SECTIONS and not prefix:
            out += _flatten(v, f"{key}.")
        else:
            out.append((_LEGACY_KEYS.get(key, key), v))
    return out


_SECTIONS = {"optim": OptimConfig, "augment": AugmentConfig, "distill": DistillConfig}


def field_paths() -> Dict[str, str]:
    """Every settable key as its full dotted path, plus unambiguous short names -> full path."""
    paths = {f.name: f.name for f in dataclasses.fields(RunConfig) if f.name not in _SECTIONS}
    short: Dict[str, List[str]] = {}
    for sec, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            paths[f"{sec}.{f.name}"] = f"{sec}.{f.name}"
            short.setdefault(f.name, []).append(f"{sec}.{f.name}")
    for name, full in short.items():
        if name not in paths and len(full) == 1:
            paths[name] = full[0]
    return paths


def set_value(cfg: RunConfig, key: str, value: Any) -> None:
    """Set one (dotted or unique short) key on cfg in place, type-checked."""
    paths = field_paths()
    full = paths.get(_LEGACY_KEYS.get(key, key))
    if full is None:
        raise EdgebvitError(f"unknown run config key {key!r}; known keys: {', '.join(sorted(set(paths.values())))}")
    if "." in full:
        sec, name = full.split(".", 1)
        target = getattr(cfg, sec)
        hint = _section_types(_SECTIONS[sec])[name]
    else:
        target, name, hint = cfg, full, _section_types(RunConfig)[full]
    setattr(target, name, _coerce(value, hint, full))


def merge(cfg: RunConfig, d: Dict[str, Any]) -> RunConfig:
    """A copy of cfg with the (nested or dotted) keys of d applied."""
    if not isinstance(d, dict):
        raise EdgebvitError(f"a run config must be a mapping of keys to values, got {type(d).__name__}")
    out = dataclasses.replace(
        cfg, model_overrides=dict(cfg.model_overrides),
        optim=dataclasses.replace(cfg.optim), augment=dataclasses.replace(cfg.augment),
        distill=dataclasses.replace(cfg.distill),
    )
    for key, value in _flatten(d):
        set_value(out, key, value)
    return out


def parse_overrides(items) -> Dict[str, Any]:
    """`key=value` strings -> dict; values parse as JSON/YAML scalars when they can."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise EdgebvitError(f"expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_config_file(path: Path) -> Dict[str, Any]:
    """Read a YAML or JSON run config file (any subset of config.json's keys)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EdgebvitError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise EdgebvitError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                            f"{str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EdgebvitError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def describe(cfg: RunConfig) -> str:
    """The resolved configuration as YAML, for printing at the start of a run."""
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None).rstrip()
