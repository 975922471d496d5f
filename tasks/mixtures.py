"""Mixtures: multi-task ProMoT (examples carry a task id) and DMT's two stages.

- `multitask_mixture`: each task gets a `task_id` feature (its index in the
  list) so multi-task ProMoT can give each task its own soft prompt;
  `tasks_by_id` gives that list back (row i of a per-task prompt is task i's).
- `dmt_mixtures`: stage 1 = all domain data (rates proportional to example
  counts); stage 2 = general data + k x domain data, i.e. rate(domain task) =
  k * its example count, rate(general task) = its example count [DMT].
  Counts are read lazily (when the mixture is first sampled).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import seqio
import tensorflow as tf

from promot_tasks import catalogue

TASK_ID = "task_id"
DMT_DEFAULT_K = 1 / 256
# The tasks of every `multitask_mixture`, in task-id order.
_TASKS_BY_ID: dict[str, tuple[str, ...]] = {}


def _registered_names() -> list[str]:
    return list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())


def get_task(name: str) -> seqio.Task:
    """The registered task `name`; unknown names fail with the closest registered names."""
    if name not in seqio.TaskRegistry.names():
        raise catalogue.unknown_name_error(name, _registered_names(), "task")
    return seqio.TaskRegistry.get(name)


def get_task_or_mixture(name: str) -> seqio.Task | seqio.Mixture:
    """A registered task or mixture; unknown names fail with the closest registered names."""
    if name in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(name)
    return get_task(name)


def _add_task_id(dataset: tf.data.Dataset, task_id: int) -> tf.data.Dataset:
    return dataset.map(lambda ex: {**ex, TASK_ID: tf.constant([task_id], tf.int32)})


def with_task_id(task_name: str, task_id: int, new_name: str) -> seqio.Task:
    """Registers a copy of `task_name` whose examples carry `task_id` (an output feature)."""
    task = get_task(task_name)
    features = dict(task.output_features)
    features[TASK_ID] = seqio.Feature(
        vocabulary=seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=tf.int32, rank=1
    )
    new = seqio.TaskRegistry.add(
        new_name,
        source=task.source,
        preprocessors=[*task.preprocessors, functools.partial(_add_task_id, task_id=task_id)],
        output_features=features,
        postprocess_fn=task.postprocess_fn,
        metric_fns=list(task.predict_metric_fns),
    )
    info = catalogue.CATALOGUE.get(task_name)
    if info is not None:
        catalogue.add(dataclasses.replace(info, name=new_name))
    return new


def multitask_mixture(
    name: str, task_names: Sequence[str], rates: Sequence[float] | None = None
) -> seqio.Mixture:
    """Registers `name` mixing the tasks (equal rates by default), each with its task id.

    Task i becomes `<name>_<task>` with `task_id` = i. Equal rates because the
    paper mixes RTE (2.5K) with En-Fr (40M), where proportional rates starve RTE.
    """
    rates = [1.0] * len(task_names) if rates is None else list(rates)
    if len(rates) != len(task_names):
        raise ValueError(f"mixture {name!r}: {len(task_names)} tasks but {len(rates)} rates")
    members = []
    for i, (task_name, rate) in enumerate(zip(task_names, rates, strict=True)):
        member = with_task_id(task_name, i, f"{name}_{task_name}")
        members.append((member.name, rate))
    mixture = seqio.MixtureRegistry.add(name, members)
    _TASKS_BY_ID[name] = tuple(task_names)
    return mixture


def tasks_by_id(name: str) -> tuple[str, ...]:
    """The tasks of the `multitask_mixture` called `name`, task id 0 first; () for any
    other task or mixture (its examples carry no task id)."""
    return _TASKS_BY_ID.get(name, ())


def example_count(task: seqio.Task, split: str = "train") -> int:
    """Number of `split` examples of a task's source; fails when the source cannot say."""
    n = task.num_input_examples(split)
    if not n:
        raise ValueError(
            f"task {task.name!r} does not know how many {split!r} examples it has, so DMT "
            "cannot weight it by size; give its source num_input_examples (or TFDS metadata)"
        )
    return int(n)


def _scaled_count(task: seqio.Task, scale: float, split: str) -> float:
    return scale * example_count(task, split)


def check_k(k: float) -> float:
    """DMT's domain fraction must lie in (0, 1]."""
    if not 0 < k <= 1:
        raise ValueError(
            f"DMT k must be in (0, 1] (the fraction of domain data kept in stage 2; the "
            f"paper's default is 1/256), got {k}"
        )
    return float(k)


def dmt_mixtures(
    domain_tasks: Sequence[str],
    general_tasks: Sequence[str],
    k: float = DMT_DEFAULT_K,
    name: str = "dmt",
    split: str = "train",
) -> tuple[seqio.Mixture, seqio.Mixture]:
    """Registers `<name>_stage1` (domain) and `<name>_stage2` (general + k x domain)."""
    k = check_k(k)
    if not domain_tasks or not general_tasks:
        raise ValueError("DMT needs at least one domain task and one general task")
    for task_name in [*domain_tasks, *general_tasks]:
        get_task(task_name)
    overlap = set(domain_tasks) & set(general_tasks)
    if overlap:
        raise ValueError(f"tasks {sorted(overlap)} are listed as both domain and general")
    by_count = functools.partial(_scaled_count, scale=1.0, split=split)
    by_k_count = functools.partial(_scaled_count, scale=k, split=split)
    stage1 = seqio.MixtureRegistry.add(f"{name}_stage1", [(t, by_count) for t in domain_tasks])
    stage2 = seqio.MixtureRegistry.add(
        f"{name}_stage2",
        [(t, by_count) for t in general_tasks] + [(t, by_k_count) for t in domain_tasks],
    )
    return stage1, stage2
