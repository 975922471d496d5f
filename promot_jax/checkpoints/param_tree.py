"""Matching a loaded parameter tree to the tree a `T5Config` expects.

Every reader returns a flat `{"encoder/layers_0/...": np.ndarray}` dict; this
module checks it against `network.abstract_params(config)` in one place, so all
formats fail the same way: the first mismatching parameter path and both shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from promot_jax import lora, network
from promot_jax import prompt as prompt_lib

# Filler for parameters a checkpoint may lack: `(path, ShapeDtypeStruct) -> array`.
Filler = Callable[[str, jax.ShapeDtypeStruct], Any]


def flatten(tree: Mapping) -> dict[str, Any]:
    """Nested dict -> `{"a/b/c": leaf}` (None leaves kept)."""
    return traverse_util.flatten_dict(dict(tree), sep="/", keep_empty_nodes=False)


def unflatten(flat: Mapping[str, Any]) -> dict:
    """`{"a/b/c": leaf}` -> nested dict."""
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def match_config(
    flat: Mapping[str, Any],
    config: network.T5Config,
    *,
    source: str,
    missing_ok: Sequence[str] = (),
    fill: Filler | None = None,
) -> dict[str, Any]:
    """Check `flat` against the tree `config` expects and return it in that key order.

    Missing keys are an error unless their path fully matches one of the regular
    expressions in `missing_ok`; those are produced by `fill` (required then).
    Extra keys and shape mismatches are always errors. `source` names the
    checkpoint in messages.
    """
    expected = flatten(network.abstract_params(config))
    patterns = [re.compile(p) for p in missing_ok]
    out: dict[str, Any] = {}
    for path, want in expected.items():
        if path not in flat or flat[path] is None:
            if not any(p.fullmatch(path) for p in patterns):
                found = "None" if path in flat else "absent"
                hint = (
                    " (a T5X or transformers checkpoint has no soft prompt: pass "
                    f"missing_ok=({prompt_lib.PROMPT_KEY!r},) to fill it from the prompt "
                    "initialiser)"
                    if path == prompt_lib.PROMPT_KEY
                    else ""
                )
                raise ValueError(
                    f"{source}: parameter {path} {list(want.shape)} is {found} in the "
                    f"checkpoint{hint}"
                )
            if fill is None:
                raise ValueError(f"missing_ok covers {path} but no fill was given")
            value = np.asarray(fill(path, want))
        else:
            value = flat[path]
        if tuple(value.shape) != tuple(want.shape):
            raise ValueError(
                f"{source}: parameter {path} has shape {list(value.shape)} in the checkpoint "
                f"but the config expects {list(want.shape)}"
            )
        out[path] = value
    extra = [k for k in flat if k not in expected and flat[k] is not None]
    if extra:
        raise ValueError(
            f"{source}: parameter {sorted(extra)[0]} {list(np.shape(flat[sorted(extra)[0]]))} "
            f"is in the checkpoint but not in the config's tree ({len(extra)} unexpected in "
            "all); check prompt_length, layer counts and logits_via_embedding"
        )
    return out


def init_filler(config: network.T5Config, rng: jax.Array | int = 0) -> Filler:
    """A filler that takes missing parameters from the config's initialisers.

    The prompt (the usual missing piece when a pretrained trunk gets a new prompt)
    comes straight from `config.prompt_init`, and LoRA adapters from `lora.init_adapter`,
    without initialising the trunk: for mT5-XXL a full random init would need ~52 GB of
    host memory. Anything else is taken from `network.init_params(config, rng)`.
    """
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    cache: dict[str, Any] = {}

    def fill(path: str, want: jax.ShapeDtypeStruct):
        if path == prompt_lib.PROMPT_KEY:
            init = config.prompt_init or prompt_lib.uniform(0.5)
            if config.num_prompts > 1:
                init = prompt_lib.per_task(init, config.num_prompts)
            return np.asarray(init(key, tuple(want.shape), want.dtype))
        if lora.is_lora(path):
            return np.asarray(lora.init_adapter(key, path, tuple(want.shape), want.dtype))
        if not cache:
            cache.update(flatten(jax.device_get(network.init_params(config, key))))
        return cache[path]

    return fill


def prompt_filler(prompt: Any, config: network.T5Config) -> Filler:
    """A filler that supplies the prompt from a given `[P, d]` (or `[T, P, d]`) array,
    checked against `config` here, before any parameter is read."""
    value = np.asarray(prompt)
    prompt_lib.check_shape(value.shape, config, "the given prompt")

    def fill(path: str, want: jax.ShapeDtypeStruct):
        if path != prompt_lib.PROMPT_KEY:
            raise ValueError(f"prompt_filler only fills {prompt_lib.PROMPT_KEY}, not {path}")
        return value

    return fill


def cast_to_config(flat: Mapping[str, Any], config: network.T5Config) -> dict[str, np.ndarray]:
    """Host numpy arrays, each in the dtype `config` declares for it: the trunk in
    `param_dtype`, the prompt in `prompt_param_dtype`, adapters in `lora_param_dtype`
    (read off `network.abstract_params`, the modules' own declarations)."""
    expected = flatten(network.abstract_params(config))
    return {k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()}


def cast(flat: Mapping[str, Any], dtype: Any | None) -> dict[str, np.ndarray]:
    """Host numpy arrays, cast to `dtype` when given (kept as stored otherwise)."""
    if dtype is None:
        return {k: np.asarray(v) for k, v in flat.items()}
    dt = np.dtype(network.DTYPES[dtype] if isinstance(dtype, str) else dtype)
    return {k: np.asarray(v).astype(dt) for k, v in flat.items()}
