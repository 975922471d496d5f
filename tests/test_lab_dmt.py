"""`promot-jax lab dmt`: the data it trains on, its verdicts, its refusals, and a quick run."""

from __future__ import annotations

import json

import pytest

from promot_jax import cli
from promot_jax.lab import verdicts as lab_verdicts
from promot_jax.lab.config import LabBase
from promot_jax.lab.dmt import data, pilot, plan, verdicts
from promot_jax.lab.dmt.config import CODE, DOMAINS, GENERAL, MATH, DmtSettings


def _world(s: DmtSettings):
    return (s.pools, s.eval_examples, s.difficulty, s.pool_seed)


def test_subsets_are_nested_and_never_hold_a_validation_example():
    from promot_jax.evaluation import runner

    s = DmtSettings.quick()
    for domain in DOMAINS:
        small = data.subset_task(domain, 16, *_world(s))
        large = data.subset_task(domain, 64, *_world(s))
        first = runner.load_examples(small, "train", None)
        assert len(first) == 16
        again = runner.load_examples(large, "train", None)
        assert [e["inputs_pretokenized"] for e in again[:16]] == [
            e["inputs_pretokenized"] for e in first
        ]
        held_out = {
            e["inputs_pretokenized"] for e in runner.load_examples(large, "validation", None)
        }
        assert len(held_out) == s.eval_examples
        assert not held_out & {e["inputs_pretokenized"] for e in again}


def test_the_lab_lengths_hold_every_example_of_the_full_pools():
    s = DmtSettings()
    assert data.feature_lengths(DOMAINS, *_world(s)) == plan.LENGTHS  # none truncated, none wasted


def test_pools_longer_than_the_rows_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    from promot_jax.lab.dmt import run

    monkeypatch.setitem(plan.LENGTHS, "targets", 8)
    with pytest.raises(ValueError, match="longer than the DMT lab's rows"):
        run.run_dmt_lab(tmp_path / "dmt", DmtSettings.quick(), log=lambda _: None)
    assert not (tmp_path / "dmt").exists()


def test_the_compute_rule_and_the_general_matched_strategies():
    s = DmtSettings()
    assert s.steps(8_600) == s.max_steps and s.steps(10) == s.min_steps
    assert s.steps(800) == round(s.epochs * 800 / s.batch_size)
    p = plan.build_plan(s, LabBase.read(None), "/tmp/nowhere")
    steps = {e.name: [st.steps for st in e.stages.values()] for e in p.experiments}
    g = s.steps(s.pools[GENERAL])
    assert steps["strategies/general_only/s10"] == [g]
    assert steps["strategies/sequential/s10"][-1] == g
    assert steps["strategies/mixed_sequential/s10"][-1] == g
    total = sum(s.pools.values())
    assert steps["strategies/multitask/s10"] == [round(g * total / s.pools[GENERAL])]
    assert steps["dmt/k1_256/s10"] == [
        round(
            g * (s.pools[GENERAL] + s.pools[MATH] // 256 + s.pools[CODE] // 256) / s.pools[GENERAL]
        )
    ]
    # every k's stage 2 starts from the seed's domain stage (DMT stage 1)
    k_stage = next(iter(p.experiments[-1].stages.values()))
    assert k_stage.init_checkpoint.endswith("strategies/mixed_sequential/s12/domains/final_params")
    # a k of the sweep keeps at least ~50 domain examples (13,000 / 256)
    assert sum(int(s.pools[d] / 256) for d in (MATH, CODE)) >= 49


@pytest.mark.parametrize(
    "change, says",
    [
        ({"ks": (1.5,)}, "k must be in (0, 1], got 1.5"),
        ({"ks": (0.0,)}, "k must be in (0, 1], got 0.0"),
        (
            {"fractions": (1.0, 1 / 4096)},
            "data fraction 1/4096 leaves no code example (pool of 2000)",
        ),
        ({"ks": (1 / 4096,)}, "k 1/4096 leaves no code example"),
        ({"pools": {MATH: 10, "poetry": 5, GENERAL: 10}}, "pools must give a size for each of"),
        ({"seeds": (100, 12)}, "seeds [100] chose the DMT lab's settings"),
        ({"fractions": (1 / 4, 1.0)}, "the data fractions must start at 1 and decrease"),
        ({"fractions": (1.0, 0.25, 1 / 4)}, "the data fractions repeat a value: 1, 1/4, 1/4"),
        ({"ks": (1.0, 1.0)}, "the ks repeat a value"),
        (
            {
                "ks": (1.0,),
                "fractions": (1.0, 1 / 4),
                "pools": {MATH: 1000, CODE: 200, GENERAL: 500},
            },
            "k 1/256 leaves no code",
        ),
        ({"seeds": ()}, "seeds is empty"),
    ],
)
def test_bad_settings_name_the_value(change, says):
    with pytest.raises(ValueError) as error:
        DmtSettings(**change)
    assert says in str(error.value)


def _run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, says",
    [
        (("--ks", "1,2"), "--ks values must be in (0, 1], got '2'"),
        (("--ks", "1,x"), "--ks needs comma-separated fractions such as 1,1/4,1/16, got 'x'"),
        (("--fractions", "1,1/4096"), "data fraction 1/4096 leaves no code example"),
        (("--pools", "math=10,poetry=5,general=3"), "unknown DMT domain 'poetry'"),
        (("--pools", "math=10,code=x,general=3"), "code's size must be an integer, got 'x'"),
        (("--seeds", "10,x"), "--seeds needs integers such as 10,11,12, got '10,x'"),
        (("--seeds", "101"), "seeds [101] chose the DMT lab's settings"),
        (("--max_steps", "10"), "need 1 <= min_steps <= max_steps, got 50 and 10"),
        (("--full",), "--full only apply to `promot-jax lab run`"),
        (("--lora",), "--lora only apply to `promot-jax lab pilot`"),
    ],
)
def test_bad_input_fails_before_anything_runs(capsys, tmp_path, argv, says):
    out = tmp_path / "dmt"
    try:
        code, err = _run(capsys, "lab", "dmt", *argv, "--out", str(out))
    except SystemExit as exit_:  # argparse's own errors
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    assert says in err
    assert not out.exists()


