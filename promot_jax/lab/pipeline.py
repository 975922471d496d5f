"""`promot-jax lab`, top to bottom: check the run directory, train, evaluate, report.

Units: the pretrained model's evaluations, and each experiment followed by the
evaluations of its stages; they run in worker processes, one CPU each
(`lab/workers.py`), longest first, a unit once the experiments it reads from have
finished; then the report. Every unit is resumable: a stage that finished is not
retrained (`experiment.run_experiment`), a model whose `eval.json` exists is not
re-scored, so rerunning an interrupted lab with the same `--out` continues where it
stopped.
"""

from __future__ import annotations

import dataclasses
import functools
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
    workers: int | None = None,
) -> Path:
    """Runs (or resumes) the whole lab and writes `<out>/report.md`; returns `out`.

    The units (the base's evaluations; each experiment with its evaluations) run in
    `workers` processes (default: one per available CPU), each unit on one CPU
    (`lab/workers.py`), so the numbers do not depend on `workers`."""
    settings = settings or LabSettings()
    base = LabBase.read(base)
    workers = check_workers(workers)
    out = Path(out or default_out_dir()).absolute()
    record = {
        "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
        "base": str(base.path),
        "size": base.size,
    }
    from promot_jax.lab import plan

    lab_plan = plan.build_plan(settings, base)
    entries = lab_entries([exp.name for exp in lab_plan.experiments])
    resumed = prepare_out_dir(out, record, force, entries, log)
    log(
        f"lab: {'resuming' if resumed else 'new run'} in {out} "
        f"(interrupted? rerun with --out {out})"
    )

    from promot_jax.lab import report

    timings_path = out / TIMINGS_JSON
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    total = len(lab_plan.experiments) + len(lab_plan.rows)
    done = 0
    start = time.perf_counter()
    results: dict[str, dict] = {}
    for unit_results, unit_timings in run_units(out, settings, base, lab_plan, workers):
        results.update(unit_results)
        for what, seconds in unit_timings.items():
            done += 1
            timings.setdefault(what, round(seconds, 2))  # a resumed unit keeps its first timing
            elapsed = time.perf_counter() - start
            log(f"[{done}/{total}] {what} ({seconds:.1f}s; {elapsed / 60:.1f} min elapsed)")
        run_dirs.write_atomic(timings_path, json.dumps(timings, indent=2))

    lab_seconds = time.perf_counter() - start
    timings["lab_this_invocation"] = round(lab_seconds, 1)
    run_dirs.write_atomic(timings_path, json.dumps(timings, indent=2))
    report.write_report(out, settings, lab_plan, results, timings, log=log)
    return out


def check_workers(workers: int | None) -> int:
    from promot_jax.lab import workers as lab_workers

    if workers is None:
        return len(lab_workers.cpus())
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    return workers


def unit_dependencies(lab_plan, out: Path) -> dict[str | None, set[str]]:
    """Unit name (None: the base's evaluations) -> the experiments it reads from: a stage
    starting from, or taking its prompt from, another experiment's directory."""
    deps: dict[str | None, set[str]] = {None: set()}
    names = [exp.name for exp in lab_plan.experiments]
    for exp in lab_plan.experiments:
        reads = [
            str(path)
            for st in exp.stages.values()
            for path in (st.init_checkpoint, st.prompt_file, st.adapter_file)
            if path
        ]
        deps[exp.name] = {
            other
            for other in names
            if other != exp.name and any(r.startswith(f"{out / other}/") for r in reads)
        }
    return deps


def unit_cost(exp) -> int:
    """Tokens a unit trains on (steps x batch x row length): longest units start first."""
    return sum(
        st.steps * st.batch_size * (sum(st.feature_lengths.values()) + st.model.prompt_length)
        for st in exp.stages.values()
    )


def run_units(out: Path, settings: LabSettings, base: LabBase, lab_plan, workers: int):
    """The lab's units in `workers` processes (`schedule_units`), each `run_unit`."""
    from promot_jax.lab import workers as lab_workers

    run = functools.partial(lab_workers.run_unit, str(out), settings, base)
    yield from schedule_units(out, lab_plan, workers, run)


def schedule_units(out: Path, lab_plan, workers: int, run: Callable):
    """Runs `run(name)` for every unit (None: the base's evaluations, then each experiment)
    in `workers` processes, one CPU each, a unit once the experiments it reads from have
    finished, longest first; yields each unit's (results, timings) as it ends. `run` must
    pickle (a module-level function or a partial of one). A failed unit stops new ones
    from starting; the running ones finish (each is resumable) and its error is raised."""
    import concurrent.futures as cf
    import multiprocessing

    from promot_jax.lab import workers as lab_workers

    deps = unit_dependencies(lab_plan, out)
    cost = {exp.name: unit_cost(exp) for exp in lab_plan.experiments}
    pending = [None, *sorted(cost, key=lambda n: -cost[n])]  # the base's evaluations first
    finished: set[str | None] = set()
    context = multiprocessing.get_context("spawn")  # a fresh jax per worker, pinned first
    slots = context.Queue()
    cpus = lab_workers.cpus()
    for i in range(workers):
        slots.put(cpus[i % len(cpus)])
    with cf.ProcessPoolExecutor(
        workers, mp_context=context, initializer=lab_workers.pin, initargs=(slots,)
    ) as pool:
        running: dict[cf.Future, str | None] = {}
        while pending or running:
            for name in [n for n in pending if deps[n] <= finished]:
                if len(running) == workers:
                    break
                pending.remove(name)
                future = pool.submit(run, name)
                running[future] = name
            if not running:
                raise RuntimeError(f"lab units wait on each other: {pending}")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                if future.exception() is not None:
                    pending.clear()  # start no more; the running ones finish (resumable)
                    cf.wait(running)
                    raise future.exception()
                finished.add(name)
                yield future.result()


_EVALUATORS: dict = {}  # per worker process: one evaluator (its decoders and caches) per lab


def run_unit(out: str | Path, settings: LabSettings, base: LabBase, name: str | None):
    """Trains experiment `name` (None: nothing) and evaluates its rows (None: the base's
    rows); returns ({row key: result}, {what: seconds}). Resumable: finished stages and
    scored rows are read back."""
    from promot_jax import experiment
    from promot_jax.evaluation import runner
    from promot_jax.evaluation.monitor import training_monitor
    from promot_jax.lab import evaluate, plan

    enable_compile_cache()
    out = Path(out)
    lab_plan = plan.build_plan(settings, base)
    key = (str(out), settings, base)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = evaluate.LabEvaluator(
            runner.DecodeSettings(
                search=settings.decode, batch_size=16, max_examples=settings.eval_examples
            ),
            settings.target_examples,
        )
    evaluator = _EVALUATORS[key]
    timings: dict[str, float] = {}
    if name is not None:
        (exp,) = [e for e in lab_plan.experiments if e.name == name]
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
        timings[f"train {exp.name}"] = time.perf_counter() - t
    results: dict[str, dict] = {}
    for row in lab_plan.rows:
        is_base = row.source == plan.BASE
        if (name is None) != is_base or (name and not row.source.startswith(name + "/")):
            continue
        t = time.perf_counter()
        source = None if is_base else out / row.source
        results[row.key] = evaluate.evaluate(
            evaluator, out / EVALS_DIR / row.key, source, base, row.target, row.rule,
            row.label, suite_tasks=row.suite,
        )  # fmt: skip
        timings[f"eval {row.key}"] = time.perf_counter() - t
    return results, timings
