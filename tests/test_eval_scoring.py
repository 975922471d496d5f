"""Evaluation arithmetic on hand-made outputs with known answers: post-processing, metrics,
format-leak rate, Norm. Avg., the prompt-removal rule, the suite and the paper-layout table."""

from __future__ import annotations

import numpy as np
import pytest

from promot_jax.evaluation import alignment, prompt_rule, reports, scoring, suite
from promot_tasks.catalogue import task_info


def test_classification_scores_first_word_of_the_sentinel_span():
    info = task_info("toy_cb_1shot")
    outputs = ["<extra_id_0> True. <extra_id_1> junk", "Neither Q: next", "False", "maybe"]
    preds = [scoring.prediction(o, info) for o in outputs]
    assert preds == ["True", "Neither", "False", "maybe"]
    scores = scoring.score(info, ["True", "Neither", "True", "False"], preds)
    assert scores == {"accuracy": pytest.approx(50.0)}
    assert scoring.primary(scores, info) == pytest.approx(50.0)


def test_exact_match_uses_every_alias_and_cuts_at_the_next_prefix():
    info = task_info("toy_triviaqa_1shot")
    examples = [
        {"targets_pretokenized": b"Paris", "answers": np.array([b"Paris", b"City of Light"])},
        {"targets_pretokenized": b"red", "answers": np.array([b"red"])},
    ]
    targets = [scoring.reference(ex, info) for ex in examples]
    assert targets == [["Paris", "City of Light"], ["red"]]
    preds = [scoring.prediction(o, info) for o in ("the city of light Q: who", "blue")]
    assert preds == ["the city of light", "blue"]
    assert scoring.score(info, targets, preds)["exact_match"] == pytest.approx(50.0)


def test_leak_rate_counts_outputs_that_are_exactly_a_target_label():
    outputs = ["True", "<extra_id_0> False. <extra_id_1>", "Paris", "True story", "true"]
    assert scoring.leak_rate(outputs, ("True", "False")) == pytest.approx(60.0)
    assert scoring.leak_rate(outputs, None) is None  # a translation target has no label set
    assert scoring.leak_rate([], ("True", "False")) == 0.0


def test_norm_avg_is_the_plain_mean_of_raw_scores():
    # The paper's pretrained mT5 XXL column, 1-shot [ProMoT Table 3].
    raw = [46.43, 49.69, 17.58, 9.70, 3.97, 1.82, 6.41, 4.59]
    assert scoring.norm_avg(raw) == pytest.approx(17.52, abs=0.005)
    with pytest.raises(ValueError, match="at least one"):
        scoring.norm_avg([])
    with pytest.raises(ValueError, match="non-finite"):
        scoring.norm_avg([1.0, float("nan")])


def test_prompt_rule_keeps_the_prompt_only_for_the_targets_format():
    rte, cb = task_info("toy_rte"), task_info("toy_cb_1shot")
    trivia, en_fr, en_de = (
        task_info("toy_triviaqa_1shot"),
        task_info("toy_wmt14_en_fr"),
        task_info("toy_wmt16_en_de_1shot"),
    )
    assert prompt_rule.uses_prompt(rte, rte, "same_format")
    assert not prompt_rule.uses_prompt(cb, rte, "same_format")  # entailment3: a third label
    assert not prompt_rule.uses_prompt(trivia, rte, "same_format")
    assert prompt_rule.uses_prompt(en_de, en_fr, "same_format")  # same family: translation
    assert prompt_rule.uses_prompt(trivia, rte, "always")
    assert not prompt_rule.uses_prompt(rte, rte, "never")
    with pytest.raises(ValueError, match="unknown prompt rule"):
        prompt_rule.uses_prompt(rte, rte, "sometimes")
    with pytest.raises(ValueError, match="--prompt_rule=never"):
        prompt_rule.require_prompt(
            [rte, trivia], rte, "same_format", has_prompt=False, source="ckpt"
        )
    prompt_rule.require_prompt([rte, trivia], rte, "never", has_prompt=False, source="ckpt")


def test_a_model_is_evaluated_with_its_prompt_only_where_the_rule_says():
    from promot_jax import network
    from promot_jax.evaluation.model_source import LoadedModel

    rte, trivia = task_info("toy_rte"), task_info("toy_triviaqa_1shot")
    config = network.mt5_config("tiny", prompt_length=3)
    params = {"encoder": {"prompt": {"prompt": np.ones((3, config.emb_dim))}, "layer": 1}}
    model = LoadedModel(config, params, "ckpt", "prompt.npy")
    on, on_config, on_params = model.for_task(rte, rte, "same_format")
    assert on and on_config.prompt_length == 3 and "prompt" in on_params["encoder"]
    off, off_config, off_params = model.for_task(trivia, rte, "same_format")
    assert not off and off_config.prompt_length == 0
    assert off_params["encoder"] == {"layer": 1}  # the prompt removed, the trunk kept
    assert model.for_task(trivia, rte, "always")[0]
    assert not model.for_task(rte, rte, "never")[0]
    bare = LoadedModel(network.mt5_config("tiny"), {"encoder": {"layer": 1}}, "ckpt", None)
    assert bare.for_task(rte, rte, "always")[0] is False  # nothing to attach


