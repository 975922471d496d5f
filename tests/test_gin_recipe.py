"""The paper's recipe, once: both runners resolve the same hyperparameters for every stage.

Our runner's side is what gin builds from an experiment file (the StageConfig objects
`promot-jax run` would train). The T5X side is read from the gin/t5x/ files as text (t5x is
not installed here; T5X's own runs/*.gin only set defaults that our files override later), plus
the T5X commands docs/cloud_tpu.md gives for the task's lengths.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from gin_reading import resolve, statements

import gin
from gin import config_parser
from promot_jax import experiment, gin_config, methods, network, recipe
from promot_jax.gin_paths import gin_dir
from promot_jax.lab.config import LabSettings
from promot_jax.optimizer import OptimizerConfig
from promot_jax.train import StageConfig

CLOUD_TPU_DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud_tpu.md"
PRETRAINED_STEP = 1_000_000  # TRAIN_STEPS under T5X counts from the public checkpoint's step

# (our experiment file, its stage, the gin/t5x/ file that runs the same stage)
PAIRS = [
    ("experiments/promot_rte_mt5_xxl.gin", "stage1", "t5x/stage1_prompt_only.gin"),
    ("experiments/promot_rte_mt5_xxl.gin", "stage2", "t5x/stage2_frozen_prompt.gin"),
    ("experiments/promot_wmt14_en_fr_mt5_xxl.gin", "stage1", "t5x/stage1_prompt_only.gin"),
    ("experiments/promot_wmt14_en_fr_mt5_xxl.gin", "stage2", "t5x/stage2_frozen_prompt.gin"),
    ("experiments/prompt_tuning_rte_mt5_xxl.gin", "prompt_tuning", "t5x/stage1_prompt_only.gin"),
    ("experiments/finetune_rte_mt5_xxl.gin", "finetune", "t5x/baseline_finetune.gin"),
]


def _our_stages(gin_file: str) -> dict[str, StageConfig]:
    gin_config.parse([gin_file], ["RUN_DIR = '/unused'"])
    try:
        return gin.get_bindings(experiment.run_experiment)["stages"]
    finally:
        gin.clear_config()


def _trains(method: str) -> tuple[bool, bool, bool]:
    m = methods.get_method(method)
    return m.has_prompt, m.trains_prompt, m.trains_trunk


def _t5x_settings(t5x_file: str) -> dict:
    t5x = resolve(t5x_file, "t5x/sizes/xxl.gin")
    size = network.mt5_config(t5x.macro("MODEL_SIZE"))
    adafactor = "adafactor.Adafactor"
    return {
        "what trains": _trains(t5x.macro("METHOD")),
        "learning rate": t5x.binding("utils.create_learning_rate_scheduler", "base_learning_rate"),
        "schedule": t5x.binding("utils.create_learning_rate_scheduler", "factors"),
        "steps": t5x.macro("TRAIN_STEPS") - PRETRAINED_STEP,
        "checkpoint every": t5x.macro("CHECKPOINT_PERIOD"),
        "evaluate every": t5x.macro("EVAL_PERIOD"),
        "dropout": t5x.macro("DROPOUT_RATE"),
        "label smoothing": t5x.macro("LABEL_SMOOTHING"),
        "z-loss": t5x.macro("Z_LOSS"),
        "batch": t5x.macro("BATCH_SIZE"),
        "packing": t5x.binding("utils.DatasetConfig", "pack", scope="train"),
        "prompt length": t5x.macro("PROMPT_LENGTH"),
        "model": (size.emb_dim, size.num_heads, size.mlp_dim, size.num_encoder_layers),
        "adafactor decay": t5x.binding(adafactor, "decay_rate"),
        # Adafactor's settings for what trains; T5X's defaults where the files set nothing.
        "weight decay": _or_default(t5x, adafactor, "weight_decay_rate", None),
        "parameter scaling": _or_default(t5x, adafactor, "multiply_by_parameter_scale", True),
    }


def _or_default(t5x, selector: str, arg: str, default):
    try:
        return t5x.binding(selector, arg)
    except KeyError:
        return default


def _our_settings(stage: StageConfig) -> dict:
    m = methods.get_method(stage.method)
    prompt_only = m.trains_prompt and not m.trains_trunk
    return {
        "what trains": _trains(stage.method),
        "learning rate": stage.optimizer.learning_rate,
        "schedule": stage.optimizer.schedule,
        "steps": stage.steps,
        "checkpoint every": stage.save_every,
        "evaluate every": stage.eval_every,
        "dropout": stage.model.dropout_rate,
        "label smoothing": stage.label_smoothing,
        "z-loss": stage.z_loss,
        "batch": stage.batch_size,
        "packing": stage.pack,
        "prompt length": stage.model.prompt_length,
        "model": (
            stage.model.emb_dim,
            stage.model.num_heads,
            stage.model.mlp_dim,
            stage.model.num_encoder_layers,
        ),
        "adafactor decay": stage.optimizer.decay_rate,
        # optimizer.make_optimizer: the prompt's group has prompt-tuning's weight decay and no
        # parameter scaling, the trunk's group no weight decay and parameter scaling.
        "weight decay": stage.optimizer.prompt_weight_decay if prompt_only else None,
        "parameter scaling": not prompt_only,
    }


@pytest.mark.parametrize("ours, stage, t5x_file", PAIRS)
def test_both_runners_resolve_the_same_recipe(ours, stage, t5x_file):
    mine = _our_settings(_our_stages(ours)[stage])
    theirs = _t5x_settings(t5x_file)
    differ = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
    assert not differ, f"{ours}:{stage} vs {t5x_file} (ours, T5X's): {differ}"


def _cloud_tpu_lengths() -> dict[str, dict]:
    """Each task of docs/cloud_tpu.md's T5X commands and the TASK_FEATURE_LENGTHS given it."""
    text = CLOUD_TPU_DOC.read_text()
    found = re.findall(
        r"MIXTURE_OR_TASK_NAME=\\\"'(\w+)'\\\"\s+--gin.TASK_FEATURE_LENGTHS=\\\"(\{[^}]*\})\\\"",
        text,
    )
    return {task: ast.literal_eval(lengths) for task, lengths in found}


