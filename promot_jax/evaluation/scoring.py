"""Post-processing, metrics, format-leak rate and Norm. Avg. on decoded text (pure functions).

Post-processors and metrics are the tasks' own (`promot_tasks.postprocessors`,
`promot_tasks.metrics`, chosen by the catalogue entry exactly as SeqIO's
`Task.postprocess_fn` / `metric_fns` are), so a score here equals what SeqIO
or T5X would report for the same outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from promot_tasks.catalogue import TaskInfo
from promot_tasks.metrics import METRICS
from promot_tasks.postprocessors import is_label, postprocess_fn_for


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def reference(example: Mapping[str, Any], info: TaskInfo) -> str | list[str]:
    """The post-processed target of one example (an answer list for TriviaQA / web_questions)."""
    fn = postprocess_fn_for(info.family)
    return fn(example.get("targets_pretokenized", ""), example=example, is_target=True)


def prediction(output: str, info: TaskInfo) -> str:
    """The post-processed model output: sentinel span, cut at the next prefix, first word
    for classification [ProMoT B.2]."""
    return postprocess_fn_for(info.family)(_text(output), is_target=False)


def score(
    info: TaskInfo, targets: Sequence[str | Sequence[str]], predictions: Sequence[str]
) -> dict[str, float]:
    """The task's metric on post-processed targets and predictions, in percent."""
    if info.metric is None:
        raise ValueError(f"task {info.name!r} has no metric")
    return METRICS[info.metric](list(targets), list(predictions))


def primary(scores: Mapping[str, float], info: TaskInfo) -> float:
    """The score the paper's tables report for the task (its catalogue metric)."""
    return float(scores[info.metric])


def leak_rate(outputs: Sequence[str], labels: Sequence[str] | None) -> float | None:
    """Percent of raw outputs that fall in the fine-tuned task's label set.

    None when the fine-tuned task has no closed label set (translation,
    summarization): its format cannot be recognised from the text alone.
    """
    if labels is None:
        return None
    if not outputs:
        return 0.0
    return 100.0 * float(np.mean([is_label(o, labels) for o in outputs]))


def norm_avg(scores: Sequence[float]) -> float:
    """The paper's "Norm. Avg.": the plain mean of the raw suite scores (0-100 each)."""
    values = [float(s) for s in scores]
    if not values:
        raise ValueError("Norm. Avg. needs at least one score")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"Norm. Avg. got non-finite scores {bad}")
    return float(np.mean(values))
