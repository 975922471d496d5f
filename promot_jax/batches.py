"""Training and evaluation batches from the SeqIO registry, one host's share at a time.

Examples go through seqio's `EncDecFeatureConverter` without packing (a soft prompt
cannot be packed), are batched with a fixed shape, and can start at any batch
index, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import numpy as np

FEATURES = (
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
)


def _get_mixture_or_task(name: str):
    import seqio

    import promot_tasks  # noqa: F401  (registers every task and mixture)
    from promot_tasks.catalogue import unknown_name_error

    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
        raise unknown_name_error(name, names) from None


def batch_iterator(
    mixture_or_task: str,
    split: str,
    feature_lengths: Mapping[str, int],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    start_batch: int = 0,
    repeat: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of each global batch, as numpy arrays keyed by FEATURES."""
    import seqio
    import tensorflow as tf

    _get_mixture_or_task(mixture_or_task)  # clear error for unknown names
    processes = jax.process_count()
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} is not divisible by {processes} processes")
    local = batch_size // processes
    ds = seqio.get_dataset(
        mixture_or_task_name=mixture_or_task,
        task_feature_lengths=dict(feature_lengths),
        dataset_split=split,
        shuffle=shuffle,
        num_epochs=None if repeat else 1,
        seed=seed,
        shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=processes)
        if processes > 1
        else None,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        use_cached=False,
    )
    ds = ds.batch(local, drop_remainder=True)
    if start_batch:
        ds = ds.skip(start_batch)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)
    for batch in ds.as_numpy_iterator():
        yield {
            k: np.asarray(batch[k], np.float32 if k == "decoder_loss_weights" else np.int32)
            for k in FEATURES
        }
