"""Beam-searches a tiny prompted model on a device mesh and prints the output ids as JSON.

Used by tests/test_eval_sharding.py in fresh processes (the device count must be set
before jax starts). Arguments: sharded_decoding.py DATA MODEL. The model's parameters
are placed as `promot-jax eval` places them (`LoadedModel.place`) and decoded by the
suite runner's `Decoder` on that mesh.
"""

import json
import sys

import jax
import numpy as np

from promot_jax import network, sharding
from promot_jax.evaluation import runner
from promot_jax.evaluation.model_source import LoadedModel

BATCH, MAX_LENGTH = 8, 8


def main(argv):
    data, model_axis = int(argv[0]), int(argv[1])
    cfg = network.mt5_config(
        "tiny", vocab_size=256, dtype="float32", dropout_rate=0.0, prompt_length=3
    )
    mesh = sharding.make_mesh(data, model_axis, jax.devices()[: data * model_axis])
    params = network.init_params(cfg, jax.random.key(0))
    model = LoadedModel(cfg, params, "random", "random").place(mesh)
    settings = runner.DecodeSettings(search="beam", beam_size=4, batch_size=BATCH)
    decoder = runner.Decoder(cfg, settings, mesh)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(2, 256, n).astype(np.int32) for n in (5, 9, 12, 3, 7, 11, 4, 8, 6)]
    ids = decoder(model.params, inputs, MAX_LENGTH)
    abstract = sharding.with_shardings(
        network.abstract_params(cfg), sharding.param_shardings(cfg, mesh)
    )
    tokens = jax.ShapeDtypeStruct((BATCH, 32), np.int32, sharding=sharding.batch_sharding(mesh))
    compiled = decoder.search_fn(MAX_LENGTH).lower(abstract, tokens).compile()
    tokens_per_device = BATCH // data * 32 * 4
    print(
        json.dumps(
            {
                "ids": ids.tolist(),
                "devices": len(mesh.devices.flat),
                "compiled_param_bytes": compiled.memory_analysis().argument_size_in_bytes
                - tokens_per_device,
                "placed_param_bytes": sharding.per_device_bytes(model.params),
                "total_param_bytes": sum(x.nbytes for x in jax.tree_util.tree_leaves(params)),
                "model_split_bytes": sum(
                    x.nbytes
                    for x, s in zip(
                        jax.tree_util.tree_leaves(params),
                        jax.tree_util.tree_leaves(model.params),
                        strict=True,
                    )
                    if "model" in s.sharding.spec
                ),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
