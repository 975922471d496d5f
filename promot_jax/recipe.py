"""The paper's hyperparameters per kind of stage, read from gin/recipe/paper.gin.

That gin file is the one place the numbers live: our runner's stage files and the
T5X stage files bind to its macros, and this module gives the same values to
Python (the lab's settings, the optimizer's default learning rate). It is read
with gin's own parser, without touching the global gin config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gin import config_parser
from promot_jax import methods
from promot_jax.gin_paths import gin_dir

RECIPE_FILE = "recipe/paper.gin"


@dataclasses.dataclass(frozen=True)
class StageRecipe:
    """What the paper fixes for one kind of stage (prompt tuning or model tuning)."""

    learning_rate: float  # constant schedule
    steps: int
    checkpoint_every: int  # also how often the stage is evaluated
    dropout: float
    label_smoothing: float


class _LiteralsOnly(config_parser.ParserDelegate):
    """The recipe holds plain values: a reference or macro in it is refused."""

    def configurable_reference(self, scoped_name: str, evaluate: bool):
        raise ValueError(f"{RECIPE_FILE} holds plain values only, not @{scoped_name}")

    def macro(self, name: str):
        raise ValueError(f"{RECIPE_FILE} holds plain values only, not %{name}")


def read_macros(path: Path | None = None) -> dict[str, Any]:
    """The recipe file's macros (NAME = value), in file order."""
    path = path or gin_dir() / RECIPE_FILE
    macros: dict[str, Any] = {}
    for statement in config_parser.ConfigParser(path.read_text(), _LiteralsOnly()):
        if isinstance(statement, config_parser.ImportStatement):
            continue
        if not (
            isinstance(statement, config_parser.BindingStatement)
            and not statement.scope
            and not statement.arg_name
            and statement.selector.isupper()
        ):
            raise ValueError(f"{path}: only macros belong here, got {statement}")
        macros[statement.selector] = statement.value
    return macros


def _stage(macros: dict[str, Any], kind: str) -> StageRecipe:
    return StageRecipe(
        learning_rate=macros[f"{kind}_LR"],
        steps=macros[f"{kind}_STEPS"],
        checkpoint_every=macros[f"{kind}_CHECKPOINT_EVERY"],
        dropout=macros[f"{kind}_DROPOUT"],
        label_smoothing=macros[f"{kind}_LABEL_SMOOTHING"],
    )


MACROS = read_macros()
TUNE_PROMPT = _stage(MACROS, "TUNE_PROMPT")  # only the prompt (or LoRA adapters) trains
TUNE_MODEL = _stage(MACROS, "TUNE_MODEL")  # the trunk trains (stage 2 and the FT baselines)
PROMPT_WEIGHT_DECAY: float = MACROS["TUNE_PROMPT_WEIGHT_DECAY"]
ADAFACTOR_DECAY_RATE: float = MACROS["ADAFACTOR_DECAY_RATE"]
BATCH_SIZE: int = MACROS["PAPER_BATCH_SIZE"]
PROMPT_LENGTH: int = MACROS["PAPER_PROMPT_LENGTH"]


def for_method(method: methods.Method | str) -> StageRecipe:
    """The recipe of a method's kind: TUNE_PROMPT when the trunk is frozen (a stage 1: only a
    prompt or adapters train), else TUNE_MODEL."""
    method = methods.get_method(method) if isinstance(method, str) else method
    return TUNE_MODEL if method.trains_trunk else TUNE_PROMPT
