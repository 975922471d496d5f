"""LoRA adapters and the stage-2 variants: fresh adapters change nothing, merged adapters equal
unmerged ones, what is frozen stays frozen through a resume, stage 1's adapters are handed to
stage 2 and removed at evaluation for other formats, bad input fails before anything exists.

Which parameters each method trains (frozen leaves bitwise unchanged, optimizer state only for
what trains) is checked for every method, these included, by
tests/test_train.py::test_frozen_parameters_are_bitwise_unchanged.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from promot_jax import checkpoints, cli, lora, methods, network, sharding, train
from promot_jax import prompt as prompt_lib
from promot_jax.evaluation import model_source

VOCAB = 128
PLAIN = network.mt5_config("tiny", vocab_size=VOCAB, dtype="float32")
ADAPTED = dataclasses.replace(PLAIN, lora_rank=2, lora_alpha=4.0)


def flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in checkpoints.param_tree.flatten(tree).items()}


def batch(seed: int = 0, n: int = 2):
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, VOCAB, (n, 7)).astype(np.int32)
    tgt = rng.integers(2, VOCAB, (n, 5)).astype(np.int32)
    dec = np.concatenate([np.zeros((n, 1), np.int32), tgt[:, :-1]], 1)
    return enc, dec, tgt


def logits(config, params, tokens):
    return np.asarray(
        network.Transformer(config).apply({"params": params}, *tokens, enable_dropout=False)
    )


def trained_adapters(params, seed: int = 1, scale: float = 0.3) -> dict:
    """`params` with every adapter random (as after stage 1: B no longer zero)."""
    rng = np.random.default_rng(seed)
    return lora.set_adapters(
        params,
        {
            p: rng.normal(0, scale, np.shape(v)).astype(np.float32)
            for p, v in lora.get_adapters(params).items()
        },
    )


# --------------------------------------------------------------------------- the network


def test_fresh_adapters_leave_the_trunk_and_the_logits_bitwise_unchanged():
    plain = network.init_params(PLAIN, jax.random.key(0))
    adapted = network.init_params(ADAPTED, jax.random.key(0))
    added = set(flat(adapted)) - set(flat(plain))
    # Query and value of every attention: 2 encoder + 2 x 2 decoder attentions, A and B each.
    assert added == set(lora.get_adapters(adapted)) and len(added) == 6 * 2 * 2
    assert all(p.endswith(("query/lora_a", "query/lora_b", "value/lora_a", "value/lora_b"))
               for p in added)  # fmt: skip
    for path, value in flat(plain).items():  # the trunk's initialisers are untouched
        np.testing.assert_array_equal(flat(adapted)[path], value, err_msg=path)
    tokens = batch()
    np.testing.assert_array_equal(logits(ADAPTED, adapted, tokens), logits(PLAIN, plain, tokens))


@pytest.mark.parametrize(
    "targets", [lora.DEFAULT_TARGETS, r"encoder/.*/mlp/wi_0/kernel|decoder/logits_dense/kernel"]
)
def test_merged_adapters_give_the_unmerged_logits(targets):
    config = dataclasses.replace(ADAPTED, lora_targets=targets)
    params = trained_adapters(network.init_params(config, jax.random.key(0)))
    kernels = {p.rsplit("/", 1)[0] + "/kernel" for p in lora.get_adapters(params)}
    assert kernels == set(lora.check_targets(config))
    tokens = batch()
    unmerged = logits(config, params, tokens)
    merged_config, merged = lora.merge(params, config)
    assert merged_config.lora_rank == 0 and not lora.get_adapters(merged)
    assert set(flat(merged)) == set(flat(lora.drop_adapters(params)))
    np.testing.assert_allclose(logits(merged_config, merged, tokens), unmerged, rtol=0, atol=2e-5)
    # The adapters matter: without them the logits are others.
    bare = logits(merged_config, lora.drop_adapters(params), tokens)
    assert np.abs(bare - unmerged).max() > 1e-2


def test_adapters_carry_a_replicated_rank_axis():
    axes = network.logical_axes(ADAPTED)["encoder"]["layers_0"]["attention"]["value"]
    assert axes == {
        "kernel": ("embed", "joined_kv"),
        "lora_a": ("embed", "lora_rank"),
        "lora_b": ("lora_rank", "joined_kv"),
    }
    assert sharding.spec_for(("lora_rank", "joined_kv")) == jax.sharding.PartitionSpec(
        None, "model"
    )
    sharding.param_shardings(ADAPTED, sharding.make_mesh())  # every axis has a rule


def test_the_method_table_puts_adapters_in_their_own_group():
    path = "decoder/layers_1/self_attention/query/lora_b"
    assert lora.is_lora(path) and lora.is_lora("/target/" + path + "/v_row")
    assert not lora.is_lora("decoder/layers_1/self_attention/query/kernel")
    assert methods.group(path) == "lora"
    trains = {m: methods.is_trainable(m, path) for m in methods.METHODS}
    assert {m for m, t in trains.items() if t} == {"lora_stage1"}
    assert methods.is_trainable("promot_lora_stage2", "encoder/layers_0/mlp/wo/kernel")
    assert not methods.is_trainable("lora_stage1", "encoder/layers_0/mlp/wo/kernel")
    both = methods.get_method("promot_stage2_prompt_trainable")
    assert both.prompt_source == "previous_stage" and both.trains_prompt and both.trains_trunk


# --------------------------------------------------------------------------- stages

TOY = network.mt5_config("tiny", vocab_size=2176, dtype="float32", dropout_rate=0.1)


def _stage(method: str, run_dir, **fields) -> train.StageConfig:
    m = methods.get_method(method)
    model = dataclasses.replace(
        TOY, prompt_length=3 if m.has_prompt else 0, lora_rank=2 if m.has_lora else 0
    )
    return train.StageConfig(
        **{
            "method": method,
            "mixture": "toy_rte",
            "model": model,
            "steps": 4,
            "run_dir": str(run_dir),
            "batch_size": 2,
            "feature_lengths": {"inputs": 32, "targets": 4},
            "save_every": 2,
            "eval_batches": 1,
            **fields,
        }
    )


@pytest.fixture(scope="module")
def stage1_files(tmp_path_factory):
    """Stage-1 exports as lora_stage1 / promot_stage1 write them: adapters.npz, prompt.npy."""
    root = tmp_path_factory.mktemp("stage1")
    model = dataclasses.replace(TOY, lora_rank=2)
    params = trained_adapters(network.init_params(model, jax.random.key(5)))
    lora.save_adapter_file(lora.get_adapters(params), root / "adapters.npz")
    rng = np.random.default_rng(0)
    prompt_lib.save_prompt_file(rng.uniform(-0.5, 0.5, (3, 64)), root / "prompt.npy")
    return root


def _inputs(method: str, files) -> dict:
    if method == "promot_lora_stage2":
        return {"adapter_file": str(files / "adapters.npz")}
    if method == "promot_stage2_prompt_trainable":
        return {"prompt_file": str(files / "prompt.npy")}
    return {}


@pytest.mark.parametrize(
    "method",
    [
        "promot_lora_stage2",  # frozen adapters rebuilt from stage 1's file on resume
        pytest.param("lora_stage1", marks=pytest.mark.slow),
        pytest.param("promot_stage2_prompt_trainable", marks=pytest.mark.slow),
    ],
)
def test_a_resumed_stage_equals_an_uninterrupted_one(method, stage1_files, tmp_path):
    """4 steps straight == 2 steps, then the same run directory raised to 4 (restored from its
    step-2 checkpoint: trainables, optimizer state, data position; what is frozen rebuilt from
    its sources). Frozen parts end bitwise as they came, trained ones moved."""
    inputs = _inputs(method, stage1_files)
    straight = train.train_stage(_stage(method, tmp_path / "straight", **inputs))
    train.train_stage(_stage(method, tmp_path / "resumed", steps=2, **inputs))
    resumed = train.train_stage(_stage(method, tmp_path / "resumed", **inputs))
    model = _stage(method, tmp_path, **inputs).model
    a = flat(checkpoints.load_params(straight.final_params, model))
    b = flat(checkpoints.load_params(resumed.final_params, model))
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    start = flat(train.initial_params(_stage(method, tmp_path, **inputs)))
    m = methods.get_method(method)
    for path, value in a.items():
        moved = not np.array_equal(value, start[path])
        if not methods.is_trainable(m, path):
            assert not moved, f"{method} changed frozen {path}"
        elif path.endswith(("kernel", "prompt", "lora_b")):
            assert moved, f"{method} did not train {path}"
    if m.has_lora:
        saved = np.load(straight.adapters)
        assert set(saved.files) == set(lora.get_adapters(checkpoints.param_tree.unflatten(a)))
        if m.lora_source == "previous_stage":  # stage 1's, frozen
            given = np.load(stage1_files / "adapters.npz")
            assert all(np.array_equal(saved[k], given[k]) for k in given.files)


@pytest.mark.slow
def test_the_lora_experiment_hands_stage1_adapters_to_stage2_and_eval_removes_them(tmp_path):
    """`promot-jax run` on the tiny LoRA gin, then `promot-jax eval` on stage 2: the adapters are
    on for the target's format and off for another, and each task records it."""
    run_dir = tmp_path / "exp"
    gin = ["--gin_file=test/tiny_promot_lora_toy.gin", f"--gin.RUN_DIR='{run_dir}'"]
    assert cli.main(["run", *gin]) == 0
    s1, s2 = run_dir / "stage1", run_dir / "stage2"
    best1, final2 = np.load(s1 / "best_adapters.npz"), np.load(s2 / "adapters.npz")
    assert set(best1.files) == set(final2.files) and best1.files
    for key in best1.files:  # stage 2 attached stage 1's best adapters and kept them frozen
        np.testing.assert_array_equal(final2[key], best1[key], err_msg=key)
    assert any(np.abs(best1[k]).max() > 0 for k in best1.files if k.endswith("lora_b"))
    model = dataclasses.replace(TOY, lora_rank=2, dropout_rate=0.0)
    trunk1 = flat(lora.drop_adapters(checkpoints.load_params(s1 / "final_params", model)))
    trunk2 = flat(lora.drop_adapters(checkpoints.load_params(s2 / "final_params", model)))
    init = flat(network.init_params(network.mt5_config("tiny", vocab_size=2176, dtype="float32"),
                                    jax.random.key(0)))  # fmt: skip
    assert all(np.array_equal(trunk1[p], init[p]) for p in init)  # stage 1: trunk frozen
    assert not np.array_equal(trunk2["encoder/layers_0/mlp/wo/kernel"], init[
        "encoder/layers_0/mlp/wo/kernel"])  # fmt: skip

    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(s2), "--target", "toy_rte", "--out", str(out)]
    small = ["--tasks", "toy_cb_1shot", "--max_examples", "2", "--decode", "greedy"]
    assert cli.main([*args, *small]) == 0
    results = {
        t: json.loads((out / f"tasks/{t}.json").read_text()) for t in ("toy_rte", "toy_cb_1shot")
    }
    assert results["toy_rte"]["adapters_used"] and not results["toy_cb_1shot"]["adapters_used"]
    assert not any(r["prompt_used"] for r in results.values())
    config = json.loads((out / "eval_config.json").read_text())
    assert config["lora_rank"] == 2 and config["adapters"].endswith("best_params")


