"""Chains of stages: ProMoT (stage 1 -> stage 2), DMT and the sequential baselines.

An experiment is an ordered `{name: StageConfig}`. Each stage runs in
`<run_dir>/<name>`; `prompt_file` / `init_checkpoint` set to `"previous_stage"`
take the previous stage's best prompt / final parameters. A finished stage is
not rerun: rerunning an experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from promot_jax import train
from promot_jax.train import PREVIOUS_STAGE, StageConfig, StageResult


def resolve(stage: StageConfig, run_dir: Path, previous: StageResult | None) -> StageConfig:
    """The stage with its run directory and previous-stage placeholders filled in."""
    changes: dict = {"run_dir": str(run_dir)}
    for field, source in (("prompt_file", "best_prompt"), ("init_checkpoint", "final_params")):
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
    root = Path(run_dir)
    if config_text is not None:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / "config.gin.tmp"
        tmp.write_text(config_text)
        tmp.replace(root / "config.gin")
    results: dict[str, StageResult] = {}
    previous: StageResult | None = None
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
