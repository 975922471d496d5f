"""Metrics of the in-context suite and fine-tuning tasks, from the field's own libraries.

All follow SeqIO's `metric_fn(targets, predictions) -> {name: score}` contract
with scores in percent. A target may be a string or a list of acceptable
strings (TriviaQA aliases); BLEU and Rouge use the first reference.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

Target = str | Sequence[str]


def _references(target: Target) -> list[str]:
    return [target] if isinstance(target, str) else list(target)


def accuracy(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
    """Percent of predictions equal to (one of) the target(s), compared exactly."""
    _check_lengths(targets, predictions)
    hits = [p in _references(t) for t, p in zip(targets, predictions, strict=True)]
    return {"accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}


def normalize_answer(text: str) -> str:
    """TriviaQA/SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
    """Percent of predictions whose normalised text equals any normalised reference."""
    _check_lengths(targets, predictions)
    hits = [
        normalize_answer(p) in {normalize_answer(r) for r in _references(t)}
        for t, p in zip(targets, predictions, strict=True)
    ]
    return {"exact_match": 100.0 * float(np.mean(hits)) if hits else 0.0}


def bleu(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
    """sacrebleu corpus BLEU (default 13a tokenisation) against the first reference."""
    _check_lengths(targets, predictions)
    refs = [_references(t)[0] for t in targets]
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), [refs]).score)}


def rouge2(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
    """Mean rouge-score Rouge-2 F-measure (with stemming) against the first reference."""
    _check_lengths(targets, predictions)
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    scores = [
        scorer.score(_references(t)[0], p)["rouge2"].fmeasure
        for t, p in zip(targets, predictions, strict=True)
    ]
    return {"rouge2": 100.0 * float(np.mean(scores)) if scores else 0.0}


_FINAL_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The answer of a math solution: the number after `####` (GSM8K) or else the last number."""
    tail = text.split("####")[-1]
    numbers = _FINAL_NUMBER.findall(tail.replace(",", ""))
    return numbers[-1] if numbers else None


def math_accuracy(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
    """Percent of predictions whose final number equals the reference's (GSM8K accuracy)."""
    _check_lengths(targets, predictions)
    hits = []
    for t, p in zip(targets, predictions, strict=True):
        want = final_number(_references(t)[0])
        got = final_number(p)
        hits.append(want is not None and got is not None and float(want) == float(got))
    return {"math_accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}


def run_program(program: str) -> int | None:
    """Runs a straight-line program `a = 3 + 4 ; b = a * 2 ; return b` (the code analog's
    language: integer literals, single-letter names, + - *); None if it is malformed."""
    env: dict[str, int] = {}

    def value(token: str) -> int:
        return env[token] if token in env else int(token)

    try:
        for statement in program.split(";"):
            words = statement.split()
            if len(words) == 2 and words[0] == "return":
                return value(words[1])
            if len(words) != 5 or words[1] != "=" or words[3] not in "+-*":
                return None
            left, right = value(words[2]), value(words[4])
            ops = {"+": left + right, "-": left - right, "*": left * right}
            env[words[0]] = ops[words[3]]
    except (KeyError, ValueError):
        return None
    return None


def program_accuracy(targets: Sequence[Target], predictions: Sequence[str]) -> dict[str, float]:
    """Percent of predicted programs that run and return the reference program's value."""
    _check_lengths(targets, predictions)
    hits = []
    for t, p in zip(targets, predictions, strict=True):
        want = run_program(_references(t)[0])
        hits.append(want is not None and run_program(p) == want)
    return {"program_accuracy": 100.0 * float(np.mean(hits)) if hits else 0.0}


def _check_lengths(targets: Sequence, predictions: Sequence) -> None:
    if len(targets) != len(predictions):
        raise ValueError(
            f"metric needs one prediction per target; got {len(targets)} targets and "
            f"{len(predictions)} predictions"
        )


METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "accuracy": accuracy,
    "exact_match": exact_match,
    "bleu": bleu,
    "rouge2": rouge2,
    "math_accuracy": math_accuracy,
    "program_accuracy": program_accuracy,
}