def test_evaluation_merges_adapters_for_the_format_and_drops_them_for_others():
    import promot_tasks  # noqa: F401  (the catalogue knows the toy tasks)
    from promot_tasks import catalogue

    params = trained_adapters(network.init_params(ADAPTED, jax.random.key(0)))
    model = model_source.LoadedModel(ADAPTED, params, "ckpt", None)
    assert model.adapter_source == "ckpt" and not model.has_prompt
    rte, cb = catalogue.task_info("toy_rte"), catalogue.task_info("toy_cb_1shot")
    model.check_tasks([rte, cb], rte, "same_format")  # the adapters are what the rule attaches
    on, on_config, on_params = model.for_task(rte, rte, "same_format")
    assert on and (on_config, flat(on_params).keys()) == (
        PLAIN,
        flat(lora.merge(params, ADAPTED)[1]).keys(),
    )
    off, off_config, off_params = model.for_task(cb, rte, "same_format")
    assert not off and off_config == PLAIN
    for path, value in flat(lora.drop_adapters(params)).items():
        np.testing.assert_array_equal(flat(off_params)[path], value, err_msg=path)
    query = "encoder/layers_0/attention/query/kernel"
    assert not np.array_equal(flat(on_params)[query], flat(off_params)[query])
    assert not model.for_task(rte, rte, "never")[0]


