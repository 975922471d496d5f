"""The lab's mixtures: pretraining (`toy_pretrain`'s members, re-weighted) and DMT's.

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


DMT_DOMAIN = ("toy_math", "toy_code")
DMT_GENERAL = ("toy_general",)


def k_label(k: float) -> str:
    """1.0 -> "1", 0.25 -> "1/4", 1/256 -> "1/256" (the DMT paper's notation)."""
    return "1" if k == 1 else f"1/{round(1 / k)}"


def dmt_stage2_mixture(k: float) -> str:
    """Registers (once) DMT stage 2 for fraction `k`: general data + k x domain data."""
    import seqio

    from promot_tasks import mixtures

    name = f"lab_toy_dmt_k{round(1 / k)}"
    if f"{name}_stage2" not in seqio.MixtureRegistry.names():
        mixtures.dmt_mixtures(list(DMT_DOMAIN), list(DMT_GENERAL), k=k, name=name)
    return f"{name}_stage2"


def dmt_multitask_mixture() -> str:
    """The multi-task baseline's mixture: math, code and general in one stage, by size.

    That is exactly DMT stage 2 at k=1 (general + 1 x domain), so it is reused.
    """
    return dmt_stage2_mixture(1.0)
