"""Prints examples/second of 1-shot decoding of the toy suite (beam 4 and greedy, compiled
shapes warmed up first) and the wall time of the whole 17-task toy suite as `promot-jax eval`
runs it (data loading, compilation, decoding, scoring, files), on the tiny toy model.

    python benchmarks/eval_speed.py [--examples 32] [--batch 16]

Default cap: the first 32 examples of each task's eval split (the toy splits hold 200),
enough to time decoding without dominating a CPU for long.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=32, help="first N examples per task")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip_suite", action="store_true", help="only the 1-shot decode rates")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import jax
    import numpy as np

    from promot_jax import network
    from promot_jax.evaluation import runner, suite
    from promot_jax.evaluation.model_source import LoadedModel

    config = network.mt5_config("tiny", vocab_size=2176, dtype="float32", prompt_length=4)
    params = jax.tree_util.tree_map(np.asarray, network.init_params(config, jax.random.key(0)))
    model = LoadedModel(config, params, "random init (tiny, toy vocab)", "random init")
    no_prompt_config, no_prompt_params = model.bare()
    the_suite = suite.build_suite("toy_rte")
    one_shot = the_suite.in_context(1)
    data = {
        e.task: runner.load_examples(e.task, e.info.eval_split, args.examples) for e in one_shot
    }
    print(
        f"device: {jax.devices()[0].platform}, {os.cpu_count()} CPUs visible; "
        f"tiny toy model, batch {args.batch}, first {args.examples} examples per task"
    )

    for search in ("beam", "greedy"):
        settings = runner.DecodeSettings(search=search, batch_size=args.batch)
        decoder = runner.Decoder(no_prompt_config, settings)
        total, seconds, compile_s = 0, 0.0, 0.0
        for e in one_shot:
            examples = data[e.task]
            inputs = [ex["inputs"] for ex in examples]
            length = runner.decode_length(examples, settings)
            start = time.perf_counter()
            decoder(no_prompt_params, inputs, length)  # compiles this task's shapes
            compile_s += time.perf_counter() - start
            start = time.perf_counter()
            decoder(no_prompt_params, inputs, length)
            seconds += time.perf_counter() - start
            total += len(examples)
        name = f"beam {settings.beam_size}" if search == "beam" else "greedy"
        print(
            f"1-shot toy suite, {name:>7}: {total / seconds:8.1f} examples/s "
            f"({total} examples in {seconds:.2f} s; first pass incl. compile {compile_s:.1f} s)"
        )

    if args.skip_suite:
        return
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runner.run_suite(
            model,
            the_suite,
            out,
            settings=runner.DecodeSettings(max_examples=args.examples, batch_size=args.batch),
            log=lambda _: None,
        )
        wall = time.perf_counter() - start
    print(
        f"full toy suite ({len(the_suite.entries)} tasks x {args.examples} examples, beam 4, "
        f"prompt rule 'same_format'): {wall:.1f} s wall"
    )


if __name__ == "__main__":
    main()
