"""The toy corpus (the toy model's "mC4") and span corruption over it.

The corpus holds every fact of the fact base, each person's facts in FACT_PARAGRAPHS
paragraphs worded and ordered differently (a fact met in one wording is hard for a
language model to recall from a question; several wordings make closed-book QA
answerable after pretraining), monolingual text in English and the three toy languages,
news-like articles and how-to texts. It contains no task template at all, so
the held-out formats cannot leak in through it.

Span corruption is done on words (T5's objective on tokens, here on
whitespace-separated words): ~15% of the words, in spans of mean length 3, are
replaced by sentinels in the input; the target lists the dropped spans, each
after its sentinel, ending with one more sentinel.
"""

from __future__ import annotations

import functools
import random

from promot_tasks.toy_world.families import DEFAULT_CONFIG, ToyConfig, howto_summary, news_summary
from promot_tasks.toy_world.world import (
    N_PEOPLE,
    RELATIONS,
    english_sentence,
    make_world,
    sentence_text,
    translate,
)

NOISE_DENSITY = 0.15
MEAN_SPAN_LENGTH = 3.0
FACT_PARAGRAPHS = 3  # per person: statements, paraphrases, and a mix (each order shuffled)


def _monolingual(rng: random.Random, world, language: str | None) -> str:
    sentences = []
    for _ in range(rng.randint(2, 5)):
        words = english_sentence(rng, world)
        if language:
            words = translate(words, world.languages[language])
        sentences.append(sentence_text(words))
    return " ".join(sentences)


def corpus_sizes(config: ToyConfig = DEFAULT_CONFIG) -> dict[str, int]:
    """Paragraphs per split, known without generating them."""
    others = max(config.n_train * 2 - N_PEOPLE, 0)
    return {
        "train": FACT_PARAGRAPHS * N_PEOPLE + others,
        "validation": config.n_validation,
        "test": config.n_test,
    }


def _fact_paragraphs(rng: random.Random, world, person: str) -> list[str]:
    """FACT_PARAGRAPHS paragraphs, each stating all of `person`'s facts once."""
    wordings = tuple(
        {r: world.statement(person, r, wording=w) for r in RELATIONS}
        for w in ("statement", "paraphrase")
    )
    paragraphs = []
    for i in range(FACT_PARAGRAPHS):
        relations = list(RELATIONS)
        rng.shuffle(relations)
        paragraphs.append(
            " ".join((wordings[i] if i < 2 else rng.choice(wordings))[r] for r in relations)
        )
    return paragraphs


@functools.lru_cache(maxsize=16)
def corpus_paragraphs(config: ToyConfig = DEFAULT_CONFIG) -> dict[str, list[str]]:
    """Paragraphs per split. Train starts with every person's fact paragraphs."""
    world = make_world(config.seed)
    rng = random.Random(f"corpus-{config.seed}")
    kinds = ("English", "French", "German", "Romanian", "news", "howto")

    def paragraph() -> str:
        kind = rng.choice(kinds)
        if kind == "news":
            return news_summary(rng, world)["article"]
        if kind == "howto":
            return howto_summary(rng, world)["article"]
        return _monolingual(rng, world, None if kind == "English" else kind)

    facts = [text for person in world.people for text in _fact_paragraphs(rng, world, person)]
    n_train = corpus_sizes(config)["train"]
    train = facts + [paragraph() for _ in range(n_train - len(facts))]
    return {
        "train": train,
        "validation": [paragraph() for _ in range(config.n_validation)],
        "test": [paragraph() for _ in range(config.n_test)],
    }


def span_corrupt(
    text: str,
    rng: random.Random,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> tuple[str, str]:
    """(inputs, targets) of word-level span corruption, e.g.
    ("A <extra_id_0> C D <extra_id_1>", "<extra_id_0> B <extra_id_1> E F <extra_id_2>")."""
    words = text.split()
    n = len(words)
    n_noise = min(max(1, round(n * noise_density)), n - 1) if n > 1 else 0
    if n_noise == 0:
        return text, "<extra_id_0>"
    n_spans = max(1, min(round(n_noise / mean_span_length), n_noise, n - n_noise))
    # Split the noise and the kept words into n_spans non-empty runs each, interleaved
    # kept, noise, kept, noise, ... (the first kept run may be empty).
    noise_lengths = _partition(rng, n_noise, n_spans)
    kept_lengths = _partition(rng, n - n_noise + 1, n_spans + 1)
    kept_lengths[0] -= 1
    inputs, targets, i = [], [], 0
    for span in range(n_spans):
        inputs += words[i : i + kept_lengths[span]]
        i += kept_lengths[span]
        sentinel = f"<extra_id_{span}>"
        inputs.append(sentinel)
        targets += [sentinel] + words[i : i + noise_lengths[span]]
        i += noise_lengths[span]
    inputs += words[i:]
    targets.append(f"<extra_id_{n_spans}>")
    return " ".join(inputs), " ".join(targets)


def _partition(rng: random.Random, total: int, parts: int) -> list[int]:
    """`total` split into `parts` positive integers at random cut points."""
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


@functools.lru_cache(maxsize=16)
def span_corruption_splits(config: ToyConfig = DEFAULT_CONFIG) -> dict[str, list[dict[str, str]]]:
    """Span-corruption records {inputs, targets} for every split of the toy corpus."""
    out = {}
    for split, paragraphs in corpus_paragraphs(config).items():
        rng = random.Random(f"span-{config.seed}-{split}")
        out[split] = [
            dict(zip(("inputs", "targets"), span_corrupt(p, rng), strict=True)) for p in paragraphs
        ]
    return out
