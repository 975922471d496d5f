"""`promot-jax` runs under jemalloc when it is installed (promot_jax/allocator.py): when it
re-executes, with what, and what leaves the process as it is."""

import os
import subprocess
import sys

import pytest

from promot_jax import allocator

FOUND = "libjemalloc.so.2"


def _env(**kw):
    return allocator.preload_env(kw, find=lambda: FOUND, platform="linux")


def test_jemalloc_is_preloaded_with_page_decay_off():
    env = _env(PATH="/bin")
    assert env == {"PATH": "/bin", "LD_PRELOAD": FOUND, "MALLOC_CONF": allocator.JEMALLOC_CONF}
    assert _env(MALLOC_CONF="narenas:2")["MALLOC_CONF"] == "narenas:2"  # the user's stays


@pytest.mark.parametrize(
    "environ",
    [
        {"PROMOT_JAX_MALLOC": "system"},  # asked for the C library's malloc
        {"LD_PRELOAD": "libtcmalloc.so.4"},  # the user's preload
        {"LD_PRELOAD": FOUND},  # ours, after the re-execution: no loop
    ],
)
def test_no_reexecution_when_the_user_or_a_previous_one_chose(environ):
    assert allocator.preload_env(environ, find=lambda: FOUND, platform="linux") is None


def test_no_reexecution_without_jemalloc_or_off_linux():
    assert allocator.preload_env({}, find=lambda: None, platform="linux") is None
    assert allocator.preload_env({}, find=lambda: FOUND, platform="darwin") is None


def test_a_bad_choice_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"PROMOT_JAX_MALLOC='tc'.*jemalloc, system"):
        allocator.preload_env({"PROMOT_JAX_MALLOC": "tc"}, find=lambda: FOUND)
    proc = subprocess.run(
        [sys.executable, "-m", "promot_jax.cli", "params", "--help"],
        env=dict(os.environ, PROMOT_JAX_MALLOC="tc"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "PROMOT_JAX_MALLOC='tc'; use one of jemalloc, system" in proc.stderr


def test_the_program_runs_the_same_command_after_reexecuting():
    # Whatever this machine has: with jemalloc the command runs in the re-executed process,
    # without it in this one; either way the user sees the command's own output.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PROMOT_JAX_MALLOC")}
    proc = subprocess.run(
        [sys.executable, "-m", "promot_jax.cli", "params", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: promot-jax params" in proc.stdout