# --------------------------------------------------------------------------- bad input


def test_a_rank_below_one_fails():
    with pytest.raises(ValueError, match="lora_rank must be an integer >= 1"):
        dataclasses.replace(PLAIN, lora_rank=-1)
    with pytest.raises(ValueError, match="attaches LoRA adapters.*lora_rank=0.*rank >= 1"):
        _stage("lora_stage1", "unused", model=TOY)
    with pytest.raises(ValueError, match="has no LoRA adapters.*set it to 0"):
        _stage("finetune", "unused", model=dataclasses.replace(TOY, lora_rank=2))


def test_a_target_regex_that_matches_no_kernel_names_it_and_some_kernels(tmp_path):
    model = dataclasses.replace(TOY, lora_rank=2, lora_targets=r".*/attn/q/kernel")
    with pytest.raises(ValueError, match=r"'\.\*/attn/q/kernel' matches no kernel.*"
                       r"encoder/layers_0/attention/key/kernel"):  # fmt: skip
        _stage("lora_stage1", tmp_path / "run", model=model)
    with pytest.raises(ValueError, match="not a regex"):
        dataclasses.replace(TOY, lora_targets="(")
    assert not (tmp_path / "run").exists()


def test_stage2_lora_without_stage1_adapters_fails_before_creating_anything(stage1_files, tmp_path):
    with pytest.raises(ValueError, match="needs stage 1's LoRA adapters: set adapter_file"):
        _stage("promot_lora_stage2", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="adapter_file .*nowhere.npz does not exist"):
        _stage("promot_lora_stage2", tmp_path / "run", adapter_file=str(tmp_path / "nowhere.npz"))
    wider = dataclasses.replace(_stage("lora_stage1", "x").model, lora_rank=3)
    cfg = _stage(
        "promot_lora_stage2",
        tmp_path / "run",
        model=wider,
        adapter_file=str(stage1_files / "adapters.npz"),
    )
    with pytest.raises(ValueError, match=r"adapter .*lora_a has shape \[64, 2\].*\[64, 3\]"):
        train.train_stage(cfg)
    assert not (tmp_path / "run").exists()


