"""Adafactor and learning-rate schedules as the paper and T5X use them (optax).

The optimizer only ever sees the trainable subtree (see `methods.split`), so a
frozen parameter has no optimizer state at all. Prompt parameters get
prompt-tuning's settings (no parameter scaling, weight decay 1e-5); the trunk
gets T5X's fine-tuning defaults (parameter scaling on). The numbers come from the
paper's recipe (`promot_jax.recipe`, gin/recipe/paper.gin).

LoRA adapters (a group of their own, `methods.group`) are not in the paper's recipe. They
get no parameter scaling (B starts at zero, where Adafactor's relative steps would be
1e-3 of the rate) and no weight decay, at `LORA_LEARNING_RATE`: the trunk's 1e-3
(TUNE_MODEL_LR). Unscaled, Adafactor's clipped update is then about 1e-3 per element per
step, as Adam's is at the rates LoRA's authors used (2e-4 to 2e-3, Hu et al. 2021);
0.2, the prompt's rate, would be two orders of magnitude above them.

Every group's Adafactor runs in float32 (`in_float32`), as T5X's does: with a bfloat16 trunk
(`T5Config.param_dtype`) its gradients are bfloat16, but the second-moment statistics, the
update and the parameter-scale and weight-decay terms are float32, and the update is added
to the stored parameter in float32 and rounded once. optax's own Adafactor would keep the
statistics in the parameter's dtype.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from promot_jax import methods, recipe

SCHEDULES = ("constant", "warmup_constant", "rsqrt")
LORA_LEARNING_RATE: float = recipe.TUNE_MODEL.learning_rate  # see the module docstring


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adafactor hyperparameters; `learning_rate=None` picks the recipe's rate for the method."""

    learning_rate: float | None = None
    prompt_learning_rate: float | None = None  # None: learning_rate (set it for `joint`)
    lora_learning_rate: float = LORA_LEARNING_RATE
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_rate: float = recipe.ADAFACTOR_DECAY_RATE
    clipping_threshold: float = 1.0
    prompt_weight_decay: float = recipe.PROMPT_WEIGHT_DECAY
    min_dim_size_to_factor: int = 128

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        for name in ("learning_rate", "prompt_learning_rate", "lora_learning_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


def default_learning_rate(method: methods.Method) -> float:
    """The recipe's constant rate for the method: 0.2 if the trunk is frozen, else 1e-3
    (adapters train at `OptimizerConfig.lora_learning_rate` whatever the method)."""
    return recipe.for_method(method).learning_rate


def schedule(config: OptimizerConfig, base: float) -> optax.Schedule:
    if config.schedule == "constant":
        return optax.constant_schedule(base)
    if config.schedule == "warmup_constant":
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, base, max(config.warmup_steps, 1)),
                optax.constant_schedule(base),
            ],
            [config.warmup_steps],
        )
    # T5X's rsqrt: base * rsqrt(max(step, warmup)), normalised to `base` at the warmup step.
    warm = max(config.warmup_steps, 1)

    def rsqrt(step):
        return base * jnp.sqrt(warm / jnp.maximum(step, warm).astype(jnp.float32))

    return rsqrt


def _float32(tree):
    return jax.tree.map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` applied to float32 copies of the gradients and parameters, so its state and
    its updates are float32 whatever the parameters are stored in (a no-op for float32
    parameters: the same state, bitwise the same updates). `optax.apply_updates` adds a
    float32 update to a bfloat16 parameter in float32 and rounds the sum once."""

    def init(params):
        return inner.init(_float32(params))

    def update(updates, state, params=None):
        return inner.update(_float32(updates), state, None if params is None else _float32(params))

    return optax.GradientTransformation(init, update)


def _adafactor(lr: optax.Schedule, config: OptimizerConfig, *, group: str):
    adafactor = optax.adafactor(
        learning_rate=lr,
        min_dim_size_to_factor=config.min_dim_size_to_factor,
        decay_rate=config.decay_rate,
        multiply_by_parameter_scale=group == "trunk",
        clipping_threshold=config.clipping_threshold,
        weight_decay_rate=config.prompt_weight_decay if group == "prompt" else None,
    )
    return in_float32(adafactor)


def make_optimizer(
    method: methods.Method | str, config: OptimizerConfig
) -> optax.GradientTransformation:
    """Adafactor for a method's trainable subtree (prompt, adapters and trunk with their own
    settings). Only a method with adapters has a "lora" group, so the optimizer state of
    every other method is what it was before adapters existed (its checkpoints resume)."""
    method = methods.get_method(method) if isinstance(method, str) else method
    lr = schedule(config, config.learning_rate or default_learning_rate(method))
    prompt_lr = schedule(config, config.prompt_learning_rate) if config.prompt_learning_rate else lr
    groups = {
        "prompt": _adafactor(prompt_lr, config, group="prompt"),
        "trunk": _adafactor(lr, config, group="trunk"),
    }
    if method.has_lora:
        lora_lr = schedule(config, config.lora_learning_rate)
        groups["lora"] = _adafactor(lora_lr, config, group="lora")
    return optax.multi_transform(groups, methods.group_labels)
