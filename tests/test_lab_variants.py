"""The lab's variant rows (issue 19, `promot-jax lab --variants`): what they train, that each
comparison can come out either way, and the LoRA pilot's rule and flags."""

from __future__ import annotations

import dataclasses
import json

import pytest

from promot_jax.cli import main
from promot_jax.lab import pilot, plan, report, verdicts
from promot_jax.lab.config import BASE_DIR, LabBase, LabSettings
from promot_jax.lab.stats import Interval

SETTINGS = LabSettings(run_variants=True)


def _plan(settings=SETTINGS):
    return plan.build_plan(settings, LabBase(BASE_DIR))


def _experiment(p, name):
    return next(e for e in p.experiments if e.name == name)


def test_variants_run_on_every_seed_with_the_registered_rows():
    p = _plan()
    labels = {
        plan.LORA_STAGE1, plan.PROMOT_LORA, plan.LORA_MECHANISM, plan.PROMPT_TRAINABLE,
        plan.PROMPT_TRAINABLE_MECHANISM,
        *(plan.prompt_length_label(m, n) for m in (plan.PT, plan.PROMOT) for n in (10, 100)),
    }  # fmt: skip
    for seed in SETTINGS.seeds:
        assert {r.label for r in p.rows if r.table == plan.VARIANTS and r.seed == seed} == labels
    # Adapters and prompts are removed from other formats (suite rows), kept on the target;
    # the mechanism rows remove them on the target too.
    by_label = {r.label: r for r in p.rows_of(plan.VARIANTS) if r.seed == 10}
    assert by_label[plan.PROMOT_LORA].rule == "same_format" and by_label[plan.PROMOT_LORA].suite
    assert by_label[plan.LORA_MECHANISM].rule == "never"
    assert not by_label[plan.LORA_STAGE1].suite  # its suite is the base's under the rule
    assert not any(r.table == plan.VARIANTS for r in _plan(LabSettings()).rows)


def test_variant_stages_are_the_methods_and_settings_registered():
    p = _plan()
    lora = _experiment(p, "variants/lora/s11").stages
    assert [s.method for s in lora.values()] == ["lora_stage1", "promot_lora_stage2"]
    assert lora["stage1"].model.lora_rank == SETTINGS.lora_rank
    assert lora["stage1"].model.prompt_length == 0
    assert lora["stage1"].optimizer.lora_learning_rate == SETTINGS.lora_lr
    assert lora["stage2"].adapter_file == plan.PREVIOUS_STAGE
    assert lora["stage2"].model.dropout_rate == SETTINGS.model_dropout
    # The prompt-trainable variant's stage 1 is the seed's main stage 1, setting for setting
    # (so it gives the same prompt); its stage 2 trains the prompt at the prompt's own LR.
    trainable = _experiment(p, "variants/prompt_trainable/s11").stages
    main = _experiment(p, "main/promot/s11").stages
    assert trainable["stage1"].fingerprint() == main["stage1"].fingerprint()
    assert trainable["stage2"].method == "promot_stage2_prompt_trainable"
    assert trainable["stage2"].optimizer.prompt_learning_rate == SETTINGS.prompt_lr
    assert trainable["stage2"].optimizer.learning_rate == SETTINGS.model_lr
    assert main["stage2"].optimizer.prompt_learning_rate is None  # the main rows unchanged
    for n in SETTINGS.variant_prompt_lengths:
        stages = _experiment(p, f"variants/promot_p{n}/s11").stages
        assert {s.model.prompt_length for s in stages.values()} == {n}
        assert stages["stage2"].steps == main["stage2"].steps


def test_a_variant_length_equal_to_the_main_rows_is_refused():
    with pytest.raises(ValueError, match="repeats the main rows' prompt_length 50"):
        LabSettings(run_variants=True, variant_prompt_lengths=(10, 50))
    # Without the variants the lengths mean nothing: the pilot's P = 10 / 100 settings stand.
    assert LabSettings(prompt_length=10).prompt_length == 10


