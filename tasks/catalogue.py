"""Plain-Python catalogue of registered tasks, for evaluation code that should not touch SeqIO.

Each entry says what a task is (family, shots, label set, metric, whether it is a
fine-tuning target) so the evaluator can score it and measure format leaks
(predictions that fall in a fine-tuned task's label set, e.g. RTE's True/False).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What evaluation needs to know about one registered task or mixture."""

    name: str
    family: str
    labels: tuple[str, ...] | None
    metric: str | None
    is_fine_tune_target: bool
    shots: int = 0
    toy: bool = False
    eval_split: str = "validation"
    description: str = ""


CATALOGUE: dict[str, TaskInfo] = {}


def add(info: TaskInfo) -> TaskInfo:
    """Records a task; a second, different entry under the same name is an error."""
    old = CATALOGUE.get(info.name)
    if old is not None and old != info:
        raise ValueError(f"task {info.name!r} is already catalogued as {old}")
    CATALOGUE[info.name] = info
    return info


def closest_names(name: str, names: Iterable[str], n: int = 5) -> list[str]:
    """Registered names closest to `name` (difflib), for "did you mean" errors."""
    names = list(names)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        close = [m for m in names if name in m or m in name][:n]
    return close


def unknown_name_error(
    name: str, names: Iterable[str], what: str = "task or mixture"
) -> ValueError:
    """A ValueError naming the unknown name and the closest registered ones."""
    close = closest_names(name, names)
    hint = f"; closest registered: {', '.join(close)}" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint} (see `promot-jax tasks list`)")


def task_info(name: str) -> TaskInfo:
    """The catalogue entry of `name`; unknown names fail with the closest registered ones."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise unknown_name_error(name, CATALOGUE, "task") from None
