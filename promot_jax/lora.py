"""LoRA adapters: a rank-r update `scale * A @ B` beside chosen kernels, one group that trains
or is frozen, like the soft prompt.

A targeted kernel `W [in, out]` (by default the attention query and value of every layer,
as Hu et al. 2021 and the paper adapt) gains `lora_a [in, r]` (random, like a kernel) and
`lora_b [r, out]` (zeros) beside it, so a fresh adapter leaves the network's outputs
bitwise unchanged; the layer computes `x W + scale * (x A) B` with `scale = alpha / r`.
This module owns the facts every other one asks about adapters, as `prompt.py` does for
the prompt: their names (`is_lora`, T5X's `LORA_REGEX`), their logical axis
(`AXIS_NAMES`, replicated), which kernels a config adapts (`check_targets`), the shapes it
expects (`expected_shapes`), and attaching, dropping and merging them.

Adapter files (stage 1's export, what stage 2 attaches) are `.npz` archives of float32
arrays keyed by parameter path ("encoder/layers_0/attention/query/lora_a", ...).
"""

from __future__ import annotations

import dataclasses
import io
import re
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util
from flax.linen import partitioning

from promot_jax import mixed_precision, paths, run_dirs
from promot_jax.paths import Path

if TYPE_CHECKING:
    from promot_jax.network import T5Config

PARAM_NAMES = ("lora_a", "lora_b")  # beside the kernel they adapt, in the same module
# Any prefix ("target/", "state/param_states/", "/" for a traversal), any suffix (slots).
LORA_REGEX = r".*/(" + "|".join(PARAM_NAMES) + r")(/.*)?"
AXIS_NAMES = ("lora_rank",)  # replicated: r is tiny, and the other axis is the kernel's own
# Attention query and value of every layer: `attention` (encoder), `self_attention` and
# `encoder_decoder_attention` (decoder).
DEFAULT_TARGETS = r".*attention/(query|value)/kernel"
# The T5Config fields for adapters.
CONFIG_FIELDS = ("lora_rank", "lora_alpha", "lora_targets", "lora_param_dtype")

a_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")  # as kernels
b_init = nn.initializers.zeros

_LORA_RE = re.compile(LORA_REGEX)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """What a layer needs to know: the rank, `alpha` (scale = alpha / rank), the regex
    (re.fullmatch) of the kernel paths that get adapters and the adapters' storage dtype
    (`T5Config.lora_param_dtype`, float32 by default whatever the kernel's)."""

    rank: int
    alpha: float
    targets: str
    param_dtype: Any = jnp.float32

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def applies(self, kernel_path: str) -> bool:
        return re.fullmatch(self.targets, kernel_path) is not None


def spec(config: T5Config) -> LoraSpec | None:
    """The adapters `config` asks for (None when `lora_rank` is 0); alpha defaults to the
    rank, a scale of 1."""
    if not config.lora_rank:
        return None
    alpha = config.lora_rank if config.lora_alpha is None else config.lora_alpha
    return LoraSpec(config.lora_rank, float(alpha), config.lora_targets, config.lora_param_dtype)


def add_update(
    module: nn.Module,
    x: jax.Array,
    y: jax.Array,
    kernel_axes: tuple[str, str],
    lora: LoraSpec,
    dtype: Any,
) -> jax.Array:
    """`y + scale * (x A) B` when `module`'s kernel is a target, else `y` itself.

    Called by `layers.Dense` after its kernel is created (so the kernel's initialiser rng is
    the one it has without adapters); A and B are parameters of `module`, beside its kernel.
    """
    if not lora.applies("/".join((*module.path, "kernel"))):
        return y
    a = partitioning.param_with_axes(
        PARAM_NAMES[0],
        a_init,
        (x.shape[-1], lora.rank),
        lora.param_dtype,
        axes=(kernel_axes[0], AXIS_NAMES[0]),
        module=module,
    )
    b = partitioning.param_with_axes(
        PARAM_NAMES[1],
        b_init,
        (lora.rank, y.shape[-1]),
        lora.param_dtype,
        axes=(AXIS_NAMES[0], kernel_axes[1]),
        module=module,
    )
    low = mixed_precision.einsum("...d,dr->...r", x, a, dtype)
    return y + mixed_precision.einsum("...r,rf->...f", low, b, dtype) * jnp.asarray(
        lora.scale, dtype
    )


# --------------------------------------------------------------------------- which and where


def is_lora(path: str) -> bool:
    """Whether a parameter path (with or without the leading "/") is an adapter's."""
    return _LORA_RE.fullmatch("/" + path.lstrip("/") + "/") is not None


def _flat(params: Mapping) -> dict[str, Any]:
    return traverse_util.flatten_dict(dict(params), sep="/")


def kernel_paths(config: T5Config) -> list[str]:
    """Every kernel of `config`'s trunk, in tree order (what `lora_targets` chooses from)."""
    from promot_jax import network

    plain = network.abstract_params(config_without_adapters(config))
    return [p for p in _flat(plain) if p.endswith("/kernel")]


