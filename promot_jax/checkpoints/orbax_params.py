"""Our own parameters checkpoint: the bare param tree as an Orbax PyTree directory.

This is what `promot-jax convert` writes and what our runners restore from. Saving
is all-or-nothing: the tree is written to a hidden sibling directory and renamed
into place, so a failed save leaves nothing at `path`, and an existing `path` is
replaced only with `force=True`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from promot_jax.checkpoints import param_tree, t5x_orbax


def save_params(params: Mapping, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write `params` (nested dict of arrays) to `path` as an Orbax PyTree; return `path`.

    Raises FileExistsError when `path` exists and `force` is false.
    """
    path = Path(path).absolute()
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass force=True (--force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    host = jax.tree.map(np.asarray, jax.device_get(dict(params)))
    try:
        ocp.PyTreeCheckpointer().save(staging, host)
        if path.exists():  # force: swap, then remove the old one
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            staging.rename(path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            staging.rename(path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def is_params_checkpoint(path: str | os.PathLike) -> bool:
    """True for an Orbax PyTree whose top level is a param tree (not T5X's {target, state})."""
    path = Path(path)
    if not (path / "_METADATA").is_file():
        return False
    return "target" not in t5x_orbax.tree_metadata(path)


def param_paths(path: str | os.PathLike) -> list[str]:
    """Paths of the saved leaves, from the metadata only."""
    return list(param_tree.flatten(t5x_orbax.tree_metadata(path)))


def read_params(
    path: str | os.PathLike, keep: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """Flat `{path: numpy array}` of a checkpoint written by `save_params` (only `keep`'s)."""
    return param_tree.flatten(t5x_orbax.restore_numpy(path, keep))
