"""T5X's Orbax checkpoint layout, read and written without t5x.

T5X with `use_orbax=True` writes `checkpoint_<step>/state/` as an OCDBT PyTree
(`_METADATA`, `manifest.ocdbt`, ...) holding `{target, state: {step, param_states}}`.
Only `target` is read: optimizer state is skipped with Orbax's partial restore.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from promot_jax import paths
from promot_jax.checkpoints import param_tree
from promot_jax.paths import Path

STATE_DIR = "state"


def tree_metadata(pytree_dir: str | os.PathLike) -> dict:
    """The saved tree of an Orbax PyTree directory, leaves being Orbax metadata (or None)."""
    pytree_dir = paths.path(pytree_dir)
    if not (pytree_dir / "_METADATA").is_file():
        raise FileNotFoundError(f"{pytree_dir}: no Orbax PyTree (_METADATA is missing)")
    try:
        meta = ocp.PyTreeCheckpointer().metadata(pytree_dir)
        tree = getattr(meta, "item_metadata", meta)
        if tree is None:
            # T5X writes `_CHECKPOINT_METADATA` one level up (checkpoint_<step>/), where the
            # Checkpointer does not look; the handler reads the tree from `_METADATA` alone.
            tree = ocp.PyTreeCheckpointHandler().metadata(paths.absolute(pytree_dir))
    except Exception as e:
        raise ValueError(f"{pytree_dir}: unreadable Orbax metadata: {e}") from e
    tree = getattr(tree, "tree", tree)
    return dict(tree)


def _prune(meta: Any, keep: Callable[[str], bool], prefix: str = "") -> Any:
    if isinstance(meta, Mapping):
        kept = {}
        for k, v in meta.items():
            sub = _prune(v, keep, f"{prefix}/{k}" if prefix else k)
            if sub is not _DROP:
                kept[k] = sub
        return kept if kept or not meta else _DROP
    return meta if keep(prefix) else _DROP


_DROP = object()


def restore_numpy(pytree_dir: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> dict:
    """Restore an Orbax PyTree as host numpy arrays (None leaves kept).

    With `keep`, only leaves whose `a/b/c` path it accepts are read (Orbax partial
    restore), so T5X's optimizer state is never loaded to get at the params.
    """
    pytree_dir = paths.absolute(pytree_dir)  # Orbax refuses relative paths
    meta = tree_metadata(pytree_dir)
    if keep is not None:
        meta = _prune(meta, keep)
        if meta is _DROP:
            return {}
    try:
        return ocp.PyTreeCheckpointer().restore(
            pytree_dir,
            args=ocp.args.PyTreeRestore(
                item=meta,
                restore_args=_numpy_restore_args(meta),
                partial_restore=keep is not None,
            ),
        )
    except Exception as e:
        raise ValueError(f"{pytree_dir}: cannot restore the Orbax PyTree: {e}") from e


def _numpy_restore_args(meta: Any) -> Any:
    if isinstance(meta, Mapping):
        return {k: _numpy_restore_args(v) for k, v in meta.items()}
    if meta is None:
        return None
    return ocp.RestoreArgs(restore_type=np.ndarray)


# The subtree holding parameters: T5X's `target`; a promot-jax training step's `trainable`.
T5X_ROOT = "target"
PROMOT_STEP_ROOT = "trainable"


def param_paths(state_dir: str | os.PathLike, root: str = T5X_ROOT) -> list[str]:
    """Paths of the `root` leaves, from the metadata only."""
    return list(param_tree.flatten(tree_metadata(state_dir).get(root) or {}))


def read_params(
    state_dir: str | os.PathLike,
    keep: Callable[[str], bool] | None = None,
    root: str = T5X_ROOT,
) -> dict[str, Any]:
    """Flat `{path: array}` of `root` in an Orbax `state` directory (T5X's
    `checkpoint_<step>/state`, or a promot-jax `checkpoints/<step>/state`)."""
    prefix = f"{root}/"
    tree = restore_numpy(
        state_dir,
        lambda p: p.startswith(prefix) and (keep is None or keep(p[len(prefix) :])),
    )
    return param_tree.flatten(tree.get(root) or {})


def write_checkpoint(
    model_dir: str | os.PathLike,
    params: Mapping,
    *,
    step: int = 0,
    param_states: Mapping | None = None,
) -> Path:
    """Write `model_dir/checkpoint_<step>/state/` as T5X's Orbax layout; return the step dir.

    Arrays are stored with the dtype they have (float32 or bfloat16); None leaves in
    `param_states` are kept, as T5X keeps them for untouched parameters.
    """
    ckpt_dir = paths.checked(model_dir) / f"checkpoint_{step}"
    if ckpt_dir.exists():
        raise FileExistsError(f"{ckpt_dir} already exists")
    ckpt_dir.mkdir(parents=True)
    tree = {
        "target": _to_numpy(params),
        "state": {"step": np.asarray(step, np.int32), "param_states": _to_numpy(param_states)},
    }
    ocp.PyTreeCheckpointer().save(ckpt_dir / STATE_DIR, tree)
    return ckpt_dir


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return None if tree is None else np.asarray(tree)
