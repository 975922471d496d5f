"""`promot-jax eval` on a multi-task ProMoT stage (toy RTE + En-Fr, one prompt per task id).

Each fine-tuned task is evaluated with its own row of the prompt table (the row of its
task id in the stage's mixture), tasks in another format with the prompt removed (the
paper's rule), and a task that needs a prompt none of the rows belongs to fails before
any decoding, naming the task and the prompt's tasks.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import gin
from promot_jax import checkpoints, cli, experiment, gin_config, network
from promot_jax.evaluation import model_source, prompt_rule, runner
from promot_tasks.catalogue import TaskInfo

TASKS = ["toy_rte", "toy_wmt14_en_fr", "toy_cb_1shot", "toy_wmt16_en_de_1shot"]
PROMPT_TASKS = ("toy_rte", "toy_wmt14_en_fr")  # task ids 0, 1 of toy_multitask_rte_en_fr
EXAMPLES = 4


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """Both multi-task ProMoT stages (3 + 3 steps) of gin/test/tiny_multitask_promot_toy.gin."""
    root = tmp_path_factory.mktemp("multitask")
    gin_config.parse(["test/tiny_multitask_promot_toy.gin"], [f"RUN_DIR = '{root / 'run'}'"])
    try:
        gin.get_configurable(experiment.run_experiment)()
    finally:
        gin.clear_config()
    return root / "run" / "stage2"


def _eval(stage, out, *extra) -> int:
    argv = ["eval", "--checkpoint", str(stage), "--target", "toy_rte",
            "--tasks", ",".join(TASKS[1:]), "--max_examples", str(EXAMPLES),
            "--decode", "greedy", "--out", str(out), *extra]  # fmt: skip
    return cli.main(argv)


def _outputs_with_row(stage, row: int, task: str) -> list[str]:
    """What a single-prompt model holding row `row` of the stage's prompt table decodes."""
    table = checkpoints.load_prompt(stage / "best_params")
    model = model_source.load_model(stage)
    config = dataclasses.replace(model.config, num_prompts=1)
    params = {**model.params, "encoder": {**model.params["encoder"]}}
    params["encoder"]["prompt"] = {"prompt": table[row]}
    settings = runner.DecodeSettings(search="greedy", batch_size=EXAMPLES)
    examples = runner.load_examples(task, "validation", EXAMPLES)
    ids = runner.Decoder(config, settings)(
        params, [ex["inputs"] for ex in examples], runner.decode_length(examples, settings)
    )
    vocab = runner.vocabulary_of(task)
    return [vocab.decode([int(t) for t in r]) for r in ids]


def test_each_target_gets_its_own_prompt_and_other_formats_none(stage, tmp_path):
    meta = json.loads((stage / "stage.json").read_text())
    assert meta["model"]["num_prompts"] == 2 and meta["mixture"] == "toy_multitask_rte_en_fr"
    out = tmp_path / "eval"
    assert _eval(stage, out) == 0
    run = json.loads((out / "eval.json").read_text())
    by_task = {r["task"]: r for r in run["results"]}
    assert list(by_task) == TASKS
    used = {t: r["prompt_used"] for t, r in by_task.items()}
    # En-De is a translation like En-Fr, so the paper's rule keeps En-Fr's prompt on it.
    assert used == {
        "toy_rte": True,
        "toy_wmt14_en_fr": True,
        "toy_cb_1shot": False,
        "toy_wmt16_en_de_1shot": True,
    }
    for r in run["results"]:
        assert r["examples"] == EXAMPLES and math.isfinite(r["score"])
    assert run["config"]["prompt_length"] == 4

    # The right row: each task's outputs are those of a model holding its task's prompt.
    for task, row in (("toy_rte", 0), ("toy_wmt14_en_fr", 1), ("toy_wmt16_en_de_1shot", 1)):
        got = [r["output"] for r in runner.read_predictions(out, task)]
        assert got == _outputs_with_row(stage, row, task), task
    # ... which the other row would not give (else the check above could not fail).
    got = [r["output"] for r in runner.read_predictions(out, "toy_wmt14_en_fr")]
    assert got != _outputs_with_row(stage, 0, "toy_wmt14_en_fr")


