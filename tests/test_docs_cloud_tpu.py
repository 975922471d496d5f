"""docs/cloud_tpu.md gives every command of the tiny T5X sequence: each gin/t5x/test/ run file
with its entry point, and the entry point's fallback_init_rng wherever a prompt file is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from promot_jax.gin_paths import gin_dir

DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud_tpu.md"
RUN_FILES = sorted(p.name for p in (gin_dir() / "t5x" / "test").glob("*_tiny.gin"))


def _commands(text: str) -> list[str]:
    """The doc's shell commands, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line for b in blocks for line in b.replace("\\\n", " ").splitlines()]


def _entry(run_file: str) -> str:
    return "t5x." + {"eval": "eval", "infer": "infer"}.get(run_file.split("_")[0], "train")


def test_every_tiny_run_file_is_covered():
    assert {"eval_no_prompt_tiny.gin", "infer_tiny.gin", "stage1_tiny.gin"} <= set(RUN_FILES)


@pytest.mark.parametrize("run_file", RUN_FILES)
def test_the_doc_gives_the_command_of(run_file):
    commands = [c for c in _commands(DOC.read_text()) if f"t5x/test/{run_file}" in c]
    assert commands, f"docs/cloud_tpu.md has no command with --gin_file=t5x/test/{run_file}"
    for command in commands:
        entry = _entry(run_file)
        assert f"python -m {entry} " in command, f"{run_file} runs under {entry}: {command}"
        if "PROMPT_FILE" in command and entry != "t5x.train":
            rng = f"--gin.{entry.split('.')[1].replace('eval', 'evaluate')}.fallback_init_rng=0"
            assert rng in command, f"{run_file} reads a prompt file: the command needs {rng}"
