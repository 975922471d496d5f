"""The soft prompt: P learned vectors prepended to the encoder's token embeddings.

ProMoT's stage 1 trains only this `[P, d_model]` parameter; stage 2 keeps it
attached and frozen. Multi-task ProMoT holds one per task, a `[T, P, d]` table.
This module owns the facts every other one asks about the prompt: where it sits in
the parameter tree (`PROMPT_PATH`, and T5X's `PROMPT_REGEX` derived from it), its
logical axes (`AXIS_NAMES`, for partition and Adafactor factor rules), and the shape
a config expects (`expected_shape`, checked by `check_shape` with one message).

Initialisers are flax-style `(rng, shape) -> array` closures, chosen by
configuration (gin binds them), following google-research/prompt-tuning's
options: uniform, sampled vocabulary rows, class labels, a string, a `.npy` file.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from promot_jax import paths, run_dirs
from promot_jax.layers import param_with_axes
from promot_jax.paths import Path

if TYPE_CHECKING:
    from promot_jax.network import T5Config

PromptInit = Callable[[jax.Array, tuple[int, ...]], jax.Array]

# Where the prompt lives: module `encoder/prompt` (SoftPrompt), parameter `prompt`.
PROMPT_PATH: tuple[str, ...] = ("encoder", "prompt", "prompt")
PROMPT_KEY = "/".join(PROMPT_PATH)  # the flat key every checkpoint reader uses
# The same path as T5X's traversals and restore maps spell it: any prefix
# ("target/", "state/param_states/", or "/" for a traversal) and any suffix (optimizer slots).
PROMPT_REGEX = r".*/" + "/".join(map(re.escape, PROMPT_PATH)) + r"(/.*)?"

PROMPT_AXES = ("prompt", "prompt_embed")
MULTITASK_PROMPT_AXES = ("prompt_tasks", *PROMPT_AXES)
AXIS_NAMES = MULTITASK_PROMPT_AXES  # every logical axis name a prompt can carry


class SoftPrompt(nn.Module):
    """Holds the prompt parameter and prepends it to a batch of embeddings.

    With `num_tasks > 1` (multi-task ProMoT) the parameter is `[T, P, d]`, one
    prompt per task, and each example gets the prompt of its task id.
    """

    length: int
    init: PromptInit
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    num_tasks: int = 1

    @nn.compact
    def __call__(self, embedded: jax.Array, task_ids: jax.Array | None = None) -> jax.Array:
        """`[B, L, d]` -> `[B, P + L, d]`."""
        batch, _, d = embedded.shape
        if self.num_tasks == 1:
            prompt = param_with_axes(
                PROMPT_PATH[-1], self.init, (self.length, d), self.param_dtype, axes=PROMPT_AXES
            )
            prompt = jnp.broadcast_to(jnp.asarray(prompt, self.dtype), (batch, self.length, d))
        else:
            if task_ids is None:
                raise ValueError(f"a {self.num_tasks}-task prompt needs task ids")
            prompts = param_with_axes(
                PROMPT_PATH[-1],
                per_task(self.init, self.num_tasks),
                (self.num_tasks, self.length, d),
                self.param_dtype,
                axes=MULTITASK_PROMPT_AXES,
            )
            prompt = jnp.take(jnp.asarray(prompts, self.dtype), task_ids, axis=0)
        return jnp.concatenate([prompt, embedded.astype(self.dtype)], axis=1)


def per_task(init: PromptInit, num_tasks: int) -> PromptInit:
    """`[T, P, d]` from a `[P, d]` initialiser, each task with its own rng.

    Initialisers of a whole table (`from_array` / `from_file`, marked
    `whole_table`) are called once with the full shape, which they check.
    """
    if getattr(init, "whole_table", False):
        return init

    def fn(rng, shape, dtype=jnp.float32):
        keys = jax.random.split(rng, num_tasks)
        return jnp.stack([init(k, tuple(shape[1:]), dtype) for k in keys])

    return fn


def add_prompt_positions(tokens: jax.Array, length: int) -> jax.Array:
    """Prepends `length` non-padding placeholder ids, so masks see the prompt as real tokens."""
    if length == 0:
        return tokens
    ones = jnp.ones((*tokens.shape[:-1], length), tokens.dtype)
    return jnp.concatenate([ones, tokens], axis=-1)


# --------------------------------------------------------------------------- shape and place

_AXIS_MEANINGS = ("num_prompts", "prompt_length", "emb_dim")


def expected_shape(config: T5Config) -> tuple[int, ...]:
    """`(prompt_length, emb_dim)`, or `(num_prompts, prompt_length, emb_dim)` with per-task
    prompts: the shape of the prompt parameter `config` builds."""
    rows = (config.prompt_length, config.emb_dim)
    return (config.num_prompts, *rows) if config.num_prompts > 1 else rows


def check_shape(
    shape: Sequence[int], want: T5Config | Sequence[int] | None, source: str
) -> tuple[int, ...]:
    """The one prompt shape check; returns `shape` as a tuple of ints.

    `want` is a config (its `expected_shape`), an explicit shape, or None: any prompt,
    `[P, d]` or `[T, P, d]` with T >= 2 (a config with one prompt builds `[P, d]`).
    `source` names the array in the message, e.g. "prompt file p.npy".
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1 or (len(shape) == 3 and shape[0] < 2):
        raise ValueError(
            f"{source} of shape {shape} is not a prompt: want (prompt_length, emb_dim), or "
            "(num_prompts, prompt_length, emb_dim) with num_prompts >= 2 for per-task prompts"
        )
    if want is None:
        return shape
    if hasattr(want, "emb_dim"):
        wanted, whom = expected_shape(want), "the config"
        fields = (
            f"; the config's num_prompts is {want.num_prompts}, prompt_length is "
            f"{want.prompt_length}, emb_dim is {want.emb_dim}"
        )
    else:
        wanted, whom, fields = tuple(int(n) for n in want), "the model", ""
    if shape != wanted:
        meaning = ", ".join(_AXIS_MEANINGS[-len(wanted) :]) if 2 <= len(wanted) <= 3 else "?"
        raise ValueError(
            f"{source} of shape {shape} does not fit {whom}: want {wanted} = ({meaning}){fields}"
        )
    return shape


