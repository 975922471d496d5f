"""Pretraining the lab's base model on the toy world with the project's own training stage.

The base is an ordinary `finetune` stage from random initialisation, with packed
rows, on `lab_toy_pretrain` (span corruption + 0/1-shot in-context data, RTE and
En-Fr formats held out). Its final parameters are copied to `<out>/base_model`, the
directory `promot-jax lab --base` reads and the package ships.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from promot_jax import run_dirs, train
from promot_jax.lab.config import SHIPPED_SIZE, PretrainSettings, base_model_config, check_size
from promot_jax.lab.mixtures import register_lab_pretrain
from promot_jax.optimizer import OptimizerConfig

BASE_JSON = "base.json"
BASE_EVAL_JSON = "base_eval.json"
STAGE_DIR = "pretrain_stage"
BASE_MODEL_DIR = "base_model"
PRETRAIN_KIND = "pretrain"


def pretrain_stage(
    settings: PretrainSettings, run_dir: Path, size: str = SHIPPED_SIZE
) -> train.StageConfig:
    return train.StageConfig(
        method="finetune",
        mixture=register_lab_pretrain(settings),
        model=base_model_config(size),
        steps=settings.steps,
        run_dir=str(run_dir),
        batch_size=settings.batch_size,
        feature_lengths={"inputs": settings.inputs_length, "targets": settings.targets_length},
        pack=settings.pack,
        optimizer=OptimizerConfig(
            learning_rate=settings.learning_rate,
            schedule="warmup_constant",
            warmup_steps=settings.warmup_steps,
        ),
        save_every=250,
        keep=1,
        eval_batches=4,
        log_every=25,
        seed=settings.seed,
    )


def pretrain(
    out: str | Path, settings: PretrainSettings | None = None, size: str = SHIPPED_SIZE
) -> Path:
    """Runs (or resumes) pretraining of a `size` base (config.LAB_SIZES) under `out`;
    returns `<out>/base_model` (params dir)."""
    settings = settings or PretrainSettings()
    check_size(size)
    out = Path(out)
    run_dirs.check_writable(out, "--out")
    run_dirs.claim(
        out,
        PRETRAIN_KIND,
        (STAGE_DIR, BASE_MODEL_DIR, BASE_JSON, BASE_EVAL_JSON),
        evidence=f"{STAGE_DIR}/stage.json",
    )
    start = time.perf_counter()
    result = train.train_stage(pretrain_stage(settings, out / STAGE_DIR, size))
    seconds = time.perf_counter() - start
    base = out / BASE_MODEL_DIR  # ours: the claimed directory lists it
    if base.exists():
        shutil.rmtree(base)
    shutil.copytree(result.final_params, base)
    run_dirs.write_atomic(
        out / BASE_JSON,
        json.dumps(
            {
                "size": size,
                "settings": dataclasses.asdict(settings),
                "mixture": register_lab_pretrain(settings),
                "seconds_this_run": round(seconds, 1),
                "final_metrics": result.metrics,
            },
            indent=2,
        ),
    )
    return base
