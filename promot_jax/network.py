"""mT5 / T5.1.1 encoder-decoder with an optional soft prompt and LoRA adapters, in Flax Linen.

The parameter tree is T5X's (`t5x/examples/t5/network.py`), so public T5X mT5
checkpoints restore without renaming; the soft prompt adds `encoder/prompt/prompt`
when `prompt_length > 0`, LoRA adapters add `lora_a` / `lora_b` beside each kernel
`lora_targets` names when `lora_rank > 0` (`promot_jax.lora`). The module honours the
contract that `t5x.models.EncoderDecoderModel` calls (`__call__`, `encode`, `decode` with
a kv cache), yet imports nothing from t5x.

With a prompt of length P, the encoder runs on P + L positions: the prompt takes
relative positions 0..P-1 and every mask treats it as real tokens. `decode`
receives the raw (unprompted) encoder tokens, as T5X passes them, and rebuilds
the prompt-aware encoder-decoder mask itself. Packing (segment ids) is refused
with a prompt, as in google-research/prompt-tuning.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from promot_jax import layers
from promot_jax import lora as lora_lib
from promot_jax.prompt import PROMPT_PATH, PromptInit, SoftPrompt, add_prompt_positions, uniform

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# The storage dtype of each group of parameters (trunk, prompt, adapters), see T5Config.
PARAM_DTYPE_FIELDS = ("param_dtype", "prompt_param_dtype", "lora_param_dtype")


def _as_dtype(value: Any, field: str) -> jnp.dtype:
    if isinstance(value, str):
        if value not in DTYPES:
            raise ValueError(f"T5Config.{field}={value!r} is not one of {sorted(DTYPES)}")
        return DTYPES[value]
    return jnp.dtype(value).type


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of the network; field names follow T5X's `network.T5Config`.

    `dtype` is the activation dtype. Parameters are stored in one of three dtypes, by group:
    `param_dtype` for the trunk (every pretrained parameter), `prompt_param_dtype` for the
    soft prompt and `lora_param_dtype` for LoRA adapters. T5X keeps parameters in float32
    and computes in bfloat16 for mT5; `param_dtype="bfloat16"` halves the trunk's memory
    while the small tuned parts stay float32 (they, and their Adafactor statistics, would
    lose their small updates to bfloat16's 8-bit mantissa). The prompt is cast to `dtype`
    only where it joins the token embeddings.
    """

    vocab_size: int
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_activations: Sequence[str] = ("gelu", "linear")
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32  # the trunk's
    prompt_param_dtype: Any = jnp.float32
    lora_param_dtype: Any = jnp.float32
    logits_via_embedding: bool = False
    float32_attention_logits: bool = False
    relpos_num_buckets: int = 32
    relpos_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    prompt_length: int = 0
    prompt_init: PromptInit | None = None  # None: uniform(0.5), prompt-tuning's default
    # Multi-task ProMoT: one prompt per task. The first encoder input token of every
    # example is then its task id (0..num_prompts-1), consumed by the encoder.
    num_prompts: int = 1
    # LoRA adapters (promot_jax.lora): rank 0 is none; alpha None is the rank (scale 1);
    # targets is a re.fullmatch over kernel paths, default attention query and value.
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: str = lora_lib.DEFAULT_TARGETS

    def __post_init__(self):
        object.__setattr__(self, "dtype", _as_dtype(self.dtype, "dtype"))
        for field in PARAM_DTYPE_FIELDS:
            object.__setattr__(self, field, _as_dtype(getattr(self, field), field))
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        for name in (
            "vocab_size",
            "emb_dim",
            "num_heads",
            "head_dim",
            "mlp_dim",
            "num_encoder_layers",
            "num_decoder_layers",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"T5Config.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.prompt_length, int) or self.prompt_length < 0:
            raise ValueError(
                f"T5Config.prompt_length must be an integer >= 0, got {self.prompt_length!r}"
            )
        if not isinstance(self.num_prompts, int) or self.num_prompts < 1:
            raise ValueError(f"T5Config.num_prompts must be >= 1, got {self.num_prompts!r}")
        if self.num_prompts > 1 and self.prompt_length == 0:
            raise ValueError(
                f"T5Config.num_prompts={self.num_prompts} needs a prompt: set prompt_length > 0"
            )
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(
                f"T5Config.lora_rank must be an integer >= 1 for LoRA adapters (0: none), got "
                f"{self.lora_rank!r}"
            )
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"T5Config.lora_alpha must be > 0 (or None), got {self.lora_alpha}")
        try:
            re.compile(self.lora_targets)
        except re.error as e:
            raise ValueError(
                f"T5Config.lora_targets {self.lora_targets!r} is not a regex: {e}"
            ) from None
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
        for act in self.mlp_activations:
            if act not in layers.ACTIVATIONS:
                raise ValueError(
                    f"unknown activation {act!r} in mlp_activations; valid: "
                    f"{sorted(layers.ACTIVATIONS)}"
                )


