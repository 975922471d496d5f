"""Adafactor and learning-rate schedules as the paper and T5X use them (optax).

The optimizer only ever sees the trainable subtree (see `methods.split`), so a
frozen parameter has no optimizer state at all. Prompt parameters get
prompt-tuning's settings (no parameter scaling, weight decay 1e-5); the trunk
gets T5X's fine-tuning defaults (parameter scaling on). The numbers come from the
paper's recipe (`promot_jax.recipe`, gin/recipe/paper.gin).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from promot_jax import methods, recipe

SCHEDULES = ("constant", "warmup_constant", "rsqrt")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adafactor hyperparameters; `learning_rate=None` picks the recipe's rate for the method."""

    learning_rate: float | None = None
    prompt_learning_rate: float | None = None  # None: learning_rate (set it for `joint`)
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_rate: float = recipe.ADAFACTOR_DECAY_RATE
    clipping_threshold: float = 1.0
    prompt_weight_decay: float = recipe.PROMPT_WEIGHT_DECAY
    min_dim_size_to_factor: int = 128

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        for name in ("learning_rate", "prompt_learning_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


def default_learning_rate(method: methods.Method) -> float:
    """The recipe's constant rate for the method: 0.2 if only the prompt trains, else 1e-3."""
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


def _adafactor(lr: optax.Schedule, config: OptimizerConfig, *, prompt: bool):
    return optax.adafactor(
        learning_rate=lr,
        min_dim_size_to_factor=config.min_dim_size_to_factor,
        decay_rate=config.decay_rate,
        multiply_by_parameter_scale=not prompt,
        clipping_threshold=config.clipping_threshold,
        weight_decay_rate=config.prompt_weight_decay if prompt else None,
    )


def make_optimizer(
    method: methods.Method | str, config: OptimizerConfig
) -> optax.GradientTransformation:
    """Adafactor for a method's trainable subtree (prompt and trunk with their own settings)."""
    method = methods.get_method(method) if isinstance(method, str) else method
    lr = schedule(config, config.learning_rate or default_learning_rate(method))
    prompt_lr = schedule(config, config.prompt_learning_rate) if config.prompt_learning_rate else lr
    return optax.multi_transform(
        {
            "prompt": _adafactor(prompt_lr, config, prompt=True),
            "trunk": _adafactor(lr, config, prompt=False),
        },
        methods.group_labels,
    )
