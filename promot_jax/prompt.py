"""The soft prompt: P learned vectors prepended to the encoder's token embeddings.

ProMoT's stage 1 trains only this `[P, d_model]` parameter; stage 2 keeps it
attached and frozen. It lives at `encoder/prompt/prompt` with logical axes
`("prompt", "prompt_embed")`, so partition and Adafactor factor rules can name it.

Initialisers are flax-style `(rng, shape) -> array` closures, chosen by
configuration (gin binds them), following google-research/prompt-tuning's
options: uniform, sampled vocabulary rows, class labels, a string, a `.npy` file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from promot_jax.layers import param_with_axes

PromptInit = Callable[[jax.Array, tuple[int, ...]], jax.Array]
PROMPT_AXES = ("prompt", "prompt_embed")
MULTITASK_PROMPT_AXES = ("prompt_tasks", "prompt", "prompt_embed")


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
                "prompt", self.init, (self.length, d), self.param_dtype, axes=PROMPT_AXES
            )
            prompt = jnp.broadcast_to(jnp.asarray(prompt, self.dtype), (batch, self.length, d))
        else:
            if task_ids is None:
                raise ValueError(f"a {self.num_tasks}-task prompt needs task ids")
            prompts = param_with_axes(
                "prompt",
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


# --------------------------------------------------------------------------- initialisers


def _check_shape(shape: Sequence[int], what: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"a prompt is [length, embed_dim]; {what} was asked for shape {shape}")
    return int(shape[0]), int(shape[1])


def uniform(scale: float = 0.5) -> PromptInit:
    """Uniform in [-scale, scale] (prompt-tuning's default, scale 0.5)."""

    def init(rng, shape, dtype=jnp.float32):
        _check_shape(shape, "uniform")
        return jax.random.uniform(rng, shape, dtype, -scale, scale)

    return init


def from_sampled_vocab(embedding: np.ndarray, population: int = 5000) -> PromptInit:
    """Rows drawn from the first `population` embeddings (with replacement if P > population)."""
    table = np.asarray(embedding)

    def init(rng, shape, dtype=jnp.float32):
        length, d = _check_shape(shape, "from_sampled_vocab")
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
        length, d = _check_shape(shape, "from_class_labels")
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
        length, _ = _check_shape(shape, "from_string")
        ids = np.resize(np.asarray(token_ids), length)
        return jnp.asarray(table[ids], dtype)

    return init


def from_array(array: np.ndarray) -> PromptInit:
    """A fixed `[P, d]` array; the shape must match exactly."""
    array = np.asarray(array)

    def init(rng, shape, dtype=jnp.float32):
        del rng
        if len(shape) != 3:
            _check_shape(shape, "from_array")
        if tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"prompt array has shape {tuple(array.shape)} but the model expects {tuple(shape)} "
                "(prompt_length, emb_dim)"
            )
        return jnp.asarray(array, dtype)

    init.whole_table = True  # a fixed [P, d] or [T, P, d] table, see per_task
    return init


def load_prompt_file(path: str | Path) -> np.ndarray:
    """Reads a `[P, d]` float `.npy` prompt (the format google-research/prompt-tuning uses)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"prompt file {path} is not a readable .npy array: {e}") from e
    if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"prompt file {path} holds a {array.dtype} array of shape {array.shape}; "
            "expected a float array [prompt_length, emb_dim] (or [tasks, prompt_length, emb_dim])"
        )
    return array


def from_file(path: str | Path) -> PromptInit:
    """The prompt saved in a `.npy` file (e.g. stage 1's export); shape checked at init."""
    return from_array(load_prompt_file(path))


def save_prompt_file(prompt: np.ndarray, path: str | Path) -> Path:
    """Writes a `[P, d]` prompt as float32 `.npy`, atomically (never a half-written file)."""
    prompt = np.asarray(prompt, np.float32)
    if prompt.ndim not in (2, 3):
        raise ValueError(
            f"a prompt is [length, embed_dim] (or [tasks, length, embed_dim]), got {prompt.shape}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, prompt)
    tmp.replace(path)
    return path
