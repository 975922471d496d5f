"""How every task is assembled: canonical fields -> template -> shots -> sentinel -> tokens.

`register_task` is the single entry point real and toy tasks use, so both get
identical templates, demonstrations, post-processing and metrics. Only the
source and the *adapter* (raw record -> the family's canonical fields, e.g.
RTE's label 0 -> "True") differ between a TFDS task and its toy analog.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import seqio
import tensorflow as tf

from promot_tasks import catalogue, in_context
from promot_tasks.metrics import METRICS
from promot_tasks.postprocessors import postprocess_fn_for
from promot_tasks.templates import SENTINEL_SUFFIX, Template, template_for

Adapter = Callable[[tf.data.Dataset], tf.data.Dataset]
# Tokens reserved in a truncated input for the template, the demonstrations'
# targets and EOS, so that every article of a k-shot input fits the budget.
TRUNCATION_MARGIN = 64


def render(dataset: tf.data.Dataset, template: Template) -> tf.data.Dataset:
    """Canonical fields -> {"inputs", "targets"} (+ "answers" when the adapter gave them)."""

    def fn(ex):
        missing = [f for f in (*template.fields, "answer") if f not in ex]
        if missing:
            raise KeyError(f"template {template.family!r} needs canonical fields {missing}")
        pieces = []
        for literal, field in template.parts:
            if literal:
                pieces.append(tf.constant(literal))
            if field:
                pieces.append(ex[field])
        out = {"inputs": tf.strings.join(pieces), "targets": ex["answer"]}
        if "answers" in ex:
            out["answers"] = ex["answers"]
        return out

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def truncate_text_field(
    dataset: tf.data.Dataset, field: str, max_tokens: int, vocabulary: seqio.Vocabulary
) -> tf.data.Dataset:
    """Cuts a text field to its first `max_tokens` tokens (encode, slice, decode)."""

    def fn(ex):
        ids = vocabulary.encode_tf(ex[field])
        ex = dict(ex)
        ex[field] = tf.cond(
            tf.size(ids) > max_tokens,
            lambda: vocabulary.decode_tf(ids[:max_tokens]),
            lambda: ex[field],
        )
        return ex

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def trim_input_tokens(dataset: tf.data.Dataset, max_tokens: int) -> tf.data.Dataset:
    """Keeps the first `max_tokens - 1` input tokens: with EOS, at most max_tokens."""

    def fn(ex):
        ex = dict(ex)
        ex["inputs"] = ex["inputs"][: max_tokens - 1]
        return ex

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def add_sentinel(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Appends ` <extra_id_0>` to the inputs (the answer slot for a span-corruption model)."""

    def fn(ex):
        return {**ex, "inputs": tf.strings.join([ex["inputs"], SENTINEL_SUFFIX])}

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _pre_shot(
    dataset: tf.data.Dataset,
    output_features: Mapping[str, seqio.Feature],
    *,
    adapter: Adapter,
    template: Template,
    truncate: tuple[str, int] | None,
) -> tf.data.Dataset:
    """Adapter, optional field truncation, then the template: everything a demonstration shares."""
    dataset = adapter(dataset)
    if truncate:
        field, budget = truncate
        dataset = truncate_text_field(dataset, field, budget, output_features["inputs"].vocabulary)
    return render(dataset, template)


def check_sentinels(name: str, output_features: Mapping[str, seqio.Feature]) -> None:
    """A template that ends in `<extra_id_0>` needs a vocabulary with sentinel extra ids."""
    vocab = output_features["inputs"].vocabulary
    if getattr(vocab, "extra_ids", 0) < 1:
        raise ValueError(
            f"task {name!r} appends the sentinel <extra_id_0> to its inputs, but its inputs "
            f"vocabulary {vocab!r} has extra_ids={getattr(vocab, 'extra_ids', 0)}; use a "
            "vocabulary with sentinels (e.g. SentencePieceVocabulary(path, extra_ids=100)) or "
            "register the task with sentinel=False"
        )


def register_task(
    name: str,
    *,
    source: seqio.DataSource,
    adapter: Adapter,
    family: str,
    output_features: Mapping[str, seqio.Feature],
    shots: int = 0,
    sentinel: bool = False,
    fine_tune_target: bool = False,
    toy: bool = False,
    eval_split: str = "validation",
    truncate_field: str | None = None,
    max_input_tokens: int | None = None,
    metric: str | None = None,
    metric_fns: list[Callable] | None = None,
    seed: int = in_context.DEFAULT_SEED,
    description: str = "",
    register: bool = True,
) -> seqio.Task:
    """Builds (and by default registers + catalogues) one task of a family.

    `truncate_field`/`max_input_tokens` cut that field of every example (query
    and demonstrations) so the whole k-shot input stays within max_input_tokens,
    and then hard-cut the tokenised input there (XSum: article, 1024).
    `register=False` returns an unregistered Task (tests rebuild real tasks with
    the toy vocabulary that way).
    """
    template = template_for(family)
    if sentinel:
        check_sentinels(name, output_features)
    if shots < 0:
        raise ValueError(f"task {name!r}: shots must be >= 0, got {shots}")
    truncate = None
    if truncate_field is not None:
        if max_input_tokens is None:
            raise ValueError(f"task {name!r}: truncate_field needs max_input_tokens")
        budget = max_input_tokens // (shots + 1) - TRUNCATION_MARGIN
        if budget <= 0:
            raise ValueError(
                f"task {name!r}: {max_input_tokens} input tokens cannot hold {shots + 1} "
                f"truncated {truncate_field!r} fields; raise max_input_tokens or lower shots"
            )
        truncate = (truncate_field, budget)
    pre_shot = functools.partial(_pre_shot, adapter=adapter, template=template, truncate=truncate)

    preprocessors: list[Callable] = [pre_shot]
    if shots:
        features = dict(output_features)

        def pool_loader():
            return pre_shot(source.get_dataset("train", shuffle=False), features)

        preprocessors.append(
            functools.partial(in_context.add_shots, k=shots, pool_loader=pool_loader, seed=seed)
        )
    if sentinel:
        preprocessors.append(add_sentinel)
    preprocessors.append(seqio.preprocessors.tokenize)
    if max_input_tokens is not None:
        preprocessors.append(functools.partial(trim_input_tokens, max_tokens=max_input_tokens))
    preprocessors.append(seqio.preprocessors.append_eos_after_trim)

    if metric_fns is None:
        metric_fns = [METRICS[metric]] if metric else []
    kwargs = dict(
        source=source,
        preprocessors=preprocessors,
        output_features=output_features,
        postprocess_fn=postprocess_fn_for(family),
        metric_fns=metric_fns,
    )
    if not register:
        return seqio.Task(name, **kwargs)
    task = seqio.TaskRegistry.add(name, **kwargs)
    catalogue.add(
        catalogue.TaskInfo(
            name=name,
            family=family,
            labels=template.labels,
            metric=metric,
            is_fine_tune_target=fine_tune_target,
            shots=shots,
            toy=toy,
            eval_split=eval_split,
            description=description,
        )
    )
    return task
