"""transformers MT5/T5 directories (`save_pretrained` output) -> T5X parameter tree.

Names and layouts below were checked against transformers 5.x `modeling_t5.py` /
`modeling_mt5.py`. Every `nn.Linear` stores `[out, in]`, T5X kernels `[in, out]`,
so each kernel is a plain transpose. In particular the attention query needs NO
rescaling: `T5Attention` sets `self.scaling = 1.0` (no runtime 1/sqrt(d_kv)), just
as T5X applies none at run time; both fold that factor into the query weights at
initialisation, so `q.weight.T` is our `query/kernel` exactly.

Tied output embeddings. transformers 5.x always ties `lm_head` to `shared` when it
builds a model (`tie_word_embeddings` is forced true) and `save_pretrained` then
omits `lm_head.weight`; a checkpoint with distinct weights (the public mT5 and
T5 v1.1) stores both and loads untied. The scale differs by family:
- mT5 never rescales the decoder output: absent `lm_head.weight` means
  logits = h @ shared.T, so `decoder/logits_dense/kernel` = `shared.weight.T`.
- T5 (v1.0-style, `scale_decoder_outputs` true) computes logits =
  (h * d_model**-0.5) @ shared.T, which is our `logits_via_embedding=True`; such a
  checkpoint is refused for a config with `logits_via_embedding=False`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from promot_jax import network, paths
from promot_jax.paths import Path

CONFIG_NAME = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# transformers `dense_act_fn` -> our activation name (only exact equivalents)
_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu", "silu": "silu"}


def is_transformers_dir(path: str | os.PathLike) -> bool:
    path = paths.path(path)
    return (path / CONFIG_NAME).is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def read_hf_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = paths.path(model_dir) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no transformers config.json") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def _scales_decoder_output(hf: Mapping[str, Any]) -> bool:
    """Whether transformers multiplies the decoder output by d_model**-0.5 before lm_head."""
    if hf.get("model_type") == "mt5":
        return False
    if "scale_decoder_outputs" in hf:  # written by transformers >= 5 for T5
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings", True) is not False  # T5Config's rule


def t5x_config_from_transformers(
    model_dir: str | os.PathLike, **overrides: Any
) -> network.T5Config:
    """A `T5Config` equal to the architecture in `model_dir/config.json`.

    Dropout is set to 0 and dtype to float32 unless overridden; `overrides` may set
    any T5Config field (e.g. `prompt_length`, `dtype`).
    """
    hf = read_hf_config(model_dir)
    where = paths.path(model_dir) / CONFIG_NAME
    if hf.get("model_type") not in ("mt5", "t5"):
        raise ValueError(f"{where}: model_type {hf.get('model_type')!r} is not 'mt5' or 't5'")
    proj = hf.get("feed_forward_proj", "relu")
    act_name = proj.split("-")[-1]
    act_name = "gelu_new" if proj == "gated-gelu" else act_name  # transformers' own remap
    if act_name not in _ACTIVATIONS:
        raise ValueError(
            f"{where}: feed_forward_proj {proj!r} has no exact equivalent here; supported: "
            "'gated-gelu', 'gated-gelu_new', 'gated-relu', 'gated-silu', 'relu', 'silu'"
        )
    act = _ACTIVATIONS[act_name]
    activations = (act, "linear") if proj.startswith("gated-") else (act,)
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"],
        emb_dim=hf["d_model"],
        num_heads=hf["num_heads"],
        head_dim=hf["d_kv"],
        mlp_dim=hf["d_ff"],
        num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        mlp_activations=activations,
        relpos_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relpos_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
        logits_via_embedding=_scales_decoder_output(hf),
        dropout_rate=0.0,
        dtype="float32",
    )
    fields.update(overrides)
    return network.T5Config(**fields)


# --------------------------------------------------------------------------- reading weights


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch  # only pytorch_model.bin needs torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _read_weight_file(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file is missing")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with paths.local_copy(path) as name, safe_open(name, framework="numpy") as f:
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file: {e}") from e
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{path}: reading pytorch_model.bin needs torch installed "
            "(or re-save the model with safetensors)"
        ) from None
    try:
        with paths.local_copy(path) as name:
            state = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch state dict: {e}") from e
    return {k: _torch_to_numpy(v) for k, v in state.items()}


def read_state_dict(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a transformers directory (single file or sharded with an index)."""
    model_dir = paths.path(model_dir)
    for name in WEIGHT_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}: not a transformers shard index: {e}") from e
            state: dict[str, np.ndarray] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(_read_weight_file(model_dir / shard))
            return state
        return _read_weight_file(path)
    raise FileNotFoundError(f"{model_dir}: none of {', '.join(WEIGHT_FILES)} found")


# --------------------------------------------------------------------------- name mapping


def _attention(prefix: str, hf_prefix: str) -> dict[str, tuple[str, bool]]:
    return {
        f"{prefix}/{ours}/kernel": (f"{hf_prefix}.{theirs}.weight", True)
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))
    }


