"""`promot-jax lab --quick` end to end: report structure, finite numbers, no silent overwrite,
resume after an interruption."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from promot_jax.lab import pipeline, plan, verdicts
from promot_jax.lab.config import BASE_DIR, LabSettings
from promot_jax.lab.figures import FIGURES
from promot_jax.lab.plan import (
    C1,
    C2,
    C4,
    FT,
    MECHANISM,
    PRETRAINED,
    PROMOT,
    PT,
    REGULARIZATION_GRID,
    regularization_label,
)

SECTIONS = (
    "## Verdict per claim",
    "## Main table: the primary target and the 1-shot suite",
    "## What the outputs become",
    "## Controls",
    "## Ablations",
    "## Secondary target: toy RTE (format not new)",
    "## Table 4 analog",
    "## Table 2 analog",
    "## Figures 1, 2 and 7 analogs",
    "## Design and hyperparameters (fixed before running)",
)


# The quick lab with the regularization grid on too, so its runs are exercised end to end.
QUICK = dataclasses.replace(LabSettings.quick(), regularization_grid=True)


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield float(tree)


@pytest.fixture(scope="module")
def quick_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "run"
    pipeline.run_lab(out, QUICK, BASE_DIR, log=lambda s: None)
    return out


def _rows(results, table, label):
    return [r for r in results["rows"].values() if r["table"] == table and r["label"] == label]


def test_quick_lab_report_structure_and_finite_numbers(quick_lab):
    report = (quick_lab / "report.md").read_text()
    assert report.startswith("# promot-jax mini-lab report\n\n**This is the `--quick` variant")
    for section in SECTIONS:
        assert section in report, section
    for fig in FIGURES:
        assert (quick_lab / fig).stat().st_size > 0, fig
        assert f"]({fig})" in report
    results = json.loads((quick_lab / "results.json").read_text())
    for label in (PRETRAINED, FT, PT, PROMOT, MECHANISM):
        assert _rows(results, plan.MAIN, label), label
    for label in (C2, C4):  # C1 reads the whole pretraining mixture: default lab only
        assert _rows(results, plan.CONTROLS, label), label
    assert not _rows(results, plan.CONTROLS, C1)
    numbers = list(_numbers(results))
    assert numbers and all(math.isfinite(x) for x in numbers)
    # Every claim has a verdict from the fixed vocabulary, with its rule.
    names = {v["claim"] for v in results["verdicts"]}
    assert len(names) == len(results["verdicts"]) >= 10
    allowed = {
        verdicts.REPRODUCED,
        verdicts.PARTIAL,
        verdicts.NOT_REPRODUCED,
        verdicts.NOT_TESTABLE,
    }
    assert {v["verdict"] for v in results["verdicts"]} <= allowed
    for interval in results["paired"]["norm"]:
        assert interval["low"] <= interval["estimate"] <= interval["high"]
    # The sensitivity table: the lab's own setting plus each grid setting, both methods.
    assert "## Sensitivity: stage 2's dropout and label smoothing" in report
    for dropout, smoothing in REGULARIZATION_GRID:
        for method in (FT, PROMOT):
            label = regularization_label(method, dropout, smoothing)
            assert _rows(results, plan.REGULARIZATION, label), label


def test_quick_lab_writes_what_outputs_become(quick_lab):
    """Predictions per task are on disk, and their output kinds add up to 100%."""
    row = next((quick_lab / "evals" / "main").glob("standard_FT/s*"))
    run = json.loads((row / "eval.json").read_text())
    for result in run["results"]:
        lines = (row / "predictions" / f"{result['task']}.jsonl").read_text().splitlines()
        assert len(lines) == result["examples"]
        assert sum(result["output_kinds"].values()) == pytest.approx(100.0)


def test_quick_lab_ft_moves_the_target_format(quick_lab):
    """One direction on the fixed tiny setting, which a broken training step or a wrong
    output-kind sort would fail: 4 FT steps at LR 6e-3 put the new labels into the target's
    outputs, which the pretrained model never gives (at the lab's 3e-3, 4 steps gave 12.5%)."""
    results = json.loads((quick_lab / "results.json").read_text())

    def label_share(label):
        (row,) = _rows(results, plan.MAIN, label)
        key = next(k for k, r in results["rows"].items() if r is row)
        run = json.loads((quick_lab / "evals" / key / "eval.json").read_text())
        return next(r for r in run["results"] if r["is_target"])["output_kinds"]["label"]

    assert label_share(PRETRAINED) == 0.0
    assert label_share(FT) >= 50.0


def test_finished_lab_is_not_overwritten_without_force(quick_lab):
    with pytest.raises(FileExistsError, match="--force"):
        pipeline.run_lab(quick_lab, QUICK, BASE_DIR, log=lambda s: None)


def test_interrupted_lab_reuses_finished_stages(quick_lab):
    (quick_lab / "report.md").unlink()
    checkpoint = next((quick_lab / "main" / "finetune" / "s0" / "ft" / "checkpoints").iterdir())
    mtime = checkpoint.stat().st_mtime
    lines = []
    pipeline.run_lab(quick_lab, QUICK, BASE_DIR, log=lines.append)
    assert (quick_lab / "report.md").exists()
    assert checkpoint.stat().st_mtime == mtime  # the stage was not retrained
    assert any("resuming" in line for line in lines)


def test_other_settings_in_an_interrupted_dir_are_refused(quick_lab, tmp_path):
    (quick_lab / "report.md").unlink()
    with pytest.raises(ValueError, match="other settings") as refused:
        pipeline.run_lab(quick_lab, LabSettings(), BASE_DIR, log=lambda s: None)
    # The one resume check names each differing setting with both values.
    assert "settings.smoke: True -> False" in str(refused.value), refused.value


def test_the_numbers_do_not_depend_on_the_number_of_workers(quick_lab, tmp_path):
    """Each unit runs on one CPU of its own, so one worker gives the trained parameters and
    the scores that the fixture's lab (one worker per CPU) gave, bit for bit."""
    import jax
    import numpy as np

    from promot_jax import checkpoints

    main_only = dataclasses.replace(
        QUICK, controls=False, run_enfr=False, regularization_grid=False
    )
    out = pipeline.run_lab(tmp_path / "one", main_only, BASE_DIR, log=lambda s: None, workers=1)
    lab = plan.build_plan(main_only, pipeline.LabBase.read(BASE_DIR))
    for exp in lab.experiments:
        for name, stage in exp.stages.items():
            ours, theirs = (
                checkpoints.load_params(root / exp.name / name / "final_params", stage.model)
                for root in (out, quick_lab)
            )
            leaves = (jax.tree_util.tree_leaves(t) for t in (ours, theirs))
            for a, b in zip(*leaves, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=f"{exp.name}/{name}")
    one = json.loads((out / "results.json").read_text())["rows"]
    fixture = json.loads((quick_lab / "results.json").read_text())["rows"]
    assert one and all(one[k]["summary"] == fixture[k]["summary"] for k in one)
