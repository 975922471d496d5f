"""DMT analogs: word problems (math), expression-to-program (code), instructions (general).

Targets are checkable: math answers end in "The answer is N." (scored by
metrics.math_accuracy), programs run in metrics.run_program's tiny language
(scored by metrics.program_accuracy), instructions have one right output.
"""

from __future__ import annotations

import dataclasses
import random

from promot_tasks.toy_world.world import ADJECTIVES, NOUNS, World

_INSTRUCTIONS = {
    "Reverse the words": lambda w: " ".join(reversed(w)),
    "Sort the words": lambda w: " ".join(sorted(w)),
    "Count the words": lambda w: str(len(w)),
    "Repeat the last word twice": lambda w: f"{w[-1]} {w[-1]}",
    "Give the first letters": lambda w: " ".join(x[0] for x in w),
    "Join the words with dashes": lambda w: "-".join(w),
    "Give the first word": lambda w: w[0],
    "Drop the first word": lambda w: " ".join(w[1:]),
}
# Word-level operations only: a word-level vocabulary cannot spell a word's letters, join
# words into a new token, or know the alphabet's order (the DMT lab's pilot round 1).
WORD_INSTRUCTIONS = (
    "Count the words",
    "Drop the first word",
    "Give the first word",
    "Repeat the last word twice",
    "Reverse the words",
)


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """How hard the three domains are; the defaults are the registered toy tasks'
    (`toy_math`, `toy_code`, `toy_general`). `promot-jax lab dmt` picks its own by a pilot
    (docs/dmt_lab_design.md)."""

    math_steps: tuple[int, int] = (1, 3)  # arithmetic steps per word problem (inclusive)
    max_number: int = 20  # starting amount; amounts bought are up to 3/4 of it
    code_depth: tuple[int, int] = (1, 3)  # expression tree depth (inclusive)
    list_words: tuple[int, int] = (3, 6)  # words per instruction's list (inclusive)
    instructions: tuple[str, ...] = (  # general's instructions (`toy_general`: these six)
        "Count the words",
        "Give the first letters",
        "Join the words with dashes",
        "Repeat the last word twice",
        "Reverse the words",
        "Sort the words",
    )

    def __post_init__(self):
        for name in ("math_steps", "code_depth", "list_words"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(
                    f"Difficulty.{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}"
                )
        unknown = sorted(set(self.instructions) - set(_INSTRUCTIONS))
        if unknown or not self.instructions:
            raise ValueError(
                f"Difficulty.instructions: unknown {unknown}; choose from {sorted(_INSTRUCTIONS)}"
            )
        if self.max_number < 4:
            raise ValueError(f"Difficulty.max_number must be >= 4, got {self.max_number}")


_ITEMS = ("apples", "books", "stones", "lamps", "letters", "coins", "eggs", "shells")


DEFAULT_DIFFICULTY = Difficulty()


def math_word_problem(
    rng: random.Random, world: World, difficulty: Difficulty = DEFAULT_DIFFICULTY
) -> dict[str, str]:
    """A few steps of arithmetic about one person's items; the target shows each step."""
    person, friend = rng.sample(world.people, 2)
    items = rng.choice(_ITEMS)
    total = rng.randint(2, difficulty.max_number)
    story = [f"{person} has {total} {items}."]
    steps = []
    for _ in range(rng.randint(*difficulty.math_steps)):
        kind = rng.choice(("buy", "give", "double"))
        if kind == "give" and total < 2:
            kind = "buy"
        if kind == "buy":
            n = rng.randint(1, round(0.75 * difficulty.max_number))
            story.append(f"{person} buys {n} more {items}.")
            steps.append(f"{total} + {n} = {total + n}.")
            total += n
        elif kind == "give":
            n = rng.randint(1, total - 1)
            story.append(f"{person} gives {n} {items} to {friend}.")
            steps.append(f"{total} - {n} = {total - n}.")
            total -= n
        else:
            story.append(f"{person} doubles the {items}.")
            steps.append(f"{total} * 2 = {total * 2}.")
            total *= 2
    story.append(f"How many {items} does {person} have now?")
    return {"question": " ".join(story), "answer": " ".join(steps + [f"The answer is {total}."])}


def _expression(rng: random.Random, depth: int) -> str | tuple:
    if depth == 0 or rng.random() < 0.3:
        return str(rng.randint(1, 9))
    return (rng.choice("+-*"), _expression(rng, depth - 1), _expression(rng, depth - 1))


def _infix(expr) -> str:
    if isinstance(expr, str):
        return expr
    op, left, right = expr
    return f"({_infix(left)} {op} {_infix(right)})"


def _program(expr) -> str:
    """Post-order assignments `a = 3 + 4 ; b = a * 2 ; return b`."""
    lines: list[str] = []

    def emit(e) -> str:
        if isinstance(e, str):
            return e
        op, left, right = e
        left_name, right_name = emit(left), emit(right)
        name = "abcdefghijklmnopqrstuvwxyz"[len(lines)]
        lines.append(f"{name} = {left_name} {op} {right_name}")
        return name

    result = emit(expr)
    return " ; ".join(lines + [f"return {result}"])


def expression_program(
    rng: random.Random, world: World, difficulty: Difficulty = DEFAULT_DIFFICULTY
) -> dict[str, str]:
    """Code analog: an arithmetic expression to a straight-line program that computes it."""
    expr = _expression(rng, rng.randint(*difficulty.code_depth))
    if isinstance(expr, str):
        expr = ("+", expr, str(rng.randint(1, 9)))
    text = _infix(expr)[1:-1]
    return {"instruction": f"Write a program that computes {text}.", "answer": _program(expr)}


def _words(rng: random.Random, difficulty: Difficulty) -> list[str]:
    pool = NOUNS + ADJECTIVES
    return [rng.choice(pool) for _ in range(rng.randint(*difficulty.list_words))]


def instruction_following(
    rng: random.Random, world: World, difficulty: Difficulty = DEFAULT_DIFFICULTY
) -> dict[str, str]:
    """General analog: one or two user turns of word-list instructions; answer the last one."""
    turns = []
    for _ in range(rng.choice((1, 1, 2))):
        instruction = rng.choice(sorted(difficulty.instructions))
        words = _words(rng, difficulty)
        turns.append((f"{instruction}: {' '.join(words)}", _INSTRUCTIONS[instruction](words)))
    dialogue = []
    for user, assistant in turns[:-1]:
        dialogue += [f"User: {user}", f"Assistant: {assistant}"]
    dialogue.append(f"User: {turns[-1][0]}")
    return {"dialogue": " ".join(dialogue), "answer": turns[-1][1]}
