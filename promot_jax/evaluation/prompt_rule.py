"""ProMoT's evaluation rule: the soft prompt stays on only for tasks in the target's format.

What stage 1 trained follows the rule as one: a soft prompt, LoRA adapters (`lora_stage1`,
`promot_lora_stage2`), or both, are attached or removed together, and each task's result
records which were on (`prompt_used`, `adapters_used`).

"Same format" is decided from the catalogue: the same task family (template and
label set), e.g. an RTE prompt stays on for `entailment2` tasks and comes off for
CB (`entailment3`: a third label), WiC, QA, translation and summarization. The
rule is configurable so that baselines and ablations can be evaluated too:

| rule          | prompt used for                                  |
|---------------|--------------------------------------------------|
| `same_format` | tasks of the target's family (the paper's rule)  |
| `always`      | every task (the prompt-tuning baseline)          |
| `never`       | no task (pretrained / standard fine-tuning)      |

A per-task prompt (multi-task ProMoT, `[T, P, d]`) holds one fine-tuned task's prompt
per row, so the rule applies to each row's task: a task is evaluated with the row of
the prompt task it is, else of the one whose format it has (`prompt_row`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
    """Fails (before any decoding) when the rule attaches stage 1's part for some task but
    the checkpoint has none: `has_prompt` says whether it has a prompt or LoRA adapters."""
    needing = tasks_needing_prompt(tasks, target, rule)
    if needing and not has_prompt:
        raise ValueError(
            f"prompt rule {rule!r} attaches the soft prompt for {', '.join(needing)}, but "
            f"{source} has no prompt (no encoder/prompt/prompt) and no LoRA adapters; pass "
            "--prompt_file=<stage-1 prompt.npy>, or --prompt_rule=never to evaluate without "
            "a prompt"
        )


def prompt_row(
    task: TaskInfo, target: TaskInfo, rule: str, prompt_tasks: Sequence[TaskInfo], source: str
) -> int | None:
    """The row of a per-task prompt that `task` is evaluated with; None: the prompt comes off.

    Row i belongs to `prompt_tasks[i]`. `task` takes the row of the prompt task of its
    name, else of the one in its format (`same_format`), unless `rule` is `never`. A task
    with no such row keeps no prompt, and fails when `rule` would attach one for it
    (`uses_prompt` with the suite's `target`): no row is picked by default.
    """
    check_rule(rule)
    if rule == "never":
        return None
    rows = [i for i, t in enumerate(prompt_tasks) if t.name == task.name]
    rows = rows or [i for i, t in enumerate(prompt_tasks) if same_format(task, t)]
    names = ", ".join(t.name for t in prompt_tasks)
    if len(rows) > 1:
        raise ValueError(
            f"{task.name} has the format of several rows of the per-task prompt of {source} "
            f"({', '.join(prompt_tasks[i].name for i in rows)}; rows are {names}), so which "
            "one it takes is unclear; evaluate it with --prompt_rule=never or a [P, d] "
            "--prompt_file"
        )
    if rows:
        return rows[0]
    if uses_prompt(task, target, rule):
        raise ValueError(
            f"prompt rule {rule!r} attaches the soft prompt for {task.name}, but the per-task "
            f"prompt of {source} has rows only for {names} (task ids 0-{len(prompt_tasks) - 1}) "
            f"and none is {task.name} or in its format; use --prompt_rule=same_format or never, or "
            "a [P, d] --prompt_file"
        )
    return None
