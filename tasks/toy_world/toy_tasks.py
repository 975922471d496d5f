"""Registers the toy world: one task per real task (same names with `toy_`), DMT analogs,
span corruption, and the pretraining, multi-task and DMT mixtures.

Names: `toy_rte`, `toy_rte_1shot`, `toy_cb`, `toy_cb_1shot`, `toy_cb_4shot`, ...,
`toy_math`, `toy_code`, `toy_general`, `toy_span_corruption`, and the lab's primary target
`toy_mention` (+ `_1shot`; a format of its own) with its shuffled-label control
`toy_mention_shuffled`; mixtures
`toy_pretrain`, `toy_multitask_rte_en_fr`, `toy_dmt_stage1`, `toy_dmt_stage2`.
Another seed or size: `register_toy_world(ToyConfig(seed=1), prefix="toy_s1")`.
"""

from __future__ import annotations

import functools

import seqio

from promot_tasks import catalogue, mixtures, pipeline, sources
from promot_tasks.paper_tasks import (
    FINE_TUNE_SHOTS,
    IN_CONTEXT_SHOTS,
    PAPER_DATASETS,
    XSUM_MAX_INPUT_TOKENS,
    task_name,
)
from promot_tasks.toy_world.corpus import corpus_sizes, span_corruption_splits
from promot_tasks.toy_world.families import DEFAULT_CONFIG, TOY_FAMILIES, ToyConfig, generate_splits
from promot_tasks.vocabularies import toy_output_features

# The formats held out for fine-tuning: never in the pretraining mixture.
HELD_OUT_KEYS = ("rte", "wmt14_en_fr")
_PAPER = {d.key: d for d in PAPER_DATASETS}
# Share of span corruption in the pretraining mixture; the rest is in-context data.
SPAN_CORRUPTION_SHARE = 0.5


def _identity(dataset):
    return dataset


def _is_target(key: str) -> bool:
    return _PAPER[key].fine_tune_target if key in _PAPER else TOY_FAMILIES[key].target


def _shots_for(key: str) -> tuple[int, ...]:
    if _is_target(key):
        return FINE_TUNE_SHOTS
    return IN_CONTEXT_SHOTS if key in _PAPER else (0,)


def in_context_keys() -> list[str]:
    """Toy analogs of the 8-task in-context suite."""
    return [k for k in TOY_FAMILIES if k in _PAPER and not _PAPER[k].fine_tune_target]


def register_toy_tasks(config: ToyConfig, prefix: str, output_features) -> list[str]:
    """Every toy family in its 0/1(/4)-shot variants, plus span corruption."""
    names = []
    for key, toy in TOY_FAMILIES.items():
        paper = _PAPER.get(key)
        source = sources.records_source(
            functools.partial(generate_splits, key, config), config.sizes
        )
        for shots in _shots_for(key):
            name = task_name(key, shots, prefix)
            pipeline.register_task(
                name,
                source=source,
                adapter=_identity,
                family=toy.family,
                output_features=output_features,
                shots=shots,
                sentinel=paper is not None and not paper.fine_tune_target,
                fine_tune_target=_is_target(key),
                toy=True,
                truncate_field="article" if key == "xsum" else None,
                max_input_tokens=XSUM_MAX_INPUT_TOKENS if key == "xsum" else None,
                metric=paper.metric if paper else toy.metric,
                description=f"toy analog of {toy.analog_of} (seed {config.seed})",
            )
            names.append(name)

    name = f"{prefix}_span_corruption"
    pipeline.check_sentinels(name, output_features)
    seqio.TaskRegistry.add(
        name,
        source=sources.records_source(
            functools.partial(span_corruption_splits, config),
            corpus_sizes(config),
        ),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=output_features,
    )
    description = f"word-level span corruption (seed {config.seed})"
    catalogue.add(
        catalogue.TaskInfo(
            name, "span_corruption", None, None, False, toy=True, description=description
        )
    )
    return names + [name]


def pretraining_members(
    prefix: str,
    span_corruption_share: float = SPAN_CORRUPTION_SHARE,
    shots: tuple[int, ...] | None = None,
    classification_rate: float = 1.0,
) -> list[tuple[str, float]]:
    """(task, rate) of the pretraining mixture: span corruption + in-context data whose
    formats are not held out (every shot variant of the in-context suite's analogs, or
    those with `shots`), the in-context variants sharing `1 - span_corruption_share`.
    Variants of tasks with a label set (classification) are drawn `classification_rate`
    times as often as the others, within that share."""
    if not 0 < span_corruption_share < 1:
        raise ValueError(f"span_corruption_share must be in (0, 1), got {span_corruption_share}")
    if not classification_rate > 0:
        raise ValueError(f"classification_rate must be > 0, got {classification_rate}")
    variants = [
        task_name(k, s, prefix)
        for k in in_context_keys()
        for s in _shots_for(k)
        if shots is None or s in shots
    ]
    weights = [classification_rate if catalogue.task_info(v).labels else 1.0 for v in variants]
    share = (1 - span_corruption_share) / sum(weights)
    members = [(f"{prefix}_span_corruption", span_corruption_share)]
    return members + [(v, w * share) for v, w in zip(variants, weights, strict=True)]


def register_toy_world(
    config: ToyConfig = DEFAULT_CONFIG, prefix: str = "toy", output_features=None
) -> list[str]:
    """Registers all toy tasks and mixtures under `prefix`; returns their names."""
    features = output_features or toy_output_features()
    names = register_toy_tasks(config, prefix, features)
    seqio.MixtureRegistry.add(f"{prefix}_pretrain", pretraining_members(prefix))
    multitask = mixtures.multitask_mixture(
        f"{prefix}_multitask_rte_en_fr", [f"{prefix}_rte", f"{prefix}_wmt14_en_fr"]
    )
    stage1, stage2 = mixtures.dmt_mixtures(
        [f"{prefix}_math", f"{prefix}_code"], [f"{prefix}_general"], name=f"{prefix}_dmt"
    )
    return names + [f"{prefix}_pretrain", multitask.name, stage1.name, stage2.name]
