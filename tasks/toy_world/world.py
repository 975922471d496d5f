"""The toy world: people, places and facts, plus three generated languages, all from one seed.

Everything downstream (task families, the pretraining corpus, the vocabulary)
reads a `World`, so one seed fixes the whole offline universe. Words are ASCII
so the small SentencePiece model covers them fully.
"""

from __future__ import annotations

import dataclasses
import functools
import random

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
JOBS = (
    "baker",
    "farmer",
    "doctor",
    "teacher",
    "painter",
    "sailor",
    "singer",
    "tailor",
    "miner",
    "judge",
    "pilot",
    "nurse",
    "cook",
    "poet",
    "hunter",
    "weaver",
)
PETS = (
    "cat",
    "dog",
    "horse",
    "goat",
    "parrot",
    "rabbit",
    "fox",
    "owl",
    "turtle",
    "duck",
    "mouse",
    "sheep",
)
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "grey")
# Relations of the fact base: (key, statement, question, negated statement).
RELATIONS = {
    "city": ("{p} lives in {v}.", "Where does {p} live?", "{p} does not live in {v}."),
    "job": ("{p} works as a {v}.", "What is the job of {p}?", "{p} is not a {v}."),
    "pet": ("{p} owns a {v}.", "Which animal does {p} own?", "{p} does not own a {v}."),
    "color": (
        "{p} likes the color {v}.",
        "Which color does {p} like?",
        "{p} does not like the color {v}.",
    ),
}
# A second wording of each statement, so hypotheses are not copies of premises.
PARAPHRASES = {
    "city": "{p} is a resident of {v}.",
    "job": "{p} is a {v}.",
    "pet": "{p} has a {v} as a pet.",
    "color": "The favourite color of {p} is {v}.",
}
WORDINGS = ("statement", "paraphrase", "negated")

# The English side of the translation families: a closed lexicon and a grammar.
NOUNS = (
    "cat",
    "dog",
    "house",
    "river",
    "tree",
    "boat",
    "bird",
    "road",
    "child",
    "market",
    "bridge",
    "garden",
    "window",
    "table",
    "letter",
    "horse",
    "mountain",
    "forest",
    "village",
    "king",
    "farmer",
    "stone",
    "door",
    "apple",
    "book",
    "song",
    "lamp",
    "field",
)
ADJECTIVES = (
    "red",
    "small",
    "big",
    "old",
    "young",
    "green",
    "quiet",
    "happy",
    "dark",
    "bright",
    "cold",
    "warm",
    "tall",
    "new",
    "strange",
    "blue",
)
VERBS = (
    "sees",
    "likes",
    "finds",
    "builds",
    "carries",
    "paints",
    "follows",
    "opens",
    "watches",
    "helps",
    "sells",
    "visits",
    "cleans",
    "draws",
    "hears",
    "takes",
)
PREPOSITIONS = ("near", "behind", "under", "above", "beside", "inside")
DETERMINERS = ("the", "a")
ENGLISH_WORDS = NOUNS + ADJECTIVES + VERBS + PREPOSITIONS + DETERMINERS
N_PEOPLE = 1500


@dataclasses.dataclass(frozen=True)
class ToyLanguage:
    """A generated language: a word-for-word lexicon of English plus a word-order rule.

    `order`: "adjective_after_noun" (French analog), "verb_final" (German analog),
    "suffixed_article" (Romanian analog: the definite article becomes a noun suffix).
    """

    name: str
    lexicon: dict[str, str]
    order: str


@dataclasses.dataclass(frozen=True)
class World:
    """People with one value per relation, place names, and the three toy languages."""

    seed: int
    people: tuple[str, ...]
    cities: tuple[str, ...]
    facts: dict[str, dict[str, str]]  # person -> relation -> value
    languages: dict[str, ToyLanguage]  # "French", "German", "Romanian"

    def statement(
        self, person: str, relation: str, value: str | None = None, wording: str = "statement"
    ) -> str:
        """The sentence `person relation value` (the true value by default) in one of
        WORDINGS: the fact's statement, its paraphrase, or its negation."""
        if wording not in WORDINGS:
            raise ValueError(f"unknown wording {wording!r}; valid: {', '.join(WORDINGS)}")
        value = self.facts[person][relation] if value is None else value
        if wording == "paraphrase":
            template = PARAPHRASES[relation]
        else:
            template = RELATIONS[relation][0 if wording == "statement" else 2]
        return template.format(p=person, v=value)

    def values(self, relation: str) -> tuple[str, ...]:
        """All values a relation can take in this world."""
        return {"city": self.cities, "job": JOBS, "pet": PETS, "color": COLORS}[relation]


