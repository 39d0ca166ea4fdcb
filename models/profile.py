"""Parameter and MAC counts by precision, as `larq.models.summary` counts them.

Building an ImageNet-size model to count it takes 10-30 s here, so `zoo_stats` caches counts on
disk, keyed by the variant's resolved config and a hash of the model source files: editing a
layer or a config invalidates the entry, nothing stale is ever shown.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

_CACHE_VERSION = 1


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
    import larq as lq

    prof = lq.models.ModelProfile(model)
    total = prof.weight_count()
    binary = prof.weight_count(bitwidth=1)
    macs_total = prof.op_count("mac")
    macs_binary = prof.op_count("mac", 1)
    return ModelStats(binary, total - binary, macs_binary, macs_total - macs_binary)


# ---- cached counts for the registry --------------------------------------------------------

def cache_path() -> Path:
    """$EDGEBVIT_CACHE_DIR/model_stats.json, else $XDG_CACHE_HOME (or ~/.cache)/edgebvit/."""
    root = os.environ.get("EDGEBVIT_CACHE_DIR")
    if root:
        return Path(root) / "model_stats.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "edgebvit" / "model_stats.json"


def _code_fingerprint() -> str:
    """Hash of every model source file and the larq version: any change invalidates the cache."""
    import larq

    h = hashlib.sha256(f"v{_CACHE_VERSION} larq {larq.__version__}".encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(str(path.relative_to(Path(__file__).parent)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stats_key(name: str, config) -> str:
    """Cache key of a variant: its name and resolved config (repr of a frozen dataclass)."""
    return hashlib.sha256(f"{name}|{config!r}".encode()).hexdigest()[:16]


def _read_cache(path: Path, fingerprint: str) -> Dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet or a corrupt one: recount
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def zoo_stats(name: str, *, use_cache: bool = True, refresh: bool = False, **overrides) -> ModelStats:
    """Counts for registered variant `name` (with config overrides), from the cache when fresh.

    `refresh` rebuilds and replaces the cached entry; `use_cache=False` neither reads nor writes it.
    """
    from edgebvit.models.registry import create_model, resolve_config

    config = resolve_config(name, **overrides)
    key = stats_key(name, config)
    path = cache_path()
    fingerprint = _code_fingerprint()
    entries = _read_cache(path, fingerprint) if use_cache and not refresh else {}
    if key in entries:
        try:
            return ModelStats(**{k: int(entries[key][k]) for k in ("binary_params", "float_params", "binary_macs", "float_macs")})
        except (KeyError, TypeError, ValueError):
            pass  # malformed entry: recount below
    stats = profile_model(create_model(name, **overrides))
    if use_cache:
        _write_entry(path, fingerprint, key, stats)
    return stats


def _write_entry(path: Path, fingerprint: str, key: str, stats: ModelStats) -> None:
    from edgebvit.fileio import atomic_write_json

    entries = _read_cache(path, fingerprint)  # re-read: another process may have added entries
    entries[key] = asdict(stats)
    try:
        atomic_write_json(path, {"fingerprint": fingerprint, "entries": entries})
    except OSError:
        pass  # a read-only home only costs speed, never a result


def cached_stats(name: str, **overrides) -> Optional[ModelStats]:
    """The cached counts of a variant, or None when they would need a build."""
    from edgebvit.models.registry import resolve_config

    entries = _read_cache(cache_path(), _code_fingerprint())
    entry = entries.get(stats_key(name, resolve_config(name, **overrides)))
    if not entry:
        return None
    try:
        return ModelStats(**{k: int(entry[k]) for k in ("binary_params", "float_params", "binary_macs", "float_macs")})
    except (KeyError, TypeError, ValueError):
        return None
