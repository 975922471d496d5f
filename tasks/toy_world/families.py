"""Toy counterparts of every task family, as canonical-field records (see templates.py).

Each generator draws one record from a `World` with a seeded `random.Random`;
`generate_splits` fills train/validation/test with distinct records (no record
appears in two splits). Keys mirror the real tasks (`rte`, `cb`, `wmt16_en_de`,
...) plus the DMT analogs (`math`, `code`, `general`).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable

from promot_tasks.templates import MENTION
from promot_tasks.toy_world.world import (
    ADJECTIVES,
    NOUNS,
    RELATIONS,
    World,
    english_sentence,
    make_world,
    pseudo_word,
    sentence_text,
    translate,
)

Record = dict[str, object]


def _other_value(rng: random.Random, world: World, relation: str, value: str) -> str:
    return rng.choice([v for v in world.values(relation) if v != value])


# How often each kind of claim is drawn: (wording, value, label). A negated claim always
# restates the premise's value, so "not" alone marks it False; an affirmative claim is True
# exactly when its value is the premise's. The label is never a parity of the two cues (the
# first design had negated claims with another value, True: a 2.3M model never learned it).
CLAIM_KINDS = (
    ("paraphrase", "true", "True", 2),
    ("paraphrase", "other", "False", 1),
    ("negated", "true", "False", 1),
)


def _hypothesis(rng: random.Random, world: World, person: str, relation: str) -> tuple[str, str]:
    """A hypothesis about a mentioned relation and whether the facts make it True or False."""
    wording, value, answer, _ = rng.choices(CLAIM_KINDS, weights=[k[3] for k in CLAIM_KINDS])[0]
    true_value = world.facts[person][relation]
    v = true_value if value == "true" else _other_value(rng, world, relation, true_value)
    return world.statement(person, relation, v, wording), answer


def _premise(rng: random.Random, world: World, person: str, relations: list[str], joined: bool):
    if not joined:
        return " ".join(world.statement(person, r) for r in relations)
    clauses = [world.statement(person, r)[len(person) + 1 : -1] for r in relations]
    return f"{person} {' and '.join(clauses)}."


def entailment2(rng: random.Random, world: World) -> Record:
    """RTE analog: facts about one person; is a (paraphrased or negated) claim true or false?"""
    person = rng.choice(world.people)
    relations = rng.sample(list(RELATIONS), rng.randint(1, 3))
    hypothesis, answer = _hypothesis(rng, world, person, rng.choice(relations))
    return {
        "premise": _premise(rng, world, person, relations, False),
        "hypothesis": hypothesis,
        "answer": answer,
    }


# The lab's primary target: a format no pretraining task has (its labels are never an answer
# of the suite) over a relation the base's skills make learnable (CB's "Neither" is the same
# test: is the claim about a relation the premise mentions?). The claim's truth is drawn as in
# RTE and has nothing to do with the label.
MENTION_LABELS = MENTION.labels  # ("near", "behind"); near: the premise mentions the relation


def mention(rng: random.Random, world: World) -> Record:
    """Does the premise speak of the relation the claim is about ("near") or not ("behind")?"""
    person = rng.choice(world.people)
    relations = rng.sample(list(RELATIONS), rng.randint(1, 3))
    mentioned = rng.random() < 0.5
    relation = rng.choice(relations if mentioned else [r for r in RELATIONS if r not in relations])
    hypothesis, _ = _hypothesis(rng, world, person, relation)
    return {
        "premise": _premise(rng, world, person, relations, False),
        "hypothesis": hypothesis,
        "answer": MENTION_LABELS[0 if mentioned else 1],
    }


def mention_shuffled(rng: random.Random, world: World) -> Record:
    """The mention task's inputs with a label drawn independently of them (control C4:
    the format without the content)."""
    record = mention(rng, world)
    return {**record, "answer": rng.choice(MENTION_LABELS)}


def _entailment3(rng: random.Random, world: World, joined: bool) -> Record:
    person = rng.choice(world.people)
    relations = rng.sample(list(RELATIONS), rng.randint(1, 3))
    if rng.random() < 1 / 3:
        unmentioned = rng.choice([r for r in RELATIONS if r not in relations])
        hypothesis, _ = _hypothesis(rng, world, person, unmentioned)
        answer = "Neither"
    else:
        hypothesis, answer = _hypothesis(rng, world, person, rng.choice(relations))
    return {
        "premise": _premise(rng, world, person, relations, joined),
        "hypothesis": hypothesis,
        "answer": answer,
    }


def entailment3_cb(rng: random.Random, world: World) -> Record:
    """CB analog: like RTE, plus "Neither" when the claim is about an unmentioned relation."""
    return _entailment3(rng, world, joined=False)


def entailment3_snli(rng: random.Random, world: World) -> Record:
    """SNLI analog: the CB task with one-sentence premises joined by "and"."""
    return _entailment3(rng, world, joined=True)


# The two senses every WiC word has, each told by the kind of noun it appears near (like
# "bank" by a river or in town). Telling two senses apart is a comparison of two noun
# classes; the first design gave each word its own random split of nouns, which the model
# would have had to memorise word by word (it stayed at chance).
WIC_SENSES = (
    ("river", "tree", "mountain", "forest", "field", "garden", "stone", "bird"),
    ("table", "window", "door", "lamp", "book", "letter", "market", "house"),
)


@functools.lru_cache(maxsize=8)
def _wic_words(seed: int) -> tuple[str, ...]:
    """The made-up ambiguous words (24), each used in both senses of WIC_SENSES."""
    rng = random.Random(f"wic-{seed}")
    return tuple(pseudo_word(rng, 2) for _ in range(24))


_WIC_FRAMES = (
    "{p} saw the {w} near the {n}.",
    "The {w} beside the {n} belongs to {p}.",
    "{p} talked about the {w} and the {n}.",
    "Near the {n}, {p} found a {w}.",
)


def wic(rng: random.Random, world: World) -> Record:
    """WiC analog: is a made-up word used in the same sense (same noun class) in both sentences?"""
    word = rng.choice(_wic_words(world.seed))
    same = rng.random() < 0.5
    first = rng.randrange(2)
    second = first if same else 1 - first
    s1, s2 = (
        rng.choice(_WIC_FRAMES).format(
            p=rng.choice(world.people), w=word, n=rng.choice(WIC_SENSES[sense])
        )
        for sense in (first, second)
    )
    return {"sentence1": s1, "sentence2": s2, "word": word, "answer": "True" if same else "False"}


def _qa(relations: tuple[str, ...]) -> Callable[[random.Random, World], Record]:
    def generate(rng: random.Random, world: World) -> Record:
        person, relation = rng.choice(world.people), rng.choice(relations)
        answer = world.facts[person][relation]
        return {
            "question": RELATIONS[relation][1].format(p=person),
            "answer": answer,
            "answers": [answer],
        }

    generate.__doc__ = f"Closed-book QA over the fact base ({', '.join(relations)})."
    return generate


def mcqa(rng: random.Random, world: World) -> Record:
    """OpenbookQA analog: a fact question with four options; the target is the letter."""
    person, relation = rng.choice(world.people), rng.choice(list(RELATIONS))
    value = world.facts[person][relation]
    options = rng.sample([v for v in world.values(relation) if v != value], 3) + [value]
    rng.shuffle(options)
    record: Record = {"question": RELATIONS[relation][1].format(p=person)}
    for letter, option in zip("abcd", options, strict=True):
        record[f"choice_{letter}"] = option
    record["answer"] = "ABCD"[options.index(value)]
    return record


def _translation(language: str) -> Callable[[random.Random, World], Record]:
    def generate(rng: random.Random, world: World) -> Record:
        words = english_sentence(rng, world)
        return {
            "source_language": "English",
            "target_language": language,
            "sentence": sentence_text(words),
            "answer": sentence_text(translate(words, world.languages[language])),
        }

    generate.__doc__ = f"English -> toy {language}: lexicon lookup plus a word-order rule."
    return generate


_PAST = (
    "visited",
    "built",
    "found",
    "sold",
    "painted",
    "cleaned",
    "opened",
    "carried",
    "followed",
    "helped",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def news_summary(rng: random.Random, world: World) -> Record:
    """XSum analog: an article about one person among distractors; summary in one sentence."""
    person = rng.choice(world.people)
    event = f"{rng.choice(_PAST)} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    sentences = [f"On {rng.choice(_DAYS)}, {person} {event}."]
    sentences += [world.statement(person, r) for r in RELATIONS]
    for _ in range(rng.randint(2, 8)):
        other = rng.choice(world.people)
        sentences.append(world.statement(other, rng.choice(list(RELATIONS))))
    rng.shuffle(sentences)
    facts = world.facts[person]
    summary = f"{person}, a {facts['job']} from {facts['city']}, {event}."
    return {"article": " ".join(sentences), "answer": summary}


_STEP_VERBS = ("take", "find", "clean", "open", "paint", "carry", "draw", "visit")


def howto_summary(rng: random.Random, world: World) -> Record:
    """WikiLingua analog: numbered how-to steps; summary = the goal, first and last step."""
    goal = (
        f"{rng.choice(('build', 'paint', 'sell', 'find'))} a {rng.choice(ADJECTIVES)} "
        f"{rng.choice(NOUNS)}"
    )
    steps = [f"{rng.choice(_STEP_VERBS)} the {rng.choice(NOUNS)}" for _ in range(rng.randint(3, 5))]
    if rng.random() < 0.5:
        steps.insert(rng.randrange(1, len(steps)), f"ask {rng.choice(world.people)} for help")
    connectives = ["First"] + ["Next"] * (len(steps) - 2) + ["Finally"]
    body = " ".join(f"{c}, {s}." for c, s in zip(connectives, steps, strict=True))
    article = f"To {goal}, you need a plan. {body}"
    return {"article": article, "answer": f"To {goal}, {steps[0]} and {steps[-1]}."}


@dataclasses.dataclass(frozen=True)
class ToyFamily:
    """One toy task: its generator and which real task it stands for.

    `metric` and `target` describe toy-only tasks (real analogs take them from the paper's
    dataset); `in_vocabulary=False` keeps a task out of the toy vocabulary's training text,
    which was fixed before it existed (tasks/vocab/toy.model is rebuilt byte for byte).
    """

    key: str
    family: str
    generate: Callable[[random.Random, World], Record]
    analog_of: str
    metric: str | None = None
    target: bool = False  # a fine-tuning target: 0-shot and "+1-shot" variants, no sentinel
    in_vocabulary: bool = True


def _dmt_families() -> list[ToyFamily]:
    from promot_tasks.toy_world import dmt  # the DMT analogs live in their own module

    return [
        ToyFamily("math", "math", dmt.math_word_problem, "GSM8K", "math_accuracy"),
        ToyFamily("code", "code", dmt.expression_program, "Code Alpaca", "program_accuracy"),
        ToyFamily("general", "general", dmt.instruction_following, "ShareGPT", "exact_match"),
    ]


TOY_FAMILIES: dict[str, ToyFamily] = {
    f.key: f
    for f in [
        ToyFamily("rte", "entailment2", entailment2, "RTE"),
        ToyFamily("wmt14_en_fr", "translation", _translation("French"), "WMT14 En-Fr"),
        ToyFamily("snli", "entailment3", entailment3_snli, "SNLI"),
        ToyFamily("openbookqa", "mcqa", mcqa, "OpenbookQA"),
        ToyFamily("cb", "entailment3", entailment3_cb, "CB"),
        ToyFamily("wic", "wic", wic, "WiC"),
        ToyFamily("triviaqa", "qa", _qa(("city", "job")), "TriviaQA"),
        ToyFamily("web_questions", "qa", _qa(("pet", "color")), "web_questions"),
        ToyFamily("wmt16_en_de", "translation", _translation("German"), "WMT16 En-De"),
        ToyFamily("wmt16_en_ro", "translation", _translation("Romanian"), "WMT16 En-Ro"),
        ToyFamily("xsum", "summarization", news_summary, "XSum"),
        ToyFamily("wikilingua_en", "summarization", howto_summary, "WikiLingua en"),
        *_dmt_families(),
        ToyFamily("mention", "mention", mention, "none (new format)", "accuracy", True, False),
        ToyFamily(
            "mention_shuffled",
            "mention",
            mention_shuffled,
            "none (control: labels shuffled)",
            "accuracy",
            True,
            False,
        ),
    ]
}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Seed and split sizes of the toy world (defaults: 2000 / 200 / 200 per task)."""

    seed: int = 0
    n_train: int = 2000
    n_validation: int = 200
    n_test: int = 200

    def __post_init__(self):
        for split, n in self.sizes.items():
            if n < 1:
                raise ValueError(f"ToyConfig.n_{split} must be >= 1, got {n}")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}


