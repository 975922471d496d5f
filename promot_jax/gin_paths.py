"""Where the gin files live, for `--gin_search_paths` and gin.add_config_file_search_path."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def gin_dir() -> Path:
    """The folder holding `models/`, `sizes/`, `stages/`, ... gin files (the repo's gin/)."""
    spec = importlib.util.find_spec("promot_jax_gin")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    # Running from a source checkout that was never installed.
    candidate = Path(__file__).resolve().parent.parent / "gin"
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(
        "promot_jax's gin files were not found: install the package "
        "(pip install -e '.[test]') or run from the repository root"
    )