def config_with_prompt(config: T5Config, shape: Sequence[int], source: str) -> T5Config:
    """`config`'s trunk carrying a prompt of `shape`: its number and length come from the
    prompt, its width must be the trunk's `emb_dim` (evaluation attaches any prompt)."""
    shape = check_shape(shape, None, source)
    fitted = dataclasses.replace(
        config, prompt_length=shape[-2], num_prompts=shape[0] if len(shape) == 3 else 1
    )
    check_shape(shape, fitted, source)
    return fitted


def config_without_prompt(config: T5Config) -> T5Config:
    """The same network with no soft prompt (the tree of plain mT5)."""
    return dataclasses.replace(config, prompt_length=0, num_prompts=1)


def get_prompt(params: Mapping) -> Any:
    """The prompt parameter of a nested parameter tree (KeyError when it has none)."""
    node = params
    for key in PROMPT_PATH:
        node = node[key]
    return node


def set_prompt(params: Mapping, value: Any) -> dict:
    """A copy of `params` (the dicts along the prompt's path, not the leaves) holding `value`
    as its prompt."""
    out = dict(params)
    node = out
    for key in PROMPT_PATH[:-1]:
        node[key] = dict(node.get(key, {}))
        node = node[key]
    node[PROMPT_PATH[-1]] = value
    return out


def drop_prompt(params: Mapping) -> dict:
    """A copy of `params` without the prompt module (`encoder/prompt`)."""
    *parents, module = PROMPT_PATH[:-1]
    out = dict(params)
    node = out
    for key in parents:
        if key not in node:
            return out
        node[key] = dict(node[key])
        node = node[key]
    node.pop(module, None)
    return out


# --------------------------------------------------------------------------- initialisers


def _rows(shape: Sequence[int], what: str) -> tuple[int, int]:
    """(P, d) of the shape a row initialiser is asked for: it fills one `[P, d]` prompt
    (`per_task` stacks one per task)."""
    if len(shape) != 2:
        raise ValueError(
            f"{what} fills one (prompt_length, emb_dim) prompt, not shape {tuple(shape)}; "
            "per_task(...) stacks one per task"
        )
    return int(shape[0]), int(shape[1])


