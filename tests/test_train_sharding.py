"""Sharded training equals single-device training: a 2x4 mesh, and two processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "programs" / "sharded_steps.py"


def _run(args, devices, timeout=240):
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, str(PROGRAM), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single_device():
    return _result(_run([1, 1], devices=8))


def test_mesh_2x4_matches_single_device(single_device):
    sharded = _result(_run([2, 4], devices=8))
    assert sharded["devices"] == 8 and single_device["devices"] == 1
    for a, b in zip(sharded["losses"], single_device["losses"], strict=True):
        assert abs(a - b) <= 1e-5 * abs(b)
    # The query kernel [d, heads*head_dim] is split 4 ways along the model axis.
    assert single_device["query_shard_shapes"] == [[64, 64]]
    assert sharded["query_shard_shapes"] == [[64, 16]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_match_one_process(single_device):
    address = f"127.0.0.1:{_free_port()}"
    procs = [_run([2, 4, pid, 2, address], devices=4) for pid in (0, 1)]
    results = [_result(p) for p in procs]
    for r in results:
        assert r["devices"] == 8  # 4 local + 4 remote devices in one mesh
        for a, b in zip(r["losses"], single_device["losses"], strict=True):
            assert abs(a - b) <= 1e-5 * abs(b)


def test_optimizer_state_follows_parameter_shardings():
    """Momentum-like leaves take their parameter's sharding; factored statistics replicate."""
    import jax
    import optax
    from jax.sharding import PartitionSpec

    from promot_jax import network, sharding

    cfg = network.mt5_config("tiny", vocab_size=2176, dtype="float32")
    mesh = sharding.make_mesh(1, 1)
    shapes = network.abstract_variables(cfg)["params"]
    shardings = sharding.param_shardings(cfg, mesh)
    tx = optax.chain(optax.adafactor(1e-3, momentum=0.9), optax.scale_by_adam())
    state = sharding.optimizer_state_shardings(
        jax.eval_shape(tx.init, shapes), shapes, shardings, mesh
    )
    query = shardings["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert query.spec == PartitionSpec(None, "model")
    flat = {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
    }
    kernel = "['encoder']['layers_0']['attention']['query']['kernel']"
    momentum = [v for k, v in flat.items() if k.endswith(kernel) and ".mu" in k]
    rows = [v for k, v in flat.items() if k.endswith(kernel) and ".v_row" in k]
    counts = [v for k, v in flat.items() if k.endswith(".count")]
    assert momentum == [query]  # the adam first moment has the kernel's shape
    assert rows and all(s.spec == PartitionSpec() for s in rows)  # factored: [d] only
    assert counts and all(s.spec == PartitionSpec() for s in counts)
