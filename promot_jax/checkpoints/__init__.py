"""Checkpoint import and export without t5x: one entry point for every format we read.

`load_params(path, config)` detects the format of `path` (transformers MT5/T5
directory, T5X legacy or Orbax checkpoint, our own Orbax params checkpoint),
reads it into T5X's parameter tree and checks it against `config`. Formats live
in their own modules: `transformers_mt5`, `t5x_legacy`, `t5x_orbax`,
`orbax_params`; `formats` decides which one a path holds.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from promot_jax import network
from promot_jax.checkpoints import (
    formats,
    orbax_params,
    param_tree,
    t5x_legacy,
    t5x_orbax,
    transformers_mt5,
)
from promot_jax.checkpoints.orbax_params import save_params
from promot_jax.checkpoints.transformers_mt5 import t5x_config_from_transformers
from promot_jax.prompt import PROMPT_KEY

__all__ = [
    "AS_CONFIG",
    "detect_format",
    "load_params",
    "params_complete",
    "load_prompt",
    "read_flat_params",
    "save_params",
    "t5x_config_from_transformers",
]


def params_complete(path: str | os.PathLike) -> bool:
    """Whether `path` holds a whole params checkpoint (see `orbax_params.is_complete`)."""
    return orbax_params.is_complete(path)


def detect_format(path: str | os.PathLike) -> str:
    """'transformers', 't5x_legacy', 't5x_orbax' or 'orbax_params' for `path`."""
    return formats.detect(path)[0]


def read_flat_params(
    path: str | os.PathLike,
    config: network.T5Config | None = None,
    keep: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """The raw flat `{path: array}` tree stored at `path`, not checked against any config.

    A transformers directory needs `config` (its names depend on layer counts and
    on gated vs plain MLPs); `t5x_config_from_transformers(path)` builds one.
    """
    fmt, where = formats.detect(path)
    if fmt == "transformers":
        if config is None:
            config = t5x_config_from_transformers(where)
        flat = transformers_mt5.read_params(where, config)
        return {k: v for k, v in flat.items() if keep is None or keep(k)}
    reader = {
        "t5x_legacy": t5x_legacy.read_params,
        "t5x_orbax": t5x_orbax.read_params,
        "orbax_params": orbax_params.read_params,
        "promot_step": functools.partial(t5x_orbax.read_params, root=t5x_orbax.PROMOT_STEP_ROOT),
    }[fmt]
    return reader(where, keep)


# `load_params(dtype=AS_CONFIG)`: every leaf in the dtype the config gives its group.
AS_CONFIG = "config"


def load_params(
    path: str | os.PathLike,
    config: network.T5Config,
    *,
    dtype: Any | None = None,
    missing_ok: Sequence[str] = (),
    prompt: Any | None = None,
    rng: jax.Array | int = 0,
) -> dict:
    """Parameters stored at `path` as the nested tree `Transformer(config)` takes.

    The tree must match `network.abstract_params(config)` exactly: a missing or
    extra parameter or a wrong shape raises ValueError naming the first such path
    (and both shapes). To load a checkpoint without a soft prompt (public mT5, a
    transformers model) into a prompted config, say so explicitly: either
    `missing_ok=(PROMPT_KEY,)`, which fills the prompt from
    `init_params(config, rng)` (the config's prompt initialiser, deterministic for a
    given `rng`), or `prompt=<[P, d] array>` (`[T, P, d]` with per-task prompts).

    By default leaves keep the dtype they were stored with, so a tree saved by `save_params`
    comes back bitwise, dtypes included. `dtype=AS_CONFIG` ("config") gives each leaf the
    dtype `config` declares for its group (trunk `param_dtype`, prompt `prompt_param_dtype`,
    adapters `lora_param_dtype`): what training starts from, whatever the checkpoint stores
    (T5X writes float32 or bfloat16). Any other `dtype` (e.g. "bfloat16") casts every leaf.
    Arrays are host numpy arrays.
    """
    flat = read_flat_params(path, config)
    source = str(path)
    if prompt is not None:
        if not config.prompt_length:
            raise ValueError(
                f"a prompt was given but the config has prompt_length=0; set prompt_length="
                f"{np.shape(prompt)[0] if np.ndim(prompt) else '?'} to load it"
            )
        if flat.get(PROMPT_KEY) is not None:
            raise ValueError(
                f"{source}: the checkpoint already holds {PROMPT_KEY}; pass prompt= only "
                "for checkpoints without one"
            )
        missing_ok = (*missing_ok, PROMPT_KEY)
    init_fill = param_tree.init_filler(config, rng)
    given_fill = param_tree.prompt_filler(prompt, config) if prompt is not None else None

    def fill(p: str, want: jax.ShapeDtypeStruct) -> Any:
        if given_fill is not None and p == PROMPT_KEY:
            return given_fill(p, want)
        return init_fill(p, want)

    matched = param_tree.match_config(flat, config, source=source, missing_ok=missing_ok, fill=fill)
    if isinstance(dtype, str) and dtype == AS_CONFIG:
        return param_tree.unflatten(param_tree.cast_to_config(matched, config))
    return param_tree.unflatten(param_tree.cast(matched, dtype))


def load_prompt(path: str | os.PathLike) -> np.ndarray:
    """The soft prompt (`[P, d]`, or `[T, P, d]` per task) stored at `path`, any format.

    Only the prompt is read. Raises ValueError naming what the checkpoint holds
    when it has no prompt (e.g. a public mT5 or a transformers model).
    """
    fmt, where = formats.detect(path)
    if fmt == "transformers":
        raise ValueError(
            f"{path}: a transformers {transformers_mt5.read_hf_config(where).get('model_type')} "
            f"directory has no soft prompt ({PROMPT_KEY})"
        )
    lister = {
        "t5x_legacy": t5x_legacy.param_paths,
        "t5x_orbax": t5x_orbax.param_paths,
        "orbax_params": orbax_params.param_paths,
        "promot_step": functools.partial(t5x_orbax.param_paths, root=t5x_orbax.PROMOT_STEP_ROOT),
    }[fmt]
    paths = lister(where)
    if PROMPT_KEY not in paths:
        prompts = [p for p in paths if "prompt" in p]
        tops = sorted({p.split("/")[0] for p in paths})
        what = (
            f"prompt-like parameters {prompts}"
            if prompts
            else f"{len(paths)} parameters under {tops} and none with 'prompt' in its path"
        )
        raise ValueError(f"{path} ({fmt}) has no {PROMPT_KEY}; it holds {what}")
    value = read_flat_params(path, keep=lambda p: p == PROMPT_KEY).get(PROMPT_KEY)
    if value is None:
        raise ValueError(f"{path} ({fmt}): {PROMPT_KEY} is stored as None")
    return np.asarray(value)
