"""ProMoT's evaluation rule: the soft prompt stays on only for tasks in the target's format.

"Same format" is decided from the catalogue: the same task family (template and
label set), e.g. an RTE prompt stays on for `entailment2` tasks and comes off for
CB (`entailment3`: a third label), WiC, QA, translation and summarization. The
rule is configurable so that baselines and ablations can be evaluated too:

| rule          | prompt used for                                  |
|---------------|--------------------------------------------------|
| `same_format` | tasks of the target's family (the paper's rule)  |
| `always`      | every task (the prompt-tuning baseline)          |
| `never`       | no task (pretrained / standard fine-tuning)      |
"""

from __future__ import annotations

from collections.abc import Iterable

from promot_tasks.catalogue import TaskInfo

RULES = ("same_format", "always", "never")
# Spellings of promot-jax 0.1 that the CLI still reads, with a message, until 0.2.
OLD_SPELLINGS = {"rule": "same_format"}


def check_rule(rule: str) -> str:
    if rule not in RULES:
        hint = (
            f" ({rule!r} is now spelled {OLD_SPELLINGS[rule]!r})" if rule in OLD_SPELLINGS else ""
        )
        raise ValueError(f"unknown prompt rule {rule!r}{hint}; valid: {', '.join(RULES)}")
    return rule


def same_format(task: TaskInfo, target: TaskInfo) -> bool:
    """Whether `task`'s outputs have the fine-tuned task's format (same family and label set)."""
    return task.family == target.family and task.labels == target.labels


def uses_prompt(task: TaskInfo, target: TaskInfo, rule: str) -> bool:
    """Whether the soft prompt is attached when evaluating `task` for a model tuned on `target`."""
    check_rule(rule)
    if rule == "always":
        return True
    if rule == "never":
        return False
    return same_format(task, target)


def tasks_needing_prompt(tasks: Iterable[TaskInfo], target: TaskInfo, rule: str) -> list[str]:
    """Names of the tasks that the rule evaluates with the prompt attached."""
    return [t.name for t in tasks if uses_prompt(t, target, rule)]


def require_prompt(
    tasks: Iterable[TaskInfo], target: TaskInfo, rule: str, has_prompt: bool, source: str
) -> None:
    """Fails (before any decoding) when the rule needs a prompt that the checkpoint lacks."""
    needing = tasks_needing_prompt(tasks, target, rule)
    if needing and not has_prompt:
        raise ValueError(
            f"prompt rule {rule!r} attaches the soft prompt for {', '.join(needing)}, but "
            f"{source} has no prompt (no encoder/prompt/prompt); pass --prompt_file=<stage-1 "
            "prompt.npy>, or --prompt_rule=never to evaluate without a prompt"
        )
