"""Runs 3 training steps of a tiny model on a device mesh and prints the losses as JSON.

Used by tests/test_train_sharding.py in fresh processes (the device count and
jax.distributed must be set before jax starts). Arguments:
  sharded_steps.py DATA MODEL [PROCESS_ID NUM_PROCESSES COORDINATOR]
Every process builds the same global batch and feeds its own rows of it.
"""

import json
import sys

import jax
import numpy as np

from promot_jax import methods, network, sharding, train
from promot_jax.optimizer import OptimizerConfig, make_optimizer


def main(argv):
    data, model_axis = int(argv[0]), int(argv[1])
    if len(argv) > 2:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        sharding.maybe_initialize_distributed(argv[4], int(argv[3]), int(argv[2]))
    cfg = network.mt5_config("tiny", vocab_size=128, dtype="float32", dropout_rate=0.0)
    mesh = sharding.make_mesh(data, model_axis, jax.devices()[: data * model_axis])
    params = jax.device_put(
        network.init_params(cfg, jax.random.key(0)), sharding.param_shardings(cfg, mesh)
    )
    trainable, frozen = methods.split("finetune", params)
    tx = make_optimizer("finetune", OptimizerConfig(learning_rate=1e-2))
    opt_state = jax.jit(tx.init)(trainable)
    step = train.make_train_step(network.Transformer(cfg), tx, z_loss=1e-4)
    rng = np.random.default_rng(0)
    losses = []
    for i in range(3):
        enc = rng.integers(2, 128, (8, 12)).astype(np.int32)
        tgt = rng.integers(2, 128, (8, 6)).astype(np.int32)
        full = {
            "encoder_input_tokens": enc,
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": np.concatenate([np.zeros((8, 1), np.int32), tgt[:, :-1]], 1),
            "decoder_loss_weights": np.ones((8, 6), np.float32),
        }
        rows = 8 // jax.process_count()
        local = {
            k: v[jax.process_index() * rows : (jax.process_index() + 1) * rows]
            for k, v in full.items()
        }
        batch = sharding.global_batch(local, mesh)
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    kernel = trainable["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    shard_shapes = sorted({tuple(s.data.shape) for s in kernel.addressable_shards})
    print(
        json.dumps(
            {
                "losses": losses,
                "devices": len(mesh.devices.flat),
                "query_kernel": list(kernel.shape),
                "query_shard_shapes": [list(s) for s in shard_shapes],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