def uniform(scale: float = 0.5) -> PromptInit:
    """Uniform in [-scale, scale] (prompt-tuning's default, scale 0.5)."""

    def init(rng, shape, dtype=jnp.float32):
        _rows(shape, "uniform")
        return jax.random.uniform(rng, shape, dtype, -scale, scale)

    return init


def from_sampled_vocab(embedding: np.ndarray, population: int = 5000) -> PromptInit:
    """Rows drawn from the first `population` embeddings (with replacement if P > population)."""
    table = np.asarray(embedding)

    def init(rng, shape, dtype=jnp.float32):
        length, d = _rows(shape, "from_sampled_vocab")
        if table.shape[1] != d:
            raise ValueError(f"embedding table has width {table.shape[1]} but the prompt needs {d}")
        pool = min(population, table.shape[0])
        idx = jax.random.choice(rng, pool, (length,), replace=length > pool)
        return jnp.asarray(table[np.asarray(idx)], dtype)

    return init


def from_class_labels(
    embedding: np.ndarray,
    label_token_ids: Sequence[Sequence[int]],
    fill: PromptInit | None = None,
) -> PromptInit:
    """Row i is the mean embedding of label i's sub-words; later rows come from `fill`."""
    table = np.asarray(embedding)
    fill = fill or from_sampled_vocab(table)

    def init(rng, shape, dtype=jnp.float32):
        length, d = _rows(shape, "from_class_labels")
        if len(label_token_ids) > length:
            raise ValueError(
                f"{len(label_token_ids)} class labels do not fit a prompt of length {length}"
            )
        rows = np.array(fill(rng, shape, jnp.float32))
        for i, ids in enumerate(label_token_ids):
            if not ids:
                raise ValueError(f"class label {i} has no token ids")
            rows[i] = table[np.asarray(ids)].mean(axis=0)
        return jnp.asarray(rows, dtype)

    return init


def from_string(embedding: np.ndarray, token_ids: Sequence[int]) -> PromptInit:
    """The embeddings of a tokenised string, tiled (or cut) to the prompt length."""
    table = np.asarray(embedding)
    if len(token_ids) == 0:
        raise ValueError("from_string needs at least one token id")

    def init(rng, shape, dtype=jnp.float32):
        del rng
        length, _ = _rows(shape, "from_string")
        ids = np.resize(np.asarray(token_ids), length)
        return jnp.asarray(table[ids], dtype)

    return init


def from_array(array: np.ndarray) -> PromptInit:
    """A fixed `[P, d]` (or per-task `[T, P, d]`) array; the shape must match exactly."""
    array = np.asarray(array)

    def init(rng, shape, dtype=jnp.float32):
        del rng
        check_shape(array.shape, shape, "prompt array")
        return jnp.asarray(array, dtype)

    init.whole_table = True  # a fixed [P, d] or [T, P, d] table, see per_task
    return init


def load_prompt_file(path: str | Path, config: T5Config | None = None) -> np.ndarray:
    """Reads a `[P, d]` (or `[T, P, d]`) float `.npy` prompt, the format
    google-research/prompt-tuning uses; with `config`, checked against its prompt shape."""
    path = paths.checked(path, "prompt file")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    try:
        array = np.load(paths.readable(path), allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"prompt file {path} is not a readable .npy array: {e}") from e
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"prompt file {path} holds a {array.dtype} array of shape {array.shape}; "
            "expected a float array (prompt_length, emb_dim) or (num_prompts, prompt_length, "
            "emb_dim)"
        )
    check_shape(array.shape, config, f"prompt file {path}")
    return array


def from_file(path: str | Path) -> PromptInit:
    """The prompt saved in a `.npy` file (e.g. stage 1's export); shape checked at init."""
    return from_array(load_prompt_file(path))


def save_prompt_file(prompt: np.ndarray, path: str | Path, config: T5Config | None = None) -> Path:
    """Writes a `[P, d]` (or `[T, P, d]`) prompt as float32 `.npy`, atomically (never a
    half-written file); with `config`, checked against its prompt shape first."""
    prompt = np.asarray(prompt, np.float32)
    path = paths.path(path)
    check_shape(prompt.shape, config, f"prompt file {path}")
    buffer = io.BytesIO()
    np.save(buffer, prompt)
    return run_dirs.write_atomic(path, buffer.getvalue())