def _record_key(record: Record) -> tuple:
    return tuple((k, str(v)) for k, v in sorted(record.items()) if k != "answers")


DEFAULT_CONFIG = ToyConfig()


@functools.lru_cache(maxsize=128)
def generate_splits(key: str, config: ToyConfig = DEFAULT_CONFIG) -> dict[str, list[Record]]:
    """Distinct records for every split of toy task `key`; same config -> same records."""
    if key not in TOY_FAMILIES:
        raise KeyError(f"unknown toy task {key!r}; known: {sorted(TOY_FAMILIES)}")
    toy = TOY_FAMILIES[key]
    world = make_world(config.seed)
    rng = random.Random(f"{key}-{config.seed}")
    seen: set[tuple] = set()
    splits: dict[str, list[Record]] = {}
    budget = 50 * sum(config.sizes.values()) + 1000
    for split, n in config.sizes.items():
        records: list[Record] = []
        while len(records) < n:
            budget -= 1
            if budget < 0:
                raise ValueError(
                    f"toy task {key!r} cannot make {sum(config.sizes.values())} distinct "
                    "records from this world; ask for fewer examples"
                )
            record = toy.generate(rng, world)
            k = _record_key(record)
            if k not in seen:
                seen.add(k)
                records.append(record)
        splits[split] = records
    return splits
