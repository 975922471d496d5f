"""A bfloat16 trunk with a float32 prompt, as prompt tuning at scale runs it: the trunk stored
in `T5Config.param_dtype`, the prompt (`prompt_param_dtype`) and LoRA adapters
(`lora_param_dtype`) float32, and so are the gradients and the Adafactor state of whatever
is float32; every dtype survives checkpoints, resumes and exports."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gin
from promot_jax import (
    checkpoints,
    cli,
    experiment,
    gin_config,
    losses,
    methods,
    network,
    optimizer,
    train,
)
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints import param_tree, t5x_legacy, t5x_orbax
from promot_jax.evaluation import model_source

PROMPT = prompt_lib.PROMPT_KEY
# The toy world's vocabulary, bfloat16 activations as mT5 computes, a 3-row prompt.
BF16 = network.mt5_config(
    "tiny",
    vocab_size=2176,
    dtype="bfloat16",
    param_dtype="bfloat16",
    prompt_length=3,
    dropout_rate=0.1,
)
BF16_ADAPTED = dataclasses.replace(BF16, lora_rank=2)
F32 = dataclasses.replace(BF16, param_dtype="float32")  # the default: everything float32


def dtypes(tree) -> dict[str, str]:
    return {k: np.dtype(v.dtype).name for k, v in param_tree.flatten(tree).items()}


def group_dtype(path: str) -> str:
    """What a bfloat16-trunk config stores `path` in."""
    return "bfloat16" if methods.group(path) == "trunk" else "float32"


def float_dtypes(tree) -> set[str]:
    return {
        np.dtype(x.dtype).name
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.floating)
    }


def synthetic_batch(seed: int, batch: int = 2, enc: int = 7, dec: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, BF16.vocab_size, (batch, dec)).astype(np.int32)
    return {
        "encoder_input_tokens": rng.integers(2, BF16.vocab_size, (batch, enc)).astype(np.int32),
        "decoder_target_tokens": tgt,
        "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1),
        "decoder_loss_weights": np.ones((batch, dec), np.float32),
    }


# --------------------------------------------------------------------------- the network


def test_each_group_of_parameters_is_stored_in_its_own_dtype():
    stored = dtypes(network.abstract_params(BF16_ADAPTED))
    assert {p: group_dtype(p) for p in stored} == stored
    assert {methods.group(p) for p in stored} == {"trunk", "prompt", "lora"}
    # Random init gives what the abstract tree says (the query kernel's 1/sqrt(head_dim) too).
    assert dtypes(network.init_params(BF16_ADAPTED, jax.random.key(0))) == stored
    assert set(dtypes(network.abstract_params(F32)).values()) == {"float32"}
    with pytest.raises(ValueError, match=r"T5Config.prompt_param_dtype='float8' is not one of"):
        dataclasses.replace(BF16, prompt_param_dtype="float8")


@pytest.mark.parametrize("method", ["promot_stage1", "promot_stage2", "lora_stage1"])
def test_gradients_and_adafactor_state_are_float32_where_the_parameters_are(method):
    """The prompt's (and the adapters') gradient and every Adafactor statistic are float32;
    the bfloat16 trunk's gradient is bfloat16 (as in T5X), its statistics float32; an
    update changes no dtype.
    Traced, not run: the dtypes are the program's (the stages below run it)."""
    config = BF16_ADAPTED if methods.get_method(method).has_lora else BF16
    params = network.abstract_params(config)
    trainable, frozen = methods.split(method, params)
    model = network.Transformer(config)
    batch = synthetic_batch(0)

    def loss(trainable, frozen):
        params = methods.merge(trainable, frozen)
        return losses.batch_loss(model, params, batch, jax.random.key(1))[0]

    grads = jax.eval_shape(jax.grad(loss), trainable, frozen)
    assert dtypes(grads) == {p: group_dtype(p) for p in dtypes(trainable)}
    tx = optimizer.make_optimizer(method, optimizer.OptimizerConfig())
    opt_state = jax.eval_shape(tx.init, trainable)
    assert float_dtypes(opt_state) == {"float32"}
    step = train.make_train_step(model, tx)
    new, new_state, _ = jax.eval_shape(step, trainable, frozen, opt_state, batch, jax.random.key(2))
    assert dtypes(new) == dtypes(trainable)
    assert jax.tree.structure(new_state) == jax.tree.structure(opt_state)
    assert float_dtypes(new_state) == {"float32"}


