"""Logical-axis partition rules for T5X's PjitPartitioner, with the soft prompt (and LoRA's
rank axis, `promot_jax.sharding.REPLICATED_AXES`) replicated.

The prompt (`[P, d]`, axes `("prompt", "prompt_embed")`; multi-task ProMoT's `[T, P, d]`
adds `"prompt_tasks"`) is tiny next to the trunk; replicating it keeps every device's
copy identical and avoids resharding the encoder input after the prompt is concatenated.
"""

from __future__ import annotations

from t5x import partitioning

from promot_jax.sharding import REPLICATED_AXES


def replicated_axis_rules() -> list[tuple[str, None]]:
    """(axis, None) for each logical axis a prompt or an adapter can carry: replicated."""
    return [(axis, None) for axis in REPLICATED_AXES]


def logical_axis_rules(
    activation_partitioning_dims: int = 1, parameter_partitioning_dims: int = 1
) -> partitioning.LogicalAxisRules:
    """T5X's standard rules (1-D or 2-D sharding) followed by the prompt's and adapters'."""
    return partitioning.standard_logical_axis_rules(
        activation_partitioning_dims=activation_partitioning_dims,
        parameter_partitioning_dims=parameter_partitioning_dims,
        additional_rules=replicated_axis_rules(),
    )
