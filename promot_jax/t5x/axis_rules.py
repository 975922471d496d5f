"""Logical-axis partition rules for T5X's PjitPartitioner, with the soft prompt replicated.

The prompt (`[P, d]`, axes `("prompt", "prompt_embed")`; multi-task ProMoT's `[T, P, d]`
adds `"prompt_tasks"`) is tiny next to the trunk; replicating it keeps every device's
copy identical and avoids resharding the encoder input after the prompt is concatenated.
"""

from __future__ import annotations

from t5x import partitioning

from promot_jax.prompt import AXIS_NAMES


def prompt_axis_rules() -> list[tuple[str, None]]:
    """(axis, None) for each logical axis a prompt can carry: replicated."""
    return [(axis, None) for axis in AXIS_NAMES]


def logical_axis_rules(
    activation_partitioning_dims: int = 1, parameter_partitioning_dims: int = 1
) -> partitioning.LogicalAxisRules:
    """T5X's standard rules (1-D or 2-D sharding) followed by the prompt's rules."""
    return partitioning.standard_logical_axis_rules(
        activation_partitioning_dims=activation_partitioning_dims,
        parameter_partitioning_dims=parameter_partitioning_dims,
        additional_rules=prompt_axis_rules(),
    )
