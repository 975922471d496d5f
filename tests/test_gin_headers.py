"""Gin hygiene for every file under gin/: headers that say what a file provides, requires and
must come after; includes that exist; and every module a file refers to imported by that file
(with dynamic registration gin refuses anything else, at parse time, file by file)."""

from __future__ import annotations

import re

import pytest
from gin_reading import Macro, Reference, header, markers, path_of, statements

from gin import config_parser
from promot_jax.gin_paths import gin_dir

FILES = sorted(str(p.relative_to(gin_dir())) for p in gin_dir().rglob("*.gin"))
HEADER_WIDTH = 100
# Every header says these, each at the start of a comment line.
HEADER_FIELDS = ("Provides", "Requires", "Must come after")
T5X_OWN = "t5x/configs/"  # includes served by T5X's package, not by gin/


def test_every_gin_file_is_checked():
    assert len(FILES) > 40 and "recipe/paper.gin" in FILES


@pytest.mark.parametrize("name", FILES)
def test_header_says_what_the_file_provides_requires_and_must_come_after(name):
    lines = header(name)
    assert lines, f"{name}: no header (the file must start with comment lines)"
    text = "\n".join(lines)
    for field in HEADER_FIELDS:
        assert re.search(rf"^# (\S+ )?{field}\b[^:\n]*:", text, re.M), (
            f"{name}: header has no '{field}:' line"
        )
    wide = [
        f"{i + 1}: {len(line)} chars" for i, line in enumerate(lines) if len(line) > HEADER_WIDTH
    ]
    assert not wide, f"{name}: header lines over {HEADER_WIDTH} characters: {wide}"


@pytest.mark.parametrize("name", FILES)
def test_header_names_every_required_macro(name):
    text = "\n".join(header(name))
    required = [
        st.selector
        for st in statements(name)
        if isinstance(st, config_parser.BindingStatement)
        and st.value == Macro("gin.REQUIRED")
        and not st.arg_name
    ]
    missing = [m for m in required if not re.search(rf"\b{m}\b", text)]
    assert not missing, f"{name}: %gin.REQUIRED macros the header does not name: {missing}"


@pytest.mark.parametrize("name", FILES)
def test_includes_exist_and_referenced_modules_are_imported(name):
    imported = {"gin"}  # %gin.REQUIRED
    problems = []
    for st in statements(name):
        if isinstance(st, config_parser.ImportStatement):
            if st.module == "__gin__.dynamic_registration":
                continue
            imported.add(st.alias or (st.module.rsplit(".", 1)[-1] if st.is_from else st.module))
        elif isinstance(st, config_parser.IncludeStatement):
            if not st.filename.startswith(T5X_OWN) and not path_of(st.filename).is_file():
                problems.append(f"include {st.filename!r} is not in gin/")
        elif isinstance(st, config_parser.BindingStatement):
            names = [st.selector] if "." in st.selector else []
            names += [m.name.split("/")[-1] for m in markers(st.value) if isinstance(m, Reference)]
            names += [m.name for m in markers(st.value) if isinstance(m, Macro) and "." in m.name]
            for selector in names:
                module = selector.split(".")[0]
                if module not in imported:
                    problems.append(f"line {st.location.line_num}: {selector} needs an import")
    text = path_of(name).read_text()
    assert "from __gin__ import dynamic_registration" in text, f"{name}: not dynamic registration"
    assert "__main__" not in text, f"{name}: binds through __main__"
    assert not problems, f"{name}: {problems}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text(
        "# Provides: something\n# Requires: nothing.\n"
        "from __gin__ import dynamic_registration\n"
        "include 'stages/nowhere.gin'\nX = %gin.REQUIRED\nexperiment.run_experiment.stages = "
        "{'a': @stage/train.StageConfig()}\n"
    )
    for check in (
        test_header_says_what_the_file_provides_requires_and_must_come_after,
        test_header_names_every_required_macro,
        test_includes_exist_and_referenced_modules_are_imported,
    ):
        with pytest.raises(AssertionError):
            check(str(bad))