@pytest.mark.parametrize(
    "ours", ["experiments/promot_rte_mt5_xxl.gin", "experiments/promot_wmt14_en_fr_mt5_xxl.gin"]
)
def test_the_documented_t5x_commands_use_the_experiments_task_and_lengths(ours):
    documented = _cloud_tpu_lengths()
    for name, stage in _our_stages(ours).items():
        assert stage.mixture in documented, f"docs/cloud_tpu.md runs no T5X command on {stage}"
        assert dict(stage.feature_lengths) == documented[stage.mixture], (ours, name)


def test_every_experiment_parses_into_stages_that_follow_the_recipe():
    """Every gin/experiments/ file builds, and each of its stages has its kind's recipe."""
    files = sorted(str(p.relative_to(gin_dir())) for p in (gin_dir() / "experiments").glob("*.gin"))
    assert len(files) >= 8
    for name in files:
        for stage_name, stage in _our_stages(name).items():
            kind = recipe.for_method(stage.method)
            got = (stage.optimizer.learning_rate, stage.steps, stage.save_every)
            want = (kind.learning_rate, kind.steps, kind.checkpoint_every)
            assert got == want, (name, stage_name)
            assert (stage.model.dropout_rate, stage.label_smoothing) == (
                kind.dropout,
                kind.label_smoothing,
            ), (name, stage_name)
            assert stage.batch_size == recipe.BATCH_SIZE, (name, stage_name)


def test_the_lab_and_the_optimizer_defaults_read_the_recipe():
    lab = LabSettings()
    assert lab.prompt_lr == recipe.TUNE_PROMPT.learning_rate == 0.2
    assert (lab.model_dropout, lab.model_label_smoothing) == (
        recipe.TUNE_MODEL.dropout,
        recipe.TUNE_MODEL.label_smoothing,
    )
    defaults = OptimizerConfig()
    assert defaults.decay_rate == recipe.ADAFACTOR_DECAY_RATE
    assert defaults.prompt_weight_decay == recipe.PROMPT_WEIGHT_DECAY
    assert recipe.for_method("promot_stage1") is recipe.TUNE_PROMPT
    assert recipe.for_method("joint") is recipe.for_method("promot_stage2") is recipe.TUNE_MODEL


def test_the_recipe_file_holds_plain_macros_only(tmp_path):
    bad = tmp_path / "paper.gin"
    bad.write_text("TUNE_PROMPT_LR = %OTHER\n")
    with pytest.raises(ValueError, match="plain values only"):
        recipe.read_macros(bad)
    bad.write_text("from promot_jax import train\ntrain.StageConfig.steps = 3\n")
    with pytest.raises(ValueError, match="only macros"):
        recipe.read_macros(bad)


def test_method_stage_files_bind_only_their_own_nested_scope():
    """The kind files (stages/tune_*.gin) are included once per method file; including one
    twice is harmless only while no method file rebinds the kind's own scope."""
    kinds = ("tune_prompt", "tune_model")
    for path in sorted((gin_dir() / "stages").glob("*.gin")):
        if path.stem in kinds or path.stem == "common":
            continue
        for st in statements(path):
            if isinstance(st, config_parser.BindingStatement) and st.scope:
                kind, _, own = st.scope.partition("/")
                assert kind in kinds and own, f"{path.name}: binds scope {st.scope!r}"
