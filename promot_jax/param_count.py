"""Parameter counts by module, from shapes alone (jax.eval_shape: nothing is allocated)."""

from __future__ import annotations

import math
import re

import jax

from promot_jax.network import T5Config, abstract_params


def _group(path: str) -> str:
    """Collapses `encoder/layers_3/mlp/wo/kernel` into `encoder/layers_*/mlp`."""
    parts = re.sub(r"layers_\d+", "layers_*", path).split("/")
    if parts[0] == "token_embedder":
        return "token_embedder"
    if len(parts) > 2 and parts[1] == "layers_*":
        return "/".join(parts[:3])
    return "/".join(parts[:2])


def count_params(config: T5Config) -> dict[str, int]:
    """Ordered `{module group: count}` plus `"total"`, for `config` (prompt included)."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
    counts: dict[str, int] = {}
    for path, leaf in leaves:
        name = "/".join(k.key for k in path)
        group = _group(name)
        counts[group] = counts.get(group, 0) + math.prod(leaf.shape)
    counts = dict(sorted(counts.items()))
    counts["total"] = sum(counts.values())
    return counts


def format_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
