"""The lab's shipped base model and the mixture it was pretrained on."""

from __future__ import annotations

import dataclasses
import json

import pytest
import seqio

from promot_jax import checkpoints
from promot_jax.lab import mixtures
from promot_jax.lab.config import BASE_DIR, LabBase, PretrainSettings, base_model_config
from promot_jax.lab.plan import LENGTHS


def _rates(name: str) -> dict[str, float]:
    mixture = seqio.get_mixture_or_task(name)
    return {task.name: mixture.get_rate(task) for task in mixture.tasks}


def test_pretraining_mixture_weights_and_held_out_formats():
    rates = _rates(mixtures.register_lab_pretrain())
    total = sum(rates.values())
    assert rates["toy_span_corruption"] / total == pytest.approx(
        PretrainSettings.span_corruption_share
    )
    assert not [t for t in rates if t.endswith("_4shot")], "4-shot inputs do not fit 256 tokens"
    assert not [t for t in rates if t.startswith(("toy_rte", "toy_wmt14_en_fr"))]
    assert {"toy_cb", "toy_cb_1shot", "toy_xsum_1shot", "toy_wic"} <= set(rates)
    # The classification tasks (CB, WiC) are drawn classification_rate times as often.
    for task in ("toy_cb", "toy_cb_1shot", "toy_wic_1shot"):
        assert rates[task] / rates["toy_xsum_1shot"] == pytest.approx(
            PretrainSettings.classification_rate
        )


def test_another_classification_rate_is_another_mixture():
    name = mixtures.register_lab_pretrain(PretrainSettings(classification_rate=1.0))
    assert name != mixtures.LAB_PRETRAIN
    rates = _rates(name)
    assert rates["toy_wic"] == pytest.approx(rates["toy_xsum"])
    assert rates["toy_span_corruption"] / sum(rates.values()) == pytest.approx(
        PretrainSettings.span_corruption_share
    )


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_classification_rate_must_be_positive(rate):
    from promot_tasks.toy_world import toy_tasks

    with pytest.raises(ValueError, match="classification_rate must be > 0"):
        toy_tasks.pretraining_members("toy", classification_rate=rate)


@pytest.mark.parametrize("share", [0.5, 0.501])  # close shares must not share a name
def test_another_span_share_is_another_mixture(share):
    name = mixtures.register_lab_pretrain(PretrainSettings(span_corruption_share=share))
    assert name != mixtures.LAB_PRETRAIN
    assert _rates(name)["toy_span_corruption"] / sum(_rates(name).values()) == pytest.approx(share)


def test_shipped_base_matches_the_code_that_made_it():
    record = json.loads((BASE_DIR.parent / "base_model.json").read_text())
    assert record["settings"] == dataclasses.asdict(PretrainSettings()), (
        "base_model.json records other pretraining settings than PretrainSettings(): rebuild "
        "the base with `promot-jax lab pretrain --out DIR` and copy DIR/base_model"
    )
    params = checkpoints.load_params(BASE_DIR, base_model_config())  # validates every shape
    assert params["encoder"]["layers_2"]["mlp"]["wi_0"]["kernel"].shape == (128, 512)


def test_lab_design_follows_the_papers_ratios():
    from promot_jax.lab import plan
    from promot_jax.lab.config import LabSettings

    settings = LabSettings()
    assert settings.stage1_steps > settings.stage2_steps  # [P]: 5000 vs 1000
    assert len(settings.seeds) >= 3
    stages = [
        st
        for exp in plan.build_plan(settings, LabBase(BASE_DIR)).experiments
        for st in exp.stages.values()
    ]
    for st in stages:
        tuned = st.method != "promot_stage1"
        assert st.model.dropout_rate == (settings.model_dropout if tuned else 0.0), st.method
        assert st.label_smoothing == (settings.model_label_smoothing if tuned else 0.0), st.method
    # The controls run the model-tuning recipe of standard FT on other data.
    exps = {e.name: e for e in plan.build_plan(settings, LabBase(BASE_DIR)).experiments}
    ft = exps["main/finetune/s10"].stages["ft"]
    for name, mixture in (
        ("controls/pretraining_mixture/s10", "lab_toy_pretrain"),
        ("controls/in_format/s10", "toy_cb"),
        ("controls/shuffled_labels/s10", "toy_mention_shuffled"),
    ):
        control = exps[name].stages["ft"]
        assert control.mixture == mixture
        for field in ("steps", "optimizer", "label_smoothing", "model", "seed", "batch_size"):
            assert getattr(control, field) == getattr(ft, field), (name, field)
    lrs = {st.method: st.optimizer.learning_rate for st in stages}
    assert lrs["promot_stage1"] == settings.prompt_lr and lrs["finetune"] == settings.model_lr


@pytest.mark.parametrize("task", sorted(LENGTHS))
def test_lab_lengths_truncate_no_example(task):
    """The lab pads each stage to its longest example; a longer one would be cut silently."""
    import promot_tasks  # noqa: F401  (registers the toy tasks)
    from promot_jax.lab import plan

    lengths = plan.LENGTHS[task]
    for split in ("train", "validation"):
        ds = seqio.get_mixture_or_task(task).get_dataset(None, split=split, shuffle=False)
        longest = {"inputs": 0, "targets": 0}
        for ex in ds.as_numpy_iterator():
            for feature in longest:
                longest[feature] = max(longest[feature], len(ex[feature]))
        for feature, n in longest.items():
            assert n <= lengths[feature], f"{task} {split}: {feature} of {n} > {lengths}"


def test_the_scale_axis_base_has_at_least_four_times_the_parameters():
    from promot_jax.lab.config import LAB_SIZES, SHIPPED_SIZE

    shipped = LabBase(BASE_DIR, SHIPPED_SIZE).parameters
    assert set(LAB_SIZES) == {"2m", "10m"}
    assert LabBase(BASE_DIR, "10m").parameters >= 4 * shipped
    assert base_model_config("10m").vocab_size == base_model_config().vocab_size  # toy world


def test_a_base_is_read_at_its_own_size_and_the_plan_trains_that_size(tmp_path):
    import jax

    from promot_jax import network
    from promot_jax.lab import plan
    from promot_jax.lab.config import LabSettings

    assert LabBase.read(BASE_DIR) == LabBase(BASE_DIR.absolute(), "2m")
    config = base_model_config("10m")
    checkpoints.save_params(network.init_params(config, jax.random.key(0)), tmp_path / "b10")
    base = LabBase.read(tmp_path / "b10")
    assert base.size == "10m"
    lab = plan.build_plan(LabSettings(), base)
    assert lab.base == base
    for exp in lab.experiments:
        for st in exp.stages.values():
            assert (st.model.emb_dim, st.model.num_encoder_layers) == (256, 4), exp.name
            assert st.init_checkpoint == str(base.path), exp.name