def test_toy_suite_is_the_papers_layout():
    s = suite.build_suite("toy_rte")
    assert s.target.task == "toy_rte" and s.entries[0].is_target
    assert s.shot_counts == [1, 4]
    assert [e.display for e in s.in_context(1)] == [
        "CB", "WiC", "TriviaQA", "web_q", "En-De", "En-Ro", "XSum", "WikiLingua",
    ]  # fmt: skip
    assert [e.task for e in s.in_context(4)][0] == "toy_cb_4shot"
    assert len(s.entries) == 17
    paper = suite.build_suite("promot_rte")
    assert paper.in_context(1)[2].task == "promot_triviaqa_1shot"


def test_suite_rejects_unknown_tasks_with_close_names_and_non_targets():
    with pytest.raises(ValueError, match=r"toy_triviqa_1shot.*closest registered: toy_triviaqa"):
        suite.build_suite("toy_rte", tasks=["toy_triviqa_1shot"])
    with pytest.raises(ValueError, match="not a fine-tuning target"):
        suite.build_suite("toy_cb_1shot")
    with pytest.raises(ValueError, match="0, 1 and 4 shots"):
        suite.build_suite("toy_rte", shots=[2])


def _result(key, shots, score, leak=None, target=False):
    return {
        "task": f"toy_{key}" + (f"_{shots}shot" if shots else ""),
        "key": key,
        "display": suite.DISPLAY_NAMES.get(key, key),
        "shots": shots,
        "metric": "accuracy",
        "is_target": target,
        "score": score,
        "leak_rate": leak,
    }


def _run(label, target_score, cb1, trivia1, cb4, trivia4):
    results = [
        _result("rte", 0, target_score, target=True),
        _result("cb", 1, cb1, leak=100.0),
        _result("triviaqa", 1, trivia1, leak=50.0),
        _result("cb", 4, cb4, leak=0.0),
        _result("triviaqa", 4, trivia4, leak=None),
    ]
    return {"config": {"label": label}, "summary": reports.summarize(results), "results": results}


def test_summary_and_markdown_table_with_seeds():
    a = _run("ft", 90.0, 10.0, 20.0, 30.0, 50.0)
    assert a["summary"]["norm_avg"] == {"1": 15.0, "4": 40.0}
    assert a["summary"]["leak_rate"] == {"1": 75.0, "4": 0.0}
    assert a["summary"]["target"]["score"] == 90.0
    b1, b2 = _run("promot", 80.0, 40.0, 20.0, 0, 0), _run("promot", 82.0, 60.0, 20.0, 0, 0)
    table = reports.markdown_table({"ft": [a], "promot": [b1, b2]})
    lines = table.splitlines()
    assert lines[0] == "| eval (1-shot (4-shot)) | ft | promot |"
    assert lines[2] == "| toy_rte (accuracy, 0-shot) | 90.00 | 81.00 ± 1.41 |"
    assert lines[3] == "| Norm. Avg. | 15.00 (40.00) | 35.00 ± 7.07 (0.00 ± 0.00) |"
    assert lines[4] == "| CB | 10.00 (30.00) | 50.00 ± 14.14 (0.00 ± 0.00) |"
    leak = reports.markdown_table({"ft": [a]}, what="leak").splitlines()
    assert leak[3] == "| CB | 100.00 (0.00) |" and leak[4] == "| TriviaQA | 50.00 (-) |"


def test_shuffled_labels_move_every_row():
    batch = {
        "encoder_input_tokens": np.arange(12).reshape(4, 3),
        "decoder_input_tokens": np.arange(4)[:, None] * np.ones((4, 2), int),
        "decoder_target_tokens": np.arange(4)[:, None] * np.ones((4, 2), int),
        "decoder_loss_weights": np.ones((4, 2)),
    }
    out = alignment.shuffle_labels(batch, seed=3)
    np.testing.assert_array_equal(out["encoder_input_tokens"], batch["encoder_input_tokens"])
    moved = out["decoder_target_tokens"][:, 0]
    assert sorted(moved) == [0, 1, 2, 3] and all(moved != np.arange(4))
    np.testing.assert_array_equal(out["decoder_input_tokens"], out["decoder_target_tokens"])
