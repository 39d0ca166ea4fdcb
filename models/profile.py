"""Parameter and MAC counts by precision, as `larq.models.summary` counts them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict

import larq as lq


@dataclass(frozen=True)
class ModelStats:
    binary_params: int
    float_params: int  # everything not 1-bit, non-trainable BN statistics included (as larq counts)
    binary_macs: int
    float_macs: int  # MACs larq sees in float layers; attention matmuls are not layers, see export

    @property
    def total_params(self) -> int:
        return self.binary_params + self.float_params

    @property
    def binary_mac_share(self) -> float:
        total = self.binary_macs + self.float_macs
        return self.binary_macs / total if total else 0.0

    def to_dict(self) -> Dict[str, float]:
        return {**asdict(self), "total_params": self.total_params, "binary_mac_share": self.binary_mac_share}


def profile_model(model) -> ModelStats:
    """Count a built Keras model's weights and MACs split into 1-bit and higher precision."""
    prof = lq.models.ModelProfile(model)
    total = prof.weight_count()
    binary = prof.weight_count(bitwidth=1)
    macs_total = prof.op_count("mac")
    macs_binary = prof.op_count("mac", 1)
    return ModelStats(binary, total - binary, macs_binary, macs_total - macs_binary)
