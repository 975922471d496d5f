"""The lab's claims can come out either way: each verdict on figures that reproduce, half
reproduce and contradict the paper, and the bootstrap intervals they rest on."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from promot_jax.evaluation import runner
from promot_jax.lab import pilot, stats, verdicts
from promot_jax.lab.stats import Interval


def _i(estimate, half=1.0):
    return Interval(estimate, estimate - half, estimate + half)


def test_ft_specializes_each_way():
    assert verdicts.judge_ft_specializes([80.0], [_i(-30)]).verdict == verdicts.REPRODUCED
    assert verdicts.judge_ft_specializes([80.0], [_i(-2)]).verdict == verdicts.PARTIAL
    assert verdicts.judge_ft_specializes([5.0], [_i(-2)]).verdict == verdicts.NOT_REPRODUCED
    # A drop whose interval reaches past -5 on one seed is not "every seed".
    wide = verdicts.judge_ft_specializes([80.0], [_i(-30), _i(-12, 10)])
    assert wide.verdict == verdicts.PARTIAL


def test_target_parity_is_not_testable_when_nothing_learned_the_target():
    assert verdicts.judge_target_parity(True, [_i(0.5)]).verdict == verdicts.REPRODUCED
    assert verdicts.judge_target_parity(True, [_i(-3)]).verdict == verdicts.PARTIAL
    assert verdicts.judge_target_parity(True, [_i(-20)]).verdict == verdicts.NOT_REPRODUCED
    assert verdicts.judge_target_parity(False, [_i(0.0)]).verdict == verdicts.NOT_TESTABLE
    learned = verdicts.judge_target_learned([85.0, 79.5])
    assert learned.verdict == verdicts.NOT_REPRODUCED  # every seed, not the mean


def test_paired_comparisons_each_way():
    above = verdicts.judge_above("c", "p", [_i(5), _i(3)])
    assert above.verdict == verdicts.REPRODUCED
    assert verdicts.judge_above("c", "p", [_i(5), _i(0.5)]).verdict == verdicts.PARTIAL
    assert verdicts.judge_above("c", "p", [_i(-5), _i(0.5)]).verdict == verdicts.NOT_REPRODUCED
    less = verdicts.judge_above("c", "p", [_i(-5)], lower_is_better=True)
    assert less.verdict == verdicts.REPRODUCED
    assert "[+4.0, +6.0]" in above.measured


def test_suite_mechanism_probe_alignment_each_way():
    keep = verdicts.judge_keeps_suite
    assert keep([_i(-0.5)], [_i(-40)]).verdict == verdicts.REPRODUCED
    assert keep([_i(-10)], [_i(-40)]).verdict == verdicts.PARTIAL
    assert keep([_i(-35)], [_i(-40)]).verdict == verdicts.NOT_REPRODUCED
    assert verdicts.judge_mechanism([10.0], [50.0]).verdict == verdicts.REPRODUCED
    assert verdicts.judge_mechanism([99.5], [90.0]).verdict == verdicts.NOT_REPRODUCED
    assert verdicts.judge_probe_leak(95.0, "x").verdict == verdicts.REPRODUCED
    assert verdicts.judge_probe_leak(10.0, "x").verdict == verdicts.NOT_REPRODUCED
    assert verdicts.judge_probe_leak(None, "").verdict == verdicts.NOT_TESTABLE
    assert verdicts.judge_alignment(0.97, 0.15).verdict == verdicts.REPRODUCED
    assert verdicts.judge_alignment(0.60, 0.97).verdict == verdicts.NOT_REPRODUCED  # rises
    assert verdicts.judge_drop_is_format(-40, -5, 80).verdict == verdicts.REPRODUCED
    assert verdicts.judge_drop_is_format(-40, -35, 80).verdict == verdicts.NOT_REPRODUCED


def test_pilot_rules_pick_by_the_registered_criteria():
    r = lambda acc, share: {"accuracy": acc, "label_share": share}  # noqa: E731
    s1 = {
        (10, 200): [r(60, 99), r(62, 98)],
        (10, 400): [r(70, 99), r(69, 100)],
        (50, 200): [r(71, 100), r(70, 100)],
        (100, 400): [r(90, 90), r(90, 100)],  # best accuracy, but under 95% labels once
    }
    assert pilot.choose_stage1(s1) == (10, 400)  # within 2 points of (50, 200): cheaper
    assert pilot.choose_stage1({(10, 200): [r(60, 50)], (50, 200): [r(40, 80)]}) == (50, 200)
    s2 = {(6e-3, 150): [85.0, 86.0], (3e-3, 300): [86.5, 86.0], (1e-3, 600): [89.0, 90.0]}
    assert pilot.choose_stage2(s2) == (6e-3, 150)  # ties go to fewer steps; 600 not 5 better
    s2[(1e-3, 600)] = [95.0, 96.0]
    assert pilot.choose_stage2(s2) == (1e-3, 600)


def _write_rows(tmp_path, name, task, rows):
    d = tmp_path / name
    runner.write_predictions(d, task, rows)
    return d


def test_bleu_from_sentence_statistics_equals_sacrebleu(tmp_path):
    hyps = ["the cat sat on the mat", "a dog ran home", "birds sing", "it rains a lot today"]
    refs = ["the cat sat on a mat", "the dog ran home", "birds sing loudly", "it rains today"]
    rows = [{"target": t, "prediction": p, "output": p} for t, p in zip(refs, hyps, strict=True)]
    scorer = stats.score_scorer("toy_wmt16_en_de_1shot", rows)
    idx = np.array([0, 0, 2, 3])
    want = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[refs[i] for i in idx]]).score
    assert scorer(idx) == pytest.approx(want)


def test_paired_interval_covers_a_real_difference_and_zero_for_equal_models(tmp_path):
    import promot_tasks  # noqa: F401  (fills the catalogue)

    n = 200
    rng = np.random.default_rng(0)
    truth = rng.choice(["near", "behind"], n)
    good = [t if rng.random() < 0.9 else "x" for t in truth]
    bad = [t if rng.random() < 0.6 else "x" for t in truth]

    def run(name, preds):
        rows = [
            {"target": t, "prediction": p, "output": p} for t, p in zip(truth, preds, strict=True)
        ]
        d = _write_rows(tmp_path, name, "toy_mention", rows)
        result = {"task": "toy_mention", "is_target": True}
        return stats.figure(d, {"config": {"target": "toy_mention"}, "results": [result]}, "target")

    a, b = run("a", good), run("b", bad)
    diff = stats.interval(a, b, samples=300)
    assert diff.low > 0 and 20 < diff.estimate < 40
    same = stats.interval(a, run("a2", good), samples=100)
    assert same.low == same.high == same.estimate == 0.0


@pytest.mark.slow
def test_quick_pilot_records_every_setting_and_a_choice(tmp_path):
    """The pilot end to end at 2-4 steps: every grid point on both pilot seeds, read from the
    target only, and a choice the registered rules give for those records."""
    record = pilot.run_pilot(tmp_path / "pilot", quick=True, log=lambda s: None)
    assert len(record["stage1"]) == len(pilot.PROMPT_LENGTHS) * len(pilot.STAGE1_STEPS)
    assert len(record["stage2"]) == len(pilot.STAGE2_OPTIONS)
    assert all(len(r["seeds"]) == len(record["seeds"]) for r in record["stage1"])
    s1 = {(r["prompt_length"], r["steps"]): r["seeds"] for r in record["stage1"]}
    assert (record["choice"]["prompt_length"], record["choice"]["stage1_steps"]) == (
        pilot.choose_stage1(s1)
    )
    assert (tmp_path / "pilot" / "pilot.md").read_text().startswith("Pilot seeds")
    decoded = {p.name for p in (tmp_path / "pilot").rglob("*.jsonl")}
    assert decoded <= {"metrics.jsonl"}  # no suite predictions: the pilot reads the target
