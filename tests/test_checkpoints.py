"""Checkpoint I/O: every format round-trips bit for bit, transformers weights land where
they belong, and bad input fails naming the path (and both shapes) with nothing written."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import torch  # test dependencies: a missing one must fail, not skip
import transformers

from promot_jax import checkpoints, cli, network
from promot_jax.checkpoints import (
    orbax_params,
    param_tree,
    t5x_legacy,
    t5x_orbax,
    transformers_mt5,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG = network.mt5_config("tiny", vocab_size=128, dtype="float32")
PROMPTED = dataclasses.replace(CONFIG, prompt_length=3)
HF_ARCH = dict(vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)


@pytest.fixture(scope="module")
def params():
    return jax.device_get(network.init_params(PROMPTED, jax.random.key(7)))


def _cast(tree, dtype):
    return jax.tree.map(lambda a: np.asarray(a).astype(dtype), tree)


def _optimizer_state(tree):
    """Adafactor-like state: factored rows for matrices, None where untouched."""
    return jax.tree.map(
        lambda a: {"v_row": np.full(a.shape[:1], 0.5, np.float32), "v": None, "m": None}, tree
    )


def assert_bitwise_equal(got, want):
    flat_got, flat_want = param_tree.flatten(got), param_tree.flatten(want)
    assert list(flat_got) == list(flat_want)
    for path, value in flat_want.items():
        g = flat_got[path]
        assert g.dtype == value.dtype, path
        assert g.shape == value.shape, path
        assert np.asarray(g).tobytes() == np.asarray(value).tobytes(), path


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_t5x_legacy_round_trip_with_inline_and_none_leaves(tmp_path, params, dtype):
    stored = _cast(params, dtype)
    # 1-D scales and the relpos tables inline in the msgpack, kernels as zarr.
    inline = lambda path, a: a.ndim < 2 or "relpos_bias" in path  # noqa: E731
    # An older step with other values: the model dir must resolve to step 10, not 9
    # (numerically latest, not lexicographically).
    t5x_legacy.write_checkpoint(
        tmp_path, _cast(jax.tree.map(lambda a: a + 1, params), dtype), step=9
    )
    step_dir = t5x_legacy.write_checkpoint(
        tmp_path, stored, step=10, param_states=_optimizer_state(params), inline=inline
    )
    assert (step_dir / "target.encoder.layers_0.attention.query.kernel" / ".zarray").is_file()
    assert not (step_dir / "target.encoder.relpos_bias.rel_embedding").exists()
    zarray = json.loads((step_dir / "target.token_embedder.embedding" / ".zarray").read_text())
    assert zarray["dtype"] == ("bfloat16" if dtype is ml_dtypes.bfloat16 else "<f4")

    # The model dir resolves to the latest step; the step dir and msgpack file work too.
    for path in (tmp_path, step_dir, step_dir / "checkpoint"):
        assert checkpoints.detect_format(path) == "t5x_legacy"
        assert_bitwise_equal(checkpoints.load_params(path, PROMPTED), stored)

    state = t5x_legacy.read_state(step_dir)
    assert int(state["state"]["step"]) == 10
    kernel_state = state["state"]["param_states"]["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]
    assert kernel_state["v"] is None and kernel_state["m"] is None
    np.testing.assert_array_equal(kernel_state["v_row"], np.full((128,), 0.5, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_t5x_orbax_round_trip(tmp_path, params, dtype):
    stored = _cast(params, dtype)
    t5x_orbax.write_checkpoint(tmp_path, stored, step=3, param_states=_optimizer_state(params))
    assert (tmp_path / "checkpoint_3" / "state" / "_METADATA").is_file()
    for path in (tmp_path, tmp_path / "checkpoint_3", tmp_path / "checkpoint_3" / "state"):
        assert checkpoints.detect_format(path) == "t5x_orbax"
        assert_bitwise_equal(checkpoints.load_params(path, PROMPTED), stored)


def test_own_orbax_round_trip_refuses_to_overwrite(tmp_path, params):
    stored = _cast(params, ml_dtypes.bfloat16)
    dst = tmp_path / "params"
    checkpoints.save_params(stored, dst)
    assert checkpoints.detect_format(dst) == "orbax_params"
    assert_bitwise_equal(checkpoints.load_params(dst, PROMPTED), stored)
    with pytest.raises(FileExistsError, match="already exists"):
        checkpoints.save_params(params, dst)
    checkpoints.save_params(params, dst, force=True)
    assert_bitwise_equal(checkpoints.load_params(dst, PROMPTED), params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params"]  # no staging left over


def test_failed_save_leaves_nothing(tmp_path, params, monkeypatch):
    bad = {**params, "encoder": {**params["encoder"], "oops": "text"}}
    with pytest.raises(ValueError, match="encoder/oops"):
        checkpoints.save_params(bad, tmp_path / "params")
    assert list(tmp_path.iterdir()) == []

    class CrashingCheckpointer:  # dies half way through writing
        def save(self, directory, tree):
            directory.mkdir()
            (directory / "_METADATA").write_text("{}")
            raise OSError("disk full")

    monkeypatch.setattr(orbax_params.ocp, "PyTreeCheckpointer", CrashingCheckpointer)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_params(params, tmp_path / "params")
    assert list(tmp_path.iterdir()) == []


def test_load_prompt_from_each_format(tmp_path, params):
    want = params["encoder"]["prompt"]["prompt"]
    t5x_legacy.write_checkpoint(tmp_path / "legacy", params)
    t5x_orbax.write_checkpoint(tmp_path / "orbax", params)
    checkpoints.save_params(params, tmp_path / "ours")
    for name in ("legacy", "orbax", "ours"):
        np.testing.assert_array_equal(checkpoints.load_prompt(tmp_path / name), want)

    plain = jax.device_get(network.init_params(CONFIG, jax.random.key(0)))
    t5x_legacy.write_checkpoint(tmp_path / "plain", plain)
    with pytest.raises(ValueError, match="has no encoder/prompt/prompt.*token_embedder"):
        checkpoints.load_prompt(tmp_path / "plain")


# --------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def hf_mt5(tmp_path_factory):
    """A tiny random MT5 with an untied lm_head (as the public mT5), saved offline."""
    torch.manual_seed(0)
    model = transformers.MT5ForConditionalGeneration(
        transformers.MT5Config(**HF_ARCH, num_decoder_layers=3, feed_forward_proj="gated-gelu")
    )
    model.lm_head.weight = torch.nn.Parameter(torch.randn(128, 64))  # untie
    directory = tmp_path_factory.mktemp("hf") / "mt5"
    model.save_pretrained(directory)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return directory, state


def test_transformers_config(hf_mt5):
    config = checkpoints.t5x_config_from_transformers(hf_mt5[0])
    assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (64, 4, 16, 128)
    assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 3)
    assert config.mlp_activations == ("gelu", "linear")
    assert not config.logits_via_embedding


def test_transformers_import_places_every_weight(hf_mt5):
    directory, state = hf_mt5
    config = checkpoints.t5x_config_from_transformers(directory)
    flat = param_tree.flatten(checkpoints.load_params(directory, config))
    mapping = transformers_mt5.name_map(config)
    assert set(flat) == set(mapping) | {"decoder/logits_dense/kernel"}
    for ours, (theirs, transpose) in mapping.items():
        want = state[theirs].T if transpose else state[theirs]
        np.testing.assert_array_equal(flat[ours], want, err_msg=ours)
    np.testing.assert_array_equal(flat["decoder/logits_dense/kernel"], state["lm_head.weight"].T)
    # Spot checks of the mapping itself, independent of name_map.
    np.testing.assert_array_equal(
        flat["encoder/relpos_bias/rel_embedding"],
        state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T,
    )
    np.testing.assert_array_equal(
        flat["decoder/layers_2/encoder_decoder_attention/query/kernel"],
        state["decoder.block.2.layer.1.EncDecAttention.q.weight"].T,
    )
    np.testing.assert_array_equal(
        flat["decoder/layers_1/mlp/wi_1/kernel"],
        state["decoder.block.1.layer.2.DenseReluDense.wi_1.weight"].T,
    )


def test_transformers_pytorch_bin_and_shards_read_the_same(tmp_path, hf_mt5):
    directory, state = hf_mt5
    config = checkpoints.t5x_config_from_transformers(directory)
    want = checkpoints.load_params(directory, config)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((directory / "config.json").read_text())
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, bin_dir / "pytorch_model.bin")
    assert_bitwise_equal(checkpoints.load_params(bin_dir, config), want)

    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((directory / "config.json").read_text())
    names = sorted(state)
    halves = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    from safetensors.numpy import save_file

    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, str(shard_dir / shard))
    index = {"weight_map": {k: s for s, keys in halves.items() for k in keys}}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_bitwise_equal(checkpoints.load_params(shard_dir, config), want)


def test_transformers_tied_heads(tmp_path):
    # mT5 as transformers 5.x builds it: lm_head tied to shared, not saved, not rescaled.
    mt5 = transformers.MT5ForConditionalGeneration(transformers.MT5Config(**HF_ARCH))
    mt5.save_pretrained(tmp_path / "mt5")
    config = checkpoints.t5x_config_from_transformers(tmp_path / "mt5")
    flat = param_tree.flatten(checkpoints.load_params(tmp_path / "mt5", config))
    np.testing.assert_array_equal(
        flat["decoder/logits_dense/kernel"], mt5.shared.weight.detach().numpy().T
    )
    # T5 v1.0: tied and rescaled -> only logits_via_embedding=True expresses it.
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(**HF_ARCH))
    t5.save_pretrained(tmp_path / "t5")
    config = checkpoints.t5x_config_from_transformers(tmp_path / "t5")
    assert config.logits_via_embedding and config.mlp_activations == ("relu",)
    flat = param_tree.flatten(checkpoints.load_params(tmp_path / "t5", config))
    assert "decoder/logits_dense/kernel" not in flat
    assert "encoder/layers_0/mlp/wi/kernel" in flat
    untied = dataclasses.replace(config, logits_via_embedding=False)
    with pytest.raises(ValueError, match="logits_via_embedding=True"):
        checkpoints.load_params(tmp_path / "t5", untied)


def test_transformers_into_prompted_config_needs_explicit_fill(hf_mt5):
    directory, _ = hf_mt5
    config = checkpoints.t5x_config_from_transformers(directory, prompt_length=5)
    with pytest.raises(ValueError, match=r"encoder/prompt/prompt \[5, 64\] is absent.*missing_ok"):
        checkpoints.load_params(directory, config)
    filled = checkpoints.load_params(directory, config, missing_ok=("encoder/prompt/.*",))
    assert filled["encoder"]["prompt"]["prompt"].shape == (5, 64)
    given = np.arange(5 * 64, dtype=np.float32).reshape(5, 64)
    loaded = checkpoints.load_params(directory, config, prompt=given)
    np.testing.assert_array_equal(loaded["encoder"]["prompt"]["prompt"], given)
    with pytest.raises(ValueError, match=r"given prompt of shape \(4, 64\).*want \(5, 64\)"):
        checkpoints.load_params(directory, config, prompt=given[:4])
    with pytest.raises(ValueError, match="has no soft prompt"):
        checkpoints.load_prompt(directory)
    with pytest.raises(ValueError, match="prompt_length=0"):
        checkpoints.load_params(
            directory, dataclasses.replace(config, prompt_length=0), prompt=given
        )


# --------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_first_path_and_both_shapes(tmp_path, params):
    t5x_legacy.write_checkpoint(tmp_path, params)
    bigger = dataclasses.replace(PROMPTED, vocab_size=256)
    with pytest.raises(ValueError) as err:
        checkpoints.load_params(tmp_path, bigger)
    message = str(err.value)
    assert "decoder/logits_dense/kernel" in message
    assert "[64, 128]" in message and "[64, 256]" in message


def test_extra_and_missing_parameters_are_named(tmp_path, params):
    t5x_orbax.write_checkpoint(tmp_path / "prompted", params)
    with pytest.raises(ValueError, match="encoder/prompt/prompt .* not in the config"):
        checkpoints.load_params(tmp_path / "prompted", CONFIG)
    fewer = {**params, "decoder": {k: v for k, v in params["decoder"].items() if k != "layers_1"}}
    checkpoints.save_params(fewer, tmp_path / "fewer")
    with pytest.raises(ValueError, match="decoder/layers_1/encoder_decoder_attention/key/kernel"):
        checkpoints.load_params(tmp_path / "fewer", PROMPTED)


def test_missing_or_unreadable_path_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        checkpoints.load_params(missing, CONFIG)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=f"{junk}: not a recognised checkpoint.*notes.txt"):
        checkpoints.load_params(junk, CONFIG)
    corrupt = tmp_path / "checkpoint_1"
    corrupt.mkdir()
    (corrupt / "checkpoint").write_bytes(b"\x00not msgpack")
    with pytest.raises(ValueError, match=str(corrupt / "checkpoint")):
        checkpoints.load_params(corrupt, CONFIG)


# --------------------------------------------------------------------------- convert CLI


def test_convert_cli_end_to_end(tmp_path, hf_mt5, capsys):
    directory, state = hf_mt5
    dst = tmp_path / "converted"
    argv = ["convert", str(directory), str(dst), "--config-from-source", "--dtype", "bfloat16"]
    assert cli.main(argv) == 0
    config = checkpoints.t5x_config_from_transformers(directory)
    loaded = checkpoints.load_params(dst, config)
    kernel = loaded["decoder"]["logits_dense"]["kernel"]
    assert kernel.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(kernel, state["lm_head.weight"].T.astype(ml_dtypes.bfloat16))

    # An existing DST is refused without --force and left as it was.
    before = sorted(p.name for p in dst.iterdir())
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in dst.iterdir()) == before
    assert cli.main([*argv[:-2], "--force"]) == 0
    assert checkpoints.load_params(dst, config)["decoder"]["logits_dense"]["kernel"].dtype == (
        np.float32
    )


def test_convert_cli_writes_nothing_on_failure(tmp_path, params, capsys):
    t5x_legacy.write_checkpoint(tmp_path / "t5x", params)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["convert", str(tmp_path / "t5x"), str(out / "dst"), "--size", "tiny"]
    assert cli.main([*argv, "--vocab-size", "256", "--prompt-length", "3"]) == 2
    err = capsys.readouterr().err
    assert "decoder/logits_dense/kernel" in err and "[64, 256]" in err
    assert cli.main([*argv, "--vocab-size", "128"]) == 2  # prompt in SRC, not in config
    assert "encoder/prompt/prompt" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert cli.main([*argv, "--vocab-size", "128", "--prompt-length", "3"]) == 0
    assert_bitwise_equal(checkpoints.load_params(out / "dst", PROMPTED), params)
