"""Network behaviour users rely on: T5X tree, the prompt, cache == teacher forcing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from promot_jax import decoding, layers, network, prompt

VOCAB = 96


def tiny(prompt_length=0, **kw):
    kw.setdefault("dtype", "float32")
    return network.mt5_config("tiny", vocab_size=VOCAB, prompt_length=prompt_length, **kw)


def random_tokens(rng, batch, length, pad_from=None):
    tokens = rng.integers(2, VOCAB, (batch, length)).astype(np.int32)
    for row, start in (pad_from or {}).items():
        tokens[row, start:] = 0
    return tokens


def flat_names(tree):
    return {"/".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def forward(model, params, enc, targets):
    dec_in = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return model.apply({"params": params}, enc, dec_in, targets, enable_dropout=False)


def test_parameter_tree_is_t5x():
    names = flat_names(network.abstract_params(tiny()))
    assert "token_embedder/embedding" in names
    assert "encoder/layers_1/attention/query/kernel" in names
    assert "encoder/relpos_bias/rel_embedding" in names
    assert "encoder/layers_0/relpos_bias/rel_embedding" not in names  # one table per stack
    assert "decoder/layers_0/encoder_decoder_attention/out/kernel" in names
    assert "decoder/layers_1/pre_cross_attention_layer_norm/scale" in names
    assert "decoder/logits_dense/kernel" in names
    assert not any("bias" in n and "relpos" not in n for n in names)  # no biases anywhere
    assert not any("prompt" in n for n in names)  # P = 0: the tree is plain mT5


def test_every_parameter_has_logical_axes():
    cfg = tiny(prompt_length=4)
    params = network.abstract_params(cfg)
    axes = network.logical_axes(cfg)
    assert flat_names(params) == flat_names(
        jax.tree_util.tree_map(lambda x: 0, axes, is_leaf=lambda x: isinstance(x, tuple))
    )
    assert axes["encoder"]["prompt"]["prompt"] == ("prompt", "prompt_embed")
    assert axes["token_embedder"]["embedding"] == ("vocab", "embed")
    assert axes["decoder"]["logits_dense"]["kernel"] == ("embed", "vocab")


def test_prompt_changes_outputs_and_padding_does_not():
    cfg = tiny(prompt_length=4)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    enc = random_tokens(rng, 2, 8, {1: 5})
    tgt = random_tokens(rng, 2, 6)
    base = forward(model, params, enc, tgt)

    # Extra padding at the end of the encoder input changes nothing.
    padded = np.concatenate([enc, np.zeros((2, 5), np.int32)], axis=1)
    np.testing.assert_allclose(forward(model, params, padded, tgt), base, atol=1e-5)

    # A different prompt gives different logits.
    other = jax.tree_util.tree_map(lambda x: x, params)
    other["encoder"]["prompt"]["prompt"] = params["encoder"]["prompt"]["prompt"] + 0.5
    assert np.max(np.abs(forward(model, other, enc, tgt) - base)) > 1e-3


def test_zero_prompt_length_is_plain_mt5():
    """P = 0 and P > 0 share every trunk parameter; the prompted model really sees the prompt."""
    plain_cfg, prompted_cfg = tiny(), tiny(prompt_length=3)
    params = network.init_params(prompted_cfg, jax.random.key(1))
    trunk = {k: v for k, v in params.items()}
    trunk["encoder"] = {k: v for k, v in params["encoder"].items() if k != "prompt"}
    assert flat_names(trunk) == flat_names(network.abstract_params(plain_cfg))
    rng = np.random.default_rng(1)
    enc, tgt = random_tokens(rng, 2, 6), random_tokens(rng, 2, 5)
    plain = forward(network.Transformer(plain_cfg), trunk, enc, tgt)
    prompted = forward(network.Transformer(prompted_cfg), params, enc, tgt)
    assert plain.shape == prompted.shape
    assert np.max(np.abs(plain - prompted)) > 1e-3


@pytest.mark.parametrize("prompt_length", [0, 5])
def test_cached_decoding_equals_teacher_forcing(prompt_length):
    """Step-by-step logits over the kv cache equal the full forward pass (atol 1e-5, float32)."""
    cfg = tiny(prompt_length=prompt_length)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(2))
    rng = np.random.default_rng(2)
    enc = random_tokens(rng, 3, 9, {2: 4})
    tgt = random_tokens(rng, 3, 7)
    full = forward(model, params, enc, tgt)

    encoded = model.apply({"params": params}, enc, enable_dropout=False, method=model.encode)
    _, state = model.apply(
        {"params": params}, enc, tgt, tgt, enable_dropout=False, decode=True, mutable=["cache"]
    )
    cache = state["cache"]
    dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    steps = []
    for t in range(tgt.shape[1]):
        ids = dec_in[:, t : t + 1]
        logits, state = model.apply(
            {"params": params, "cache": cache},
            encoded,
            enc,
            ids,
            ids,
            enable_dropout=False,
            decode=True,
            max_decode_length=tgt.shape[1],
            mutable=["cache"],
            method=model.decode,
        )
        cache = state["cache"]
        steps.append(logits[:, 0])
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prompt_length", [0, 3])
def test_beam_width_one_is_greedy(prompt_length):
    cfg = tiny(prompt_length=prompt_length)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(3))
    enc = jnp.asarray(random_tokens(np.random.default_rng(3), 4, 7, {1: 3}))
    greedy = decoding.generate(model, params, enc, 12, search="greedy")
    beam1 = decoding.generate(model, params, enc, 12, search="beam", beam_size=1)
    np.testing.assert_array_equal(greedy, beam1)
    # Greedy really is the arg-max of the teacher-forced model on its own output.
    # (A random model may emit id 0 itself; check the prefix before the first 0.)
    out = np.asarray(greedy)
    prefix = np.cumprod(out > 0, axis=1).astype(bool)
    logits = forward(model, params, np.asarray(enc), np.where(out > 0, out, 1))
    assert prefix.sum() > 10
    assert (np.argmax(logits, -1) == out)[prefix].all()


def test_beam_search_scores_are_sorted_and_outputs_padded_after_eos():
    cfg = tiny()
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(4))
    enc = jnp.asarray(random_tokens(np.random.default_rng(4), 2, 6))
    out = decoding.generate(model, params, enc, 10, search="beam", beam_size=4)
    assert out.shape == (2, 10)
    for row in np.asarray(out):
        eos = np.flatnonzero(row == 1)
        if eos.size:
            assert (row[eos[0] + 1 :] == 0).all()


def test_sampling_is_seeded_and_low_temperature_is_greedy():
    cfg = tiny()
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(5))
    enc = jnp.asarray(random_tokens(np.random.default_rng(5), 3, 6))
    a = decoding.generate(model, params, enc, 8, search="sample", rng=jax.random.key(0))
    b = decoding.generate(model, params, enc, 8, search="sample", rng=jax.random.key(0))
    np.testing.assert_array_equal(a, b)
    cold = decoding.generate(
        model, params, enc, 8, search="sample", temperature=1e-4, rng=jax.random.key(1)
    )
    np.testing.assert_array_equal(cold, decoding.generate(model, params, enc, 8))


def test_dropout_is_active_only_when_enabled():
    cfg = tiny(dropout_rate=0.3)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(6))
    rng = np.random.default_rng(6)
    enc, tgt = random_tokens(rng, 2, 6), random_tokens(rng, 2, 5)
    args = (enc, tgt, tgt)
    off1 = model.apply({"params": params}, *args, enable_dropout=False)
    off2 = model.apply({"params": params}, *args, enable_dropout=False)
    np.testing.assert_array_equal(off1, off2)
    on = model.apply({"params": params}, *args, rngs={"dropout": jax.random.key(0)})
    assert np.max(np.abs(on - off1)) > 1e-3


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_recomputing_softmax_and_activations_leaves_gradients_bit_for_bit(dtype, monkeypatch):
    """float32 recomputes the attention softmax and the MLP activations in the backward
    pass (less memory); its gradients must be the stored ones exactly. bfloat16, where the
    recomputation rounds differently, must not recompute."""
    # The lab's model width (128-d, MLP 512): at "tiny" even bfloat16's recomputation rounds
    # alike, so a recomputing bfloat16 would pass the comparison below.
    cfg = tiny(prompt_length=10, dropout_rate=0.1, dtype=dtype, emb_dim=128, mlp_dim=512)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(8))
    rng = np.random.default_rng(8)
    enc, tgt = random_tokens(rng, 8, 40, {1: 30}), random_tokens(rng, 8, 6)
    dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)

    def loss(params):
        logits = model.apply(
            {"params": params}, enc, dec_in, tgt, rngs={"dropout": jax.random.key(1)}
        )
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tgt[..., None], -1))

    def gradients():
        traced = jax.jit(jax.grad(loss)).trace(params)
        return traced.lower().compile()(params), "remat" in str(traced.jaxpr)

    recomputed, recomputes = gradients()
    monkeypatch.setattr(layers, "recomputed", lambda fn, dtype: fn)
    stored, _ = gradients()
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(recomputed)[0],
        jax.tree_util.tree_leaves(stored),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert recomputes == (dtype == "float32")


def test_bfloat16_activations_float32_logits():
    cfg = tiny(dtype="bfloat16")
    params = network.init_params(cfg, jax.random.key(7))
    assert params["encoder"]["encoder_norm"]["scale"].dtype == jnp.float32
    rng = np.random.default_rng(7)
    logits = forward(
        network.Transformer(cfg), params, random_tokens(rng, 2, 5), random_tokens(rng, 2, 4)
    )
    assert logits.dtype == jnp.float32
    assert np.isfinite(logits).all()
    bf16_params = network.init_params(tiny(param_dtype="bfloat16"), jax.random.key(7))
    assert bf16_params["decoder"]["logits_dense"]["kernel"].dtype == jnp.bfloat16


def test_packing_with_a_prompt_is_refused():
    cfg = tiny(prompt_length=2)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(8))
    tokens = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match="segment ids"):
        model.apply(
            {"params": params}, tokens, tokens, tokens, tokens, tokens, enable_dropout=False
        )


# --------------------------------------------------------------------------- configs


def test_unknown_size_lists_valid_ones():
    with pytest.raises(ValueError, match="tiny, small, base, large, xl, xxl"):
        network.mt5_config("huge")


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="prompt_length"):
        network.mt5_config("tiny", prompt_length=-1)
    with pytest.raises(ValueError, match="dtype"):
        network.mt5_config("tiny", dtype="float8")
    with pytest.raises(ValueError, match="unknown T5Config fields"):
        network.mt5_config("tiny", embed_dim=3)


# --------------------------------------------------------------------------- prompt initialisers


def test_prompt_initialisers(tmp_path):
    rng = jax.random.key(0)
    table = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    u = prompt.uniform(0.5)(rng, (6, 4))
    assert u.shape == (6, 4) and float(jnp.max(jnp.abs(u))) <= 0.5

    sampled = np.asarray(prompt.from_sampled_vocab(table, population=10)(rng, (5, 4)))
    assert all(any((row == t).all() for t in table[:10]) for row in sampled)

    labels = np.asarray(prompt.from_class_labels(table, [[3, 5], [7]])(rng, (4, 4)))
    np.testing.assert_array_equal(labels[0], table[[3, 5]].mean(0))
    np.testing.assert_array_equal(labels[1], table[7])

    s = np.asarray(prompt.from_string(table, [1, 2])(rng, (3, 4)))
    np.testing.assert_array_equal(s, table[[1, 2, 1]])

    path = prompt.save_prompt_file(np.ones((6, 4)), tmp_path / "p.npy")
    np.testing.assert_array_equal(prompt.from_file(path)(rng, (6, 4)), np.ones((6, 4)))
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(5, 4\)"):
        prompt.from_file(path)(rng, (5, 4))
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        prompt.from_file(tmp_path / "nope.npy")


def test_prompt_from_file_through_the_network(tmp_path):
    saved = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    path = prompt.save_prompt_file(saved, tmp_path / "prompt.npy")
    cfg = tiny(prompt_length=3, prompt_init=prompt.from_file(path))
    params = network.init_params(cfg, jax.random.key(0))
    np.testing.assert_array_equal(params["encoder"]["prompt"]["prompt"], saved)
    wrong = tiny(prompt_length=4, prompt_init=prompt.from_file(path))
    with pytest.raises(ValueError, match=r"\(3, 64\) does not fit the model: want \(4, 64\)"):
        network.init_params(wrong, jax.random.key(0))


def test_per_task_prompts_pick_each_example_s_task():
    cfg = tiny(prompt_length=3, num_prompts=2)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(9))
    assert params["encoder"]["prompt"]["prompt"].shape == (2, 3, 64)
    assert network.logical_axes(cfg)["encoder"]["prompt"]["prompt"] == (
        "prompt_tasks",
        "prompt",
        "prompt_embed",
    )
    rng = np.random.default_rng(9)
    enc, tgt = random_tokens(rng, 2, 7), random_tokens(rng, 2, 4)
    enc[:, 1:] = enc[0, 1:]  # same text, task ids differ only
    enc[0, 0], enc[1, 0] = 0, 1
    tgt[1] = tgt[0]
    logits = forward(model, params, enc, tgt)
    assert np.max(np.abs(logits[0] - logits[1])) > 1e-3
    # Task 0's example equals a single-prompt model holding task 0's prompt.
    single = tiny(prompt_length=3)
    single_params = jax.tree_util.tree_map(lambda x: x, params)
    single_params["encoder"]["prompt"]["prompt"] = params["encoder"]["prompt"]["prompt"][0]
    ref = forward(network.Transformer(single), single_params, enc[:1, 1:], tgt[:1])
    np.testing.assert_allclose(logits[:1], ref, atol=1e-5)


def test_per_task_prompts_from_a_file_need_the_whole_table(tmp_path):
    table = np.random.default_rng(0).normal(size=(2, 3, 64)).astype(np.float32)
    path = prompt.save_prompt_file(table, tmp_path / "prompts.npy")
    cfg = tiny(prompt_length=3, num_prompts=2, prompt_init=prompt.from_file(path))
    params = network.init_params(cfg, jax.random.key(0))
    np.testing.assert_array_equal(params["encoder"]["prompt"]["prompt"], table)
    one = prompt.save_prompt_file(table[0], tmp_path / "one.npy")
    wrong = tiny(prompt_length=3, num_prompts=2, prompt_init=prompt.from_file(one))
    with pytest.raises(ValueError, match=r"\(3, 64\) does not fit the model: want \(2, 3, 64\)"):
        network.init_params(wrong, jax.random.key(0))
