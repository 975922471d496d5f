"""What a toy task's output looks like: a fine-tuned target's label, the task's own format,
empty, or something else.

Format specialization shows in what the outputs *become*, not only in scores. For each toy
family, `own_format` says whether a cleaned output has the shape the task asks for (a label
of its label set; a value the fact base can answer with; a sentence of the target language's
words; a summary sentence of the family's pattern), whether or not it is right.
`output_kind` sorts one output into `OUTPUT_KINDS`.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence

from promot_tasks.postprocessors import clean_generation, is_label
from promot_tasks.templates import template_for
from promot_tasks.toy_world.families import DEFAULT_CONFIG, TOY_FAMILIES
from promot_tasks.toy_world.world import COLORS, JOBS, PETS, make_world

# In this order: an output that is exactly a label of the fine-tuned target is a "label"
# (a leak) even when that label is also an answer of the task itself (toy RTE's True/False
# are CB's and WiC's answers: the secondary row's leak measure cannot tell them apart).
OUTPUT_KINDS = ("label", "own", "empty", "other")
_TRANSLATION_LANGUAGE = {
    "wmt14_en_fr": "French",
    "wmt16_en_de": "German",
    "wmt16_en_ro": "Romanian",
}
_XSUM = re.compile(r"^[A-Z][a-z]+, an? [a-z]+ from [A-Z][a-z]+, [a-z]+ the( [a-z]+)+\.$")
_HOWTO = re.compile(r"^To [a-z]+ a [a-z]+ [a-z]+, [a-z]+ the [a-z]+ and [a-z]+ the [a-z]+\.$")


def _words(text: str) -> list[str]:
    return [w.strip(string.punctuation) for w in text.split() if w.strip(string.punctuation)]


@functools.lru_cache(maxsize=4)
def _vocabularies(seed: int) -> dict[str, frozenset[str]]:
    world = make_world(seed)
    answers = frozenset(v.lower() for v in (*world.cities, *JOBS, *PETS, *COLORS))
    people = frozenset(p.lower() for p in world.people)
    out = {"qa": answers}
    for key, language in _TRANSLATION_LANGUAGE.items():
        lexicon = world.languages[language].lexicon.values()
        # Romanian's definite article is a suffix "ul" on the noun.
        words = frozenset(lexicon) | frozenset(w + "ul" for w in lexicon) | people
        out[key] = words
    return out


def has_check(task_key: str) -> bool:
    """Whether `own_format` knows toy task `task_key`'s format (the suite, the fine-tuning
    targets; not DMT's tasks)."""
    toy = TOY_FAMILIES[task_key]
    return (
        bool(template_for(toy.family).labels)
        or toy.family in ("qa", "translation")
        or (task_key in ("xsum", "wikilingua_en"))
    )


def own_format(task_key: str, output: str, seed: int = DEFAULT_CONFIG.seed) -> bool:
    """Whether the cleaned `output` of toy task `task_key` (e.g. "wmt16_en_de", no prefix or
    shots) has the task's own format."""
    toy = TOY_FAMILIES[task_key]
    text = clean_generation(output)
    labels = template_for(toy.family).labels
    if labels:
        return text.strip(string.punctuation).strip().lower() in {x.lower() for x in labels}
    words = [w.lower() for w in _words(text)]
    if toy.family == "qa":
        return len(words) == 1 and words[0] in _vocabularies(seed)["qa"]
    if toy.family == "translation":
        known = _vocabularies(seed)[task_key]
        return len(words) >= 2 and sum(w in known for w in words) >= 0.8 * len(words)
    if task_key == "xsum":
        return bool(_XSUM.match(text))
    if task_key == "wikilingua_en":
        return bool(_HOWTO.match(text))
    raise ValueError(f"toy task {task_key!r} has no output-format check (family {toy.family!r})")


def output_kind(task_key: str, output: str, target_labels: Sequence[str] | None) -> str:
    """One of OUTPUT_KINDS for a raw decoded `output` of toy task `task_key`, where the
    fine-tuned target's labels are `target_labels` (None: a target without a label set)."""
    text = clean_generation(output)
    if not text.strip(string.punctuation + " "):
        return "empty"
    if target_labels and is_label(output, target_labels):
        return "label"
    return "own" if own_format(task_key, output) else "other"
