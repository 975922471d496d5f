"""Gin for our runner: t5x-style flags (`--gin_file`, `--gin.NAME=VALUE`, `--gin_search_paths`).

The project's gin/ folder is always on the search path, after the user's, so
`--gin_file=test/tiny_promot_toy.gin` works from anywhere. Configurables
are registered dynamically in the gin files (`from __gin__ import dynamic_registration`).
"""

from __future__ import annotations

import argparse
import difflib
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
    """Parses files then bindings, then finalizes.

    Errors are ValueErrors of one line: an unknown file names every folder searched; a
    binding gin cannot read names the binding and how to quote strings; a binding to a
    macro or configurable that no loaded gin file uses names the closest ones in use
    (a misspelt `STAGE1_STEP=...` would otherwise be ignored without a word).
    """
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
    try:
        gin.parse_config_files_and_bindings(list(gin_files), None, finalize_config=False)
    except SyntaxError as e:
        raise ValueError(f"gin file {e.filename or ''} line {e.lineno}: {e.msg}") from None
    user: dict[str, dict] = {}
    for binding in bindings:
        before = _bound_keys()
        try:
            gin.parse_config(binding)
        except SyntaxError as e:
            raise ValueError(_unreadable(binding, e)) from None
        except ValueError as e:  # gin's own: unknown configurable or parameter (several lines)
            first = str(e).splitlines()[0]
            raise ValueError(f"{_flag(binding)}: {first}{_close_configurables(binding)}") from None
        user[binding] = _bound_keys(before)
        _check_used(binding, user[binding])
    gin.finalize()
    _check_effective(user)


# Configurables the code calls itself (not through a reference in a gin file).
ROOTS = ("promot_jax.experiment.run_experiment",)


def _flag(binding: str) -> str:
    name, _, value = binding.partition("=")
    return f"--gin.{name.strip()}={value.strip()}"


def _unreadable(binding: str, error: SyntaxError) -> str:
    name, _, value = binding.partition("=")
    name, value = name.strip(), value.strip()
    why = str(error.msg).splitlines()[-1].strip()
    hint = ""
    if value and value[0] not in "'\"[{(%@" and not value[0].isdigit():
        hint = (
            f"; a string needs quotes that the shell keeps: --gin.{name}=\"'{value}'\" "
            f"(or --gin_bindings=\"{name}='{value}'\")"
        )
    return f"{_flag(binding)}: gin cannot read the value {value!r} ({why}){hint}"


def _bound_keys(before: dict | None = None) -> dict:
    """{(scope, configurable): {param: id of value}}, or the params that changed since
    `before`."""
    now = {k: {p: id(v) for p, v in ps.items()} for k, ps in gin.config._CONFIG.items()}
    if before is None:
        return now
    changed = {}
    for key, params in now.items():
        old = before.get(key, {})
        diff = {p: i for p, i in params.items() if old.get(p) != i}
        if diff:
            changed[key] = diff
    return changed


def _references(value, found: list) -> list:
    if isinstance(value, gin.config.ConfigurableReference):
        found.append(value.config_key)
    elif isinstance(value, dict):
        for v in value.values():
            _references(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _references(v, found)
    return found


def _used() -> tuple[set[str], set[str], set[str]]:
    """(macros referenced, configurables referenced or called by the code, scopes in use)."""
    refs: list = []
    for ps in gin.config._CONFIG.values():
        for v in ps.values():
            _references(v, refs)
    macros = {scope for scope, name in refs if name == "gin.macro"}
    configurables = {name for _, name in refs if name != "gin.macro"} | set(ROOTS)
    scopes = {p for scope, name in refs if name != "gin.macro" for p in scope.split("/") if p}
    return macros, configurables, scopes


def _check_effective(user: dict[str, dict]) -> None:
    """Builds the experiment's arguments (no stage runs) and fails for a binding that no
    call took, e.g. `stage2/...` under a file that binds `tune_model/stage2/...`: gin
    takes the most specific scope, so the user's binding would be ignored in silence."""
    root = ROOTS[0]
    if not any(name == root for _, name in gin.config._CONFIG):
        return  # no experiment in these files (a stage file parsed on its own)
    gin.get_bindings(root, resolve_references=True)
    used = gin.config._OPERATIVE_CONFIG
    for binding, changed in user.items():
        for (scope, name), params in changed.items():
            if name == "gin.macro":
                if (scope, name) not in used:
                    read = sorted(s for s, n in used if n == "gin.macro")
                    close = difflib.get_close_matches(scope, read, n=3, cutoff=0.4)
                    raise ValueError(
                        f"{_flag(binding)} has no effect: no call of the experiment reads the "
                        f"macro {scope} (where a file uses it, a more specific binding wins)"
                        + (f"; did you mean {', '.join(close)}?" if close else "")
                    )
                continue
            calls = [
                (call_scope, values)
                for (call_scope, call_name), values in used.items()
                if call_name == name and _is_prefix(scope, call_scope)
            ]
            for param in params:
                value = gin.config._CONFIG[(scope, name)][param]
                if not any(param in v and _same(v[param], value) for _, v in calls):
                    where = ", ".join(sorted(c or "(no scope)" for c, _ in calls))
                    raise ValueError(
                        f"{_flag(binding)} has no effect: "
                        + (
                            f"a more specific binding wins in scope {where}; bind it there"
                            if calls
                            else f"{_short(name)} is never called in scope {scope}"
                        )
                        + (f" (scopes that call {_short(name)}: {_scopes_calling(name)})")
                    )


def _is_prefix(scope: str, call_scope: str) -> bool:
    mine, theirs = [p for p in scope.split("/") if p], [p for p in call_scope.split("/") if p]
    return theirs[: len(mine)] == mine


def _same(a, b) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # arrays and odd objects: identity only
        return False


def _scopes_calling(name: str) -> str:
    scopes = sorted({s or "(no scope)" for s, n in gin.config._OPERATIVE_CONFIG if n == name})
    return ", ".join(scopes)


def _short(name: str) -> str:
    return ".".join(name.rsplit(".", 2)[-2:])


def _close_configurables(binding: str) -> str:
    selector = binding.partition("=")[0].strip().rsplit("/", 1)[-1].rsplit(".", 1)[0]
    in_use = sorted({_short(c) for c in _used()[1]})
    close = difflib.get_close_matches(_short(selector), in_use, n=3)
    return f"; configurables in use like it: {', '.join(close)}" if close else ""


def _check_used(binding: str, changed: dict) -> None:
    macros, configurables, scopes = _used()
    for scope, name in changed:
        if name == "gin.macro":
            if scope not in macros:
                close = difflib.get_close_matches(scope, sorted(macros), n=3)
                raise ValueError(
                    f"{_flag(binding)}: no loaded gin file uses the macro {scope}"
                    + (f"; did you mean {', '.join(close)}?" if close else "")
                    + f" (macros in use: {', '.join(sorted(macros)) or 'none'})"
                )
            continue
        unknown_scopes = [p for p in scope.split("/") if p and p not in scopes]
        if unknown_scopes:
            raise ValueError(
                f"{_flag(binding)}: no loaded gin file calls {_short(name)} in scope "
                f"{'/'.join(unknown_scopes)} (scopes in use: {', '.join(sorted(scopes))})"
            )
        if name not in configurables:
            close = difflib.get_close_matches(
                _short(name), sorted({_short(c) for c in configurables}), n=3
            )
            raise ValueError(
                f"{_flag(binding)}: no loaded gin file uses {_short(name)}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