def _i(estimate, half=1.0):
    return Interval(estimate, estimate - half, estimate + half)


def test_each_variant_verdict_can_come_out_either_way():
    claims = (report.LORA_CLAIM, report.FROZEN_PROMPT_CLAIM, report.LENGTH_CLAIM)

    def judge(diff_intervals):
        comparisons = [
            report.Comparison(f"c{k}", [(10, d), (11, d)], claim)
            for k, (d, claim) in enumerate(zip(diff_intervals, claims, strict=True))
        ]
        return [v.verdict for v in report.variant_verdicts(comparisons)]

    assert judge([_i(5), _i(5), _i(5)]) == [verdicts.REPRODUCED] * 3
    assert judge([_i(0.5), _i(-5), _i(5)]) == [
        verdicts.PARTIAL,
        verdicts.NOT_REPRODUCED,
        verdicts.REPRODUCED,
    ]
    # A comparison without a registered claim (P = 10 - P = 50) gets no verdict, wherever it is.
    mixed = [report.Comparison("unregistered", [(10, _i(9))]), *[
        report.Comparison(f"c{k}", [(10, _i(1))], c) for k, c in enumerate(claims)
    ]]  # fmt: skip
    found = [v.claim for v in report.variant_verdicts(mixed)]
    assert found == [c[0] for c in claims]
    assert "LoRA" in found[0] and "freezing" in found[1] and "longer prompt" in found[2]


def test_lora_pilot_rule_picks_the_best_passing_lr_and_the_lowest_within_a_tie():
    def seeds(acc, share=100.0):
        return [{"accuracy": acc, "label_share": share}] * 2

    steps = 400
    chosen = pilot.choose_stage1(
        {(1e-3, steps): seeds(70.0), (3e-3, steps): seeds(91.0), (1e-2, steps): seeds(90.0)}
    )
    assert chosen == (3e-3, steps)
    tie = pilot.choose_stage1({(1e-3, steps): seeds(89.5), (1e-2, steps): seeds(90.0)})
    assert tie == (1e-3, steps)
    none_pass = pilot.choose_stage1(
        {(1e-3, steps): seeds(99.0, 10.0), (1e-2, steps): seeds(50.0, 60.0)}
    )
    assert none_pass == (1e-2, steps)  # the highest label share when none carries the format


def test_lora_and_variant_flags_belong_to_their_actions(tmp_path, capsys):
    assert main(["lab", "--lora", "--out", str(tmp_path / "a")]) == 2
    assert "--lora only apply to `promot-jax lab pilot`" in capsys.readouterr().err
    assert main(["lab", "pilot", "--variants", "--out", str(tmp_path / "b")]) == 2
    assert "drop --seeds, --full, --variants" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_quick_lab_with_variants_reports_every_variant(tmp_path):
    """The quick lab with the variants (4 steps per stage): every variant row scored, the
    section and its three verdicts in the report, finite paired differences."""
    from promot_jax.lab import pipeline

    settings = dataclasses.replace(LabSettings.quick(), run_variants=True, run_enfr=False)
    pipeline.run_lab(tmp_path / "lab", settings, BASE_DIR, log=lambda s: None)
    text = (tmp_path / "lab" / "report.md").read_text()
    assert "## Variants: LoRA in stage 1, a trainable prompt, prompt length" in text
    results = json.loads((tmp_path / "lab" / "results.json").read_text())
    labels = {r["label"] for r in results["rows"].values() if r["table"] == plan.VARIANTS}
    assert plan.PROMOT_LORA in labels and plan.PROMPT_TRAINABLE in labels
    assert len(results["variants"]) == 5
    for diffs in results["variants"].values():
        for i in diffs.values():
            assert i["low"] <= i["estimate"] <= i["high"]
    claims = [v["claim"] for v in results["verdicts"]]
    assert sum("LoRA" in c or "freezing" in c or "longer prompt" in c for c in claims) == 4
