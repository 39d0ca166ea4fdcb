"""edgebvit's model zoo: binary vision transformers written so LCE turns them into binary ops.

`create_model(name, **overrides)` and `list_models(pattern, family=..., role=..., tag=...)` are
the public surface; each family file (binaryvit, bhvit, teachers) registers its variants with
the registry when imported here. Shared blocks live in `edgebvit.models.layers`.
"""
from edgebvit.models.registry import (ModelInfo, create_model, families, get_model_info, list_models,
                                      register_model, resolve_config)

# Importing a family registers its variants (and its custom layers with Keras).
from edgebvit.models import binaryvit  # noqa: F401,E402
from edgebvit.models import teachers  # noqa: F401,E402
from edgebvit.models import bhvit  # noqa: F401,E402

__all__ = ["ModelInfo", "create_model", "families", "get_model_info", "list_models", "register_model",
           "resolve_config"]
