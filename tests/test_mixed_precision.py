"""promot_jax.mixed_precision: bfloat16 products accumulated in float32, forward and backward,
at the shapes the network runs (including the layouts XLA:CPU's generic dot refuses)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from promot_jax import methods, mixed_precision, network, train
from promot_jax.optimizer import OptimizerConfig

# The network's products: projections (no batch index) and attention's two batched ones.
SPECS = ("...d,df->...f", "df,...d->...f", "bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd")
# The lab's stage (16 rows, 49 positions, 4 heads of 32) and a rectangular attention.
DIMS = (
    {"b": 16, "q": 49, "k": 49, "h": 4, "d": 32, "f": 512},
    {"b": 2, "q": 7, "k": 5, "h": 3, "d": 8, "f": 16},
)


def _operands(spec: str, dims: dict) -> tuple[jax.Array, jax.Array]:
    sa, sb = spec.split("->")[0].split(",")
    shape = lambda s: tuple(dims[c] for c in s.replace("...", "bq"))  # noqa: E731
    keys = jax.random.split(jax.random.key(0))
    return jax.random.normal(keys[0], shape(sa)), jax.random.normal(keys[1], shape(sb))


def _rounded(x):
    return x.astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("dims", DIMS, ids=["lab", "small"])
@pytest.mark.parametrize("spec", SPECS)
def test_bfloat16_products_and_gradients_are_float32_accumulated(spec, dims):
    a, b = _operands(spec, dims)

    # A consumer that reads the output transposed, so the gradient reaches the products in
    # a layout of XLA's choosing (where the generic dot was once picked).
    def loss(product):
        def f(a, b):
            y = product(a, b).astype(jnp.float32)
            return jnp.sum(jnp.swapaxes(y, -1, -2) ** 2 * jnp.arange(y.shape[-1])[:, None])

        return f

    ours = jax.jit(jax.value_and_grad(loss(lambda a, b: _einsum(spec, a, b)), (0, 1)))(a, b)
    # The reference: the same bfloat16 operands, multiplied and differentiated in float32.
    ref = jax.value_and_grad(loss(lambda a, b: jnp.einsum(spec, _rounded(a), _rounded(b))), (0, 1))(
        a, b
    )
    np.testing.assert_allclose(ours[0], ref[0], rtol=2e-2)
    for got, want in zip(ours[1], ref[1], strict=True):
        assert got.dtype == jnp.float32  # the gradient of a float32 operand
        scale = float(jnp.max(jnp.abs(want)))
        assert float(jnp.max(jnp.abs(got - want))) <= 2e-2 * scale


def _einsum(spec, a, b):
    y = mixed_precision.einsum(spec, a, b, jnp.bfloat16)
    assert y.dtype == jnp.bfloat16
    return y


def test_float32_is_jnp_einsum_itself():
    a, b = _operands("bqhd,bkhd->bhqk", DIMS[1])
    got = mixed_precision.einsum("bqhd,bkhd->bhqk", a, b, jnp.float32)
    assert got.tobytes() == jnp.einsum("bqhd,bkhd->bhqk", a, b).tobytes()


@pytest.mark.parametrize(
    "spec, message",
    [("ab,cd->ad", "index b is summed within one operand"), ("ab,bc", "explicit output")],
)
def test_specs_without_a_gradient_as_one_product_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        mixed_precision.einsum(spec, jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.bfloat16)


@pytest.mark.parametrize("method", ["finetune", "promot_stage1"])
def test_a_bfloat16_training_step_follows_the_float32_one(method):
    """The runner's jitted step in bfloat16 (mT5's compute dtype) at the lab's stage shape:
    it compiles on this backend, and its loss and updated parameters stay within bfloat16's
    rounding of the float32 step's."""
    results = []
    for dtype in ("float32", "bfloat16"):
        model = network.mt5_config(
            "tiny", vocab_size=256, dtype=dtype, prompt_length=4 if method != "finetune" else 0
        )
        cfg = train.StageConfig(
            method=method,
            mixture="unused",
            model=model,
            steps=1,
            batch_size=16,
            feature_lengths={"inputs": 49, "targets": 4},
            optimizer=OptimizerConfig(learning_rate=1e-2),
            prompt_file=None,
        )
        fns = train._stage_functions(*train._stage_key(cfg))
        params = network.init_params(model, jax.random.key(0))
        trainable, frozen = methods.split(method, params)
        old = jax.device_get(trainable)  # the step donates `trainable`
        rng = np.random.default_rng(0)
        tgt = rng.integers(2, 256, (16, 4)).astype(np.int32)
        batch = {
            "encoder_input_tokens": rng.integers(2, 256, (16, 49)).astype(np.int32),
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": np.concatenate([np.zeros((16, 1), np.int32), tgt[:, :-1]], 1),
            "decoder_loss_weights": np.ones((16, 4), np.float32),
        }
        new, _, metrics = fns.train_step(
            trainable, frozen, fns.init_opt_state(trainable), batch, jax.random.key(0)
        )
        results.append((float(metrics["loss"]), jax.device_get(new), old))
    (loss32, new32, old), (loss16, new16, _) = results
    assert abs(loss16 - loss32) <= 1e-2 * loss32
    moved32 = jax.tree.map(lambda n, o: n - o, new32, old)
    moved16 = jax.tree.map(lambda n, o: n - o, new16, old)
    for d32, d16 in zip(jax.tree.leaves(moved32), jax.tree.leaves(moved16), strict=True):
        # Adafactor's clipped update: the direction is what bfloat16 may perturb.
        cos = np.sum(d32 * d16) / (np.linalg.norm(d32) * np.linalg.norm(d16) + 1e-30)
        assert cos > 0.9, cos


@pytest.mark.parametrize("shape", [(16, 49, 128), (2, 7, 16)], ids=["lab", "small"])
def test_flattening_the_tokens_of_a_projection_changes_no_value(shape):
    """Dense's flatten_tokens (float32 only) is a layout choice for XLA: outputs and both
    gradients are bitwise those of the product over [batch, length, in]."""
    from promot_jax import layers

    x = jax.random.normal(jax.random.key(1), shape)
    results = []
    for flatten in (True, False):
        dense = layers.Dense(512, ("embed", "mlp"), dtype=jnp.float32, flatten_tokens=flatten)
        params = dense.init(jax.random.key(0), x)

        def loss(p, x, dense=dense):
            y = dense.apply(p, x).astype(jnp.float32)
            return jnp.sum(jnp.tanh(y) * jnp.arange(y.shape[-1]))  # every output element counts

        value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
        results.append(jax.tree.leaves((value, grads)))
    for flat, nested in zip(*results, strict=True):
        np.testing.assert_array_equal(flat, nested)