def check_targets(config: T5Config) -> list[str]:
    """The kernels `config.lora_targets` adapts; fails naming the regex and a few kernel paths
    when it matches none."""
    kernels = kernel_paths(config)
    chosen = [p for p in kernels if re.fullmatch(config.lora_targets, p)]
    if not chosen:
        kinds: dict[tuple[str, str], str] = {}  # the first kernel of each (stack, block)
        for path in kernels:
            parts = path.split("/")
            kinds.setdefault((parts[0], parts[-3]), path)
        raise ValueError(
            f"T5Config.lora_targets {config.lora_targets!r} matches no kernel (re.fullmatch "
            f"over paths such as {', '.join(kinds.values())}; {len(kernels)} kernels in all); "
            f"the default {DEFAULT_TARGETS!r} adapts attention query and value"
        )
    return chosen


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """`{adapter path: shape}` of the adapters `config` builds (empty without adapters)."""
    from promot_jax import network

    return {
        p: tuple(v.shape) for p, v in _flat(network.abstract_params(config)).items() if is_lora(p)
    }


def config_without_adapters(config: T5Config) -> T5Config:
    """The same network with no adapters (the tree of plain mT5, prompt kept), its LoRA
    fields at their defaults: equal to the config of the trunk it adapts."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in CONFIG_FIELDS}
    return dataclasses.replace(config, **defaults)


# --------------------------------------------------------------------------- attach, drop, merge


def get_adapters(params: Mapping) -> dict[str, Any]:
    """`{path: array}` of every adapter in a nested parameter tree."""
    return {p: v for p, v in _flat(params).items() if is_lora(p)}


def set_adapters(params: Mapping, adapters: Mapping[str, Any]) -> dict:
    """A copy of `params` holding `adapters` (`{path: array}`), replacing any it had."""
    flat = _flat(params)
    flat.update(adapters)
    return traverse_util.unflatten_dict(flat, sep="/")


def drop_adapters(params: Mapping) -> dict:
    """A copy of `params` without any adapter."""
    flat = {p: v for p, v in _flat(params).items() if not is_lora(p)}
    return traverse_util.unflatten_dict(flat, sep="/")


def merge(params: Mapping, config: T5Config) -> tuple[T5Config, dict]:
    """(config without adapters, params with each adapter folded into its kernel):
    `W + scale * A @ B`, computed in float32 and stored in the kernel's dtype. The merged
    network computes what the adapted one does (up to rounding) at a plain layer's cost."""
    lora = spec(config)
    flat = _flat(params)
    if lora is None:
        return config, dict(params)
    out = {p: v for p, v in flat.items() if not is_lora(p)}
    for path in flat:
        if path.endswith("/" + PARAM_NAMES[0]):
            module = path.rsplit("/", 1)[0]
            kernel = flat[f"{module}/kernel"]
            a = jnp.asarray(flat[path], jnp.float32)
            b = jnp.asarray(flat[f"{module}/{PARAM_NAMES[1]}"], jnp.float32)
            merged = jnp.asarray(kernel, jnp.float32) + lora.scale * (a @ b)
            out[f"{module}/kernel"] = merged.astype(jnp.asarray(kernel).dtype)
    return config_without_adapters(config), traverse_util.unflatten_dict(out, sep="/")


def init_adapter(rng: jax.Array, path: str, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """A fresh adapter leaf without initialising the network (the filler for a pretrained trunk
    that has none): A random as a kernel (an rng per path), B zeros."""
    if path.endswith(PARAM_NAMES[1]):
        return b_init(rng, shape, dtype)
    return a_init(jax.random.fold_in(rng, zlib.crc32(path.encode())), shape, dtype)


# --------------------------------------------------------------------------- files


def check_adapters(adapters: Mapping[str, Any], config: T5Config, source: str) -> None:
    """The one adapter check: exactly the paths and shapes `config` expects."""
    want = expected_shapes(config)
    have = {p: tuple(np.shape(v)) for p, v in adapters.items()}
    hint = f"; the config has lora_rank={config.lora_rank}, lora_targets={config.lora_targets!r}"
    for path, shape in want.items():
        if path not in have:
            raise ValueError(f"{source} lacks adapter {path} {list(shape)}{hint}")
        if have[path] != shape:
            raise ValueError(
                f"{source}: adapter {path} has shape {list(have[path])} but the config expects "
                f"{list(shape)}{hint}"
            )
    extra = sorted(set(have) - set(want))
    if extra:
        raise ValueError(
            f"{source} holds adapter {extra[0]} that the config does not build ({len(extra)} "
            f"extra in all){hint}"
        )


def save_adapter_file(adapters: Mapping[str, Any], path: str | Path) -> Path:
    """Writes `{path: array}` adapters as a float32 `.npz`, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{p: np.asarray(v, np.float32) for p, v in adapters.items()})
    return run_dirs.write_atomic(path, buffer.getvalue())


def load_adapter_file(path: str | Path, config: T5Config) -> dict[str, np.ndarray]:
    """Reads an adapter `.npz` (stage 1's export), checked against `config`'s adapters."""
    path = paths.checked(path, "adapter file")
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {path} does not exist")
    try:
        with np.load(paths.readable(path), allow_pickle=False) as archive:
            adapters = {k: archive[k] for k in archive.files}
    except (ValueError, OSError) as e:
        raise ValueError(f"adapter file {path} is not a readable .npz archive: {e}") from e
    check_adapters(adapters, config, f"adapter file {path}")
    return adapters
