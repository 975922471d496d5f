"""`promot-jax eval` on a tiny toy-world checkpoint: JSON, markdown, PNGs, predictions;
the prompt rule applied per task; resume after an interruption; bad input fails early."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from promot_jax import checkpoints, cli, network
from promot_jax import prompt as prompt_lib
from promot_jax.evaluation import model_source, monitor, prompt_rule, runner, suite

PROMPT_LENGTH = 4
SMALL = ["--tasks", "toy_cb_1shot,toy_triviaqa_1shot,toy_triviaqa_4shot", "--max_examples", "4"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random-init toy model (no prompt) and a separate [4, 64] prompt file."""
    root = tmp_path_factory.mktemp("ckpt")
    config = network.mt5_config("tiny", vocab_size=2176, dtype="float32")
    params = jax.tree_util.tree_map(np.asarray, network.init_params(config, jax.random.key(0)))
    checkpoints.save_params(params, root / "params")
    rng = np.random.default_rng(0)
    prompt_lib.save_prompt_file(rng.uniform(-0.5, 0.5, (PROMPT_LENGTH, 64)), root / "prompt.npy")
    prompt_lib.save_prompt_file(np.zeros((PROMPT_LENGTH, 32)), root / "narrow.npy")
    return root


def _eval(ckpt, out, *extra):
    base = ["eval", "--checkpoint", str(ckpt / "params"), "--size", "tiny", "--target", "toy_rte"]
    return cli.main([*base, "--out", str(out), *extra])