def test_the_dmt_flags_are_refused_by_the_other_lab_actions(capsys, tmp_path):
    code, err = _run(capsys, "lab", "--quick", "--ks", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--ks only apply to `promot-jax lab dmt`" in err


def _interval(estimate, low, high):
    return lab_verdicts.Interval(estimate, low, high)


def test_each_verdict_can_come_out_either_way():
    up, flat = _interval(8.0, 3.0, 13.0), _interval(1.0, -2.0, 4.0)
    assert verdicts.keeps_improving({MATH: up, CODE: up}, "1/4").verdict == verdicts.REPRODUCED
    assert verdicts.keeps_improving({MATH: up, CODE: flat}, "1/4").verdict == verdicts.PARTIAL
    assert (
        verdicts.keeps_improving({MATH: flat, CODE: flat}, "1/4").verdict == verdicts.NOT_REPRODUCED
    )
    assert verdicts.general_saturates(flat, "1/16").verdict == verdicts.REPRODUCED
    assert (
        verdicts.general_saturates(_interval(20.0, 15, 25), "1/16").verdict
        == verdicts.NOT_REPRODUCED
    )
    assert verdicts.mixing_helps({MATH: up, CODE: up}, "1/256").verdict == verdicts.REPRODUCED
    assert verdicts.mixing_helps({MATH: up, CODE: flat}, "1/256").verdict == verdicts.PARTIAL
    assert (
        verdicts.mixing_helps({MATH: flat, CODE: flat}, "1/256").verdict == verdicts.NOT_REPRODUCED
    )
    assert verdicts.general_saturates(_interval(8.0, 3, 13), "1/16").verdict == verdicts.PARTIAL
    assert verdicts.amount_not_ratio({"1/4": 7.0}, "1", "1/4").verdict == verdicts.PARTIAL
    assert verdicts.mixing_conflicts({MATH: _interval(-5.0, -9, -1)}).verdict == verdicts.REPRODUCED
    assert verdicts.mixing_conflicts({MATH: _interval(-1.0, -5, 3)}).verdict == verdicts.PARTIAL
    assert verdicts.mixing_conflicts({MATH: up}).verdict == verdicts.NOT_REPRODUCED
    assert (
        verdicts.amount_not_ratio({"1/4": 2.0, "1/16": -3.0}, "1", "1/4").verdict
        == verdicts.REPRODUCED
    )
    assert verdicts.amount_not_ratio({"1/4": 12.0}, "1", "1/4").verdict == verdicts.NOT_REPRODUCED
    trade = verdicts.multitask_tradeoff([-8.0, -6.0], {MATH: [3.0, 1.0], CODE: [0.0, 2.0]})
    assert trade.verdict == verdicts.REPRODUCED
    assert (
        verdicts.multitask_tradeoff([-8.0, 2.0], {MATH: [3.0, 1.0]}).verdict
        == verdicts.NOT_REPRODUCED
    )
    assert verdicts.sequential_forgets([-12.0, -15.0]).verdict == verdicts.REPRODUCED
    assert verdicts.sequential_forgets([-2.0, -30.0]).verdict == verdicts.PARTIAL
    kept = {MATH: ([45.0, 34.0], [50.0, 40.0]), CODE: ([0.0, 9.0], [0.0, 10.0])}
    assert verdicts.dmt_keeps_both(kept, [-1.0, 2.0]).verdict == verdicts.REPRODUCED
    mean_only = {MATH: ([45.0, 20.0], [50.0, 20.0])}  # domains kept; general -8 on one seed
    assert verdicts.dmt_keeps_both(mean_only, [-8.0, 2.0]).verdict == verdicts.PARTIAL
    assert (
        verdicts.dmt_keeps_both({MATH: ([5.0, 0.5], [50.0, 0.0])}, [-1.0, 2.0]).verdict
        == verdicts.NOT_REPRODUCED
    )
    ks = [1 / 256, 1 / 64, 1 / 16, 1 / 4, 1]
    rising, falling = [10, 20, 30, 40, 50], [50, 40, 30, 20, 10]
    assert verdicts.k_tradeoff(ks, rising, falling).verdict == verdicts.REPRODUCED
    assert verdicts.k_tradeoff(ks, rising, rising).verdict == verdicts.PARTIAL
    assert verdicts.k_tradeoff(ks, falling, [5] * 5).verdict == verdicts.NOT_REPRODUCED


def test_the_paired_interval_resamples_the_same_examples():
    same = verdicts.paired_interval([1, 0, 1, 1], [1, 0, 1, 1], 200)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    better = verdicts.paired_interval([1] * 50, [0] * 50, 200)
    assert better.estimate == 100.0 and better.low == 100.0
    with pytest.raises(ValueError, match="same examples"):
        verdicts.paired_interval([1, 0], [1], 10)


def _pilot_records(math_scores, code_scores=(80, 85), general_scores=(90, 95), setting=None):
    reg, lr = setting or pilot.settings()[0]
    records = []
    for domain, scores in ((MATH, math_scores), (CODE, code_scores), (GENERAL, general_scores)):
        for variant in pilot.variants(domain):
            records.append({"domain": domain, "variant": variant, "seed": None, "lr": lr,
                            "regularisation": reg, "scores": {"0": 0.0}})  # fmt: skip
            for seed in (100, 101):
                got = (
                    scores.get(json.dumps(variant), (0, 0)) if isinstance(scores, dict) else scores
                )
                at = {str(cap): got[0] - 10 for cap in pilot.CAPS[:-1]}
                at[str(pilot.CAPS[-1])] = got[1]
                records.append({"domain": domain, "variant": variant, "seed": seed, "lr": lr,
                                "regularisation": reg, "scores": at})  # fmt: skip
    return records


def test_the_pilot_rule_takes_the_hardest_passing_variant_at_the_budgets_cap():
    easiest, second = pilot.variants(MATH)[:2]
    math_scores = {json.dumps(easiest): (90, 90), json.dumps(second): (65, 70)}
    choice = pilot.choose(_pilot_records(math_scores))
    assert choice["difficulty"]["max_number"] == second["max_number"]
    assert choice["difficulty"]["list_words"] == pilot.VARIANTS[GENERAL][-1]["list_words"]
    assert choice["max_steps"] == pilot.CAPS[-1] and choice["weakest"] == 70  # math at the cap
    below = pilot.choose(_pilot_records({json.dumps(easiest): (40, 45)}))
    assert below["difficulty"]["max_number"] == easiest["max_number"] and below["why"]


def test_the_pilot_rule_prefers_the_setting_with_the_widest_margin_over_the_floor():
    first, second = pilot.settings()[:2]
    easiest = json.dumps(pilot.variants(MATH)[0])
    narrow = _pilot_records({easiest: (60, 61)}, setting=first)
    wide = _pilot_records({easiest: (70, 75)}, setting=second)
    failing = _pilot_records({easiest: (95, 50)}, setting=pilot.settings()[2])  # one seed fails
    choice = pilot.choose(narrow + wide + failing)
    assert (choice["regularisation"], choice["learning_rate"]) == second and choice["passes"]
    assert choice["weakest"] == 75  # math, the weakest domain there
    none_pass = pilot.choose(_pilot_records({easiest: (30, 40)}, setting=first) + failing)
    assert not none_pass["passes"] and none_pass["why"]
    assert (none_pass["regularisation"], none_pass["learning_rate"]) == pilot.settings()[2]


def test_a_quick_dmt_lab_writes_every_table_figure_and_verdict(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "dmt"
    assert cli.main(["lab", "dmt", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for heading in ("## Verdicts", "## F1 and F2", "## F3", "## T1", "## K", "## What the outputs"):
        assert heading in report
    for figure in (
        "dmt_f1_f2_scaling.png",
        "dmt_f3_ratio.png",
        "dmt_t1_strategies.png",
        "dmt_k_sweep.png",
    ):
        assert Image.open(out / figure).size[0] > 300
    results = json.loads((out / "results.json").read_text())
    s = DmtSettings.quick()
    lab_plan = plan.build_plan(s, LabBase.read(None), out)
    assert sorted(results["scores"]) == sorted(r.key for r in lab_plan.rows)
    scores = {r["label"]: r["scores"] for r in results["scores"].values() if r["seed"] in (0,)}
    assert scores["pretrained"] == dict.fromkeys(DOMAINS, 0.0)  # the base cannot do the domains
    assert len(results["verdicts"]) == 8  # every claim but the k trend (two k only)
    # training moved the models: some trained model's outputs differ from the base's
    base_out = (out / "evals" / "base" / "pretrained" / "s0" / "general.jsonl").read_text()
    trained = out / "evals" / "T1" / "multi_task" / "s0" / "general.jsonl"
    assert trained.read_text() != base_out
    # resuming a finished lab is refused without --force; with it, nothing is retrained
    assert cli.main(["lab", "dmt", "--quick", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
