"""The C allocator the `promot-jax` program runs under: jemalloc when it is installed.

XLA:CPU gives each execution of a compiled step its temporaries as one large block
(posix_memalign) and frees it when the step ends. glibc serves blocks over 32 MiB with
mmap and unmaps them on free, so every training step maps its temporaries afresh and the
kernel zero-fills them page by page: at mT5-small fine-tuning 1.29M minor page faults a
step (~5 GB), steps alternating 5.8 and 10-11 s. jemalloc with page decay off keeps a freed
block mapped and gives it back to the next step: no faults, steps even (README, "Speed
against what a user would pick instead"; `benchmarks/anchors.py` prints faults per step).
The numbers computed do not change: the allocator only decides where buffers live.

`promot-jax` re-executes itself once, before anything else runs, with jemalloc preloaded
when the library is installed (Debian/Ubuntu: `apt install libjemalloc2`) and nothing else
is preloaded already. `PROMOT_JAX_MALLOC=system` keeps the C library's malloc. Python
callers (`promot_jax.train...` from a notebook, `t5x train`) get the same by starting the
interpreter with `LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1`.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping

ENV = "PROMOT_JAX_MALLOC"
CHOICES = ("jemalloc", "system")
# Freed pages stay mapped (no decay to the OS): the next step reuses them as they are.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def find_jemalloc() -> str | None:
    """The installed jemalloc's soname (found by the dynamic linker's cache), or None."""
    return ctypes.util.find_library("jemalloc")


def choice(environ: Mapping[str, str]) -> str:
    value = environ.get(ENV, CHOICES[0])
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r}; use one of {', '.join(CHOICES)}")
    return value


def preload_env(
    environ: Mapping[str, str],
    find: Callable[[], str | None] = find_jemalloc,
    platform: str = sys.platform,
) -> dict[str, str] | None:
    """The environment to re-execute under, or None to run as we are: on Linux, with
    jemalloc chosen and found, and nothing preloaded yet (a preload the user set, or ours
    after the re-execution, is left alone)."""
    if choice(environ) == "system" or not platform.startswith("linux"):
        return None
    if environ.get("LD_PRELOAD", "").strip():
        return None
    library = find()
    if library is None:
        return None
    env = dict(environ, LD_PRELOAD=library)
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return env


def reexec_under_jemalloc() -> None:
    """Replaces this process with the same command line (`sys.orig_argv`: the console script,
    or `python -m promot_jax.cli`, with the same interpreter options, so the same code is
    imported) under jemalloc when `preload_env` says so; returns, doing nothing, otherwise."""
    env = preload_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
