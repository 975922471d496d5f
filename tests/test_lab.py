"""`promot-jax lab --quick` end to end: report structure, finite numbers, no silent overwrite,
resume after an interruption."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from promot_jax.lab import pipeline
from promot_jax.lab.config import BASE_DIR, LabSettings
from promot_jax.lab.evaluate import DMT_TASKS
from promot_jax.lab.plan import DOMAIN_STAGE, REGULARIZATION_GRID, regularization_label

SECTIONS = (
    "## Direction of the paper's claims at this scale",
    "## Table 2 analog",
    "## Table 3 analog",
    "## Table 4 analog",
    "## Table 6 analog",
    "## Figures 1, 2 and 7 analogs",
    "## DMT Table 1 analog",
    "## Design and hyperparameters (fixed before running)",
)
FIGURES = (
    "fig1_2_leak_and_target.png",
    "fig7_gradient_alignment.png",
    "norm_avg_rte.png",
    "dmt_k_sweep.png",
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


def test_quick_lab_report_structure_and_finite_numbers(quick_lab):
    report = (quick_lab / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    for fig in FIGURES:
        assert (quick_lab / fig).stat().st_size > 0, fig
        assert f"]({fig})" in report
    results = json.loads((quick_lab / "results.json").read_text())
    for table in ("rte", "en_fr", "dmt", "curves"):
        assert results[table], table
    assert {"pretrained", "standard FT", "ProMoT", "prompt tuning"} <= set(results["rte"])
    numbers = list(_numbers(results))
    assert numbers and all(math.isfinite(x) for x in numbers)
    for label, runs in results["dmt"].items():  # decoded and teacher-forced, every row
        for run in runs:
            assert set(run["scores"]) == set(run["teacher_forced"]) == set(DMT_TASKS), label
            for scores in run["teacher_forced"].values():
                assert 0 <= scores["token_accuracy"] <= 100, label
    assert "token acc" in report
    assert "DMT (k=1/256) keeps more of the domains than mixed sequential" in report
    assert "Training on general data after the domains forgets them" in report
    assert DOMAIN_STAGE in results["dmt"]
    # The sensitivity table: the lab's own setting plus each grid setting, both methods.
    assert "## Sensitivity: stage 2's dropout and label smoothing" in report
    for dropout, smoothing in REGULARIZATION_GRID:
        for method in ("standard FT", "ProMoT"):
            assert regularization_label(method, dropout, smoothing) in results["regularization"]


def test_finished_lab_is_not_overwritten_without_force(quick_lab):
    with pytest.raises(FileExistsError, match="--force"):
        pipeline.run_lab(quick_lab, QUICK, BASE_DIR, log=lambda s: None)


def test_interrupted_lab_reuses_finished_stages(quick_lab):
    (quick_lab / "report.md").unlink()
    checkpoint = next((quick_lab / "rte" / "finetune" / "s0" / "ft" / "checkpoints").iterdir())
    mtime = checkpoint.stat().st_mtime
    lines = []
    pipeline.run_lab(quick_lab, QUICK, BASE_DIR, log=lines.append)
    assert (quick_lab / "report.md").exists()
    assert checkpoint.stat().st_mtime == mtime  # the stage was not retrained
    assert any("resuming" in line for line in lines)


def test_other_settings_in_an_interrupted_dir_are_refused(quick_lab, tmp_path):
    (quick_lab / "report.md").unlink()
    with pytest.raises(ValueError, match="other settings"):
        pipeline.run_lab(quick_lab, LabSettings(), BASE_DIR, log=lambda s: None)
