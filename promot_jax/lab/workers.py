"""The lab's worker processes: each runs whole units (an experiment and its evaluations) on
one CPU of its own.

One CPU per unit, whatever the number of workers, so a unit's numbers do not depend on how
many run beside it or on the machine's core count (XLA's CPU matmuls split their work by
the threads they have, which moves the last bits of a float32 result). On the 2-core dev
machine a lab fine-tuning step takes 0.103 s on one CPU and 0.081 s on two, alone; two
units side by side slow each other to ~0.15 s per step, so running them in parallel gains
little throughput (the default lab: 761 s serial on both cores, 733 s in two workers).

This module imports nothing heavy: the CPU is pinned before jax starts in the worker.
"""

from __future__ import annotations

import os


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(slots) -> None:
    """Worker initializer: take a CPU from `slots` (a queue of CPU ids) and run only there."""
    os.sched_setaffinity(0, {slots.get()})


def run_unit(out: str, settings, base, name: str | None):
    """One unit in this worker: see `pipeline.run_unit`."""
    from promot_jax.lab import pipeline

    return pipeline.run_unit(out, settings, base, name)
