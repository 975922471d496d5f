"""k-shot demonstrations: drawn from the train split with a fixed seed, never equal to the query.

The pool is the first `POOL_SIZE` distinct rendered train examples (file order,
so it is the same on every host). For each query, `k` pool entries are chosen
by a stateless random draw seeded with (seed, hash of the query input), so the
choice depends only on the query text, not on its position, shard or epoch.
Entries whose input equals the query's are never chosen; the chosen
demonstrations appear in pool order, then the query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from promot_tasks.templates import SHOT_SEPARATOR

POOL_SIZE = 1024
DEFAULT_SEED = 42

PoolLoader = Callable[[], tf.data.Dataset]


def load_pool(dataset: tf.data.Dataset, size: int = POOL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Reads up to `size` distinct (inputs, targets) pairs of rendered examples, in order."""
    seen: set[bytes] = set()
    inputs, targets = [], []
    for ex in dataset.as_numpy_iterator():
        key = ex["inputs"]
        if key in seen:
            continue
        seen.add(key)
        inputs.append(ex["inputs"])
        targets.append(ex["targets"])
        if len(inputs) >= size:
            break
    if not inputs:
        raise ValueError("the train split gave no examples to draw demonstrations from")
    return np.array(inputs, dtype=object), np.array(targets, dtype=object)


def choose_demonstrations(
    query_input: tf.Tensor, pool_inputs: tf.Tensor, k: int, seed: int
) -> tf.Tensor:
    """Indices of up to `k` pool entries for this query, sorted, none equal to the query."""
    query_hash = tf.strings.to_hash_bucket_fast(query_input, 2**31 - 1)
    rng_seed = tf.stack([tf.constant(seed, tf.int64), query_hash])
    scores = tf.random.stateless_uniform(tf.shape(pool_inputs), seed=rng_seed)
    order = tf.argsort(scores)
    allowed = tf.gather(tf.not_equal(pool_inputs, query_input), order)
    return tf.sort(tf.boolean_mask(order, allowed)[:k])


def add_shots(
    dataset: tf.data.Dataset,
    *,
    k: int,
    pool_loader: PoolLoader,
    seed: int = DEFAULT_SEED,
    pool_size: int = POOL_SIZE,
) -> tf.data.Dataset:
    """Prefixes each example's `inputs` with k demonstrations `<input> <target>` from the pool."""
    if k <= 0:
        return dataset
    pool_inputs_np, pool_targets_np = _cached_pool(pool_loader, pool_size)
    pool_inputs = tf.constant(pool_inputs_np, tf.string)
    demo_texts = tf.constant(
        [i + b" " + t for i, t in zip(pool_inputs_np, pool_targets_np, strict=True)], tf.string
    )

    def prefix(ex):
        chosen = choose_demonstrations(ex["inputs"], pool_inputs, k, seed)
        pieces = tf.concat([tf.gather(demo_texts, chosen), tf.reshape(ex["inputs"], [1])], 0)
        ex = dict(ex)
        ex["inputs"] = tf.strings.reduce_join(pieces, separator=SHOT_SEPARATOR)
        return ex

    return dataset.map(prefix, num_parallel_calls=tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=64)
def _cached_pool(pool_loader: PoolLoader, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    # One pool per (task, size): every epoch and split of a task reuses it.
    return load_pool(pool_loader(), pool_size)
