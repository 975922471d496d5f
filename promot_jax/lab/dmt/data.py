"""The DMT lab's data: one fixed pool per domain and its nested subsets, as SeqIO tasks.

A pool is drawn once from the toy generators (`promot_tasks.toy_world.dmt`) at the lab's
difficulty, all distinct by input, shuffled once (seeded), then split: the first
`eval_examples` are validation, the rest the training pool. A data fraction f of a pool
is its first f x N training examples, so f = 1/16 is inside f = 1/4 (the paper subsamples
the same way). A run's data is a SeqIO mixture of such subsets with rates equal to their
sizes: batches draw uniformly from the union.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Mapping

from promot_jax.lab.dmt.config import CODE, DOMAINS, GENERAL, MATH, check_domain
from promot_tasks.toy_world.dmt import (
    Difficulty,
    expression_program,
    instruction_following,
    math_word_problem,
)

_GENERATORS = {MATH: math_word_problem, CODE: expression_program, GENERAL: instruction_following}
_FAMILIES = {
    MATH: ("math", "math_accuracy"),
    CODE: ("code", "program_accuracy"),
    GENERAL: ("general", "exact_match"),
}
PREFIX = "lab_dmt"


def world_tag(difficulty: Difficulty, pool_seed: int, eval_examples: int) -> str:
    """A short name for (difficulty, pool seed, validation size): task names of different
    worlds (and of different train / validation splits) never meet."""
    text = repr((difficulty, pool_seed, eval_examples))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=32)
def pool(domain: str, size: int, eval_examples: int, difficulty: Difficulty, pool_seed: int):
    """(validation, train) records of one domain: distinct inputs, validation drawn first."""
    from promot_tasks.toy_world.world import make_world

    check_domain(domain)
    world = make_world(pool_seed)
    rng = random.Random(f"dmt-lab-{domain}-{pool_seed}")
    generate = _GENERATORS[domain]
    seen: set[str] = set()
    records: list[dict] = []
    budget = 50 * (size + eval_examples) + 1000
    while len(records) < size + eval_examples:
        budget -= 1
        if budget < 0:
            raise ValueError(
                f"the {domain} generator at {difficulty} cannot make {size + eval_examples} "
                "distinct examples; ask for a smaller pool or a harder difficulty"
            )
        record = generate(rng, world, difficulty)
        key = next(iter(record.values()))  # the input field (question / instruction / dialogue)
        if key not in seen:
            seen.add(key)
            records.append(record)
    # Distinct draws run out first for the commonest (shortest) examples, so drawing order
    # is not exchangeable: at code depth 1-2 the first 200 held 55% one-operation programs,
    # the rest 7%. One seeded shuffle makes validation and every prefix the same mix.
    random.Random(f"dmt-lab-order-{domain}-{pool_seed}").shuffle(records)
    return tuple(records[:eval_examples]), tuple(records[eval_examples:])


def eval_task(
    domain: str, pools: Mapping[str, int], eval_examples: int, difficulty, pool_seed
) -> str:
    """The registered task of a domain's validation examples (its train split: the pool)."""
    return subset_task(domain, pools[domain], pools, eval_examples, difficulty, pool_seed)


def subset_task(
    domain: str, n: int, pools: Mapping[str, int], eval_examples: int, difficulty, pool_seed: int
) -> str:
    """Registers (once) and returns the task whose train split is the pool's first `n`."""
    import seqio

    from promot_tasks import pipeline, sources
    from promot_tasks.vocabularies import toy_output_features

    size = pools[domain]
    if not 1 <= n <= size:
        raise ValueError(f"a {domain} subset must hold 1..{size} examples, got {n}")
    name = f"{PREFIX}_{world_tag(difficulty, pool_seed, eval_examples)}_{domain}_{n}"
    if name in seqio.TaskRegistry.names():
        return name

    def load():
        validation, train = pool(domain, size, eval_examples, difficulty, pool_seed)
        return {"train": list(train[:n]), "validation": list(validation)}

    family, metric = _FAMILIES[domain]
    pipeline.register_task(
        name,
        source=sources.records_source(load, {"train": n, "validation": eval_examples}),
        adapter=lambda ds: ds,
        family=family,
        output_features=toy_output_features(),
        toy=True,
        metric=metric,
        description=f"DMT lab {domain}: first {n} of a {size}-example pool ({difficulty})",
    )
    return name


def mixture(
    amounts: Mapping[str, int],
    pools: Mapping[str, int],
    eval_examples: int,
    difficulty,
    pool_seed: int,
) -> str:
    """Registers (once) the union of subsets {domain: n}, sampled uniformly by example."""
    import seqio

    amounts = {d: n for d, n in amounts.items() if n}
    if not amounts:
        raise ValueError("a DMT lab run needs data from at least one domain")
    tasks = {
        d: subset_task(d, n, pools, eval_examples, difficulty, pool_seed)
        for d, n in amounts.items()
    }
    if len(tasks) == 1:
        return next(iter(tasks.values()))
    tag = "_".join(f"{d}{amounts[d]}" for d in DOMAINS if d in amounts)
    name = f"{PREFIX}_{world_tag(difficulty, pool_seed, eval_examples)}_mix_{tag}"
    if name not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(
            name, [(tasks[d], float(amounts[d])) for d in DOMAINS if d in tasks]
        )
    return name


def feature_lengths(
    domains, pools: Mapping[str, int], eval_examples: int, difficulty, pool_seed: int
) -> dict[str, int]:
    """The longest tokenized input and target (EOS included) over the domains' pools."""
    from promot_jax.evaluation import runner

    lengths = {"inputs": 0, "targets": 0}
    for domain in domains:
        task = eval_task(domain, pools, eval_examples, difficulty, pool_seed)
        for split in ("train", "validation"):
            for ex in runner.load_examples(task, split, None):
                for key in lengths:
                    lengths[key] = max(lengths[key], len(ex[key]))  # EOS included
    return lengths
