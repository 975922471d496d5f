"""Prints the time to import the task registry and examples/second through tokenisation and
SeqIO feature conversion (EncDecFeatureConverter) for RTE-shaped and XSum-shaped toy data.

    python benchmarks/tasks_throughput.py [--examples 2000] [--batch 32]
"""

from __future__ import annotations

import argparse
import time


def _throughput(name: str, lengths: dict[str, int], n: int, batch: int) -> tuple[float, float]:
    import seqio

    task = seqio.get_mixture_or_task(name)
    converter = seqio.EncDecFeatureConverter(pack=False)

    def one_pass() -> int:
        ds = task.get_dataset(lengths, split="train", shuffle=False, num_epochs=None)
        ds = converter(ds, lengths).batch(batch)
        count = 0
        for _ in ds.take(n // batch).as_numpy_iterator():
            count += batch
        return count

    one_pass()  # warm-up: demonstration pool, graph tracing, in-memory caches
    start = time.perf_counter()
    count = one_pass()
    return count / (time.perf_counter() - start), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    start = time.perf_counter()
    import seqio  # noqa: F401  (TensorFlow + SeqIO: paid by anything that reads data)

    deps = time.perf_counter() - start
    start = time.perf_counter()
    import promot_tasks  # noqa: F401

    registry = time.perf_counter() - start
    print(f"import seqio + tensorflow: {deps:.2f} s")
    print(
        f"import promot_tasks (registers {len(seqio.TaskRegistry.names())} tasks, "
        f"{len(seqio.MixtureRegistry.names())} mixtures): {registry:.2f} s"
    )

    cases = [
        ("toy_rte", {"inputs": 128, "targets": 8}, "RTE-shaped, 0-shot"),
        ("toy_rte_1shot", {"inputs": 256, "targets": 8}, "RTE-shaped, 1-shot"),
        ("toy_xsum", {"inputs": 1024, "targets": 64}, "XSum-shaped, 0-shot"),
        ("toy_xsum_4shot", {"inputs": 1024, "targets": 64}, "XSum-shaped, 4-shot"),
    ]
    for name, lengths, about in cases:
        rate, seconds = _throughput(name, lengths, args.examples, args.batch)
        print(
            f"{about:<22} {name:<15} inputs<={lengths['inputs']:<5} "
            f"{rate:8.0f} examples/s ({args.examples // args.batch * args.batch} in "
            f"{seconds:.2f} s)"
        )


if __name__ == "__main__":
    main()
