"""Output post-processing [ProMoT B.2]: sentinel span, cut at the next task prefix, first word.

These are the `postprocess_fn`s of every task, real and toy. They take the
decoded text (and, for targets, the example) the way SeqIO calls them.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from promot_tasks.templates import CLASSIFICATION_FAMILIES, NEXT_TASK_PREFIXES

SENTINEL_0 = "<extra_id_0>"
SENTINEL_1 = "<extra_id_1>"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def sentinel_span(text: str) -> str:
    """Keeps the text between `<extra_id_0>` and `<extra_id_1>` when `<extra_id_0>` is present."""
    if SENTINEL_0 not in text:
        return text
    text = text.split(SENTINEL_0, 1)[1]
    return text.split(SENTINEL_1, 1)[0]


def cut_at_next_prefix(text: str, prefixes: Sequence[str] = NEXT_TASK_PREFIXES) -> str:
    """Drops everything from the first next-task prefix (`Q:`, `Translate`, `Article:`) on.

    A prefix at position 0 is kept: the output may legitimately start with it,
    and cutting there would leave nothing.
    """
    cut = len(text)
    for p in prefixes:
        i = text.find(p, 1)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def first_word(text: str) -> str:
    """The first whitespace-separated word without surrounding punctuation ("True." -> "True")."""
    words = text.split()
    return words[0].strip(string.punctuation) if words else ""


def clean_generation(text: str) -> str:
    """Sentinel span, then cut at the next task prefix, then strip whitespace."""
    return cut_at_next_prefix(sentinel_span(_text(text))).strip()


def is_label(output: Any, labels: Sequence[str]) -> bool:
    """Whether a raw output, once cleaned, is exactly one of `labels` (case and surrounding
    punctuation ignored): "True." on a TriviaQA question is one, "True story" is not."""
    text = clean_generation(output).strip().strip(string.punctuation).strip().lower()
    return text in {label.lower() for label in labels}


def postprocess(
    output: Any,
    example: Mapping[str, Any] | None = None,
    is_target: bool = False,
    *,
    classification: bool = False,
) -> str | list[str]:
    """SeqIO post-processor for every family.

    Targets: the reference answers list when the example carries `answers`
    (TriviaQA aliases, web_questions answers), else the target text.
    Predictions: `clean_generation`, reduced to the first word for classification.
    """
    if is_target:
        answers = None if example is None else example.get("answers")
        if answers is not None and len(answers) > 0:
            return [_text(a) for a in answers]
        return _text(output).strip()
    text = clean_generation(output)
    return first_word(text) if classification else text


def postprocess_fn_for(family: str) -> Callable[..., Any]:
    """The post-processor a task of `family` registers."""
    return functools.partial(postprocess, classification=family in CLASSIFICATION_FAMILIES)
