"""Teacher-forced scoring: the examples decoding scores, only their answer tokens, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import promot_tasks  # noqa: F401  (registers the toy tasks)
from promot_jax.evaluation import runner
from promot_jax.evaluation.teacher_forced import TeacherForcedScorer
from promot_jax.lab import evaluate
from promot_jax.lab.config import BASE_DIR, LabBase

LENGTHS = {"inputs": 64, "targets": 56}  # room for the toy math / code examples scored here


@pytest.fixture(scope="module")
def base_and_scorer():
    base = evaluate.load_base(LabBase(BASE_DIR))
    return base, TeacherForcedScorer(base.config, LENGTHS)


def test_scores_the_examples_decoding_scores(base_and_scorer):
    _, scorer = base_and_scorer
    batch = scorer._batch("toy_math", "validation", 3)
    examples = runner.load_examples("toy_math", "validation", 3)
    for row, example in zip(batch["decoder_target_tokens"], examples, strict=True):
        target = [int(t) for t in example["targets"]]  # EOS included (the task appends it)
        assert target[-1] == 1
        assert row[: len(target)].tolist() == target
        assert not row[len(target) :].any()


def test_token_accuracy_counts_only_answer_tokens(base_and_scorer):
    base, scorer = base_and_scorer
    got = scorer.score(base.params, "toy_code", "validation", 4)
    assert 0.0 <= got["token_accuracy"] <= 100.0 and math.isfinite(got["loss"])
    # Padding is not scored: the same examples in longer rows give the same figures.
    longer = TeacherForcedScorer(base.config, {"inputs": 96, "targets": 80})
    again = longer.score(base.params, "toy_code", "validation", 4)
    assert again["token_accuracy"] == pytest.approx(got["token_accuracy"], abs=1e-4)
    assert again["loss"] == pytest.approx(got["loss"], rel=1e-4)
    # The loss is per answer token (not summed over them): with the output layer zeroed
    # every token is equally likely, so it is exactly log(vocab) whatever the answers' length.
    flat = dict(base.params)
    decoder = dict(flat["decoder"])
    decoder["logits_dense"] = {
        k: np.zeros_like(v) for k, v in flat["decoder"]["logits_dense"].items()
    }
    flat["decoder"] = decoder
    uniform = scorer.score(flat, "toy_code", "validation", 4)
    assert uniform["loss"] == pytest.approx(math.log(base.config.vocab_size), rel=1e-3)


def test_bad_input_is_named(base_and_scorer):
    base, scorer = base_and_scorer
    with pytest.raises(ValueError, match="n must be >= 1"):
        scorer.score(base.params, "toy_math", "validation", 0)
    with pytest.raises(ValueError, match="fewer than 100000 examples"):
        scorer.score(base.params, "toy_math", "validation", 100000)
    with pytest.raises(ValueError, match="'inputs' and 'targets'"):
        TeacherForcedScorer(base.config, {"inputs": 64})
