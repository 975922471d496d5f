"""`promot-jax params`: counts from shapes alone match the published mT5 sizes."""

from __future__ import annotations

import re

import pytest

from promot_jax import cli

# Published sizes (mT5 paper / T5X docs), and how close our count must be.
PUBLISHED = {"small": 300e6, "base": 580e6, "large": 1.2e9, "xl": 3.7e9, "xxl": 13e9}


def _total(capsys) -> int:
    out = capsys.readouterr().out
    return int(re.search(r"^total\s+([\d,]+)", out, re.M).group(1).replace(",", ""))


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_counts_match_published_sizes(size, capsys):
    assert cli.main(["params", "--size", size]) == 0
    total = _total(capsys)
    assert abs(total - PUBLISHED[size]) / PUBLISHED[size] < 0.05, total


def test_prompt_adds_p_times_d_and_is_listed(capsys):
    assert cli.main(["params", "--size", "xxl"]) == 0
    plain = _total(capsys)
    assert cli.main(["params", "--size", "xxl", "--prompt-length", "100"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^encoder/prompt\s+409,600", out, re.M)
    assert int(re.search(r"^total\s+([\d,]+)", out, re.M).group(1).replace(",", "")) == (
        plain + 100 * 4096
    )


def test_unknown_size_lists_valid_ones(capsys):
    assert cli.main(["params", "--size", "huge"]) == 2
    assert "valid sizes: tiny, small, base, large, xl, xxl" in capsys.readouterr().err


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert "run every stage of an experiment" in out
