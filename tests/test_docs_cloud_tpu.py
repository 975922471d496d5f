"""docs/cloud_tpu.md gives every command of the tiny T5X sequence: each gin/t5x/test/ run file
with its entry point, and the entry point's fallback_init_rng wherever a prompt file is read."""

from __future__ import annotations

import json
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


PLANS = DOC.parent / "tpu_plans"
TABLE = re.compile(r"<!-- plan-table:[^>]*-->\n(.*?)<!-- /plan-table -->", re.S)


def _plans() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(PLANS.glob("*.json"))]


def test_the_plan_table_is_the_compiled_plans():
    from promot_jax import tpu_plan

    match = TABLE.search(DOC.read_text())
    assert match, "docs/cloud_tpu.md lost its plan-table markers"
    plans = _plans()
    expected = tpu_plan.markdown_table(plans) + "\n" if plans else ""
    assert match.group(1) == expected, "regenerate the table: tpu_plan.markdown_table"


def test_every_size_file_s_mesh_fits_the_paper_s_slice_where_compiled():
    from promot_jax import tpu_plan

    for plan in _plans():
        case = f"{plan['size']} {plan['method']} on {plan['slice']}"
        assert plan["fits"], f"{case} does not fit on the mesh of t5x/sizes/{plan['size']}.gin"
        assert plan["mesh"]["model"] == tpu_plan.t5x_num_partitions(plan["size"]), case
