"""`promot-jax lab dmt`, top to bottom: check the directory, train and score in worker
processes (one CPU each, `lab.pipeline.schedule_units`), write the report.

Resumable like the ProMoT lab: a finished stage is not retrained, a scored model
(`evals/<row key>.json`) is not re-scored, so rerunning with the same `--out` continues.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

from promot_jax import run_dirs
from promot_jax.lab.config import LabBase
from promot_jax.lab.dmt.config import DOMAINS, DmtSettings
from promot_jax.lab.pipeline import EVALS_DIR, LAB_JSON, TIMINGS_JSON  # the labs' one layout

EXPERIMENT_DIRS = ("scaling", "mixed", "ratio", "strategies", "dmt")


def entries() -> list[str]:
    """Every top-level name the DMT lab writes in its directory (what `--force` may remove)."""
    from promot_jax.lab.dmt import report

    return [LAB_JSON, TIMINGS_JSON, EVALS_DIR, *report.OUTPUTS, *EXPERIMENT_DIRS]


def record_of(settings: DmtSettings, base: LabBase) -> dict:
    settings_json = json.loads(json.dumps(dataclasses.asdict(settings)))
    return {"lab": "dmt", "settings": settings_json, "base": str(base.path), "size": base.size}


def run_dmt_lab(
    out: str | Path,
    settings: DmtSettings | None = None,
    base: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    workers: int | None = None,
) -> Path:
    """Runs (or resumes) the DMT lab and writes `<out>/report.md`; returns `out`."""
    from promot_jax.lab import pipeline
    from promot_jax.lab.dmt import plan, report

    settings = settings or DmtSettings()
    base = LabBase.read(base)
    workers = pipeline.check_workers(workers)
    out = Path(out).absolute()
    check_lengths(settings)
    lab_plan = plan.build_plan(settings, base, out)
    resumed = pipeline.prepare_out_dir(out, record_of(settings, base), force, entries(), log)
    state = "resuming" if resumed else "new run"
    log(f"lab dmt: {state} in {out} (interrupted? rerun with --out {out})")
    timings_path = out / TIMINGS_JSON
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    total, start = len(lab_plan.experiments) + 1, time.perf_counter()
    results: dict[str, dict] = {}
    run = functools.partial(run_unit, str(out), settings, base)
    units = pipeline.schedule_units(out, lab_plan, workers, run)
    for done, (unit_results, unit_timings) in enumerate(units, start=1):
        results.update(unit_results)
        for what, seconds in unit_timings.items():
            timings.setdefault(what, round(seconds, 2))
        minutes = (time.perf_counter() - start) / 60
        log(f"[{done}/{total}] {', '.join(unit_timings) or 'resumed'} ({minutes:.1f} min elapsed)")
        run_dirs.write_atomic(timings_path, json.dumps(timings, indent=2))
    timings["lab_this_invocation"] = round(time.perf_counter() - start, 1)
    run_dirs.write_atomic(timings_path, json.dumps(timings, indent=2))
    report.write_report(out, settings, lab_plan, results, timings, log=log)
    return out


def check_lengths(settings: DmtSettings) -> None:
    """Pools other than the default ones must fit the lab's rows (`plan.LENGTHS`, sized to
    the default pools' longest example): a longer example would be cut silently."""
    from promot_jax.lab.dmt import data, plan

    world = (settings.pools, settings.eval_examples, settings.difficulty, settings.pool_seed)
    default = DmtSettings()
    if world == (default.pools, default.eval_examples, default.difficulty, default.pool_seed):
        return  # tests/test_lab_dmt.py checks these fit exactly
    need = data.feature_lengths(DOMAINS, *world)
    over = {k: v for k, v in need.items() if v > plan.LENGTHS[k]}
    if over:
        raise ValueError(
            f"these pools hold examples longer than the DMT lab's rows ({over} tokens against "
            f"{plan.LENGTHS}); use smaller pools or the default difficulty and pool seed"
        )


_SCORERS: dict = {}  # per worker process: one scorer (its decoder and examples) per lab


def scorer_for(settings: DmtSettings):
    from promot_jax.lab.dmt import data, plan
    from promot_jax.lab.dmt.evaluate import DomainScorer

    key = repr(settings)
    if key not in _SCORERS:
        world = (settings.pools, settings.eval_examples, settings.difficulty, settings.pool_seed)
        tasks = {d: data.eval_task(d, *world) for d in DOMAINS}
        _SCORERS[key] = DomainScorer(tasks, settings.eval_examples, plan.LENGTHS["targets"])
    return _SCORERS[key]


def run_unit(out: str, settings: DmtSettings, base: LabBase, name: str | None):
    """Trains experiment `name` (None: nothing) and scores its rows (None: the base's);
    returns ({row key: record}, {what: seconds})."""
    from promot_jax import checkpoints, experiment
    from promot_jax.evaluation.model_source import load_model
    from promot_jax.lab.dmt import evaluate, plan
    from promot_jax.lab.pipeline import enable_compile_cache

    enable_compile_cache()
    out_path = Path(out)
    lab_plan = plan.build_plan(settings, base, out_path)
    timings: dict[str, float] = {}
    if name is not None:
        (exp,) = [e for e in lab_plan.experiments if e.name == name]
        t = time.perf_counter()
        experiment.run_experiment(exp.stages, str(out_path / exp.name))
        timings[f"train {name}"] = time.perf_counter() - t
    results = {}
    for row in lab_plan.rows:
        if name is None:
            mine = row.source is None
        else:
            mine = row.source is not None and row.source.startswith(f"{name}/")
        if not mine:
            continue
        path = out_path / EVALS_DIR / f"{row.key}.json"
        if path.exists():
            results[row.key] = json.loads(path.read_text())
            continue
        t = time.perf_counter()
        if row.source is None:
            config = base.config(dropout_rate=0.0, dtype=settings.dtype)
            params = checkpoints.load_params(base.path, config)
        else:
            model = load_model(out_path / row.source, which="final")
            config, params = model.config, model.params
        scored = scorer_for(settings).score(config, params)
        meta = {"table": row.table, "label": row.label, "seed": row.seed, "source": row.source,
                "point": dict(row.point)}  # fmt: skip
        results[row.key] = evaluate.write_scores(path, scored, meta)
        timings[f"eval {row.key}"] = time.perf_counter() - t
    return results, timings
