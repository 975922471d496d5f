"""Which parameters train under T5X, derived from `promot_jax.methods` (one source of truth).

T5X freezes a parameter by leaving it out of every MultiOptimizer traversal: its
optimizer state is then None (no memory, never updated). `method_optimizer`
builds that MultiOptimizer from a method name, so stage 1 (`promot_stage1`) and
stage 2 (`promot_stage2`) select exactly what `methods.is_trainable` says.
"""

from __future__ import annotations

from collections.abc import Mapping

from flax import traverse_util
from t5x import adafactor, optimizers

from promot_jax import methods
from promot_jax.prompt import PROMPT_AXES


def trainable_traversal(method: str) -> traverse_util.ModelParamTraversal:
    """The parameters `method` trains, as a flax traversal (paths like "/encoder/prompt/prompt")."""
    chosen = methods.get_method(method)
    return traverse_util.ModelParamTraversal(
        filter_fn=lambda path, _: methods.is_trainable(chosen, path)
    )


def method_optimizer(method: str, optimizer: optimizers.OptimizerDef) -> optimizers.MultiOptimizer:
    """`optimizer` applied to what `method` trains; every other parameter is frozen."""
    return optimizers.MultiOptimizer([(trainable_traversal(method), optimizer)])


def factor_rules(
    prompt_factoring: str = "none",
) -> Mapping[str, adafactor.FactorDim]:
    """T5X's standard Adafactor factor rules plus the prompt's axis names.

    T5X's `Adafactor.set_param_axes` looks every axis name up and raises KeyError on
    an unknown one. The prompt is small (P x d), so by default its second moment is
    kept unfactored ("none"); "factored" treats it like an embedding (row = prompt
    position, column = embedding dimension).
    """
    rules = dict(adafactor.standard_logical_factor_rules())
    if prompt_factoring == "none":
        prompt_dims = (adafactor.FactorDim.NONE, adafactor.FactorDim.NONE)
    elif prompt_factoring == "factored":
        prompt_dims = (adafactor.FactorDim.ROW, adafactor.FactorDim.COLUMN)
    else:
        raise ValueError(f"prompt_factoring={prompt_factoring!r}; valid: 'none', 'factored'")
    rules.update(zip(PROMPT_AXES, prompt_dims, strict=True))
    return rules
