"""T5X's legacy checkpoint layout, read and written without t5x.

`checkpoint_<step>/checkpoint` is a msgpack of
`{version: 3, optimizer: {target: <params>, state: {step, param_states}}}` whose
leaves are inline arrays, `None`, or TensorStore specs pointing at a zarr v2
directory next to it (named after the dotted parameter path). The public mT5
checkpoints use this layout; bfloat16 zarr arrays need tensorstore to read.
The writer exists so tests can build fixtures and users can hand our params to T5X.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorstore as ts
from flax import serialization

from promot_jax import paths
from promot_jax.checkpoints import param_tree
from promot_jax.paths import Path

MSGPACK_NAME = "checkpoint"
# zarr dtype strings T5X writes, by numpy dtype name
_ZARR_DTYPES = {"float32": "<f4", "bfloat16": "bfloat16", "float16": "<f2", "int32": "<i4"}


def _is_spec(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and {"driver", "kvstore", "metadata"} <= set(value)
        or (isinstance(value, Mapping) and value.get("driver") == "zarr" and "path" in value)
    )


def _read_spec(spec: Mapping, ckpt_dir: Path, where: str) -> np.ndarray:
    """Open a spec T5X stored, with its kvstore re-pointed at `ckpt_dir`."""
    kvstore = spec.get("kvstore") or {}
    rel = kvstore.get("path", spec.get("path"))  # very old specs keep `path` at the top
    if not rel:
        raise ValueError(f"{ckpt_dir}: TensorStore spec of {where} has no path: {spec}")
    if "://" in rel:  # gs://bucket/dir/name -> the last component, next to the msgpack
        rel = rel.rstrip("/").rsplit("/", 1)[-1]
    array_dir = ckpt_dir / rel
    if not (array_dir / ".zarray").is_file():
        raise FileNotFoundError(f"{array_dir}: zarr array of {where} is missing (.zarray)")
    # Chunks and compressor are read from .zarray; keep only what identifies the array.
    metadata = {k: v for k, v in (spec.get("metadata") or {}).items() if k in ("shape", "dtype")}
    open_spec = {
        "driver": "zarr",
        "kvstore": paths.kvstore(array_dir),
        "metadata": metadata,
    }
    try:
        return ts.open(open_spec, open=True).result().read().result()
    except Exception as e:  # tensorstore raises ValueError/RuntimeError subtypes
        raise ValueError(f"{array_dir}: cannot read zarr array of {where}: {e}") from e


def _read_msgpack(ckpt_dir: Path) -> dict:
    msgpack_path = ckpt_dir / MSGPACK_NAME
    if not msgpack_path.is_file():
        raise FileNotFoundError(f"{msgpack_path}: no T5X msgpack file")
    try:
        raw = serialization.msgpack_restore(msgpack_path.read_bytes())
    except Exception as e:
        raise ValueError(f"{msgpack_path}: not a readable T5X msgpack checkpoint: {e}") from e
    if not isinstance(raw, Mapping) or not isinstance(raw.get("optimizer"), Mapping):
        keys = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise ValueError(f"{msgpack_path}: expected {{version, optimizer}} at the top, got {keys}")
    return raw


def _flatten_specs(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Like param_tree.flatten, but a TensorStore spec dict is one leaf."""
    if _is_spec(tree) or not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten_specs(v, f"{prefix}/{k}" if prefix else k))
    return out


def read_state(ckpt_dir: str | os.PathLike) -> dict:
    """The whole `{target, state}` tree of `checkpoint_<step>/`, arrays loaded, None kept."""
    ckpt_dir = paths.path(ckpt_dir)
    optimizer = _read_msgpack(ckpt_dir)["optimizer"]
    flat = _flatten_specs({"target": optimizer.get("target"), "state": optimizer.get("state")})
    return param_tree.unflatten(
        {k: _read_spec(v, ckpt_dir, k) if _is_spec(v) else v for k, v in flat.items()}
    )


def param_paths(ckpt_dir: str | os.PathLike) -> list[str]:
    """Paths of the `target` leaves, without reading any array."""
    target = _read_msgpack(paths.path(ckpt_dir))["optimizer"].get("target")
    return list(_flatten_specs(target or {}))


def read_params(
    ckpt_dir: str | os.PathLike, keep: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """Flat `{path: array}` of the `target` (model parameters) of a legacy checkpoint.

    Optimizer state is never read; with `keep`, only the paths it accepts are.
    """
    ckpt_dir = paths.path(ckpt_dir)
    target = _read_msgpack(ckpt_dir)["optimizer"].get("target") or {}
    out = {}
    for path, leaf in _flatten_specs(target).items():
        if keep is not None and not keep(path):
            continue
        out[path] = _read_spec(leaf, ckpt_dir, f"target/{path}") if _is_spec(leaf) else leaf
    return out


# --------------------------------------------------------------------------- writer


def _write_zarr(array: np.ndarray, directory: Path) -> dict:
    dtype = _ZARR_DTYPES.get(array.dtype.name)
    if dtype is None:
        raise ValueError(f"cannot write dtype {array.dtype} to zarr; valid: {sorted(_ZARR_DTYPES)}")
    metadata = {
        "shape": list(array.shape),
        "chunks": list(array.shape) or [1],
        "dtype": dtype,
        "compressor": {"id": "gzip"},
    }
    spec = {"driver": "zarr", "kvstore": paths.kvstore(directory)}
    store = ts.open({**spec, "metadata": metadata}, create=True, delete_existing=True).result()
    store.write(array).result()
    # What goes into the msgpack: the path relative to the checkpoint directory.
    return {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": directory.name},
        "metadata": metadata,
    }


def write_checkpoint(
    model_dir: str | os.PathLike,
    params: Mapping,
    *,
    step: int = 0,
    param_states: Mapping | None = None,
    inline: Callable[[str, np.ndarray], bool] = lambda path, a: a.ndim < 2,
) -> Path:
    """Write `model_dir/checkpoint_<step>/` in T5X's legacy layout and return that dir.

    `params` is the nested param tree (numpy or jax arrays, float32 or bfloat16,
    stored as given); `param_states` an optional tree of optimizer state whose
    leaves may be None. Arrays for which `inline(path, array)` is true go into the
    msgpack; the rest into zarr directories named after the dotted path, as T5X
    does (its default inlines nothing big; the prompt-tuning fixture inlines 1-D).
    """
    ckpt_dir = paths.checked(model_dir) / f"checkpoint_{step}"
    if ckpt_dir.exists():
        raise FileExistsError(f"{ckpt_dir} already exists")
    ckpt_dir.mkdir(parents=True)

    def encode(tree: Any, prefix: str) -> Any:
        if isinstance(tree, Mapping):
            return {k: encode(v, f"{prefix}/{k}") for k, v in tree.items()}
        if tree is None:
            return None
        array = np.asarray(tree)
        path = prefix.split("/", 1)[1] if "/" in prefix else prefix
        if inline(path, array):
            return array
        return _write_zarr(array, ckpt_dir / prefix.replace("/", "."))

    target = encode(params, "target")
    states = encode(param_states or {}, "state/param_states")
    payload = {
        "version": 3,
        "optimizer": {
            "target": target,
            "state": {"step": np.asarray(step, np.int32), "param_states": states},
        },
    }
    (ckpt_dir / MSGPACK_NAME).write_bytes(serialization.msgpack_serialize(payload))
    return ckpt_dir