def test_the_new_stage_files_bind_their_methods():
    import gin
    from promot_jax import experiment, gin_config, optimizer, recipe

    gin_config.parse(["test/tiny_promot_prompt_trainable_toy.gin"], ["RUN_DIR = '/unused'"])
    try:
        stages = gin.get_bindings(experiment.run_experiment)["stages"]
    finally:
        gin.clear_config()
    stage2 = stages["stage2"]
    assert stage2.method == "promot_stage2_prompt_trainable"
    assert stage2.prompt_file == train.PREVIOUS_STAGE
    # The prompt keeps its own rate while the trunk trains at the model-tuning one.
    assert stage2.optimizer.prompt_learning_rate == recipe.TUNE_PROMPT.learning_rate
    assert stage2.optimizer.learning_rate == recipe.TUNE_MODEL.learning_rate
    assert optimizer.OptimizerConfig().lora_learning_rate == recipe.TUNE_MODEL.learning_rate
    assert recipe.for_method("lora_stage1") is recipe.TUNE_PROMPT
    assert recipe.for_method("promot_lora_stage2") is recipe.TUNE_MODEL


def test_the_t5x_prompt_trainable_file_runs_that_method():
    from gin_reading import resolve

    t5x = resolve("t5x/stage2_trainable_prompt.gin", "t5x/sizes/xxl.gin")
    method = methods.get_method(t5x.macro("METHOD"))
    assert method.name == "promot_stage2_prompt_trainable"
    assert t5x.macro("PROMPT_INIT").name == "prompt.from_file"  # stage 1's prompt, from a file


def test_stages_without_adapters_record_what_they_did_before_adapters(tmp_path):
    record = _stage("finetune", tmp_path / "run").fingerprint()
    assert not {*lora.CONFIG_FIELDS, "adapter_file"} & {*record, *record["model"]}
    assert "lora_learning_rate" not in record["optimizer"]
    adapted = _stage("lora_stage1", tmp_path / "run").fingerprint()
    assert adapted["model"]["lora_rank"] == 2 and adapted["adapter_file"] is None
    assert jnp.isfinite(adapted["optimizer"]["lora_learning_rate"])
