"""Sequence cross-entropy as T5X computes it (label smoothing, z-loss, a normalising factor),
and the teacher-forced loss of a model on a batch, which training and evaluation share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from promot_jax.network import Transformer


def cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    loss_normalizing_factor: float | str | None = "num_real_target_tokens",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted token cross-entropy of `[B, T, V]` float logits against `[B, T]` ids.

    Label smoothing spreads `label_smoothing` over the other V-1 ids and subtracts
    the entropy of that target distribution, so a perfect model has loss 0 (T5X's
    convention). `z_loss` adds z_loss * log(Z)^2 to keep the softmax normaliser
    near 1. The summed loss is divided by `loss_normalizing_factor`: a number (T5X
    recommends 1024 * 229 for mT5), "num_real_target_tokens" (the mean over real
    tokens, our default) or None (the plain sum, T5X's default).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    soft = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_probs = logits - log_z[..., None]
    token_loss = -jnp.sum(soft * log_probs, axis=-1)
    if label_smoothing:
        entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
        token_loss = token_loss - entropy
    token_z = z_loss * jnp.square(log_z)
    weights = weights.astype(jnp.float32)
    total = jnp.sum((token_loss + token_z) * weights)
    tokens = jnp.sum(weights)
    if loss_normalizing_factor == "num_real_target_tokens":
        denom = jnp.maximum(tokens, 1.0)
    elif loss_normalizing_factor is None:
        denom = jnp.float32(1.0)
    elif isinstance(loss_normalizing_factor, int | float):
        denom = jnp.float32(loss_normalizing_factor)
    else:
        raise ValueError(
            f"loss_normalizing_factor={loss_normalizing_factor!r}; expected a number, "
            "'num_real_target_tokens' or None"
        )
    correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
    aux = {
        "z_loss": jnp.sum(token_z * weights) / denom,
        "num_tokens": tokens,
        "accuracy": correct / jnp.maximum(tokens, 1.0),
    }
    return total / denom, aux


def batch_loss(
    model: Transformer,
    params: dict,
    batch: dict,
    dropout_rng: jax.Array | None = None,
    **loss_kwargs,
):
    """Teacher-forced loss of `params` on a feature-converted batch (dropout iff an rng)."""
    logits = model.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
        batch.get("encoder_segment_ids"),
        batch.get("decoder_segment_ids"),
        enable_dropout=dropout_rng is not None,
        rngs={} if dropout_rng is None else {"dropout": dropout_rng},
    )
    return cross_entropy(
        logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], **loss_kwargs
    )
