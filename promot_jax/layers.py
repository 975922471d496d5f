"""Building blocks of the T5.1.1 / mT5 network, with T5X's parameter names and axes.

Every parameter is declared through `param_with_axes`, so it carries logical axis
names in the `params_axes` collection (T5X refuses parameters without them).
Kernels are stored flattened to 2-D (`[d, heads*head_dim]`), as in T5X checkpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import partitioning

from promot_jax import lora as lora_lib
from promot_jax import mixed_precision

param_with_axes = partitioning.param_with_axes
Initializer = Callable[..., jax.Array]

NEG_INF = -1e10  # additive bias of a masked attention logit (T5X's value)
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(nn.gelu, approximate=True),  # "gelu_new" in transformers
    "relu": nn.relu,
    "silu": nn.silu,
    "linear": lambda x: x,
}


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias; statistics in float32."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = jnp.asarray(x, jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = jnp.asarray(x32 * jax.lax.rsqrt(var + self.epsilon), self.dtype)
        scale = param_with_axes(
            "scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype, axes=("embed",)
        )
        return y * jnp.asarray(scale, self.dtype)


class Dense(nn.Module):
    """A bias-free projection whose kernel is stored 2-D `[in, out]` with logical axes.

    With `lora`, a kernel its targets name gets a LoRA adapter beside it (`promot_jax.lora`).

    `flatten_tokens`: in float32 the product runs on `[tokens, in]`, every leading axis
    flattened into one. The values are the same; the backward pass is faster on XLA:CPU, which
    otherwise fuses the kernel gradient's transpose of `[batch, length, out]` into the
    elementwise producer of the output's gradient. bfloat16's products
    (`mixed_precision`) run faster unflattened. docs/implementation.md, "Projections on
    flattened tokens", has the measurements.
    """

    features: int
    kernel_axes: tuple[str, str]
    kernel_init: Initializer = default_kernel_init
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    lora: lora_lib.LoraSpec | None = None
    flatten_tokens: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = param_with_axes(
            "kernel",
            self.kernel_init,
            (x.shape[-1], self.features),
            self.param_dtype,
            axes=self.kernel_axes,
        )
        x = jnp.asarray(x, self.dtype)
        if self.flatten_tokens and jnp.dtype(self.dtype) == jnp.float32:
            tokens = x.reshape(-1, x.shape[-1])
            y = mixed_precision.einsum("td,df->tf", tokens, kernel, self.dtype)
            y = y.reshape(*x.shape[:-1], self.features)
        else:
            y = mixed_precision.einsum("...d,df->...f", x, kernel, self.dtype)
        if self.lora is None:
            return y
        return lora_lib.add_update(self, x, y, self.kernel_axes, self.lora, self.dtype)


class Embed(nn.Module):
    """Token embedding table `[vocab, embed]`, looked up by gather."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

    def setup(self):
        self.embedding = param_with_axes(
            "embedding",
            self.embedding_init,
            (self.num_embeddings, self.features),
            self.param_dtype,
            axes=("vocab", "embed"),
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"token ids must be integers, got dtype {tokens.dtype}")
        return jnp.asarray(jnp.take(self.embedding, tokens, axis=0), self.dtype)


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucketing of key-minus-query offsets: exact for small, log-spaced for large."""
    n = -relative_position
    ret = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(n.dtype) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        log_ratio = np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
    large = max_exact + (
        log_ratio / np.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(n.dtype)
    large = np.minimum(large, num_buckets - 1)
    return ret + np.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """One learned bias per (head, distance bucket), shared by all layers of a stack."""

    num_heads: int
    bidirectional: bool
    num_buckets: int = 32
    max_distance: int = 128
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, qlen: int, klen: int) -> jax.Array:
        """Returns the bias `[1, heads, qlen, klen]` for queries 0..qlen-1 and keys 0..klen-1."""
        context = np.arange(qlen, dtype=np.int32)[:, None]
        memory = np.arange(klen, dtype=np.int32)[None, :]
        buckets = relative_position_bucket(
            memory - context, self.bidirectional, self.num_buckets, self.max_distance
        )
        table = param_with_axes(
            "rel_embedding",
            nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
            (self.num_heads, self.num_buckets),
            self.param_dtype,
            axes=("heads", "relpos_buckets"),
        )
        bias = jnp.take(jnp.asarray(table, self.dtype), jnp.asarray(buckets), axis=1)
        return bias[None]


def make_attention_mask(query_valid: jax.Array, key_valid: jax.Array) -> jax.Array:
    """`[B, 1, q, k]` mask, 1 where both the query and the key position are real."""
    return (query_valid[:, None, :, None] & key_valid[:, None, None, :]).astype(jnp.float32)


def make_causal_mask(length: int) -> jax.Array:
    """`[1, 1, L, L]` lower-triangular mask."""
    return jnp.tril(jnp.ones((length, length), jnp.float32))[None, None]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    return functools.reduce(jnp.logical_and, masks).astype(jnp.float32)


def mask_to_bias(mask: jax.Array | None, dtype: jnp.dtype) -> jax.Array | None:
    if mask is None:
        return None
    return jnp.where(mask > 0, 0.0, NEG_INF).astype(dtype)


@jax.custom_vjp
def add_shared_bias(mask_bias: jax.Array, bias: jax.Array) -> jax.Array:
    """`mask_bias [B, 1, q, k] + bias [1, H, q, k]`; the same values, but the gradient of
    `bias` sums the batch rows with a chain of adds instead of a reduction over the leading
    axis: XLA's CPU backend (jax 0.10, YNNPACK reduce fusions) runs that reduction about 50x
    slower, and merged every encoder layer's into one fusion at the end of the backward
    pass, holding all their [B, H, q, k] gradients alive (8 x 50 MB at mT5-small)."""
    return mask_bias + bias


def _sum_to(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`g` summed down to `shape`, which broadcasts to it; the leading axis by a chain of adds."""
    if shape[0] == 1 and g.shape[0] != 1:
        g = functools.reduce(jnp.add, [g[i] for i in range(g.shape[0])])[None]
    axes = tuple(i for i, (n, m) in enumerate(zip(g.shape, shape, strict=True)) if m == 1 < n)
    return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def _add_shared_bias_fwd(mask_bias, bias):
    return mask_bias + bias, (mask_bias.shape, bias.shape)


