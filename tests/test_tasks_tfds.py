"""Every TFDS-backed task builds and yields examples offline under tfds.testing.mock_data.

Sources are `seqio.TfdsDataSource(..., splits=...)`: explicit splits bypass the
split listing that would need TFDS metadata. The registered tasks use mT5's
vocabulary (on GCS), so each is rebuilt here with the same source and
preprocessors but the shipped toy vocabulary.
"""

from __future__ import annotations

import pytest
import seqio
import tensorflow_datasets as tfds

import promot_tasks
from promot_tasks import paper_tasks
from promot_tasks.vocabularies import toy_output_features

MOCK_EXAMPLES = 6


def _tasks() -> dict[str, seqio.Task]:
    tasks = paper_tasks.register_paper_tasks(toy_output_features(), register=False)
    gsm8k = promot_tasks.mixtures.get_task("promot_gsm8k")
    tasks["promot_gsm8k"] = seqio.Task(
        "promot_gsm8k",
        source=gsm8k.source,
        preprocessors=gsm8k.preprocessors,
        output_features=toy_output_features(),
        postprocess_fn=gsm8k.postprocess_fn,
    )
    return tasks


TASKS = _tasks()


def test_every_registered_tfds_task_is_covered():
    registered = {
        n
        for n in seqio.TaskRegistry.names()
        if isinstance(seqio.TaskRegistry.get(n).source, seqio.TfdsDataSource)
    }
    assert registered - {n for n in registered if n.startswith("promot_multitask")} == set(TASKS)
    assert "promot_gsm8k" in registered  # GSM8K is part of it


@pytest.mark.parametrize("policy", [tfds.testing.MockPolicy.AUTO, tfds.testing.MockPolicy.USE_CODE])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_tfds_task_yields_examples_under_mock_data(name, policy):
    task = TASKS[name]
    info = promot_tasks.CATALOGUE[name]
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, policy=policy):
        # try_in_mem_cache=False: the in-memory cache decision asks TFDS for the split
        # size, which mock_data's metadata does not have.
        ds = task.get_dataset(None, split=info.eval_split, shuffle=False, try_in_mem_cache=False)
        examples = list(ds.take(2).as_numpy_iterator())
    assert examples, f"{name} gave no examples"
    for ex in examples:
        assert ex["inputs"].ndim == 1 and ex["inputs"][-1] == 1  # ends in EOS
        assert ex["targets"][-1] == 1
        text = ex["inputs_pretokenized"].decode()
        assert text.endswith("<extra_id_0>") == (
            not info.is_fine_tune_target and info.family != "math"
        )
        if info.metric == "accuracy":  # classification: a label set is required
            assert info.labels, name
        if info.labels:
            assert ex["targets_pretokenized"].decode() in info.labels
        if name.startswith("promot_xsum"):
            assert len(ex["inputs"]) <= paper_tasks.XSUM_MAX_INPUT_TOKENS
