"""Model registry in the manner of timm: every variant is a name, a typed config and a builder.

A family file calls `register_model(...)` once per variant, with the name spelled out.
`create_model(name, **overrides)` replaces config fields (dataclasses.replace) and builds a fresh
`tf.keras.Model`; `list_models(pattern, family=..., role=..., tag=...)` lists them.

Both families use one vocabulary for what they share: `input_shape`, `num_classes`,
`patch_size`, `embed_dims`, `depths`, `num_heads`, `mlp_ratios`, `fp_downsample`, and a
`validate()` method on the config. Older spellings (`embed_dim`, `depth`, `dims`, `stem_patch`,
...) are accepted as overrides and mapped, so run directories written before the rename still work.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgebvit.errors import ModelError

_REGISTRY: Dict[str, "ModelInfo"] = {}

ROLES = ("student", "teacher")
# Old config field names -> the shared vocabulary.
FIELD_ALIASES = {
    "embed_dim": "embed_dims", "dims": "embed_dims", "depth": "depths", "mlp_ratio": "mlp_ratios",
    "sr_ratio": "sr_ratios", "stem_patch": "patch_size",
}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a variant before building it."""

    name: str
    family: str
    config: Any  # a frozen dataclass with a validate() method; its fields are the hyper-parameters
    build: Callable[..., Any]  # build(config) -> tf.keras.Model
    description: str = ""
    role: str = "student"  # "student" (binary) or "teacher" (full precision)
    paper: str = ""
    paper_top1: Optional[float] = None  # ImageNet-1k top-1 the paper reports, if any
    tags: Tuple[str, ...] = field(default_factory=tuple)  # e.g. "imagenet", "32x32", "ladder"

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(self.config.input_shape)

    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes)


def register_model(
    name: str,
    *,
    family: str,
    config: Any,
    build: Callable[..., Any],
    description: str = "",
    role: str = "student",
    paper: str = "",
    paper_top1: Optional[float] = None,
    tags: Tuple[str, ...] = (),
) -> ModelInfo:
    """Add a variant. Registering the same variant again (a module re-imported) is a no-op;
    registering a different variant under a taken name is an error."""
    if not dataclasses.is_dataclass(config) or not callable(getattr(config, "validate", None)):
        raise TypeError(f"config of {name!r} must be a dataclass instance with a validate() method")
    if role not in ROLES:
        raise ValueError(f"role of {name!r} must be one of {ROLES}, got {role!r}")
    info = ModelInfo(name, family, config, build, description, role, paper, paper_top1, tuple(tags))
    existing = _REGISTRY.get(name)
    if existing is not None:
        # A re-imported module defines new classes: compare configs by value (repr), not identity.
        same = (existing.family, repr(existing.config), existing.description, existing.role, existing.tags) == (
            info.family, repr(info.config), info.description, info.role, info.tags)
        if same and getattr(existing.build, "__qualname__", None) == getattr(build, "__qualname__", None):
            return existing
        raise ValueError(f"model {name!r} is registered twice with different definitions")
    _REGISTRY[name] = info
    return info


def list_models(pattern: str = "*", *, role: Optional[str] = None, family: Optional[str] = None,
                tag: Optional[str] = None) -> List[str]:
    """Registered names matching a shell-style pattern (and role / family / tag), in registration order."""
    return [
        n for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern)
        and (role is None or info.role == role)
        and (family is None or info.family == family)
        and (tag is None or tag in info.tags)
    ]


def families() -> List[str]:
    """The registered families, in registration order."""
    return list(dict.fromkeys(info.family for info in _REGISTRY.values()))


def get_model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:5] or list(_REGISTRY)[:5]
        raise ModelError(
            f"unknown model {name!r}; run `edgebvit models` to list them (e.g. {', '.join(close)})"
        ) from None


def resolve_config(name: str, **overrides: Any) -> Any:
    """The variant's config with `overrides` applied (unknown keys are an error, not ignored)."""
    info = get_model_info(name)
    known = {f.name: f for f in dataclasses.fields(info.config)}
    overrides = {(FIELD_ALIASES[k] if k not in known and FIELD_ALIASES.get(k) in known else k): v
                 for k, v in overrides.items()}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ModelError(
            f"model {name!r} has no option {', '.join(unknown)}; options are: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(type(info.config))
    cleaned = {key: _coerce(name, key, value, hints[key]) for key, value in overrides.items()}
    return dataclasses.replace(info.config, **cleaned)


def _coerce(model: str, key: str, value: Any, hint: Any) -> Any:
    """Check an override against the config field's type (JSON lists become tuples); a wrong type
    is a one-line ModelError, never a traceback from deep inside the model builder."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        for option in args:
            try:
                return _coerce(model, key, value, option)
            except ModelError:
                continue
    elif origin in (tuple, Tuple):
        if isinstance(value, (list, tuple)):
            items = args[:1] * len(value) if (len(args) == 2 and args[1] is Ellipsis) or not args else args
            if len(items) == len(value):
                return tuple(_coerce(model, key, v, t) for v, t in zip(value, items))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    want = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
    raise ModelError(f"model {model!r} option {key}: expected {want}, got {value!r}")


def create_model(name: str, **overrides: Any):
    """Build variant `name` as a fresh, untrained `tf.keras.Model`.

    Keyword overrides replace config fields, e.g. `create_model("binaryvit_tiny_32", num_classes=100)`.
    """
    info = get_model_info(name)
    config = resolve_config(name, **overrides)
    # Our layers have no tensor-dependent Python control flow, so AutoGraph has nothing to do;
    # left on, it re-parses larq's and our sources for every layer call (~4x slower builds here).
    from tensorflow.python.autograph.core import ag_ctx

    with ag_ctx.ControlStatusCtx(status=ag_ctx.Status.DISABLED):
        model = info.build(config)
    model._name = name  # noqa: SLF001  (Keras has no public setter; keeps summaries readable)
    return model