def test_a_task_that_needs_a_prompt_no_row_belongs_to_fails_before_decoding(
    stage, tmp_path, capsys, monkeypatch
):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(runner, "evaluate_task", no_decoding)
    out = tmp_path / "eval"
    assert _eval(stage, out, "--prompt_rule", "always") == 2
    err = capsys.readouterr().err
    assert "toy_cb_1shot" in err and "toy_rte, toy_wmt14_en_fr" in err
    assert not (out / "tasks").exists()


def test_the_prompt_tasks_come_from_the_stage_s_mixture(stage):
    model = model_source.load_model(stage)
    assert model.prompt_tasks == PROMPT_TASKS
    assert model.config.num_prompts == 2 and model.config.prompt_length == 4
    table = np.asarray(model.params["encoder"]["prompt"]["prompt"])
    assert table.shape == (2, 4, model.config.emb_dim)


def _info(name: str, family: str, labels=None) -> TaskInfo:
    return TaskInfo(name, family, labels, "accuracy", True)


RTE = _info("rte", "entailment2", ("True", "False"))
EN_FR = _info("en_fr", "translation")
EN_DE = _info("en_de", "translation")
CB = _info("cb", "entailment3", ("True", "False", "Neither"))


def test_the_rule_picks_the_row_of_the_task_or_its_format_and_never_a_default():
    rows = [RTE, EN_FR]
    picked = [
        prompt_rule.prompt_row(t, RTE, "same_format", rows, "s") for t in (RTE, EN_FR, EN_DE, CB)
    ]
    assert picked == [0, 1, 1, None]
    assert prompt_rule.prompt_row(RTE, RTE, "never", rows, "s") is None
    assert prompt_rule.prompt_row(EN_DE, RTE, "always", rows, "s") == 1
    with pytest.raises(
        ValueError, match="rule 'always' attaches .* for cb.* rows only for rte, en_fr"
    ):
        prompt_rule.prompt_row(CB, RTE, "always", rows, "s")
    # The suite's target itself without a row: the paper's rule wants a prompt there.
    with pytest.raises(ValueError, match="for cb, but the per-task prompt of s has rows only"):
        prompt_rule.prompt_row(CB, CB, "same_format", rows, "s")
    # The name decides first; two rows of one format leave a third task of it unclear.
    assert prompt_rule.prompt_row(EN_DE, RTE, "same_format", [EN_FR, EN_DE], "s") == 1
    with pytest.raises(ValueError, match="several rows .*en_fr, en_de"):
        prompt_rule.prompt_row(
            _info("en_ro", "translation"), RTE, "same_format", [EN_FR, EN_DE], "s"
        )


def test_a_row_is_evaluated_as_a_single_prompt_model():
    cfg = network.mt5_config(
        "tiny", vocab_size=128, dtype="float32", prompt_length=3, num_prompts=2
    )
    table = np.arange(2 * 3 * 64, dtype=np.float32).reshape(2, 3, 64)
    params = {"encoder": {"prompt": {"prompt": table}, "layers_0": 1}, "decoder": 2}
    model = model_source.LoadedModel(cfg, params, "ckpt", "p.npy", PROMPT_TASKS)
    import promot_tasks  # noqa: F401  (the catalogue knows the toy tasks)
    from promot_tasks import catalogue

    rte, en_fr, cb = (
        catalogue.task_info(t) for t in ("toy_rte", "toy_wmt14_en_fr", "toy_cb_1shot")
    )
    on, config, got = model.for_task(en_fr, rte, "same_format")
    assert on and config.num_prompts == 1 and config.prompt_length == 3
    np.testing.assert_array_equal(got["encoder"]["prompt"]["prompt"], table[1])
    assert params["encoder"]["prompt"]["prompt"] is table  # the model itself is unchanged
    off, config, got = model.for_task(cb, rte, "same_format")
    assert not off and config.prompt_length == 0 and config.num_prompts == 1
    assert "prompt" not in got["encoder"]
    unknown = dataclasses.replace(model, prompt_tasks=())
    assert not unknown.for_task(rte, rte, "never")[0]
    with pytest.raises(ValueError, match="--prompt_tasks"):
        unknown.for_task(rte, rte, "same_format")
