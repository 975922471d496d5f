"""Which checkpoint format a path holds, decided from the files in it.

A T5X model directory holding several `checkpoint_<step>/` directories resolves
to the latest complete one; a path to the legacy msgpack file itself resolves to
its directory.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from promot_jax import paths
from promot_jax.checkpoints import orbax_params, t5x_legacy, t5x_orbax, transformers_mt5
from promot_jax.paths import Path

Format = Literal["transformers", "t5x_legacy", "t5x_orbax", "orbax_params", "promot_step"]
_STEP_DIR = re.compile(r"checkpoint_(\d+)")

EXPECTED = (
    "a transformers directory (config.json + model.safetensors or pytorch_model.bin), "
    "a T5X checkpoint_<step>/ (legacy `checkpoint` msgpack or Orbax `state/_METADATA`), "
    "a T5X model directory holding checkpoint_<step>/ dirs, "
    "a promot-jax params checkpoint (Orbax `_METADATA`), "
    "or a promot-jax training step (<run>/checkpoints/<step>: its trainable parameters)"
)


def _complete_step(path: Path) -> bool:
    return (path / t5x_legacy.MSGPACK_NAME).is_file() or (
        path / t5x_orbax.STATE_DIR / "_METADATA"
    ).is_file()


def latest_step_dir(model_dir: Path) -> Path | None:
    """The complete `checkpoint_<step>` directory with the highest step, or None."""
    steps = []
    for child in model_dir.iterdir():
        match = _STEP_DIR.fullmatch(child.name)
        if match and child.is_dir() and _complete_step(child):
            steps.append((int(match.group(1)), child))
    return max(steps)[1] if steps else None


def detect(path: str | os.PathLike) -> tuple[Format, Path]:
    """(format, the directory to read) for `path`; errors name the path and what was expected."""
    path = paths.checked(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name == t5x_legacy.MSGPACK_NAME:
            return "t5x_legacy", path.parent
        raise ValueError(f"{path}: is a file; expected a directory: {EXPECTED}")
    if transformers_mt5.is_transformers_dir(path):
        return "transformers", path
    if (path / t5x_legacy.MSGPACK_NAME).is_file():
        return "t5x_legacy", path
    if (path / t5x_orbax.STATE_DIR / "_METADATA").is_file():
        state = path / t5x_orbax.STATE_DIR
        if t5x_orbax.PROMOT_STEP_ROOT in t5x_orbax.tree_metadata(state):
            return "promot_step", state
        return "t5x_orbax", state
    if (path / "_METADATA").is_file():
        if orbax_params.is_params_checkpoint(path):
            orbax_params.check_complete(path)
            return "orbax_params", path
        return "t5x_orbax", path
    latest = latest_step_dir(path)
    if latest is not None:
        return detect(latest)
    found = sorted(p.name for p in path.iterdir())[:12]
    raise ValueError(f"{path}: not a recognised checkpoint (it holds {found}); expected {EXPECTED}")
