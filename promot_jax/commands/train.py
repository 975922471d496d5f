"""`promot-jax train`: one stage of an experiment gin file (`--stage`, default: the only one)."""

from __future__ import annotations

import argparse

from promot_jax.commands import run as run_command

HELP = "train a single stage of an experiment gin file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_command.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import gin
    from promot_jax import gin_config

    if args.stage is None:
        gin_config.parse(
            args.gin_file,
            args.gin_bindings + args.gin_dot_bindings,
            args.gin_search_paths.split(","),
        )
        stages = gin.query_parameter("experiment.run_experiment.stages")
        if len(stages) != 1:
            raise ValueError(
                f"this experiment has stages {', '.join(stages)}; pick one with --stage"
            )
        args.stage = next(iter(stages))
    return run_command.run(args)
