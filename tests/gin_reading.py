"""Gin files read as text, without gin's global config and without t5x installed.

`statements` parses one file with gin's own parser (references and macros become `Reference`
and `Macro` markers instead of live objects); `resolve` follows a chain of files and their
includes the way gin applies them (later assignments win) and keeps what it leaves: every
macro and every binding. Includes that are not in the project's gin/ folder (T5X's own
`t5x/configs/...`) are listed in `external`, unread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gin import config_parser
from promot_jax.gin_paths import gin_dir


@dataclasses.dataclass(frozen=True)
class Macro:
    name: str


@dataclasses.dataclass(frozen=True)
class Reference:
    name: str  # scoped selector, e.g. "tune_model/stage2/train.StageConfig"
    evaluate: bool


class _Markers(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name: str, evaluate: bool) -> Reference:
        return Reference(scoped_name, evaluate)

    def macro(self, name: str) -> Macro:
        return Macro(name)


def path_of(name: str | Path) -> Path:
    """A gin file by its name under gin/ (or an absolute path)."""
    path = Path(name)
    return path if path.is_absolute() else gin_dir() / path


def statements(name: str | Path) -> list:
    return list(config_parser.ConfigParser(path_of(name).read_text(), _Markers()))


def header(name: str | Path) -> list[str]:
    """The comment lines a file starts with."""
    lines = []
    for line in path_of(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def markers(value: Any):
    """Every Macro and Reference inside a bound value (dicts, lists, tuples)."""
    if isinstance(value, Macro | Reference):
        yield value
    elif isinstance(value, dict):
        for v in (*value.keys(), *value.values()):
            yield from markers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from markers(v)


@dataclasses.dataclass
class Resolved:
    macros: dict[str, Any] = dataclasses.field(default_factory=dict)
    bindings: dict[tuple[str, str, str], Any] = dataclasses.field(default_factory=dict)
    external: list[str] = dataclasses.field(default_factory=list)

    def value(self, value: Any) -> Any:
        """`value` with every macro replaced by what it resolves to."""
        if isinstance(value, Macro):
            if value.name not in self.macros:
                raise KeyError(f"macro {value.name} is not set by these files")
            return self.value(self.macros[value.name])
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value

    def macro(self, name: str) -> Any:
        return self.value(Macro(name))

    def binding(self, selector: str, arg: str, scope: str = "") -> Any:
        """What gin would pass as `arg` to `selector` called in `scope` (outer scopes too)."""
        parts = scope.split("/") if scope else []
        for i in range(len(parts), -1, -1):
            key = ("/".join(parts[:i]), selector, arg)
            if key in self.bindings:
                return self.value(self.bindings[key])
        raise KeyError(f"{scope + '/' if scope else ''}{selector}.{arg} is not bound")


def resolve(*names: str) -> Resolved:
    """What the files leave, applied in order as gin applies them (includes followed)."""
    out = Resolved()

    def visit(name: str) -> None:
        path = path_of(name)
        if not path.is_file():
            out.external.append(name)
            return
        for st in statements(path):
            if isinstance(st, config_parser.IncludeStatement):
                visit(st.filename)
            elif isinstance(st, config_parser.BindingStatement):
                if not st.scope and not st.arg_name and "." not in st.selector:
                    out.macros[st.selector] = st.value
                else:
                    out.bindings[(st.scope, st.selector, st.arg_name)] = st.value

    for name in names:
        visit(name)
    return out
