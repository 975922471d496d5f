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
from promot_jax.sharding import REPLICATED_AXES


def trainable_traversal(method: str) -> traverse_util.ModelParamTraversal:
    """The parameters `method` trains, as a flax traversal (paths like "/encoder/prompt/prompt")."""
    chosen = methods.get_method(method)
    return traverse_util.ModelParamTraversal(
        filter_fn=lambda path, _: methods.is_trainable(chosen, path)
    )


def method_optimizer(method: str, optimizer: optimizers.OptimizerDef) -> optimizers.MultiOptimizer:
    """`optimizer` applied to what `method` trains; every other parameter is frozen."""
    return optimizers.MultiOptimizer([(trainable_traversal(method), optimizer)])


def factor_rules() -> Mapping[str, adafactor.FactorDim]:
    """T5X's standard Adafactor factor rules plus the prompt's (and LoRA's rank) axis names.

    `Adafactor.set_param_axes` looks every axis name up and raises KeyError on an unknown
    one, so the prompt's names must be listed (NONE, as prompt-tuning lists them). The value
    has no effect on the [P, d] prompt: T5X ignores the rule of every parameter of rank <= 2
    and falls back to its heuristic, which factors the second moment over the two largest
    dims when the smaller is >= min_dim_size_to_factor (128). A prompt is therefore factored
    exactly when P >= 128 and d >= 128 (the paper's P = 100 is not), the rule optax.adafactor
    applies in our runner too (optimizer.py). Multi-task ProMoT's `[T, P, d]` table (axis
    `prompt_tasks` first) has rank 3, so T5X does follow the rule there: NONE everywhere keeps
    its second moment unfactored, as optax does whenever P < 128 (optax would factor
    P x d when P >= 128).
    """
    rules = dict(adafactor.standard_logical_factor_rules())
    rules.update(dict.fromkeys(REPLICATED_AXES, adafactor.FactorDim.NONE))
    return rules
