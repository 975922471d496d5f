"""The in-context evaluation suite [ProMoT Table 8]: which tasks, which shots, which target.

A suite is the fine-tuned task at 0-shot plus the paper's 8 in-context tasks at
1-shot and 4-shot, or their toy-world counterparts (`toy_*`). The task list and
its order come from `promot_tasks.paper_tasks.PAPER_DATASETS` (one source of
truth); this module only names rows and checks every task before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from promot_tasks import catalogue
from promot_tasks.catalogue import TaskInfo
from promot_tasks.paper_tasks import PAPER_DATASETS, task_name

# How the paper's tables name the suite's rows [ProMoT Table 3].
DISPLAY_NAMES = {
    "rte": "RTE",
    "wmt14_en_fr": "WMT14 En-Fr",
    "snli": "SNLI",
    "openbookqa": "OpenbookQA",
    "cb": "CB",
    "wic": "WiC",
    "triviaqa": "TriviaQA",
    "web_questions": "web_q",
    "wmt16_en_de": "En-De",
    "wmt16_en_ro": "En-Ro",
    "xsum": "XSum",
    "wikilingua_en": "WikiLingua",
}
IN_CONTEXT_KEYS = tuple(d.key for d in PAPER_DATASETS if not d.fine_tune_target)
DEFAULT_SHOTS = (1, 4)
PREFIXES = ("promot", "toy")
_SHOT_SUFFIX = re.compile(r"_(\d+)shot$")


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """One task of a suite: its registry name, paper row key, shots and catalogue entry."""

    task: str
    key: str
    shots: int
    info: TaskInfo
    is_target: bool = False

    @property
    def display(self) -> str:
        return DISPLAY_NAMES.get(self.key, self.key)


@dataclasses.dataclass(frozen=True)
class Suite:
    """The fine-tuned task (`target`) and the tasks to evaluate, target first."""

    target: SuiteEntry
    entries: tuple[SuiteEntry, ...]

    @property
    def tasks(self) -> list[str]:
        return [e.task for e in self.entries]

    def in_context(self, shots: int) -> list[SuiteEntry]:
        """The non-target entries evaluated at `shots` (the rows Norm. Avg. averages)."""
        return [e for e in self.entries if not e.is_target and e.shots == shots]

    @property
    def shot_counts(self) -> list[int]:
        return sorted({e.shots for e in self.entries if not e.is_target})


def split_name(task: str) -> tuple[str, str, int]:
    """`toy_cb_4shot` -> ("toy", "cb", 4); `promot_rte` -> ("promot", "rte", 0)."""
    match = _SHOT_SUFFIX.search(task)
    shots = int(match.group(1)) if match else 0
    base = task[: match.start()] if match else task
    prefix, _, key = base.partition("_")
    if prefix not in PREFIXES or not key:
        prefix, key = "", base
    return prefix, key, shots


def entry(task: str, is_target: bool = False) -> SuiteEntry:
    """The suite entry of a registered task; unknown names fail with the closest registered."""
    import promot_tasks  # noqa: F401  (fills the catalogue)

    info = catalogue.task_info(task)
    if info.metric is None:
        raise ValueError(f"task {task!r} ({info.family}) has no metric; it cannot be evaluated")
    _, key, shots = split_name(task)
    return SuiteEntry(task, key, info.shots if info.shots else shots, info, is_target)


def build_suite(
    target: str,
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    tasks: Sequence[str] | None = None,
    world: str | None = None,
) -> Suite:
    """The paper's suite around the fine-tuned task `target` (e.g. "promot_rte", "toy_rte").

    `world` ("promot" or "toy") defaults to the target's prefix. `tasks` replaces
    the 8 in-context tasks by an explicit list of registered names. Every name is
    checked against the catalogue here, so a typo fails before any decoding.
    """
    target_entry = entry(target, is_target=True)
    if not target_entry.info.is_fine_tune_target:
        fine_tune = sorted(n for n, i in catalogue.CATALOGUE.items() if i.is_fine_tune_target)
        raise ValueError(
            f"{target!r} is not a fine-tuning target; the suite's target must be one of "
            f"{', '.join(fine_tune)}"
        )
    if tasks is None:
        world = world or split_name(target)[0] or "promot"
        if world not in PREFIXES:
            raise ValueError(f"unknown suite world {world!r}; valid: {', '.join(PREFIXES)}")
        for k in shots:
            if k not in (0, 1, 4):
                raise ValueError(f"the suite is registered at 0, 1 and 4 shots, not {k}")
        tasks = [task_name(key, k, world) for k in shots for key in IN_CONTEXT_KEYS]
    others = [entry(t) for t in tasks if t != target]
    if not others:
        raise ValueError("the suite has no task besides the target")
    return Suite(target_entry, (target_entry, *others))
