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
    for platform in ("linux", "darwin"):  # checked even where nothing would be preloaded
        with pytest.raises(ValueError, match=r"PROMOT_JAX_MALLOC='tc'.*jemalloc, system"):
            allocator.preload_env({"PROMOT_JAX_MALLOC": "tc"}, lambda: FOUND, platform)
    proc = subprocess.run(
        [sys.executable, "-m", "promot_jax.cli", "params", "--help"],
        env=dict(os.environ, PROMOT_JAX_MALLOC="tc"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "PROMOT_JAX_MALLOC='tc'; use one of jemalloc, system" in proc.stderr


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PROMOT_JAX_MALLOC")}


def test_the_reexecuted_process_runs_under_jemalloc_exactly_when_it_is_installed():
    # The same command line runs again (here a `python -c` script, which calls the
    # re-execution once more: the second call must return, not loop) and reports whether
    # jemalloc is mapped into it. Without jemalloc on the machine: the first run, unmapped.
    script = (
        "from promot_jax import allocator; allocator.reexec_under_jemalloc(); "
        "print('jemalloc' in open('/proc/self/maps').read())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=_clean_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(allocator.find_jemalloc() is not None)


def test_the_program_runs_its_command_whether_or_not_it_reexecutes():
    proc = subprocess.run(
        [sys.executable, "-m", "promot_jax.cli", "params", "--help"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: promot-jax params" in proc.stdout
