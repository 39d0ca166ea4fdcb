"""Model registry in the manner of timm: every variant is a name, a typed config and a builder.

A family file calls `register_model(...)` once per variant. `create_model(name, **overrides)`
replaces config fields (dataclasses.replace) and builds a fresh `tf.keras.Model`.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgebvit.errors import ModelError

_REGISTRY: Dict[str, "ModelInfo"] = {}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a variant before building it."""

    name: str
    family: str
    config: Any  # a frozen dataclass; its fields are the variant's hyper-parameters
    build: Callable[..., Any]  # build(config) -> tf.keras.Model
    description: str = ""
    role: str = "student"  # "student" (binary) or "teacher" (full precision)
    paper: str = ""
    paper_top1: Optional[float] = None  # ImageNet-1k top-1 the paper reports, if any
    tags: Tuple[str, ...] = field(default_factory=tuple)

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
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config of {name!r} must be a dataclass instance")
    info = ModelInfo(name, family, config, build, description, role, paper, paper_top1, tuple(tags))
    _REGISTRY[name] = info
    return info


def list_models(pattern: str = "*", *, role: Optional[str] = None) -> List[str]:
    """Registered names matching a shell-style pattern, in registration order."""
    return [
        n for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (role is None or info.role == role)
    ]


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
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ModelError(
            f"model {name!r} has no option {', '.join(unknown)}; options are: {', '.join(sorted(known))}"
        )
    cleaned = {}
    for key, value in overrides.items():
        if isinstance(getattr(info.config, key), tuple) and isinstance(value, list):
            value = tuple(value)  # configs coming back from JSON carry lists
        cleaned[key] = value
    return dataclasses.replace(info.config, **cleaned)


def create_model(name: str, **overrides: Any):
    """Build variant `name` as a fresh, untrained `tf.keras.Model`.

    Keyword overrides replace config fields, e.g. `create_model("bvit_tiny", num_classes=100)`.
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