# --------------------------------------------------------------------------- two stages


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A float32 T5X legacy checkpoint of the trunk, no prompt: what a public mT5 looks like
    to the reader (a bfloat16 one is read the same way, see the last test)."""
    params = network.init_params(prompt_lib.config_without_prompt(F32), jax.random.key(3))
    return t5x_legacy.write_checkpoint(tmp_path_factory.mktemp("mt5"), jax.device_get(params))


def _stage(method: str, run_dir, pretrained, **fields) -> train.StageConfig:
    return train.StageConfig(
        **{
            "method": method,
            "mixture": "toy_rte",
            "model": BF16,
            "steps": 2,
            "run_dir": str(run_dir),
            "batch_size": 2,
            "feature_lengths": {"inputs": 32, "targets": 4},
            "save_every": 1,
            "eval_batches": 1,
            "init_checkpoint": str(pretrained),
            **fields,
        }
    )


def _saved(run_dir, step: int) -> tuple[dict, set[str]]:
    """A training checkpoint's trainable parameters, restored as load_params restores any
    checkpoint, and the float dtypes its optimizer state is stored in."""
    where = run_dir / "checkpoints" / str(step)
    trainable = checkpoints.read_flat_params(where)
    state = t5x_orbax.tree_metadata(where / "state")["opt_state"]
    return trainable, {
        np.dtype(x.dtype).name
        for x in jax.tree.leaves(state)
        if jnp.issubdtype(x.dtype, jnp.floating)
    }


def test_two_stages_with_a_bfloat16_trunk_keep_every_dtype_through_disk(pretrained, tmp_path):
    stage1 = train.train_stage(_stage("promot_stage1", tmp_path / "stage1", pretrained))
    trunk = param_tree.flatten(
        checkpoints.load_params(pretrained, prompt_lib.config_without_prompt(F32))
    )
    # Stage 1: the trunk is the checkpoint rounded to bfloat16, bitwise, and stays so.
    final1 = param_tree.flatten(checkpoints.load_params(stage1.final_params, BF16))
    assert dtypes(final1) == {p: group_dtype(p) for p in final1}
    for path, value in trunk.items():
        assert final1[path].tobytes() == value.astype(jnp.bfloat16).tobytes(), path
    trainable, state_dtypes = _saved(tmp_path / "stage1", 2)
    assert (dtypes(trainable), state_dtypes) == ({PROMPT: "float32"}, {"float32"})
    assert math.isfinite(stage1.metrics["train/loss"])
    for export in (stage1.prompt, stage1.best_prompt):
        assert np.load(export).dtype == np.float32
    np.testing.assert_array_equal(np.load(stage1.prompt), final1[PROMPT])
    record = json.loads((tmp_path / "stage1" / "stage.json").read_text())["model"]
    # A dtype field added later is recorded only off its default, so older run directories
    # (all float32) still resume.
    assert record["param_dtype"] == "bfloat16" and "prompt_param_dtype" not in record
    bf16_prompt = dataclasses.replace(BF16, prompt_param_dtype="bfloat16")
    stage = _stage("promot_stage1", tmp_path / "other", pretrained, model=bf16_prompt)
    assert stage.fingerprint()["model"]["prompt_param_dtype"] == "bfloat16"
    assert model_source.config_from_stage_json(tmp_path / "stage1" / "stage.json") == (
        dataclasses.replace(BF16, dropout_rate=0.0)
    )

    # Stage 2 from the same checkpoint with stage 1's prompt, frozen; 2 steps straight equal
    # 1 step then a resume (bfloat16 trunk and float32 Adafactor state restored exactly).
    given = {"prompt_file": str(stage1.best_prompt)}
    straight = train.train_stage(_stage("promot_stage2", tmp_path / "s2", pretrained, **given))
    train.train_stage(_stage("promot_stage2", tmp_path / "r2", pretrained, steps=1, **given))
    resumed = train.train_stage(_stage("promot_stage2", tmp_path / "r2", pretrained, **given))
    a = param_tree.flatten(checkpoints.load_params(straight.final_params, BF16))
    b = param_tree.flatten(checkpoints.load_params(resumed.final_params, BF16))
    assert dtypes(a) == dtypes(b) == {p: group_dtype(p) for p in a}
    for path in a:
        assert a[path].tobytes() == b[path].tobytes(), path
    assert a[PROMPT].tobytes() == np.load(stage1.best_prompt).tobytes()  # frozen, float32
    assert not np.array_equal(
        a["encoder/layers_0/mlp/wi_0/kernel"], final1["encoder/layers_0/mlp/wi_0/kernel"]
    )
    trainable, state_dtypes = _saved(tmp_path / "s2", 2)
    assert set(dtypes(trainable).values()) == {"bfloat16"} and state_dtypes == {"float32"}
    assert np.load(straight.prompt).dtype == np.float32
    assert math.isfinite(straight.metrics["train/loss"])


def test_load_params_keeps_stored_dtypes_or_gives_the_config_s(tmp_path):
    """A bfloat16 T5X checkpoint (zarr 'bfloat16') read as stored, or cast per group."""
    trunk_config = prompt_lib.config_without_prompt(BF16)
    params = jax.device_get(network.init_params(trunk_config, jax.random.key(4)))
    path = t5x_legacy.write_checkpoint(tmp_path / "bf16", params)
    stored = checkpoints.load_params(path, BF16, missing_ok=(PROMPT,))
    assert dtypes(stored) == {p: group_dtype(p) for p in dtypes(stored)}  # prompt: filled, f32
    as_f32 = checkpoints.load_params(path, F32, missing_ok=(PROMPT,), dtype=checkpoints.AS_CONFIG)
    assert set(dtypes(as_f32).values()) == {"float32"}
    kernel = "decoder/logits_dense/kernel"
    assert param_tree.flatten(as_f32)[kernel].tobytes() == (
        param_tree.flatten(params)[kernel].astype(np.float32).tobytes()
    )


@pytest.mark.parametrize(
    "bindings, stage1, stage2",
    [
        ([], "float32", "float32"),  # T5X's default
        (["PARAM_DTYPE = 'bfloat16'"], "bfloat16", "bfloat16"),
        (["tune_prompt/network.mt5_config.param_dtype = 'bfloat16'"], "bfloat16", "float32"),
    ],
)
def test_the_mt5_gin_sets_the_trunk_dtype_for_every_stage_or_for_prompt_only_ones(
    bindings, stage1, stage2
):
    gin_config.parse(["experiments/promot_rte_mt5_xxl.gin"], ["RUN_DIR = '/unused'", *bindings])
    try:
        stages = gin.get_bindings(experiment.run_experiment)["stages"]
    finally:
        gin.clear_config()
    models = [stages[name].model for name in ("stage1", "stage2")]
    assert [np.dtype(m.param_dtype).name for m in models] == [stage1, stage2]
    assert {np.dtype(m.prompt_param_dtype).name for m in models} == {"float32"}


def test_convert_dtype_casts_the_trunk_and_writes_the_prompt_float32(tmp_path):
    params = jax.device_get(network.init_params(F32, jax.random.key(5)))
    src = t5x_legacy.write_checkpoint(tmp_path / "t5x", params)
    dst = tmp_path / "converted"
    argv = ["convert", str(src), str(dst), "--size", "tiny", "--vocab-size", "2176"]
    assert cli.main([*argv, "--prompt-length", "3", "--dtype", "bfloat16"]) == 0
    converted = checkpoints.load_params(dst, BF16)
    assert dtypes(converted) == {p: group_dtype(p) for p in dtypes(converted)}
    assert (
        param_tree.flatten(converted)[PROMPT].tobytes()
        == params["encoder"]["prompt"]["prompt"].tobytes()
    )