def _add_shared_bias_bwd(shapes, g):
    return _sum_to(g, shapes[0]), _sum_to(g, shapes[1])


add_shared_bias.defvjp(_add_shared_bias_fwd, _add_shared_bias_bwd)


def recomputed(fn: Callable, dtype) -> Callable:
    """`fn`, recomputed from its inputs in the backward pass when `dtype` is float32: less
    memory, the same gradients bit for bit (on XLA:CPU; bfloat16 would round differently).
    docs/implementation.md, "Recomputed softmax and activations", has the measurements."""
    return jax.checkpoint(fn) if jnp.dtype(dtype) == jnp.float32 else fn


def _softmax(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(logits, axis=-1)


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention with an optional autoregressive kv cache.

    The query kernel is initialised divided by sqrt(head_dim) and logits are not
    rescaled at run time (T5's convention, which pretrained checkpoints assume).
    With `decode=True` the first call (at cache-initialisation time, full length)
    creates `cached_key`, `cached_value` `[B, L, H, D]` and `cache_index`; later
    calls take one position at a time.
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    float32_logits: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = default_kernel_init
    lora: lora_lib.LoraSpec | None = None

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        *,
        decode: bool = False,
        deterministic: bool = True,
    ) -> jax.Array:
        joined = self.num_heads * self.head_dim
        depth_scaling = np.sqrt(self.head_dim).astype(np.float32)

        def query_init(rng, shape, dtype=jnp.float32):
            # In float32, then rounded once to the kernel's dtype (a float32 scalar would
            # otherwise promote a bfloat16 kernel to float32).
            return (self.kernel_init(rng, shape, jnp.float32) / depth_scaling).astype(dtype)

        def project(name, x, init):
            y = Dense(
                joined,
                ("embed", "joined_kv"),
                init,
                self.dtype,
                self.param_dtype,
                lora=self.lora,
                name=name,
            )(x)
            return y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)

        query = project("query", inputs_q, query_init)
        key = project("key", inputs_kv, self.kernel_init)
        value = project("value", inputs_kv, self.kernel_init)

        if decode:
            is_initialized = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable(
                "cache", "cached_value", jnp.zeros, value.shape, value.dtype
            )
            cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if is_initialized:
                batch, length, heads, depth = cached_key.value.shape
                if query.shape[1] != 1:
                    raise ValueError(
                        f"cached decoding takes one position per call, got {query.shape[1]}"
                    )
                idx = cache_index.value
                key = jax.lax.dynamic_update_slice(cached_key.value, key, (0, idx, 0, 0))
                value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, idx, 0, 0))
                cached_key.value, cached_value.value = key, value
                cache_index.value = idx + 1
                # Attend only to positions already written (including this one).
                step_mask = (jnp.arange(length) <= idx)[None, None, None, :]
                step_mask = jnp.broadcast_to(step_mask, (batch, 1, 1, length))
                mask = combine_masks(mask, step_mask)
                if bias is not None:
                    # The bias covers the whole decode length; keep the current query row.
                    bias = jax.lax.dynamic_slice_in_dim(bias, idx, 1, axis=-2)

        attn_bias = mask_to_bias(mask, self.dtype)
        if bias is not None:
            attn_bias = bias if attn_bias is None else add_shared_bias(attn_bias, bias)

        if self.float32_logits:
            query, key = query.astype(jnp.float32), key.astype(jnp.float32)
        logits = mixed_precision.einsum("bqhd,bkhd->bhqk", query, key, query.dtype)
        if attn_bias is not None:
            logits = logits + attn_bias.astype(logits.dtype)
        weights = recomputed(_softmax, self.dtype)(logits.astype(jnp.float32))
        weights = weights.astype(self.dtype)
        if not deterministic and self.dropout_rate > 0.0:
            keep = jax.random.bernoulli(
                self.make_rng("dropout"), 1.0 - self.dropout_rate, weights.shape
            )
            weights = weights * keep.astype(self.dtype) / (1.0 - self.dropout_rate)
        out = mixed_precision.einsum("bhqk,bkhd->bqhd", weights, value, self.dtype)
        out = out.reshape(*out.shape[:-2], joined)
        return Dense(
            inputs_q.shape[-1],
            ("joined_kv", "embed"),
            self.kernel_init,
            self.dtype,
            self.param_dtype,
            lora=self.lora,
            name="out",
        )(out)


class MlpBlock(nn.Module):
    """Gated feed-forward block: wo(act_0(wi_0 x) * act_1(wi_1 x)), no biases."""

    mlp_dim: int
    activations: Sequence[str] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = default_kernel_init
    lora: lora_lib.LoraSpec | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        hidden = None
        for i, name in enumerate(self.activations):
            suffix = f"_{i}" if len(self.activations) > 1 else ""
            h = Dense(
                self.mlp_dim,
                ("embed", "mlp"),
                self.kernel_init,
                self.dtype,
                self.param_dtype,
                lora=self.lora,
                name=f"wi{suffix}",
            )(x)
            h = recomputed(_activation(name), self.dtype)(h)
            hidden = h if hidden is None else hidden * h
        # T5X drops the hidden units too, broadcasting over the sequence axis.
        hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
            hidden, deterministic=deterministic
        )
        return Dense(
            x.shape[-1],
            ("mlp", "embed"),
            self.kernel_init,
            self.dtype,
            self.param_dtype,
            lora=self.lora,
            name="wo",
        )(hidden)
