"""The scale axis: comparing the same lab on two base sizes (`promot-jax lab scale`)."""

from __future__ import annotations

import json

import pytest

from promot_jax import cli
from promot_jax.lab import scale, verdicts
from promot_jax.lab.plan import FT, MAIN, PRETRAINED, PROMOT

SEEDS = (10, 11, 12)


def _row(label, seed, norm, target=90.0, leak=10.0):
    summary = {
        "target": {"task": "toy_mention", "metric": "accuracy", "score": target},
        "norm_avg": {"1": norm},
        "leak_rate": {"1": leak},
    }
    return {"table": MAIN, "label": label, "seed": seed, "summary": summary}


def _lab(path, size, pre, ft, promot, settings=None):
    """A finished lab directory with the main rows' Norm. Avg. (per seed for FT / ProMoT)."""
    path.mkdir(parents=True)
    settings = settings or {"seeds": list(SEEDS), "stage2_steps": 300}
    rows = {"main/pretrained/s0": _row(PRETRAINED, 0, pre)}
    for seed, f, p in zip(SEEDS, ft, promot, strict=True):
        rows[f"main/standard_FT/s{seed}"] = _row(FT, seed, f, leak=70.0)
        rows[f"main/ProMoT/s{seed}"] = _row(PROMOT, seed, p)
    diffs = [p - f for f, p in zip(ft, promot, strict=True)]
    paired = [{"estimate": d, "low": d - 2, "high": d + 2} for d in diffs]
    (path / "lab.json").write_text(json.dumps({"settings": settings, "base": "b", "size": size}))
    (path / "results.json").write_text(json.dumps({"rows": rows, "paired": {"norm": paired}}))
    (path / "report.md").write_text("# report\n")
    return path


def test_protection_and_verdicts_per_size(tmp_path):
    small = _lab(tmp_path / "s", "2m", 80.0, [10.0, 20.0, 0.0], [45.0, 55.0, 40.0])
    large = _lab(tmp_path / "l", "10m", 80.0, [10.0, 20.0, 0.0], [75.0, 74.0, 78.0])
    md = scale.compare([large, small], tmp_path / "out").read_text()  # order: by size
    numbers = json.loads((tmp_path / "out" / scale.SCALE_JSON).read_text())
    assert [r["size"] for r in numbers["runs"]] == ["2m", "10m"]
    assert numbers["runs"][0]["protection"] == pytest.approx([0.5, 35 / 60, 0.5])
    assert numbers["runs"][1]["protection"] == pytest.approx([65 / 70, 0.9, 78 / 80])
    assert [v["verdict"] for v in numbers["verdicts"]] == [
        verdicts.REPRODUCED,
        verdicts.REPRODUCED,
        verdicts.GROWS,
    ]
    assert "| 10m | 10.56M | ProMoT |" in md and (tmp_path / "out" / scale.FIG_SCALE).is_file()
    with pytest.raises(FileExistsError, match="--force"):
        scale.compare([small, large], tmp_path / "out")
    scale.compare([small, large], tmp_path / "out", force=True)


@pytest.mark.parametrize(
    "small, large, verdict",
    [
        ([0.5, 0.5, 0.6], [0.9, 0.95, 0.85], verdicts.GROWS),
        ([0.9, 0.95, 0.85], [0.5, 0.5, 0.6], verdicts.SHRINKS),
        ([0.5, 0.7, 0.6], [0.65, 0.7, 0.62], verdicts.NO_DIFFERENCE),  # +0.06 < 0.10
        ([0.1, 0.9, 0.5], [0.3, 1.0, 0.8], verdicts.NO_DIFFERENCE),  # +0.2, interval spans 0
    ],
)
def test_the_scale_question_can_come_out_every_way(small, large, verdict):
    assert verdicts.judge_scale(("2m", "10m"), (small, large)).verdict == verdict


def test_labs_that_cannot_be_compared_are_refused(tmp_path, capsys):
    a = _lab(tmp_path / "a", "2m", 80.0, [10.0] * 3, [40.0] * 3)
    b = _lab(tmp_path / "b", "2m", 80.0, [10.0] * 3, [40.0] * 3)
    other = {"seeds": list(SEEDS), "stage2_steps": 150}
    c = _lab(tmp_path / "c", "10m", 80.0, [10.0] * 3, [40.0] * 3, settings=other)
    unfinished = _lab(tmp_path / "u", "10m", 80.0, [10.0] * 3, [40.0] * 3)
    (unfinished / "report.md").unlink()
    for runs, says in (
        ((a, b), "both labs ran the 2m base"),
        ((a, c), "different settings (stage2_steps)"),
        ((a, unfinished), "no report.md; give a finished lab directory"),
        ((a,), "--runs needs two lab directories"),
    ):
        out = tmp_path / "out"
        code = cli.main(["lab", "scale", "--runs", ",".join(map(str, runs)), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and says in err, err
        assert not out.exists()