# name -> (emb_dim, num_heads, head_dim, mlp_dim, encoder layers, decoder layers)
MT5_SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (64, 4, 16, 128, 2, 2),
    "small": (512, 6, 64, 1024, 8, 8),
    "base": (768, 12, 64, 2048, 12, 12),
    "large": (1024, 16, 64, 2816, 24, 24),
    "xl": (2048, 32, 64, 5120, 24, 24),
    "xxl": (4096, 64, 64, 10240, 24, 24),
}
MT5_VOCAB_SIZE = 250112  # 250k SentencePiece pieces + 100 sentinels, padded to a multiple of 128


def mt5_config(size: str, **overrides: Any) -> T5Config:
    """The mT5 configuration of a published size (bfloat16 activations, vocab 250112).

    `tiny` is a 2+2-layer model for tests and the mini-lab, not a published size.
    Any T5Config field can be overridden, e.g. `mt5_config("small", vocab_size=32128)`.
    """
    if size not in MT5_SIZES:
        raise ValueError(f"unknown mT5 size {size!r}; valid sizes: {', '.join(MT5_SIZES)}")
    emb, heads, head_dim, mlp, enc, dec = MT5_SIZES[size]
    fields = dict(
        vocab_size=MT5_VOCAB_SIZE,
        emb_dim=emb,
        num_heads=heads,
        head_dim=head_dim,
        mlp_dim=mlp,
        num_encoder_layers=enc,
        num_decoder_layers=dec,
        dropout_rate=0.0,
        dtype=jnp.bfloat16,
    )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(T5Config)}
    if unknown:
        raise ValueError(f"unknown T5Config fields {sorted(unknown)}")
    fields.update(overrides)
    return T5Config(**fields)


# --------------------------------------------------------------------------- stacks


def _dropout(cfg: T5Config):
    # Broadcast over the sequence axis, as T5X does for residual-stream dropout.
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))


def _norm(cfg: T5Config, name: str) -> layers.RMSNorm:
    return layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype, name=name)


def _attention(cfg: T5Config, name: str) -> layers.MultiHeadAttention:
    return layers.MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        lora=lora_lib.spec(cfg),
        name=name,
    )


def _mlp(cfg: T5Config) -> layers.MlpBlock:
    return layers.MlpBlock(
        mlp_dim=cfg.mlp_dim,
        activations=cfg.mlp_activations,
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        lora=lora_lib.spec(cfg),
        name="mlp",
    )


def _relpos(cfg: T5Config, bidirectional: bool) -> layers.RelativePositionBias:
    return layers.RelativePositionBias(
        num_heads=cfg.num_heads,
        bidirectional=bidirectional,
        num_buckets=cfg.relpos_num_buckets,
        max_distance=cfg.relpos_max_distance,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        name="relpos_bias",
    )


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, mask, bias, deterministic: bool):
        cfg = self.config
        h = _norm(cfg, "pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, mask, bias, deterministic=deterministic)
        x = x + _dropout(cfg)(h, deterministic=deterministic)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, deterministic=deterministic)
        return x + _dropout(cfg)(h, deterministic=deterministic)


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, y, encoded, self_mask, cross_mask, bias, deterministic, decode):
        cfg = self.config
        h = _norm(cfg, "pre_self_attention_layer_norm")(y)
        h = _attention(cfg, "self_attention")(
            h, h, self_mask, bias, decode=decode, deterministic=deterministic
        )
        y = y + _dropout(cfg)(h, deterministic=deterministic)
        h = _norm(cfg, "pre_cross_attention_layer_norm")(y)
        h = _attention(cfg, "encoder_decoder_attention")(
            h, encoded, cross_mask, deterministic=deterministic
        )
        y = y + _dropout(cfg)(h, deterministic=deterministic)
        h = _norm(cfg, "pre_mlp_layer_norm")(y)
        h = _mlp(cfg)(h, deterministic=deterministic)
        return y + _dropout(cfg)(h, deterministic=deterministic)