def pseudo_word(
    rng: random.Random, syllables: int, alphabet: tuple[str, str] = (CONSONANTS, VOWELS)
) -> str:
    """A pronounceable made-up word of CV syllables."""
    cons, vows = alphabet
    return "".join(rng.choice(cons) + rng.choice(vows) for _ in range(syllables))


def _unique_words(rng: random.Random, n: int, lo: int, hi: int, alphabet, taken: set) -> list:
    words = []
    while len(words) < n:
        w = pseudo_word(rng, rng.randint(lo, hi), alphabet)
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


_LANGUAGE_SPECS = {
    # name: (consonants, vowels, word-order rule)
    "French": ("lmnrstvcj", "aeiouy", "adjective_after_noun"),
    "German": ("bdfghkmnrstwz", "aeiou", "verb_final"),
    "Romanian": ("bcdfglmnprstv", "aeiou", "suffixed_article"),
}


@functools.lru_cache(maxsize=8)
def make_world(seed: int = 0, n_people: int = N_PEOPLE, n_cities: int = 40) -> World:
    """Builds the world of `seed`; the same seed always gives the same world."""
    rng = random.Random(f"world-{seed}")
    taken: set[str] = set(ENGLISH_WORDS)
    people = tuple(
        w.capitalize() for w in _unique_words(rng, n_people, 2, 3, (CONSONANTS, VOWELS), taken)
    )
    cities = tuple(
        w.capitalize()
        for w in _unique_words(rng, n_cities, 2, 3, ("bdgklmnprstvz", "aeiou"), taken)
    )
    facts = {
        p: {
            "city": rng.choice(cities),
            "job": rng.choice(JOBS),
            "pet": rng.choice(PETS),
            "color": rng.choice(COLORS),
        }
        for p in people
    }
    languages = {}
    for name, (cons, vows, order) in _LANGUAGE_SPECS.items():
        words = _unique_words(rng, len(ENGLISH_WORDS), 1, 3, (cons, vows), taken)
        languages[name] = ToyLanguage(name, dict(zip(ENGLISH_WORDS, words, strict=True)), order)
    return World(seed, people, cities, facts, languages)


def english_sentence(rng: random.Random, world: World) -> list[str]:
    """A grammatical English sentence as words: `NP Verb NP [Prep NP]`."""

    def noun_phrase(allow_name: bool) -> list[str]:
        if allow_name and rng.random() < 0.3:
            return [rng.choice(world.people)]
        phrase = [rng.choice(DETERMINERS)]
        if rng.random() < 0.6:
            phrase.append(rng.choice(ADJECTIVES))
        return phrase + [rng.choice(NOUNS)]

    words = noun_phrase(True) + [rng.choice(VERBS)] + noun_phrase(True)
    if rng.random() < 0.5:
        words += [rng.choice(PREPOSITIONS)] + noun_phrase(False)
    return words


def translate(words: list[str], language: ToyLanguage) -> list[str]:
    """Word-for-word lexicon lookup, then the language's word-order rule (names stay)."""
    out = list(words)
    if language.order == "adjective_after_noun":
        i = 0
        while i < len(out) - 1:
            if out[i] in ADJECTIVES and out[i + 1] in NOUNS:
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 2
            else:
                i += 1
    elif language.order == "verb_final":
        verbs = [w for w in out if w in VERBS]
        out = [w for w in out if w not in VERBS] + verbs
    elif language.order == "suffixed_article":
        merged, i = [], 0
        while i < len(out):
            if out[i] == "the" and i + 1 < len(out) and out[i + 1] in NOUNS:
                merged.append(f"{out[i + 1]}+the")
                i += 2
            else:
                merged.append(out[i])
                i += 1
        out = merged
    lex = language.lexicon
    result = []
    for w in out:
        if w.endswith("+the"):
            result.append(lex[w[:-4]] + "ul")
        else:
            result.append(lex.get(w, w))
    return result


def sentence_text(words: list[str]) -> str:
    """Words -> a sentence with a capital first letter and a full stop."""
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."
