"""The training-time monitor and the gradient-alignment probe inside a tiny ProMoT stage 1,
and the curves drawn from its metrics.jsonl."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from promot_jax import cli, network, train
from promot_jax.evaluation import alignment, monitor


def tiny(prompt_length=4):
    return network.mt5_config("tiny", vocab_size=2176, dtype="float32", prompt_length=prompt_length)


def test_monitor_and_alignment_run_inside_a_training_stage(tmp_path):
    model = tiny()
    eval_fn = monitor.training_monitor(model, "toy_rte", examples=4, alignment_examples=4)
    cfg = train.StageConfig(
        method="promot_stage1",
        mixture="toy_rte",
        model=model,
        steps=2,
        run_dir=str(tmp_path / "stage1"),
        batch_size=4,
        feature_lengths={"inputs": 64, "targets": 4},
        eval_every=1,
        eval_batches=1,
        save_every=100,
        log_every=1,
        best_metric="probe/target/score",
        best_mode="max",
    )
    train.train_stage(cfg, eval_fn=eval_fn)
    records = [json.loads(x) for x in (tmp_path / "stage1/metrics.jsonl").open()]
    evals = [r for r in records if "grad_align/mlp" in r]
    assert [r["step"] for r in evals] == [1, 2]
    for r in evals:
        for key in (
            "probe/target/toy_rte/accuracy",
            "probe/target/score",
            "probe/toy_triviaqa_1shot/exact_match",
            "probe/toy_triviaqa_1shot/leak",
            "probe/toy_wmt16_en_de_1shot/bleu",
            "probe/leak_mean",
            "grad_align/query",
            "grad_align/all",
        ):
            assert math.isfinite(r[key]), key
        assert -1.0 <= r["grad_align/mlp"] <= 1.0
        assert r["probe/target/score"] == r["probe/target/toy_rte/accuracy"]
    # Stage 1 freezes the trunk: with the prompt removed, other tasks decode identically.
    assert (
        evals[0]["probe/toy_wmt16_en_de_1shot/bleu"] == evals[1]["probe/toy_wmt16_en_de_1shot/bleu"]
    )

    out = tmp_path / "figs"
    assert cli.main(["eval", "--curves", str(tmp_path), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grad_alignment_vs_steps.png", "leak_vs_steps.png", "scores_vs_steps.png"]


def test_alignment_is_one_when_shuffling_cannot_change_the_labels():
    model = tiny(prompt_length=0)
    params = network.init_params(model, jax.random.key(1))
    rng = np.random.default_rng(0)
    inputs = rng.integers(2, 2000, (3, 8)).astype(np.int32)
    targets = np.tile(rng.integers(2, 2000, (1, 4)).astype(np.int32), (3, 1))
    batch = {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": monitor._shift_right(targets),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones((3, 4), np.float32),
    }
    same = alignment.gradient_alignment(model, params, batch)
    assert same["mlp"] == pytest.approx(1.0, abs=1e-5)
    batch["decoder_target_tokens"] = rng.integers(2, 2000, (3, 4)).astype(np.int32)
    batch["decoder_input_tokens"] = monitor._shift_right(batch["decoder_target_tokens"])
    different = alignment.gradient_alignment(model, params, batch)
    assert set(different) == {"mlp", "query", "key", "value", "all"}
    assert different["mlp"] < 0.99


def test_monitor_rejects_unknown_probe_tasks_before_training():
    with pytest.raises(ValueError, match="closest registered"):
        monitor.training_monitor(tiny(), "toy_rte", ["toy_wmt16_en_de_1sht"])


def test_gin_file_binds_the_monitor_as_the_experiments_eval_fn():
    import gin
    from promot_jax import gin_config

    gin_config.parse(
        ["test/tiny_promot_toy.gin", "local/format_probes.gin"], ["RUN_DIR = '/unused'"]
    )
    try:
        bound = gin.query_parameter("experiment.run_experiment.eval_fn")
        assert "training_monitor" in str(bound)
        assert gin.query_parameter("monitor.training_monitor.target") is not None
    finally:
        gin.clear_config()


def test_keep_best_on_target_overlay_binds_the_target_score():
    import gin
    from promot_jax import gin_config

    gin_config.parse(
        ["test/tiny_promot_toy.gin", "local/keep_best_on_target.gin"], ["RUN_DIR = '/unused'"]
    )
    try:
        assert gin.query_parameter("train.StageConfig.best_metric") == "probe/target/score"
        assert gin.query_parameter("train.StageConfig.best_mode") == "max"
        assert "training_monitor" in str(gin.query_parameter("experiment.run_experiment.eval_fn"))
    finally:
        gin.clear_config()
