"""Gradient-alignment probe [ProMoT Sec. 3, Fig. 7]: is the model still learning the format?

cos(g, g') where g is the loss gradient on a batch and g' the gradient on the
same batch with its labels shuffled across examples, for the last decoder
layer's MLP and self-attention Q, K, V kernels. Shuffled labels keep the output
format and destroy the input-output relation, so a cosine near 1 means the
update is mostly about format (the paper: ~1 at step 0, ~0.1-0.2 by step 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from promot_jax import losses, network

TARGET_SIDE = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
PARTS = {
    "mlp": ("mlp",),
    "query": ("self_attention", "query"),
    "key": ("self_attention", "key"),
    "value": ("self_attention", "value"),
}


def shuffle_labels(batch: Mapping[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """The batch with whole target rows moved to other examples (no example keeps its own)."""
    size = len(batch["decoder_target_tokens"])
    if size < 2:
        raise ValueError("shuffling labels needs a batch of at least 2 examples")
    order = np.random.default_rng(seed).permutation(size)
    source = np.empty(size, np.int64)
    source[order] = np.roll(order, -1)  # a derangement: row order[j] takes row order[j+1]
    out = {k: np.asarray(v) for k, v in batch.items()}
    for k in TARGET_SIDE:
        out[k] = out[k][source]
    return out


def last_decoder_layer(config: network.T5Config) -> str:
    return f"layers_{config.num_decoder_layers - 1}"


def _leaves(tree: Any) -> jax.Array:
    return jnp.concatenate(
        [jnp.ravel(x).astype(jnp.float32) for x in jax.tree_util.tree_leaves(tree)]
    )


def _cosine(a: Any, b: Any) -> jax.Array:
    a, b = _leaves(a), _leaves(b)
    return jnp.vdot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)


def make_alignment_fn(config: network.T5Config):
    """A jitted `(params, batch, shuffled_batch) -> {part: cosine}` for this model."""
    model = network.Transformer(config)
    layer = last_decoder_layer(config)

    def grads(layer_params, params, batch):
        def loss_fn(layer_params):
            decoder = {**params["decoder"], layer: layer_params}
            return losses.batch_loss(model, {**params, "decoder": decoder}, batch)[0]

        return jax.grad(loss_fn)(layer_params)

    def fn(params, batch, shuffled):
        layer_params = params["decoder"][layer]
        g, g_shuffled = grads(layer_params, params, batch), grads(layer_params, params, shuffled)
        out = {}
        for part, path in PARTS.items():
            out[part] = _cosine(_pick(g, path), _pick(g_shuffled, path))
        out["all"] = _cosine(
            {p: _pick(g, PARTS[p]) for p in PARTS}, {p: _pick(g_shuffled, PARTS[p]) for p in PARTS}
        )
        return out

    return jax.jit(fn)


def _pick(tree: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def gradient_alignment(
    config: network.T5Config, params: Any, batch: Mapping[str, Any], seed: int = 0, fn=None
) -> dict[str, float]:
    """{mlp, query, key, value, all: cosine} for one batch (`fn`: a cached make_alignment_fn)."""
    fn = fn or make_alignment_fn(config)
    shuffled = shuffle_labels(batch, seed)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    shuffled = {k: jnp.asarray(v) for k, v in shuffled.items()}
    return {k: float(v) for k, v in fn(params, batch, shuffled).items()}
