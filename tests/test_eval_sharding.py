"""Decoding on the training mesh: a 2x4 mesh gives the single device's outputs, and each
device holds only its share of the model-parallel parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROGRAM = Path(__file__).parent / "programs" / "sharded_decoding.py"


def _decode(data: int, model: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, str(PROGRAM), str(data), str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_beam_search_on_a_2x4_mesh_equals_one_device_and_splits_the_kernels():
    one, mesh = _decode(1, 1), _decode(2, 4)
    assert (one["devices"], mesh["devices"]) == (1, 8)
    assert mesh["ids"] == one["ids"]
    assert one["compiled_param_bytes"] == one["total_param_bytes"]
    # Kernels and embeddings split 4 ways along `model`; norms, relative position biases
    # and the prompt are replicated, whole on every device.
    replicated = mesh["total_param_bytes"] - mesh["model_split_bytes"]
    expected = mesh["model_split_bytes"] // 4 + replicated
    assert mesh["placed_param_bytes"] == expected
    assert mesh["compiled_param_bytes"] == expected
    assert replicated < 0.01 * mesh["total_param_bytes"]
