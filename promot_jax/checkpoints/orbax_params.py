"""Our own parameters checkpoint: the bare param tree as an Orbax PyTree directory.

This is what `promot-jax convert` writes and what our runners restore from. Saving
is all-or-nothing: the tree is written to a hidden sibling directory and renamed
into place, so a failed save leaves nothing at `path`, and an existing `path` is
replaced only with `force=True`.

On GCS a directory is a name prefix and cannot be renamed in one step, so there the
staged tree (complete, with Orbax's `commit_success.txt`) is copied into place
object by object, server-side, `commit_success.txt` last: a `gs://` params directory
is complete exactly when it holds that file (`is_complete`), and the loaders refuse
one without it. A replace cut off halfway leaves `path` without the file and the
complete new tree in the staging directory beside it, which the refusal names.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from promot_jax import paths
from promot_jax.checkpoints import param_tree, t5x_orbax
from promot_jax.paths import Path

# What Orbax writes last into a checkpoint on GCS (`orbax.checkpoint` names it so).
COMMIT_SUCCESS = "commit_success.txt"


def _host_arrays(params: Mapping) -> dict[str, np.ndarray]:
    flat = param_tree.flatten(jax.device_get(dict(params)))
    for path, leaf in flat.items():
        # jnp's issubdtype knows bfloat16 is a number; numpy's does not.
        if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.number):
            kind = getattr(leaf, "dtype", type(leaf).__name__)
            raise ValueError(f"parameter {path} is {kind}, not a numeric array; nothing saved")
    return {k: np.asarray(v) for k, v in flat.items()}


def save_params(params: Mapping, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write `params` (nested dict of arrays) to `path` as an Orbax PyTree; return `path`.

    Raises FileExistsError when `path` exists and `force` is false. The tree is
    written under a hidden staging directory next to `path` and renamed into place.
    """
    path = paths.absolute(path)
    paths.check_bucket(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass force=True (--force) to replace it")
    host = param_tree.unflatten(_host_arrays(params))
    if paths.is_remote(path):
        return _save_remote(host, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Orbax keeps its own temporaries next to its target, so stage inside a private dir.
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        ocp.PyTreeCheckpointer().save(staging / "params", host)
        if path.exists():  # force: swap the old one out, then delete it
            (staging / "params").rename(staging / "new")
            path.rename(staging / "params")
            (staging / "new").rename(path)
        else:
            (staging / "params").rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _staging_dir(path: Path) -> Path:
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"


def _save_remote(host: dict, path: Path) -> Path:
    staging = _staging_dir(path)
    try:
        ocp.PyTreeCheckpointer().save(staging / "params", host)  # ends with commit_success.txt
    except BaseException:
        if staging.exists():
            staging.rmtree()
        raise
    # From here on the staged tree is complete: it is kept until the copy has finished.
    if path.exists():
        path.rmtree()
    paths.copy_tree(staging / "params", path, last=(COMMIT_SUCCESS,))
    staging.rmtree()
    return path


def is_complete(path: str | os.PathLike) -> bool:
    """Whether `path` holds a whole params checkpoint: locally, whether it exists (it is
    renamed into place whole); on GCS, whether it holds `commit_success.txt`."""
    path = paths.path(path)
    if paths.is_remote(path):
        return (path / COMMIT_SUCCESS).exists()
    return path.exists()


def check_complete(path: str | os.PathLike) -> None:
    """Fails (ValueError) for a `gs://` params directory that `is_complete` refuses, naming
    the staging copy of an interrupted replace when one is beside it."""
    path = paths.path(path)
    if not paths.is_remote(path) or is_complete(path):
        return
    staged = sorted(
        s / "params"
        for s in path.parent.glob(f".{path.name}.partial-*")
        if (s / "params" / COMMIT_SUCCESS).exists()
    )
    where = (
        f"; the complete tree of that save is in {staged[-1]}: copy it to {path} to use it"
        if staged
        else ""
    )
    raise ValueError(
        f"{path}: incomplete params checkpoint (no {COMMIT_SUCCESS}: its save or replace "
        f"was cut off){where}"
    )


def is_params_checkpoint(path: str | os.PathLike) -> bool:
    """True for an Orbax PyTree whose top level is a param tree (not T5X's {target, state})."""
    path = paths.path(path)
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
