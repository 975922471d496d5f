"""Gin for our runner: t5x-style flags (`--gin_file`, `--gin.NAME=VALUE`, `--gin_search_paths`).

The project's gin/ folder is always on the search path, after the user's, so
`--gin_file=experiments/toy_promot_rte.gin` works from anywhere. Configurables
are registered dynamically in the gin files (`from __gin__ import dynamic_registration`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import gin
from promot_jax.gin_paths import gin_dir


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gin_file", action="append", default=[], help="gin file (repeatable), in order"
    )
    parser.add_argument(
        "--gin_search_paths",
        default="",
        help="comma-separated folders searched for gin files and includes (before gin/)",
    )
    parser.add_argument(
        "--gin_bindings",
        action="append",
        default=[],
        help="a gin binding, e.g. --gin_bindings=\"RUN_DIR='/tmp/run'\"",
    )


class _QuietSearch(logging.Filter):
    """Gin logs an ERROR for every search-path folder an include is not in; hide those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found:")


def parse(
    gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()
) -> None:
    """Parses files then bindings; unknown files fail with every folder that was searched."""
    gin.clear_config()
    for handler in logging.getLogger().handlers or [logging.lastResort]:
        handler.addFilter(_QuietSearch())
    logging.getLogger().addFilter(_QuietSearch())
    folders = [Path(p) for p in search_paths if p] + [gin_dir()]
    for folder in folders:
        gin.add_config_file_search_path(str(folder))
    if not gin_files:
        raise ValueError("no --gin_file given; see gin/experiments/ for the recipes")
    for f in gin_files:
        if not Path(f).is_file() and not any((d / f).is_file() for d in folders):
            raise FileNotFoundError(
                f"gin file {f!r} not found here or in {', '.join(str(d) for d in folders)}"
            )
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=True)
