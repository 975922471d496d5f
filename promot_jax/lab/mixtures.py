"""The lab's mixture: pretraining (`toy_pretrain`'s members, re-weighted).

The lab evaluates the in-context suite 1-shot, and 4-shot XSum/WikiLingua inputs
are ~800 tokens, four times the lab's input length: truncated, they would teach
the base model to answer a query it cannot see, so pretraining keeps the 0- and
1-shot variants. Span corruption gets `PretrainSettings.span_corruption_share` of
the examples; the held-out RTE and En-Fr formats are absent, as in `toy_pretrain`.
Within the in-context share, the classification tasks (CB, WiC: those with a label set)
are drawn `PretrainSettings.classification_rate` times as often as the others: at equal
rates the base stayed near chance on them (a one-token answer is little signal per example).
"""

from __future__ import annotations

from promot_jax.lab.config import PretrainSettings

LAB_PRETRAIN = "lab_toy_pretrain"


def register_lab_pretrain(settings: PretrainSettings | None = None) -> str:
    """Registers (once per span share and classification rate) and returns the lab's
    pretraining mixture."""
    import seqio

    import promot_tasks  # noqa: F401  (registers the toy tasks)
    from promot_tasks.toy_world import toy_tasks

    settings = settings or PretrainSettings()
    share, boost = settings.span_corruption_share, settings.classification_rate
    default = PretrainSettings()
    name = LAB_PRETRAIN
    if share != default.span_corruption_share:
        name += f"_span{share!r}".replace(".", "p")  # exact: one name per share
    if boost != default.classification_rate:
        name += f"_cls{boost!r}".replace(".", "p")
    if name not in seqio.MixtureRegistry.names():
        members = toy_tasks.pretraining_members(
            "toy", share, shots=(0, 1), classification_rate=boost
        )
        seqio.MixtureRegistry.add(name, members)
    return name