class Encoder(nn.Module):
    """Token embedding (+ soft prompt) -> bidirectional layers -> final norm."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens, segment_ids=None, *, deterministic: bool):
        cfg = self.config
        # T5X initialises with float32 dummy tokens (t5x.eval/infer pass no input types).
        task_ids, tokens = split_task_ids(cfg, tokens.astype(jnp.int32))
        x = self.shared_embedding(tokens)
        if cfg.prompt_length:
            # Before dropout, so the prompt is dropped out like any other input.
            x = SoftPrompt(
                cfg.prompt_length,
                cfg.prompt_init or uniform(0.5),
                cfg.dtype,
                cfg.prompt_param_dtype,
                cfg.num_prompts,
                name=PROMPT_PATH[1],  # in the encoder: encoder/prompt/prompt
            )(x, task_ids)
        x = _dropout(cfg)(x, deterministic=deterministic).astype(cfg.dtype)
        valid = add_prompt_positions(tokens, cfg.prompt_length) > 0
        mask = layers.make_attention_mask(valid, valid)
        if segment_ids is not None:
            mask = layers.combine_masks(mask, _segment_mask(segment_ids, segment_ids))
        n = x.shape[1]
        bias = _relpos(cfg, bidirectional=True)(n, n)
        for i in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, mask, bias, deterministic)
        x = _norm(cfg, "encoder_norm")(x)
        return _dropout(cfg)(x, deterministic=deterministic)


class Decoder(nn.Module):
    """Causal layers with cross-attention -> final norm -> untied float32 logits."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded,
        decoder_input_tokens,
        self_mask,
        cross_mask,
        *,
        deterministic: bool,
        decode: bool,
        max_decode_length: int | None,
    ):
        cfg = self.config
        y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
        y = _dropout(cfg)(y, deterministic=deterministic).astype(cfg.dtype)
        # While decoding step by step the bias must span the whole decode length;
        # attention picks the current row.
        n = max_decode_length if decode and max_decode_length else y.shape[1]
        bias = _relpos(cfg, bidirectional=False)(n, n)
        for i in range(cfg.num_decoder_layers):
            y = DecoderLayer(cfg, name=f"layers_{i}")(
                y, encoded, self_mask, cross_mask, bias, deterministic, decode
            )
        y = _norm(cfg, "decoder_norm")(y)
        y = _dropout(cfg)(y, deterministic=deterministic)
        if cfg.logits_via_embedding:
            table = jnp.asarray(self.shared_embedding.embedding, jnp.float32)
            return jnp.einsum("bld,vd->blv", y.astype(jnp.float32), table) / jnp.sqrt(
                jnp.float32(y.shape[-1])
            )
        return layers.Dense(
            cfg.vocab_size,
            ("embed", "vocab"),
            dtype=jnp.float32,
            param_dtype=cfg.param_dtype,
            lora=lora_lib.spec(cfg),
            # Kept [batch, length, vocab]: flattened, XLA:CPU computes the kernel's gradient
            # with another dot kernel (last-bit differences, so trained parameters would no
            # longer match runs made before), and its one transposing copy is ~4% of an
            # mT5-small step.
            flatten_tokens=False,
            name="logits_dense",
        )(y)


def split_task_ids(config: T5Config, tokens: jax.Array) -> tuple[jax.Array | None, jax.Array]:
    """With per-task prompts, (the first token as task id, the remaining tokens)."""
    if config.num_prompts == 1:
        return None, tokens
    return tokens[:, 0].astype(jnp.int32), tokens[:, 1:]


def _segment_mask(q_segments, k_segments):
    return (q_segments[:, None, :, None] == k_segments[:, None, None, :]).astype(jnp.float32)


# --------------------------------------------------------------------------- the model


