"""Chains of stages: ProMoT (stage 1 -> stage 2), DMT and the sequential baselines.

An experiment is an ordered `{name: StageConfig}`. Each stage runs in
`<run_dir>/<name>`; `prompt_file` / `adapter_file` / `init_checkpoint` set to
`"previous_stage"` take the previous stage's best prompt / best LoRA adapters / final
parameters. A finished stage is not rerun: rerunning an experiment resumes where it
stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from promot_jax import paths, run_dirs, train
from promot_jax.paths import Path
from promot_jax.train import PREVIOUS_STAGE, StageConfig, StageResult

# A field set to PREVIOUS_STAGE takes this output of the previous stage.
FROM_PREVIOUS = (
    ("prompt_file", "best_prompt"),
    ("adapter_file", "best_adapters"),
    ("init_checkpoint", "final_params"),
)


def planned_paths(stage: StageConfig, previous: StageResult | None) -> dict[str, str | None]:
    """The paths the stage's placeholders will take from the previous stage's outputs."""
    return {
        field: (None if previous is None else str(getattr(previous, source)))
        for field, source in FROM_PREVIOUS
        if getattr(stage, field) == PREVIOUS_STAGE
    }


def resolve(stage: StageConfig, run_dir: Path, previous: StageResult | None) -> StageConfig:
    """The stage with its run directory and previous-stage placeholders filled in."""
    changes: dict = {"run_dir": str(run_dir)}
    for field, source in FROM_PREVIOUS:
        if getattr(stage, field) == PREVIOUS_STAGE:
            value = None if previous is None else getattr(previous, source)
            if value is None:
                raise ValueError(
                    f"stage in {run_dir} takes its {field} from the previous stage, "
                    f"but {'there is none' if previous is None else 'it produced no ' + source}"
                )
            changes[field] = str(value)
    return dataclasses.replace(stage, **changes)


def run_experiment(
    stages: Mapping[str, StageConfig],
    run_dir: str,
    only: str | None = None,
    eval_fn: train.EvalFn | None = None,
    config_text: str | None = None,
) -> dict[str, StageResult]:
    """Runs the stages in order (or just `only`, whose predecessors must have run).

    `config_text` (the resolved gin config) is saved as `<run_dir>/config.gin`.
    """
    if not stages:
        raise ValueError("an experiment needs at least one stage")
    if only is not None and only not in stages:
        raise ValueError(f"unknown stage {only!r}; this experiment has: {', '.join(stages)}")
    root = paths.path(run_dir)
    run_dirs.check_writable(root, "run_dir")
    # Every stage is checked before anything is written (config.gin included): a refused
    # stage 2 leaves a finished stage 1 and its config exactly as they were.
    previous: StageResult | None = None
    for name, stage in stages.items():
        located = dataclasses.replace(stage, run_dir=str(root / name))
        train.validate(located, planned_paths(stage, previous))
        previous = train.planned_result(located)
        if name == only:
            break
    if config_text is not None:
        run_dirs.write_atomic(root / "config.gin", config_text)
    results: dict[str, StageResult] = {}
    previous = None
    for name, stage in stages.items():
        stage_cfg = resolve(stage, root / name, previous)
        if only is None or name == only:
            previous = train.train_stage(stage_cfg, eval_fn=eval_fn)
            results[name] = previous
        else:
            previous = train.finished_result(stage_cfg)
            if previous is None:
                raise ValueError(
                    f"stage {name} has not finished ({stage_cfg.run_dir} has no final export); "
                    "run it first"
                )
        if name == only:
            break
    return results
