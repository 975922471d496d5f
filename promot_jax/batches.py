"""Training and evaluation batches from the SeqIO registry, one host's share at a time.

Examples go through seqio's `EncDecFeatureConverter`, unpacked by default (a soft
prompt cannot be packed) or packed for prompt-free stages such as pretraining, are
batched with a fixed shape, and can start at any batch index, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

import jax
import numpy as np

FEATURES = (
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
)
PACKED_FEATURES = ("encoder_segment_ids", "decoder_segment_ids")


def _get_mixture_or_task(name: str):
    import seqio

    import promot_tasks  # noqa: F401  (registers every task and mixture)
    from promot_tasks.catalogue import unknown_name_error

    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
        raise unknown_name_error(name, names) from None


def _prepend_task_id(ds, name: str):
    import tensorflow as tf

    from promot_tasks.mixtures import TASK_ID

    if TASK_ID not in ds.element_spec:
        raise ValueError(
            f"{name} has no {TASK_ID!r} feature, which per-task prompts need; use a mixture "
            "made by promot_tasks.mixtures.multitask_mixture (e.g. toy_multitask_rte_en_fr)"
        )

    def prepend(ex):
        ids = tf.cast(tf.reshape(ex[TASK_ID], [1]), ex["inputs"].dtype)
        return {"inputs": tf.concat([ids, ex["inputs"]], 0), "targets": ex["targets"]}

    return ds.map(prepend)


@functools.cache
def _task_id_converter_class():
    import seqio

    class TaskIdFeatureConverter(seqio.EncDecFeatureConverter):
        """`EncDecFeatureConverter`, unpacked, with each example's task id before its inputs."""

        def __init__(self, pack: bool = False, source: str = "the dataset", **kwargs):
            if pack:
                raise ValueError(
                    "packing cannot be combined with per-task prompts (task id tokens)"
                )
            super().__init__(pack=False, **kwargs)
            self._source = source

        def _convert_features(self, ds, task_feature_lengths):
            ds = _prepend_task_id(ds, self._source)
            return super()._convert_features(ds, _with_task_id(task_feature_lengths))

        def get_model_feature_lengths(self, task_feature_lengths):
            return super().get_model_feature_lengths(_with_task_id(task_feature_lengths))

        def __call__(self, ds, task_feature_lengths):
            # seqio's evaluator measures every output feature, the task id's too.
            from promot_tasks.mixtures import TASK_ID

            lengths = {k: v for k, v in task_feature_lengths.items() if k != TASK_ID}
            return super().__call__(ds, lengths)

    return TaskIdFeatureConverter


def _with_task_id(lengths: Mapping[str, int]) -> dict[str, int]:
    return {**lengths, "inputs": lengths["inputs"] + 1}


def task_id_feature_converter(pack: bool = False, source: str = "the dataset", **kwargs):
    """seqio's encoder-decoder conversion with each example's `task_id` feature prepended
    to its encoder input, the token per-task prompts read as the prompt index
    (`network.split_task_ids`); the input length grows by one so no token is lost.

    Our runner's batches use it, and it is T5X's `feature_converter_cls` for multi-task
    ProMoT (gin/t5x/test/stage1_multitask_tiny.gin). `source` names the data in errors;
    other keywords (T5X passes `use_custom_packing_ops`) go to seqio's converter.
    """
    return _task_id_converter_class()(pack=pack, source=source, **kwargs)


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
    task_id_token: bool = False,
    pack: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of each global batch, as numpy arrays keyed by FEATURES.

    With `task_id_token` (multi-task ProMoT) each example's `task_id` feature is
    prepended to its encoder input, which the network reads as the prompt index;
    the input length grows by one so no token is lost. With `pack`, several examples
    share a row (seqio's packing) and the batch carries their segment ids.
    """
    import seqio
    import tensorflow as tf

    _get_mixture_or_task(mixture_or_task)  # clear error for unknown names
    processes = jax.process_count()
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} is not divisible by {processes} processes")
    local = batch_size // processes
    if task_id_token:
        converter = task_id_feature_converter(pack, source=repr(mixture_or_task))
    else:
        converter = seqio.EncDecFeatureConverter(pack=pack)
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
        feature_converter=converter,
        use_cached=False,
    )
    ds = ds.batch(local, drop_remainder=True)
    if start_batch:
        ds = ds.skip(start_batch)
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning thread: it only sizes buffers and parallelism (the order is fixed by
    # `deterministic`), and deleting an iterator waited up to ~40 s for it to wake up,
    # at the end of every stage (seen on TF 2.21 with jax in the same process).
    options.autotune.enabled = False
    ds = ds.with_options(options)
    keys = FEATURES + (PACKED_FEATURES if pack else ())
    for batch in ds.as_numpy_iterator():
        yield {
            k: np.asarray(batch[k], np.float32 if k == "decoder_loss_weights" else np.int32)
            for k in keys
        }
