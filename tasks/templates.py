"""The paper's prompt templates [ProMoT Table 7], in one place, for real and toy tasks.

Every task first maps its raw record to a family's *canonical fields* (for
entailment: premise, hypothesis, answer); a `Template` then turns those fields
into the model's input text. The same format string renders in Python (tests,
the catalogue) and in TensorFlow (SeqIO pipelines), so the two cannot drift.

Choices the paper leaves open, recorded here:
- k-shot inputs are `demo_1 demo_2 ... query`, each demonstration being
  `<rendered input> <target>`, joined by one space (`SHOT_SEPARATOR`).
- In-context evaluation inputs end with ` <extra_id_0>` (`SENTINEL_SUFFIX`): mT5
  is pretrained on span corruption only, so the sentinel asks it to fill the
  answer slot; its output is cut back to the span by the post-processor.
  Fine-tuning tasks have no sentinel (their targets are the plain label).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping

SHOT_SEPARATOR = " "
SENTINEL_SUFFIX = " <extra_id_0>"
# Prefixes that open a new example in a template; the post-processor cuts model
# output at the first of these [ProMoT B.2].
NEXT_TASK_PREFIXES = ("Q:", "Translate", "Article:")


@dataclasses.dataclass(frozen=True)
class Template:
    """A family's input template: a format string over canonical field names.

    `labels` is the closed answer set for classification families (None for
    free-form output); it feeds the first-word post-processing and the
    format-leak metric.
    """

    family: str
    input_format: str
    labels: tuple[str, ...] | None = None

    def __post_init__(self):
        if not self.fields:
            raise ValueError(f"template {self.family!r} has no {{field}} placeholders")

    @property
    def fields(self) -> tuple[str, ...]:
        """Canonical field names the input format reads, in order of appearance."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.input_format) if f)

    @property
    def parts(self) -> list[tuple[str, str | None]]:
        """(literal, field-or-None) pairs: the format string split for tf.strings.join."""
        return [(lit, f or None) for lit, f, _, _ in string.Formatter().parse(self.input_format)]

    def render(self, fields: Mapping[str, str]) -> str:
        """Renders the input text in Python; missing fields raise a KeyError naming them."""
        missing = [f for f in self.fields if f not in fields]
        if missing:
            raise KeyError(
                f"template {self.family!r} needs fields {list(self.fields)}; missing {missing}"
            )
        return self.input_format.format(**{f: fields[f] for f in self.fields})


ENTAILMENT2 = Template(
    "entailment2",
    "{premise} question: {hypothesis} Is it true or false? answer:",
    labels=("True", "False"),
)
ENTAILMENT3 = Template(
    "entailment3",
    "{premise} question: {hypothesis} Is it true or false or neither? answer:",
    labels=("True", "False", "Neither"),
)
WIC = Template(
    "wic",
    "{sentence1} {sentence2} question: The word {word} is used in the same way in the two "
    "sentences. Is it true or False? answer:",
    labels=("True", "False"),
)
MCQA = Template(
    "mcqa",
    "Q: {question} A) {choice_a} B) {choice_b} C) {choice_c} D) {choice_d} A:",
    labels=("A", "B", "C", "D"),
)
QA = Template("qa", "Q: {question} A:")
# The toy lab's primary target (no real counterpart): labels no other family answers with.
MENTION = Template(
    "mention",
    "{premise} claim: {hypothesis} Near or behind? answer:",
    labels=("near", "behind"),
)
TRANSLATION = Template(
    "translation", "Translate {source_language} to {target_language}: {sentence}"
)
SUMMARIZATION = Template("summarization", "Article: {article} One sentence summary:")
# DMT families. The DMT paper trains LLaMA on raw instruction data; for an
# encoder-decoder we keep the instruction in the input and the response as target.
MATH = Template("math", "Question: {question} Answer:")
CODE = Template("code", "Instruction: {instruction} Response:")
GENERAL = Template("general", "{dialogue} Assistant:")

TEMPLATES: dict[str, Template] = {
    t.family: t
    for t in (
        ENTAILMENT2,
        ENTAILMENT3,
        WIC,
        MCQA,
        QA,
        MENTION,
        TRANSLATION,
        SUMMARIZATION,
        MATH,
        CODE,
        GENERAL,
    )
}
# Families scored on the first word of the output against a closed label set.
CLASSIFICATION_FAMILIES = frozenset(f for f, t in TEMPLATES.items() if t.labels)


def template_for(family: str) -> Template:
    """Looks a family's template up; an unknown family lists the known ones."""
    try:
        return TEMPLATES[family]
    except KeyError:
        raise KeyError(f"unknown task family {family!r}; known: {sorted(TEMPLATES)}") from None
