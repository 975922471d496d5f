"""Directories the project writes into: who owns them, writing into them safely.

A directory promot-jax creates for a job (a lab, a pretraining) carries a marker,
`.promot_jax.json`, naming the job and the top-level entries the job writes. Only a
directory with that marker is ever cleared (`--force`), and clearing removes only
the entries the marker lists: anything else in the folder is left as it was. A
folder without the marker is never written into by a job that needs it empty.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import uuid
from collections.abc import Iterable

from promot_jax import paths
from promot_jax.paths import Path

MARKER = ".promot_jax.json"


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Writes `data` to `path` via a temporary file beside it: a crash never leaves half a file.

    On GCS an object write is atomic already: the object is replaced when its upload
    completes, and an upload that fails or is cut off leaves the old object (or none) in
    place, so `data` is written to `path` directly.
    """
    path = paths.path(path)
    if paths.is_remote(path):
        paths.check_bucket(path)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def flat(record: dict, prefix: str = "") -> dict:
    """`{"optimizer": {"learning_rate": 0.2}}` -> `{"optimizer.learning_rate": 0.2}`."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_ABSENT = object()


def check_record(
    path: str | os.PathLike,
    record: dict,
    *,
    what: str,
    fix: str,
    ignore: Iterable[str] = (),
    where: str | None = None,
) -> bool:
    """The one resume check: fails (ValueError), writing nothing, unless the JSON record at
    `path` is absent or equals `record` on every setting but `ignore` (dotted names, as
    `flat` spells them); returns True when a matching record is there (a resume).

    The refusal reads "<where> holds <what> (<setting>: <old> -> <new>; ...); nothing was
    changed: <fix>", and says when the record predates a setting.
    """
    path = paths.path(path)
    if not path.exists():
        return False
    old, new = flat(json.loads(path.read_text())), flat(record)
    skip = set(ignore)
    keys = [k for k in sorted(set(old) | set(new)) if k not in skip]
    differ = [k for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
    if not differ:
        return True

    def shown(rec: dict, key: str) -> str:
        return repr(rec[key]) if key in rec else "(not recorded)"

    diffs = "; ".join(f"{k}: {shown(old, k)} -> {shown(new, k)}" for k in differ)
    older = [k for k in differ if k not in old]
    note = (
        f" ({path.name} was written by an older promot-jax that did not record {', '.join(older)})"
        if older
        else ""
    )
    raise ValueError(
        f"{where or path.parent} holds {what} ({diffs}){note}; nothing was changed: {fix}"
    )


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Fails (ValueError naming `what`) unless `path` is, or can be made, a writable directory.

    No directory is created: the nearest existing ancestor gets a temporary file, at once
    removed. On GCS (no directories there) the bucket must exist and take a small object
    under `path`, at once removed.
    """
    path = paths.path(path)
    if paths.is_remote(path):
        return _check_writable_remote(path, what)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(
            f"{what} {path}: {probe} is a file, not a directory; choose a directory path"
        )
    try:  # a real write: permission bits say nothing to root, nor of read-only mounts
        with tempfile.TemporaryFile(dir=probe, prefix=".promot_jax_probe_"):
            pass
    except OSError as e:
        raise ValueError(
            f"{what} {path}: {probe} is not writable ({e.strerror or e}); "
            "choose a writable directory"
        ) from None
    return path


def _check_writable_remote(path: Path, what: str) -> Path:
    paths.check_bucket(path, what)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path}: is a file, not a directory; choose a directory path")
    probe = path / f".promot_jax_probe_{uuid.uuid4().hex[:12]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except Exception as e:  # each client raises its own kinds
        first = " ".join(str(e).split())[:300]
        raise ValueError(
            f"{what} {path}: is not writable ({type(e).__name__}: {first}); "
            "choose a writable location"
        ) from None
    return path


def read_marker(directory: Path) -> dict | None:
    """The marker of `directory`, or None when promot-jax did not create it."""
    try:
        return json.loads((directory / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{directory / MARKER} is not valid JSON ({e}): it was damaged or not written by "
            "promot-jax; remove it by hand if the folder is yours"
        ) from None


def _listing(directory: Path, names: Iterable[str] | None = None, limit: int = 8) -> str:
    names = sorted(names if names is not None else (p.name for p in directory.iterdir()))
    shown = [n + ("/" if (directory / n).is_dir() else "") for n in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def check_claimable(
    directory: str | os.PathLike, kind: str, entries: Iterable[str], evidence: str
) -> bool:
    """Fails (FileExistsError naming what is there) unless `claim` may take `directory`;
    returns True when it already holds a `kind` job's files.

    Claimable: missing or empty; marked by promot-jax as `kind`; or made before markers
    existed: it holds the job's own record `evidence` and only names of `entries`.
    """
    directory = paths.path(directory)
    if not directory.is_dir():
        return False
    marker = read_marker(directory)
    present = {p.name for p in directory.iterdir()}
    if marker is None:
        if not present:
            return False
        if (directory / evidence).exists() and present <= set(entries):
            return True
        raise FileExistsError(
            f"{directory} is not empty and has no promot-jax marker ({MARKER}); it holds "
            f"{_listing(directory)}. Nothing was changed: choose another directory"
        )
    if marker.get("kind") != kind:
        raise FileExistsError(
            f"{directory} is a promot-jax {marker.get('kind')!r} directory, not a {kind!r} one; "
            "nothing was changed: choose another directory"
        )
    return True


def claim(directory: str | os.PathLike, kind: str, entries: Iterable[str], evidence: str) -> bool:
    """Marks `directory` as a `kind` job's (see `check_claimable`); returns True when it
    already was one. The marker lists `entries` (and what an earlier marker listed)."""
    directory = paths.path(directory)
    was = check_claimable(directory, kind, entries, evidence)
    marker = read_marker(directory) if directory.is_dir() else None
    owned = sorted(set(entries) | set(marker.get("entries", []) if marker else []))
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / MARKER, json.dumps({"kind": kind, "entries": owned}, indent=2))
    return was


def clear(directory: str | os.PathLike, kind: str) -> list[str]:
    """Removes the entries the `kind` marker of `directory` lists; returns the names left
    because promot-jax did not write them. The marker stays (`claim` renews it). Refuses
    an unmarked folder."""
    directory = paths.path(directory)
    if not directory.exists():
        return []
    marker = read_marker(directory)
    if marker is None:
        if not any(directory.iterdir()):
            return []
        raise FileExistsError(
            f"{directory} has no promot-jax marker ({MARKER}), so --force does not clear "
            f"it; it holds {_listing(directory)}. Nothing was changed: choose another directory"
        )
    if marker.get("kind") != kind:
        raise FileExistsError(
            f"{directory} is a promot-jax {marker.get('kind')!r} directory, not a {kind!r} one; "
            "nothing was changed"
        )
    owned = set(marker.get("entries", [])) - {MARKER}
    for name in sorted(owned):
        if not name or "/" in name or name in (".", ".."):
            continue  # a marker entry is one name inside the directory, never a path
        path = directory / name
        link = not paths.is_remote(path) and path.is_symlink()  # GCS has no links
        if path.is_dir() and not link:
            paths.rmtree(path)
        elif path.exists() or link:
            path.unlink()
    return sorted(p.name for p in directory.iterdir() if p.name != MARKER)
