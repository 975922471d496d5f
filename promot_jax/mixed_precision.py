"""Two-operand einsums in the network's compute dtype, accumulated in float32.

T5X's mT5 computes in bfloat16 (`T5Config.dtype`). On a TPU a bfloat16 x bfloat16 product is
accumulated in float32 by the matrix unit and rounded once to bfloat16. XLA's CPU backend
instead runs a bfloat16-output dot slowly (about 230 GFLOP/s at 2048^3 on this 2-core Xeon,
below its 285 in float32), while the same dot asked for a float32 result runs on the CPU's
bfloat16 units (AMX / AVX512-BF16 here: 1,190 GFLOP/s; 500-970 on one core at the lab's
shapes). So for a dtype narrower than float32 the projections' products, forward and both
gradient products of the backward pass, are float32-accumulated dots of bfloat16 operands
rounded once to the operands' dtype: the TPU's arithmetic, and the fast path on CPUs that
have bfloat16 units. Attention's batched products get the same arithmetic from float32
operands (see `einsum`).

In float32 `einsum` is `jnp.einsum` itself: the float32 network's numerics (pinned bitwise
against T5X and within 1.4e-6 against transformers) do not change.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """`jnp.einsum(spec, a, b)` with both operands cast to `dtype`, in `dtype`.

    A batched product (an index in both operands and the output, as attention's) is
    computed in float32 from the exact float32 values of its operands: the same arithmetic,
    but XLA:CPU (jax 0.10) hands some batched bfloat16 dots, depending on the layouts it
    picks, to a generic dot that refuses bfloat16 x bfloat16 = float32 ("Unsupported element
    type for DotThunk"). Projections (no batch index) run on the bfloat16 path.
    """
    a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.einsum(spec, a, b)
    if _is_batched(spec):
        return jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32)).astype(dtype)
    return _wide_einsum(spec, a, b)


@functools.cache
def _is_batched(spec: str) -> bool:
    _check_spec(spec)
    sa, sb, out = (set(_symbols(s)) for s in _parse(spec))
    return bool(sa & sb & out)


@functools.cache
def _check_spec(spec: str) -> None:
    """The backward pass writes each operand's gradient as one einsum of the other operand
    and the output's gradient: every index of an operand must be in the other or the output."""
    inputs, arrow, out = spec.replace(" ", "").partition("->")
    if not arrow or inputs.count(",") != 1:
        raise ValueError(f"einsum spec must be 'a,b->out' with an explicit output, got {spec!r}")
    sa, sb, out = (set(_symbols(s)) for s in _parse(spec))
    for mine, other in ((sa, sb), (sb, sa)):
        lost = mine - other - out
        if lost:
            raise ValueError(
                f"einsum {spec!r}: index {''.join(sorted(lost))} is summed within one operand; "
                "reduce it before the product"
            )


def _dot(a: jax.Array, sa: str, b: jax.Array, sb: str, out: str, dtype) -> jax.Array:
    """einsum `sa,sb->out` accumulated in float32, rounded to `dtype`. The operand whose
    index comes first in the output goes first, so that the dot's natural output order
    (lhs indices, then rhs) is the output's and no transpose is left to fold into it."""
    first = next(iter(_symbols(out)), None)
    if first is not None and first in _symbols(sb):
        a, sa, b, sb = b, sb, a, sa
    return jnp.einsum(f"{sa},{sb}->{out}", a, b, preferred_element_type=jnp.float32).astype(dtype)


def _symbols(s: str) -> list[str]:
    return ["..." if c == "." else c for c in s.replace("...", ".")]


def _parse(spec: str) -> tuple[str, str, str]:
    inputs, _, out = spec.replace(" ", "").partition("->")
    sa, sb = inputs.split(",")
    return sa, sb, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _wide_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    sa, sb, out = _parse(spec)
    return _dot(a, sa, b, sb, out, a.dtype)


def _wide_einsum_fwd(spec, a, b):
    return _wide_einsum(spec, a, b), (a, b)


def _wide_einsum_bwd(spec, residuals, g):
    a, b = residuals
    sa, sb, out = _parse(spec)
    g = g.astype(a.dtype)
    return _dot(g, out, b, sb, sa, a.dtype), _dot(a, sa, g, out, sb, b.dtype)


_wide_einsum.defvjp(_wide_einsum_fwd, _wide_einsum_bwd)
