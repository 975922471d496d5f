"""`promot-jax run`: a whole experiment from gin (e.g. ProMoT stage 1 then stage 2)."""

from __future__ import annotations

import argparse

HELP = "run every stage of an experiment gin file (stage 1 hands its prompt to stage 2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from promot_jax.gin_config import add_gin_arguments

    add_gin_arguments(parser)
    parser.add_argument(
        "--stage", default=None, help="run only this stage (earlier ones must have finished)"
    )


def run(args: argparse.Namespace) -> int:
    import gin
    from promot_jax import experiment, gin_config, sharding

    sharding.maybe_initialize_distributed()
    gin_config.parse(
        args.gin_file, args.gin_bindings + args.gin_dot_bindings, args.gin_search_paths.split(",")
    )
    run_experiment = gin.get_configurable(experiment.run_experiment)
    results = run_experiment(only=args.stage, config_text=gin.config_str())
    for name, result in results.items():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if "eval" in k)
        print(f"{name}: {result.steps} steps in {result.run_dir} ({shown})")
        if result.best_prompt:
            print(f"  best prompt: {result.best_prompt}")
        if result.best_adapters:
            print(f"  best adapters: {result.best_adapters}")
    return 0
