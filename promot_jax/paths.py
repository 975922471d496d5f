"""Local and cloud (`gs://`) paths behind one API.

`path(p)` is a `pathlib.Path` for a local path, exactly as before, and an
`etils.epath.Path` for a URI (`gs://bucket/...`; `s3://` and the rest of epath's
schemes go the same way). Both answer the pathlib calls the project uses (`/`, `.name`,
`.parent`, `exists`, `is_dir`, `is_file`, `iterdir`, `read_text`, `read_bytes`,
`write_bytes`, `mkdir`, `unlink`, `open`), so code written against them works on
either; the few that differ (removing a tree, moving a directory, handing a path to
TensorStore, a file that only accepts local names) have a helper here.

epath reaches `gs://` through `tf.io.gfile` when TensorFlow is importable (it is, here:
tensorflow-text needs it), else through gcsfs; `EPATH_USE_TF=false` picks gcsfs.
TensorStore (Orbax's arrays, T5X's zarr arrays) has its own GCS client. Local paths
never go through epath, so they are neither slower nor different.

A bucket is checked once per process before its first use (`check_bucket`): a missing
bucket, or one whose endpoint does not answer within `PROMOT_JAX_GCS_TIMEOUT` seconds
(default 20), fails naming the path instead of waiting out the clients' retries.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from etils import epath

Path = pathlib.Path | epath.Path
TIMEOUT_ENV = "PROMOT_JAX_GCS_TIMEOUT"
DEFAULT_TIMEOUT_S = 20.0


def _no_gcsfs_listings_cache() -> None:
    """gcsfs (epath's gs:// backend without TensorFlow) answers `exists` from cached
    listings by default; TensorStore writes the same bucket behind its back (Orbax's and
    T5X's arrays), so such an answer can be stale. Turned off unless configured."""
    try:
        import fsspec.config
    except ImportError:
        return
    fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


_no_gcsfs_listings_cache()


def is_remote(p: Any) -> bool:
    """True for a URI (`gs://...`), as a string or as an `epath.Path`."""
    text = os.fspath(p)
    if isinstance(text, bytes):
        text = text.decode()
    return "://" in text and not text.startswith("file://")


def path(p: str | os.PathLike) -> Path:
    """A `pathlib.Path` for a local path, an `epath.Path` for `gs://...` (and other URIs)."""
    if type(p) in (pathlib.PosixPath, pathlib.WindowsPath):
        return p
    text = os.fspath(p)
    if is_remote(text):
        return p if isinstance(p, epath.Path) else epath.Path(text)
    return pathlib.Path(text.removeprefix("file://"))


def absolute(p: str | os.PathLike) -> Path:
    """`path(p)`, made absolute when local (a URI is absolute already)."""
    q = path(p)
    return q if is_remote(q) else q.absolute()


def resolve(p: str | os.PathLike) -> Path:
    """`path(p)`, resolved when local (symlinks too); a URI stays as it is."""
    q = path(p)
    return q if is_remote(q) else q.resolve()


def bucket_of(p: str | os.PathLike) -> str:
    """`gs://bucket` of a remote path."""
    scheme, _, rest = os.fspath(p).partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


_ANSWERED: set[str] = set()  # buckets seen to exist: checked once per process


def _bucket_state(bucket: str, timeout: float) -> tuple[bool, str | None]:
    """(missing, why): why is None when `bucket` answers and exists."""
    if bucket in _ANSWERED:
        return False, None
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            result["exists"] = epath.Path(bucket).exists()
        except BaseException as e:  # noqa: BLE001 (reported to the caller)
            result["error"] = e

    worker = threading.Thread(target=probe, daemon=True, name=f"promot_jax-probe-{bucket}")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return False, (
            f"no answer from {bucket} within {timeout:g} s (is the bucket's endpoint "
            f"reachable from here? {TIMEOUT_ENV} sets the wait)"
        )
    if "error" in result:
        e = result["error"]
        first = " ".join(str(e).split())[:300]
        return False, f"{bucket} cannot be reached ({type(e).__name__}: {first})"
    if not result["exists"]:
        return True, f"bucket {bucket} does not exist or these credentials cannot see it"
    _ANSWERED.add(bucket)
    return False, None


def check_bucket(p: str | os.PathLike, what: str = "") -> None:
    """For a remote `p`: fails naming `p` unless its bucket exists (else FileNotFoundError)
    and answers within `PROMOT_JAX_GCS_TIMEOUT` seconds (else ConnectionError). A local
    `p` passes untouched."""
    if not is_remote(p):
        return
    missing, why = _bucket_state(bucket_of(p), _timeout())
    if why is not None:
        error = FileNotFoundError if missing else ConnectionError
        raise error(f"{(what + ' ') if what else ''}{os.fspath(p)}: {why}")


def checked(p: str | os.PathLike, what: str = "") -> Path:
    """`path(p)`, its bucket checked first when remote (`check_bucket`)."""
    check_bucket(p, what)
    return path(p)


# --------------------------------------------------------------------------- trees


def rmtree(p: Path) -> None:
    """Removes the directory `p` and everything under it."""
    if is_remote(p):
        p.rmtree()
    else:
        shutil.rmtree(p)


def files_under(root: Path) -> Iterator[Path]:
    """Every file below `root` (recursively), in sorted order."""
    for child in sorted(root.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            yield from files_under(child)
        else:
            yield child


def copy_tree(src: Path, dst: Path, last: tuple[str, ...] = ()) -> None:
    """Copies the files under `src` to the same names under `dst` (server-side on GCS).
    Files named in `last` (at the top of `src`) are copied after all the others."""
    files = list(files_under(src))
    late = [f for f in files if f.parent == src and f.name in last]
    for f in [f for f in files if f not in late] + late:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_remote(f):
            f.copy(target, overwrite=True)
        else:
            shutil.copy2(f, target)


def move(src: Path, dst: Path) -> None:
    """Moves a file or directory. A local move is a rename; on GCS, where a directory is
    only a name prefix, its files are copied (server-side) and then removed."""
    if not is_remote(src):
        src.rename(dst)
        return
    if not src.is_dir():
        src.rename(dst)
        return
    copy_tree(src, dst)
    src.rmtree()


# --------------------------------------------------------------------------- clients


def kvstore(p: Path) -> dict | str:
    """The TensorStore kvstore of directory `p`: the `file` driver locally, `gs://`'s own."""
    if is_remote(p):
        return os.fspath(p).rstrip("/") + "/"
    return {"driver": "file", "path": os.fspath(p)}


def readable(p: Path) -> Path | io.BytesIO:
    """What `np.load` and the like read: a local path itself, a remote file's bytes."""
    return io.BytesIO(p.read_bytes()) if is_remote(p) else p


class local_copy:
    """`with local_copy(p) as name:` a local file name holding `p`'s bytes, for readers that
    take only local names (safetensors, TensorBoard's event loader). A local `p` is itself."""

    def __init__(self, p: Path):
        self._p = p
        self._tmp: str | None = None

    def __enter__(self) -> str:
        if not is_remote(self._p):
            return os.fspath(self._p)
        fd, self._tmp = tempfile.mkstemp(prefix="promot_jax_", suffix=f"_{self._p.name}")
        with os.fdopen(fd, "wb") as out, self._p.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 24)
        return self._tmp

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            os.unlink(self._tmp)