def test_end_to_end_writes_json_markdown_pngs_and_predictions(ckpt, tmp_path):
    out = tmp_path / "eval"
    assert _eval(ckpt, out, "--prompt_file", str(ckpt / "prompt.npy"), *SMALL) == 0
    run = json.loads((out / "eval.json").read_text())
    by_task = {r["task"]: r for r in run["results"]}
    assert list(by_task) == ["toy_rte", "toy_cb_1shot", "toy_triviaqa_1shot", "toy_triviaqa_4shot"]
    assert by_task["toy_rte"]["prompt_used"] and by_task["toy_rte"]["leak_rate"] is None
    assert not any(by_task[t]["prompt_used"] for t in list(by_task)[1:])
    assert run["config"]["prompt_rule"] == "same_format"
    assert run["config"]["decode"]["search"] == "beam" and run["config"]["decode"]["beam_size"] == 4
    for r in run["results"]:
        assert r["examples"] == 4 and math.isfinite(r["score"]) and 0 <= r["score"] <= 100
        assert r["is_target"] or 0 <= r["leak_rate"] <= 100
    summary = run["summary"]
    assert summary["tasks_per_shots"] == {"1": 2, "4": 1}
    assert all(math.isfinite(v) for v in summary["norm_avg"].values())
    table = (out / "table.md").read_text()
    assert "| Norm. Avg. |" in table and "| TriviaQA |" in table and "Format leak" in table
    for png in ("scores.png", "norm_avg.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(x) for x in (out / "predictions/toy_triviaqa_1shot.jsonl").open()]
    assert len(rows) == 4 and rows[0]["input"].endswith("<extra_id_0>")
    assert set(rows[0]) == {"index", "input", "target", "output", "prediction"}

    # Several runs side by side; equal labels are seeds.
    cmp_dir = tmp_path / "cmp"
    assert (
        cli.main(["eval", "--report", f"a={out}", f"a={out}", f"b={out}", "--out", str(cmp_dir)])
        == 0
    )
    text = (cmp_dir / "comparison.md").read_text()
    assert "| eval (1-shot (4-shot)) | a | b |" in text and "±" in text
    assert (cmp_dir / "norm_avg.png").is_file()


class Interrupted(RuntimeError):
    pass


def test_interrupted_suite_keeps_finished_tasks_and_continues(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    real = runner.evaluate_task
    calls = []

    def flaky(entry, *args, **kwargs):
        calls.append(entry.task)
        if calls == ["toy_rte", "toy_cb_1shot"]:
            raise Interrupted  # e.g. the job was preempted during the second task
        return real(entry, *args, **kwargs)

    monkeypatch.setattr(runner, "evaluate_task", flaky)
    args = ("--prompt_rule", "never", "--decode", "greedy", *SMALL)
    with pytest.raises(Interrupted):
        _eval(ckpt, out, *args)
    done = sorted(p.name for p in (out / "tasks").iterdir())
    assert done == ["toy_rte.json"]  # finished task kept, no half-written file
    first = (out / "tasks/toy_rte.json").read_text()
    calls.clear()
    assert _eval(ckpt, out, *args) == 0
    assert calls == ["toy_cb_1shot", "toy_triviaqa_1shot", "toy_triviaqa_4shot"]
    assert (out / "tasks/toy_rte.json").read_text() == first
    # Other settings on the same directory are refused, not mixed in.
    assert _eval(ckpt, out, "--prompt_rule", "never", *SMALL) == 2


def test_old_spelling_of_the_paper_rule_is_read_with_a_message(ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ("--prompt_file", str(ckpt / "prompt.npy"), "--decode", "greedy")
    assert _eval(ckpt, out, "--prompt_rule", "rule", *args, *SMALL[:2], "--max_examples", "1") == 0
    assert "--prompt_rule=rule is now spelled --prompt_rule=same_format" in capsys.readouterr().err
    config = json.loads((out / "eval_config.json").read_text())
    assert config["prompt_rule"] == "same_format" and config["decode"]["search"] == "greedy"
    with pytest.raises(ValueError, match="'rule' is now spelled 'same_format'"):
        prompt_rule.check_rule("rule")


def test_beam_width_one_equals_greedy_on_a_task(ckpt):
    model = model_source.load_model(
        ckpt / "params", size="tiny", config_overrides=dict(vocab_size=2176, dtype="float32")
    )
    s = suite.build_suite("toy_rte", tasks=["toy_wmt16_en_de_1shot"])
    entry = s.entries[1]
    examples = runner.load_examples(entry.task, entry.info.eval_split, 4)
    outputs = {}
    for search in ("greedy", "beam"):
        settings = runner.DecodeSettings(search=search, beam_size=1, batch_size=4)
        _, rows = runner.evaluate_task(
            entry,
            s.target,
            runner.Decoder(model.config, settings),
            model.params,
            settings,
            prompt_used=False,
            examples=examples,
        )
        outputs[search] = [r["output"] for r in rows]
    assert outputs["beam"] == outputs["greedy"]


def test_eval_the_training_monitor_and_the_lab_score_alike(ckpt, tmp_path):
    """The three users of `runner.score_entries` (promot-jax eval, the training monitor,
    the lab's evaluator) give the same figures for the same model, examples and search."""
    from promot_jax.lab.evaluate import LabEvaluator

    out = tmp_path / "eval"
    args = ["--prompt_file", str(ckpt / "prompt.npy"), "--decode", "greedy"]
    assert _eval(ckpt, out, *args, "--tasks", "toy_triviaqa_1shot", "--max_examples", "4") == 0
    by_task = {r["task"]: r for r in json.loads((out / "eval.json").read_text())["results"]}
    model = model_source.load_model(
        ckpt / "params",
        prompt_file=ckpt / "prompt.npy",
        size="tiny",
        config_overrides=dict(vocab_size=2176, dtype="float32"),
    )
    probe = monitor.training_monitor(
        model.config, "toy_rte", ["toy_triviaqa_1shot"], examples=4, alignment_examples=0
    )(model.params, 0)
    assert probe["probe/target/score"] == by_task["toy_rte"]["score"]
    assert probe["probe/toy_triviaqa_1shot/leak"] == by_task["toy_triviaqa_1shot"]["leak_rate"]
    assert (
        probe["probe/toy_triviaqa_1shot/exact_match"]
        == by_task["toy_triviaqa_1shot"]["scores"]["exact_match"]
    )
    settings = runner.DecodeSettings(search="greedy", max_examples=4)
    lab, rows = LabEvaluator(settings, 4).suite_run(
        model, "toy_rte", "same_format", "x", suite_tasks=False
    )
    [target] = lab["results"]
    assert target["score"] == by_task["toy_rte"]["score"] and target["prompt_used"]
    stored = runner.read_predictions(out, "toy_rte")
    assert [r["output"] for r in rows["toy_rte"]] == [r["output"] for r in stored]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "toy_trivia_1shot"], "unknown task 'toy_trivia_1shot'; closest registered"),
        ([], "has no prompt"),  # the rule needs a prompt for toy_rte
        (["--prompt_file", "NARROW"], "emb_dim is 64"),
        (["--target", "toy_cb_1shot"], "not a fine-tuning target"),
    ],
)
def test_bad_input_fails_before_decoding(ckpt, tmp_path, capsys, monkeypatch, extra, message):
    extra = [str(ckpt / "narrow.npy") if x == "NARROW" else x for x in extra]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(runner, "evaluate_task", no_decoding)
    out = tmp_path / "eval"
    assert _eval(ckpt, out, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (out / "tasks").exists()


def test_checkpoint_without_model_config_asks_for_a_size(ckpt, tmp_path, capsys):
    argv = ["eval", "--checkpoint", str(ckpt / "params"), "--target", "toy_rte",
            "--prompt_rule", "never", "--out", str(tmp_path / "e")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--size" in capsys.readouterr().err


@pytest.mark.slow
def test_full_toy_suite_on_a_trained_stage_run_dir(tmp_path):
    """Both ProMoT stages (3 + 3 steps), then the whole 17-task toy suite from the run dir."""
    import gin
    from promot_jax import experiment, gin_config

    gin_config.parse(["test/tiny_promot_toy.gin"], [f"RUN_DIR = '{tmp_path / 'run'}'"])
    gin.get_configurable(experiment.run_experiment)()
    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(tmp_path / "run/stage2"), "--target", "toy_rte",
            "--max_examples", "8", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    run = json.loads((out / "eval.json").read_text())
    assert len(run["results"]) == 17 and run["config"]["prompt_length"] == 4
    assert all(math.isfinite(v) for v in run["summary"]["norm_avg"].values())
