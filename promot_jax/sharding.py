"""Device mesh and parameter placement with jax.sharding (pjit's successor).

A 2-D mesh `("data", "model")`; logical axis names on every parameter map to mesh
axes through T5X's standard 1-D rules, with the soft prompt and LoRA's rank axis replicated. Batches
split along `data`. Multi-host: every process feeds its own slice of the global
batch (`global_batch`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from promot_jax import lora as lora_lib
from promot_jax import network
from promot_jax import prompt as prompt_lib

# Every logical axis a prompt or an adapter adds (names from promot_jax.prompt and
# promot_jax.lora): replicated here and under T5X (promot_jax.t5x.axis_rules), unfactored by
# T5X's Adafactor (promot_jax.t5x.freezing).
REPLICATED_AXES: tuple[str, ...] = (*prompt_lib.AXIS_NAMES, *lora_lib.AXIS_NAMES)

# T5X's `standard_logical_axis_rules(1, 1)`, plus every axis of REPLICATED_AXES (replicated,
# as prompt-tuning's runs/prompt_finetune.gin does for the prompt).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),
    ("relpos_buckets", None),
    ("length", None),
    ("layers", None),
    ("stack", None),
    *((axis, None) for axis in REPLICATED_AXES),
)


def make_mesh(data: int = -1, model: int = 1, devices: Sequence | None = None) -> Mesh:
    """A `("data", "model")` mesh over `devices` (default: all); -1 takes what is left.

    Axis types are Auto: jax 0.10's default Explicit axes break Flax's embedding gathers.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if model < 1 or n % model:
        raise ValueError(f"mesh model axis {model} does not divide the {n} devices")
    if data == -1:
        data = n // model
    if data * model != n:
        raise ValueError(
            f"mesh data={data} x model={model} = {data * model} devices, but there are {n}"
        )
    grid = np.asarray(devices, dtype=object).reshape(data, model)
    return Mesh(grid, ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def spec_for(axes: Sequence[str], rules=LOGICAL_AXIS_RULES) -> PartitionSpec:
    table = dict(rules)
    unknown = [a for a in axes if a not in table]
    if unknown:
        raise ValueError(f"no partition rule for logical axes {unknown}; rules: {list(table)}")
    return PartitionSpec(*(table[a] for a in axes))


def param_shardings(config: network.T5Config, mesh: Mesh) -> dict:
    """NamedShardings for every parameter of `config`, from its logical axis names."""
    axes = network.logical_axes(config)
    return jax.tree_util.tree_map(
        lambda a: NamedSharding(mesh, spec_for(a)),
        axes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def optimizer_state_shardings(state_shapes, trainable_shapes, trainable_shardings, mesh: Mesh):
    """Shardings for an optimizer state whose leaves mirror the trainable parameters.

    A leaf that sits under a parameter's path (optax states end in the parameter
    tree) and has that parameter's shape takes its sharding (momentum, unfactored
    second moments); every other leaf (factored row/column statistics, step counts)
    is replicated. `*_shapes` are pytrees of arrays or `jax.ShapeDtypeStruct`s.
    """

    def by_path(tree) -> dict:
        return {_dict_keys(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

    shapes, shardings = by_path(trainable_shapes), by_path(trainable_shardings)

    def leaf_sharding(path, leaf):
        key = _dict_keys(path)
        if key in shardings and tuple(shapes[key].shape) == tuple(leaf.shape):
            return shardings[key]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(leaf_sharding, state_shapes)


def _dict_keys(path) -> tuple:
    """The trailing run of dict keys of a pytree path (a parameter's path inside a state)."""
    keys: list = []
    for entry in reversed(path):
        if not isinstance(entry, jax.tree_util.DictKey):
            break
        keys.insert(0, entry.key)
    return tuple(keys)


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded arrays (or `ShapeDtypeStruct`s with a
    sharding): each leaf's shard, whole where it is replicated."""
    return sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree_util.tree_leaves(tree)
    )


def with_shardings(shapes, shardings):
    """`ShapeDtypeStruct`s of `shapes` carrying `shardings`: abstract arguments to lower a
    function for a mesh without allocating anything."""
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    data = mesh.shape["data"]
    if batch_size % data:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the mesh's data axis ({data})"
        )
    if batch_size % jax.process_count():
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {jax.process_count()} processes"
        )


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles the global batch from each process's local rows (its share of `data`)."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins a multi-process run when asked by arguments or the environment.

    Environment: PROMOT_COORDINATOR (host:port), PROMOT_NUM_PROCESSES, PROMOT_PROCESS_ID.
    On Cloud TPU, `PROMOT_DISTRIBUTED=auto` lets jax discover everything itself.
    Returns whether jax.distributed was initialised.
    """
    env = os.environ
    if env.get("PROMOT_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
        return True
    coordinator_address = coordinator_address or env.get("PROMOT_COORDINATOR")
    if not coordinator_address:
        return False
    num_processes = num_processes or int(env["PROMOT_NUM_PROCESSES"])
    if process_id is None:
        process_id = int(env["PROMOT_PROCESS_ID"])
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True