class Transformer(nn.Module):
    """The encoder-decoder T5X's `EncoderDecoderModel` drives: `__call__`, `encode`, `decode`."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.shared_embedding = layers.Embed(
            cfg.vocab_size, cfg.emb_dim, cfg.dtype, cfg.param_dtype, name="token_embedder"
        )
        self.encoder = Encoder(cfg, self.shared_embedding, name="encoder")
        self.decoder = Decoder(cfg, self.shared_embedding, name="decoder")

    def _check_no_packing(self, *segment_ids):
        if self.config.prompt_length and any(s is not None for s in segment_ids):
            raise ValueError(
                "packed inputs (segment ids) are not supported with a soft prompt "
                f"(prompt_length={self.config.prompt_length}); set pack=False"
            )

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout=True):
        """`[B, L]` token ids -> `[B, P + L, d]` encoder states."""
        self._check_no_packing(encoder_segment_ids)
        return self.encoder(
            encoder_input_tokens, encoder_segment_ids, deterministic=not enable_dropout
        )

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        enable_dropout=True,
        decode=False,
        max_decode_length=None,
    ):
        """Decoder logits `[B, T, V]` (float32); with `decode=True`, one step over the cache."""
        del decoder_positions  # relative attention needs no absolute positions
        self._check_no_packing(encoder_segment_ids, decoder_segment_ids)
        _, encoder_input_tokens = split_task_ids(self.config, encoder_input_tokens)
        encoder_valid = add_prompt_positions(encoder_input_tokens, self.config.prompt_length) > 0
        if decode:
            self_mask = None  # causality comes from the cache index
            cross_mask = layers.make_attention_mask(
                jnp.ones(decoder_target_tokens.shape, bool), encoder_valid
            )
        else:
            target_valid = decoder_target_tokens > 0
            self_mask = layers.combine_masks(
                layers.make_causal_mask(decoder_target_tokens.shape[-1]),
                layers.make_attention_mask(target_valid, target_valid),
                None
                if decoder_segment_ids is None
                else _segment_mask(decoder_segment_ids, decoder_segment_ids),
            )
            cross_mask = layers.make_attention_mask(target_valid, encoder_valid)
            if encoder_segment_ids is not None and decoder_segment_ids is not None:
                cross_mask = layers.combine_masks(
                    cross_mask, _segment_mask(decoder_segment_ids, encoder_segment_ids)
                )
        return self.decoder(
            encoded,
            decoder_input_tokens,
            self_mask,
            cross_mask,
            deterministic=not enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        *,
        enable_dropout: bool = True,
        decode: bool = False,
    ):
        """Teacher-forced logits `[B, T, V]`."""
        del encoder_positions
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout=enable_dropout,
            decode=decode,
        )


# --------------------------------------------------------------------------- conveniences


def _dummy_batch(batch: int = 1, length: int = 1):
    tokens = jnp.ones((batch, length), jnp.int32)
    return tokens, tokens, tokens


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(config: T5Config, rng: jax.Array) -> dict:
    return Transformer(config).init({"params": rng}, *_dummy_batch(), enable_dropout=False)


def init_variables(config: T5Config, rng: jax.Array) -> dict:
    """Random `{"params", "params_axes"}` for `config` (prompt included when P > 0)."""
    return _init_variables(config, rng)


def init_params(config: T5Config, rng: jax.Array) -> dict:
    """Random parameters for `config`, as a plain nested dict."""
    return init_variables(config, rng)["params"]


def abstract_variables(config: T5Config) -> dict:
    """Shapes and dtypes of `init_variables` without allocating (jax.eval_shape)."""
    return jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))


def abstract_params(config: T5Config) -> dict:
    """Nested dict of `jax.ShapeDtypeStruct`, the tree a checkpoint must match."""
    return abstract_variables(config)["params"]


def logical_axes(config: T5Config) -> dict:
    """Nested dict mirroring the params whose leaves are tuples of logical axis names."""
    axes = abstract_variables(config)["params_axes"]

    def strip(tree):
        out = {}
        for key, value in tree.items():
            name = key[: -len("_axes")] if key.endswith("_axes") else key
            out[name] = tuple(value.names) if hasattr(value, "names") else strip(value)
        return out

    return strip(axes)
