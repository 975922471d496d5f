"""The training engine: frozen is frozen, runs finish, resume is exact, bad input fails early."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from promot_jax import checkpoints, cli, lora, methods, network, optimizer, train

VOCAB = 128


def tiny_model(prompt_length=0, lora_rank=0):
    return network.mt5_config(
        "tiny",
        vocab_size=VOCAB,
        dtype="float32",
        dropout_rate=0.1,
        prompt_length=prompt_length,
        lora_rank=lora_rank,
    )


def synthetic_batch(seed, batch=4, enc=10, dec=5):
    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, VOCAB, (batch, dec)).astype(np.int32)
    return {
        "encoder_input_tokens": rng.integers(2, VOCAB, (batch, enc)).astype(np.int32),
        "decoder_target_tokens": tgt,
        "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1),
        "decoder_loss_weights": np.ones((batch, dec), np.float32),
    }


def flat(tree):
    return {
        "/".join(str(k.key) for k in p): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def optimizer_state_param_paths(opt_state) -> set[str]:
    """Parameter paths that have optimizer slots (dict keys below the prompt/trunk group)."""
    paths = set()
    for key_path, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        keys = [k.key for k in key_path if isinstance(k, jax.tree_util.DictKey)]
        if len(keys) > 1:  # [group, *param path]
            paths.add("/".join(keys[1:]))
    return paths


@pytest.mark.parametrize("method_name", list(methods.METHODS))
def test_frozen_parameters_are_bitwise_unchanged(method_name):
    method = methods.get_method(method_name)
    cfg = tiny_model(prompt_length=3 if method.has_prompt else 0, lora_rank=2 * method.has_lora)
    if method.per_task_prompts:
        cfg = dataclasses.replace(cfg, num_prompts=2)
    params = network.init_params(cfg, jax.random.key(0))
    if method.has_lora:  # adapters as stage 1 leaves them (B no longer 0): each gets a gradient
        rng = np.random.default_rng(0)
        adapters = lora.get_adapters(params)
        params = lora.set_adapters(
            params, {p: rng.normal(0, 0.3, np.shape(v)) for p, v in adapters.items()}
        )
    before = flat(params)
    trainable, frozen = methods.split(method, params)
    tx = optimizer.make_optimizer(method, optimizer.OptimizerConfig())
    opt_state = jax.jit(tx.init)(trainable)
    assert optimizer_state_param_paths(opt_state) == set(flat(trainable))
    step = train.make_train_step(network.Transformer(cfg), tx, label_smoothing=0.1, z_loss=1e-4)
    for i in range(3):
        batch = synthetic_batch(i)
        if method.per_task_prompts:  # every example is task 0: task 1's prompt gets no gradient
            batch["encoder_input_tokens"][:, 0] = 0
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, batch, jax.random.key(i))
        assert math.isfinite(float(metrics["loss"]))
    after = flat(methods.merge(trainable, frozen))
    assert after.keys() == before.keys()
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    expected = {p for p in before if methods.is_trainable(method, p)}
    assert expected, "every method trains something"
    # Frozen: bitwise equal. Trainable: every kernel and the prompt moved (norm scales may
    # not move in 3 steps under Adafactor's update clipping, so check the big ones).
    assert changed <= expected
    big = ("kernel", "prompt", "embedding", "lora_a", "lora_b")
    assert {p for p in expected if p.endswith(big)} <= changed
    if method.has_prompt:
        assert ("encoder/prompt/prompt" in changed) == method.trains_prompt
    if method.per_task_prompts and method.trains_prompt:
        prompt_before, prompt_after = (
            before["encoder/prompt/prompt"],
            after["encoder/prompt/prompt"],
        )
        assert not np.array_equal(prompt_before[0], prompt_after[0])
        # Task 1's prompt got no gradient: it moved only by Adafactor's weight decay
        # (1e-5 per step, as prompt-tuning configures it).
        decayed = prompt_before[1] * (1 - optimizer.OptimizerConfig().prompt_weight_decay) ** 3
        np.testing.assert_allclose(prompt_after[1], decayed, rtol=1e-6)


def test_tiny_promot_experiment_end_to_end(tmp_path):
    """`promot-jax run` on the tiny gin: stage 1 then stage 2, stage 1's prompt handed over."""
    run_dir = tmp_path / "exp"
    rc = cli.main(["run", "--gin_file=test/tiny_promot_toy.gin", f"--gin.RUN_DIR='{run_dir}'"])
    assert rc == 0
    s1, s2 = run_dir / "stage1", run_dir / "stage2"
    assert (run_dir / "config.gin").read_text().count("promot_stage") >= 2
    for d in (s1, s2):
        assert (d / "metrics.jsonl").read_text().strip()
        assert list((d / "tb").iterdir())
    # Stage 2 started from stage 1's best prompt and kept it frozen.
    p1 = np.load(s1 / "best_prompt.npy")
    np.testing.assert_array_equal(np.load(s2 / "prompt.npy"), p1)
    init = network.init_params(
        network.mt5_config("tiny", vocab_size=2176, dtype="float32", prompt_length=4),
        jax.random.key(0),
    )
    assert not np.array_equal(p1, np.asarray(init["encoder"]["prompt"]["prompt"]))
    cfg = network.mt5_config("tiny", vocab_size=2176, dtype="float32", prompt_length=4)
    final1 = checkpoints.load_params(s1 / "final_params", cfg)
    final2 = checkpoints.load_params(s2 / "final_params", cfg)
    # Stage 1 moved only the prompt; stage 2 moved the trunk.
    k = ("encoder", "layers_0", "mlp", "wo", "kernel")
    get = lambda t: t[k[0]][k[1]][k[2]][k[3]][k[4]]  # noqa: E731
    np.testing.assert_array_equal(get(final1), np.asarray(get(init)))
    assert not np.array_equal(get(final2), get(final1))

    # Rerunning the finished experiment reuses both stages without rewriting anything.
    stamps = {p: p.stat().st_mtime_ns for p in (s1 / "final_params", s2 / "prompt.npy")}
    assert (
        cli.main(["run", "--gin_file=test/tiny_promot_toy.gin", f"--gin.RUN_DIR='{run_dir}'"]) == 0
    )
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _train_cmd(run_dir, *extra):
    return [
        sys.executable,
        "-m",
        "promot_jax.cli",
        "train",
        "--gin_file=test/tiny_finetune_toy.gin",
        f"--gin.RUN_DIR='{run_dir}'",
        *extra,
    ]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = subprocess.run(
        _train_cmd(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=300
    )
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(killed_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpts = killed_dir / "finetune" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpts.exists() and any(p.name.isdigit() and int(p.name) >= 4 for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "finetune" / "final_params").exists()

    resumed = subprocess.run(
        _train_cmd(killed_dir), env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    cfg = network.mt5_config("tiny", vocab_size=2176, dtype="float32")
    a = flat(checkpoints.load_params(tmp_path / "straight/finetune/final_params", cfg))
    b = flat(checkpoints.load_params(killed_dir / "finetune/final_params", cfg))
    assert a.keys() == b.keys()
    for p in a:
        np.testing.assert_array_equal(a[p], b[p], err_msg=p)


# --------------------------------------------------------------------------- bad input


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="promot_stage1.*promot_stage2"):
        methods.get_method("promot_stage3")


def test_stage2_without_prompt_fails_before_creating_anything(tmp_path):
    with pytest.raises(ValueError, match="stage-1 export"):
        train.StageConfig(
            method="promot_stage2",
            mixture="toy_rte",
            model=tiny_model(3),
            steps=1,
            run_dir=str(tmp_path / "run"),
        )
    assert not (tmp_path / "run").exists()


def test_prompt_length_must_match_method():
    with pytest.raises(ValueError, match="prompt_length=0"):
        train.StageConfig(method="promot_stage1", mixture="toy_rte", model=tiny_model(0), steps=1)
    with pytest.raises(ValueError, match="set it to 0"):
        train.StageConfig(method="finetune", mixture="toy_rte", model=tiny_model(2), steps=1)


def test_mesh_and_batch_errors_name_the_numbers():
    from promot_jax import sharding

    with pytest.raises(ValueError, match="model axis 3 does not divide the 1 devices"):
        sharding.make_mesh(-1, 3)
    mesh = sharding.make_mesh(1, 1)
    sharding.check_batch_size(5, mesh)  # one data shard: anything goes
    with pytest.raises(ValueError, match="data=2 x model=1 = 2 devices, but there are 1"):
        sharding.make_mesh(2, 1)


@pytest.mark.parametrize("log_every", [1, 5])  # a log point at the NaN's step, or none near
def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(
    tmp_path, monkeypatch, request, log_every
):
    """Metrics are read only at log / eval / save points; a NaN at step 3, between two of
    them, still stops the run naming step 3, and nothing after step 2 is saved or logged."""
    real = train.make_train_step
    reads = []
    real_get = jax.device_get

    def counted_get(x):
        reads.append(1)
        return real_get(x)

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(*a):
            calls["n"] += 1
            trainable, opt_state, metrics = step(*a)
            if calls["n"] == 3:
                metrics = dict(metrics, loss=jnp.float32("nan"))
            return trainable, opt_state, metrics

        return wrapped

    monkeypatch.setattr(train, "make_train_step", poisoned)
    monkeypatch.setattr(train.jax, "device_get", counted_get)
    train._stage_functions.cache_clear()  # an equal stage of an earlier test may be cached
    request.addfinalizer(train._stage_functions.cache_clear)  # and none keeps the poison
    cfg = train.StageConfig(
        method="finetune",
        mixture="toy_rte",
        model=network.mt5_config("tiny", vocab_size=2176, dtype="float32"),
        steps=8,
        batch_size=2,
        feature_lengths={"inputs": 32, "targets": 4},
        save_every=2,
        log_every=log_every,
        eval_every=0,
        eval_batches=1,
        run_dir=str(tmp_path / "run"),
    )
    with pytest.raises(train.NonFiniteLossError, match="at step 3.*step 2"):
        train.train_stage(cfg)
    steps = sorted(
        int(p.name) for p in (tmp_path / "run/checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps == [2]
    assert not (tmp_path / "run/final_params").exists()
    logged = [json.loads(x)["step"] for x in (tmp_path / "run/metrics.jsonl").open()]
    assert max(logged, default=0) <= 2, logged
    # One read per point that needs the metrics, not one per step.
    assert len(reads) == (3 if log_every == 1 else 2), len(reads)


def test_run_dir_with_a_different_stage_is_refused_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    meta = run / "stage.json"
    meta.write_text('{"method": "promot_stage1"}')
    cfg = train.StageConfig(
        method="finetune",
        mixture="toy_rte",
        model=network.mt5_config("tiny", vocab_size=2176, dtype="float32"),
        steps=1,
        run_dir=str(run),
    )
    with pytest.raises(ValueError, match="holds a different stage.*method"):
        train.train_stage(cfg)
    assert meta.read_text() == '{"method": "promot_stage1"}'
    assert [p.name for p in run.iterdir()] == ["stage.json"]


def test_previous_stage_placeholder_outside_an_experiment_fails(tmp_path):
    cfg = train.StageConfig(
        method="finetune",
        mixture="toy_rte",
        model=tiny_model(),
        steps=1,
        init_checkpoint=train.PREVIOUS_STAGE,
        run_dir=str(tmp_path / "r"),
    )
    with pytest.raises(ValueError, match="only an experiment can resolve"):
        train.train_stage(cfg)


def test_stage2_gin_without_prompt_file_fails_at_parse_time_naming_the_macro():
    from promot_jax import gin_config

    bindings = [
        "MIXTURE='toy_rte'",
        "INPUTS_LENGTH=8",
        "TARGETS_LENGTH=2",
        "INIT_CHECKPOINT=None",
        "PROMPT_LENGTH=2",
    ]
    files = ["models/toy.gin", "sizes/tiny.gin", "stages/common.gin", "stages/promot_stage2.gin"]
    with pytest.raises(ValueError, match="PROMPT_FILE"):
        gin_config.parse(files, bindings)
    gin_config.parse(files, [*bindings, "PROMPT_FILE='p.npy'"])  # complete: parses


def test_batch_not_divisible_by_the_data_axis_names_the_numbers():
    from types import SimpleNamespace

    from promot_jax import sharding

    with pytest.raises(ValueError, match="batch size 6 is not divisible by the mesh's data axis"):
        sharding.check_batch_size(6, SimpleNamespace(shape={"data": 4, "model": 2}))


def test_multitask_gin_uses_per_task_prompts():
    import gin
    from promot_jax import gin_config

    gin_config.parse(["test/tiny_multitask_promot_toy.gin"], ["RUN_DIR = '/unused'"])
    try:
        stage1 = gin.query_parameter("tune_prompt/stage1/train.StageConfig.method")
        assert stage1 == "multitask_promot_stage1"
        stage2 = gin.query_parameter("tune_model/stage2/train.StageConfig.method")
        assert stage2 == "multitask_promot_stage2"
        assert gin.query_parameter("network.mt5_config.num_prompts") == 2
    finally:
        gin.clear_config()


DROPOUT_MODEL = network.mt5_config("tiny", vocab_size=2176, dtype="float32", dropout_rate=0.1)


def _dropout_stage(run_dir, **overrides) -> train.StageConfig:
    """A few fine-tuning steps of the tiny model with dropout on toy RTE."""
    fields = dict(
        method="finetune",
        mixture="toy_rte",
        model=DROPOUT_MODEL,
        steps=3,
        run_dir=str(run_dir),
        batch_size=4,
        feature_lengths={"inputs": 48, "targets": 4},
        eval_batches=1,
    )
    return train.StageConfig(**{**fields, **overrides})


def test_equal_stages_share_one_compiled_step_and_train_as_if_alone(tmp_path):
    def stage(seed, name):
        return _dropout_stage(tmp_path / name, seed=seed)

    train._stage_functions.cache_clear()
    alone = train.train_stage(stage(1, "alone"))  # seed 1 first, with fresh functions
    train._stage_functions.cache_clear()
    train.train_stage(stage(0, "first"))
    fns = train._stage_functions(*train._stage_key(stage(0, "first")))
    traces = fns.train_step._cache_size()
    # The state keeps its shardings across steps: without pinned output shardings the
    # second step's inputs arrive laid out differently and the step compiles twice.
    assert traces == 1, f"one stage compiled its step {traces} times"
    second = train.train_stage(stage(1, "second"))  # reuses seed 0's compiled step
    assert fns.train_step._cache_size() == traces, "the second stage traced the step again"
    info = train._stage_functions.cache_info()
    assert info.misses == 1
    a = flat(checkpoints.load_params(alone.final_params, DROPOUT_MODEL))
    b = flat(checkpoints.load_params(second.final_params, DROPOUT_MODEL))
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)


def test_dropout_rng_impl_is_validated_deterministic_and_fingerprinted(tmp_path):
    def stage(name, impl):
        return _dropout_stage(tmp_path / name, steps=2, batch_size=2, rng_impl=impl)

    with pytest.raises(ValueError, match="rng_impl must be one of"):
        stage("bad", "philox")
    assert stage("a", train.DEFAULT_RNG_IMPL).fingerprint()["rng_impl"] == "threefry2x32"
    assert stage("a", "unsafe_rbg").fingerprint()["rng_impl"] == "unsafe_rbg"
    runs = [
        flat(checkpoints.load_params(train.train_stage(stage(n, i)).final_params, DROPOUT_MODEL))
        for n, i in (("rbg1", "unsafe_rbg"), ("rbg2", "unsafe_rbg"), ("fry", "threefry2x32"))
    ]
    kernel = "encoder/layers_0/mlp/wi_0/kernel"
    np.testing.assert_array_equal(runs[0][kernel], runs[1][kernel])  # same seed, same run
    assert not np.array_equal(runs[0][kernel], runs[2][kernel])  # another dropout stream
