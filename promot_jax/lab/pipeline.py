"""`promot-jax lab`, top to bottom: check the run directory, train, evaluate, report.

Order: the pretrained model's evaluations, then each experiment followed by the
evaluations of its stages, then the report. Every unit is resumable: a stage
that finished is not retrained (`experiment.run_experiment`), a model whose
`eval.json` exists is not re-scored, so rerunning an interrupted lab with the
same `--out` continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from promot_jax import run_dirs
from promot_jax.lab.config import LabBase, LabSettings

LAB_KIND = "lab"
LAB_JSON = "lab.json"
TIMINGS_JSON = "timings.json"
EVALS_DIR = "evals"


def enable_compile_cache() -> None:
    """One persistent XLA cache for every stage and decoder: equal shapes compile once."""
    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "promot_jax" / "xla"
    )
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def default_out_dir() -> Path:
    return Path("lab_runs") / time.strftime("lab-%Y%m%d-%H%M%S")


def prepare_out_dir(
    out: Path,
    record: dict,
    force: bool,
    entries: Sequence[str],
    log: Callable[[str], None] = print,
) -> bool:
    """Creates or checks `out`; returns True when it resumes an interrupted lab.

    `out` must be empty, missing, or a lab directory promot-jax made (its marker lists
    `entries`, the top-level names a lab writes). A finished lab (report.md present) is
    replaced only with `force`, which removes the lab's own entries and nothing else; an
    unfinished one is resumed only with the same settings and base. Every check runs
    before anything is written.
    """
    run_dirs.check_writable(out, "--out")
    if force:
        left = run_dirs.clear(out, LAB_KIND)
        if left:
            log(f"lab: --force kept {', '.join(left)} in {out} (not written by promot-jax)")
    elif run_dirs.check_claimable(out, LAB_KIND, entries, evidence=LAB_JSON):
        from promot_jax.lab.report import REPORT_MD

        if (out / REPORT_MD).exists():
            raise FileExistsError(
                f"{out} already holds a finished lab report; pass --force to replace the "
                "lab's own files in it (nothing else there is touched), or leave --out unset "
                "for a new timestamped directory"
            )
        run_dirs.check_record(
            out / LAB_JSON,
            record,
            what="an interrupted lab with other settings",
            fix="rerun with the same options (e.g. --quick) or choose another --out",
        )
    resumed = run_dirs.claim(out, LAB_KIND, entries, evidence=LAB_JSON) and not force
    if not (out / LAB_JSON).is_file():
        run_dirs.write_atomic(out / LAB_JSON, json.dumps(record, indent=2))
    return resumed


def step0_point(out: Path, exp, eval_fn) -> None:
    """The monitor's scalars before the first step, kept in `<exp>/step0.json`."""
    from promot_jax import train
    from promot_jax.lab.figures import STEP0_JSON

    path = out / exp.name / STEP0_JSON
    if not path.exists():
        first = dataclasses.replace(next(iter(exp.stages.values())), run_dir=str(path.parent))
        scalars = eval_fn(train.initial_params(first), 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        run_dirs.write_atomic(path, json.dumps({"step": 0, **scalars}))


def lab_entries(experiment_names: Sequence[str]) -> list[str]:
    """Every top-level name a lab writes in its directory (what `--force` may remove)."""
    from promot_jax.lab import report

    return [LAB_JSON, TIMINGS_JSON, EVALS_DIR, *report.OUTPUTS, *experiment_names]


def run_lab(
    out: str | Path | None = None,
    settings: LabSettings | None = None,
    base: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Runs (or resumes) the whole lab and writes `<out>/report.md`; returns `out`."""
    settings = settings or LabSettings()
    base = LabBase.read(base)
    out = Path(out or default_out_dir()).absolute()
    record = {
        "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
        "base": str(base.path),
        "size": base.size,
    }
    from promot_jax.lab import plan

    lab_plan = plan.build_plan(settings, base, out)
    entries = lab_entries([exp.name for exp in lab_plan.experiments])
    resumed = prepare_out_dir(out, record, force, entries, log)
    log(
        f"lab: {'resuming' if resumed else 'new run'} in {out} "
        f"(interrupted? rerun with --out {out})"
    )

    enable_compile_cache()
    from promot_jax import experiment
    from promot_jax.evaluation import runner
    from promot_jax.evaluation.monitor import training_monitor
    from promot_jax.lab import evaluate, report

    evaluator = evaluate.LabEvaluator(
        runner.DecodeSettings(
            search=settings.decode, batch_size=16, max_examples=settings.eval_examples
        ),
        settings.dmt_eval_examples,
        settings.target_examples,
    )
    timings_path = out / TIMINGS_JSON
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    total = len(lab_plan.experiments) + len(lab_plan.rows)
    done = 0
    start = time.perf_counter()

    def tick(what: str, seconds: float) -> None:
        nonlocal done
        done += 1
        timings.setdefault(what, round(seconds, 2))  # a resumed unit keeps its first timing
        run_dirs.write_atomic(timings_path, json.dumps(timings, indent=2))
        elapsed = time.perf_counter() - start
        log(f"[{done}/{total}] {what} ({seconds:.1f}s; {elapsed / 60:.1f} min elapsed)")

    results: dict[str, dict] = {}

    def run_evals(prefix: str | None) -> None:
        for row in lab_plan.rows:
            is_base = row.source == plan.BASE
            if (prefix is None) != is_base or (prefix and not row.source.startswith(prefix + "/")):
                continue
            t = time.perf_counter()
            source = None if is_base else out / row.source
            results[row.key] = evaluate.evaluate(
                evaluator, out / EVALS_DIR / row.key, source, base, row.target, row.rule,
                row.label, suite_tasks=row.suite,
            )  # fmt: skip
            tick(f"eval {row.key}", time.perf_counter() - t)

    run_evals(None)
    for exp in lab_plan.experiments:
        t = time.perf_counter()
        eval_fn = None
        if exp.monitor_target:
            first = next(iter(exp.stages.values()))
            eval_fn = training_monitor(
                first.model,
                exp.monitor_target,
                examples=settings.monitor_examples,
                search="greedy",
            )
            step0_point(out, exp, eval_fn)
        experiment.run_experiment(exp.stages, str(out / exp.name), eval_fn=eval_fn)
        tick(f"train {exp.name}", time.perf_counter() - t)
        run_evals(exp.name)

    lab_seconds = time.perf_counter() - start
    timings["lab_this_invocation"] = round(lab_seconds, 1)
    run_dirs.write_atomic(timings_path, json.dumps(timings, indent=2))
    report.write_report(out, settings, lab_plan, results, timings, log=log)
    return out