def _mlp(prefix: str, hf_prefix: str, gated: bool) -> dict[str, tuple[str, bool]]:
    names = ("wi_0", "wi_1", "wo") if gated else ("wi", "wo")
    return {
        f"{prefix}/mlp/{n}/kernel": (f"{hf_prefix}.DenseReluDense.{n}.weight", True) for n in names
    }


def name_map(config: network.T5Config) -> dict[str, tuple[str, bool]]:
    """Our parameter path -> (transformers tensor name, transpose?) for `config`.

    `decoder/logits_dense/kernel` and the prompt are handled by `params_from_state_dict`.
    """
    gated = len(config.mlp_activations) > 1
    m: dict[str, tuple[str, bool]] = {"token_embedder/embedding": ("shared.weight", False)}
    for stack, n_layers in (
        ("encoder", config.num_encoder_layers),
        ("decoder", config.num_decoder_layers),
    ):
        # HF keeps the relative-position table [buckets, heads] in block 0 only.
        m[f"{stack}/relpos_bias/rel_embedding"] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            True,
        )
        m[f"{stack}/{stack}_norm/scale"] = (f"{stack}.final_layer_norm.weight", False)
        for i in range(n_layers):
            ours, hf = f"{stack}/layers_{i}", f"{stack}.block.{i}.layer"
            if stack == "encoder":
                m.update(_attention(f"{ours}/attention", f"{hf}.0.SelfAttention"))
                m[f"{ours}/pre_attention_layer_norm/scale"] = (f"{hf}.0.layer_norm.weight", False)
                m.update(_mlp(ours, f"{hf}.1", gated))
                m[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{hf}.1.layer_norm.weight", False)
            else:
                m.update(_attention(f"{ours}/self_attention", f"{hf}.0.SelfAttention"))
                m[f"{ours}/pre_self_attention_layer_norm/scale"] = (
                    f"{hf}.0.layer_norm.weight",
                    False,
                )
                m.update(_attention(f"{ours}/encoder_decoder_attention", f"{hf}.1.EncDecAttention"))
                m[f"{ours}/pre_cross_attention_layer_norm/scale"] = (
                    f"{hf}.1.layer_norm.weight",
                    False,
                )
                m.update(_mlp(ours, f"{hf}.2", gated))
                m[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{hf}.2.layer_norm.weight", False)
    return m


# Tensors transformers stores that carry no parameter of ours.
_IGNORED = (
    "encoder.embed_tokens.weight",  # copies of shared.weight
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",  # unused by HF
)


def params_from_state_dict(
    state: Mapping[str, np.ndarray],
    hf_config: Mapping[str, Any],
    config: network.T5Config,
    *,
    source: str = "transformers state dict",
) -> dict[str, np.ndarray]:
    """Flat T5X-named params from a transformers MT5/T5 state dict.

    Raises ValueError naming the first missing or unused tensor, and when the
    checkpoint's output head cannot be expressed by `config` (see module docstring).
    """
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for ours, (theirs, transpose) in name_map(config).items():
        if theirs not in state:
            raise ValueError(
                f"{source}: tensor {theirs} (for {ours}) is missing; check num_layers and "
                "feed_forward_proj (gated checkpoints have wi_0/wi_1, ungated wi)"
            )
        value = np.asarray(state[theirs])
        out[ours] = value.T if transpose else value
        used.add(theirs)

    shared = np.asarray(state["shared.weight"])
    lm_head = state.get("lm_head.weight")
    tied = lm_head is None or np.array_equal(np.asarray(lm_head), shared)
    used.add("lm_head.weight")
    if _scales_decoder_output(hf_config):
        if not tied:
            raise ValueError(
                f"{source}: lm_head differs from shared but transformers scales the decoder "
                "output by d_model**-0.5 (scale_decoder_outputs); no T5Config expresses that"
            )
        if not config.logits_via_embedding:
            raise ValueError(
                f"{source}: this T5 checkpoint ties lm_head to the shared embedding and scales "
                "the decoder output by d_model**-0.5 (T5 v1.0); load it with "
                "logits_via_embedding=True"
            )
    else:
        if config.logits_via_embedding:
            raise ValueError(
                f"{source}: transformers computes these logits with an unscaled lm_head; load "
                "with logits_via_embedding=False (decoder/logits_dense/kernel = lm_head.T)"
            )
        out["decoder/logits_dense/kernel"] = (shared if lm_head is None else np.asarray(lm_head)).T

    unused = sorted(k for k in state if k not in used and k not in _IGNORED)
    if unused:
        raise ValueError(
            f"{source}: tensor {unused[0]} {list(np.shape(state[unused[0]]))} has no place in "
            f"the config's tree ({len(unused)} unused in all); check num_layers/num_decoder_layers"
        )
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def read_params(model_dir: str | os.PathLike, config: network.T5Config) -> dict[str, np.ndarray]:
    """Flat T5X-named params of a transformers directory, for `config`."""
    model_dir = paths.path(model_dir)
    return params_from_state_dict(
        read_state_dict(model_dir), read_hf_config(model_dir), config, source=str(model_dir)
    )
