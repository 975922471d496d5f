"""The registered pilot (docs/dmt_lab_design.md "The pilot"): which difficulty can the base
learn, each domain alone at full data, within which step cap?

Pilot seeds only (100, 101); single-domain training only, never a comparison the claims
are judged by. Each run trains `max(CAPS)` steps at the lab's LR and is scored on the
domain's 200 validation examples at every cap (constant LR: the checkpoint at step S is
the S-step run). Rule (`choose`): per domain the hardest variant reaching `FLOOR`% on both
seeds at the largest cap while the base scores below `BASE_CEILING`%, then the smallest
cap at which every chosen variant still passes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from promot_jax import run_dirs
from promot_jax.lab.config import PILOT_SEEDS
from promot_jax.lab.dmt.config import CODE, DOMAINS, GENERAL, MATH, DmtSettings
from promot_tasks.toy_world.dmt import Difficulty

FLOOR, BASE_CEILING = 60.0, 20.0
CAPS = (150, 300)
# Per domain, easiest first: the knob values the pilot tries (the rest of Difficulty is
# irrelevant to that domain's generator).
VARIANTS: dict[str, tuple[dict, ...]] = {
    MATH: (
        {"math_steps": (1, 1), "max_number": 10},
        {"math_steps": (1, 1), "max_number": 20},
        {"math_steps": (1, 2), "max_number": 10},
        {"math_steps": (1, 2), "max_number": 20},
    ),
    CODE: ({"code_depth": (1, 2)}, {"code_depth": (1, 3)}),
    GENERAL: ({"list_words": (2, 4)}, {"list_words": (3, 6)}),
}
PILOT_JSON, PILOT_MD = "pilot.json", "pilot.md"


def _variant_name(knobs: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in knobs.items())


def jobs() -> list[tuple[str, int, int | None]]:
    """(domain, variant index, seed or None for the base's score), longest first."""
    out = []
    for domain in DOMAINS:
        for i in range(len(VARIANTS[domain])):
            out += [(domain, i, seed) for seed in PILOT_SEEDS] + [(domain, i, None)]
    return out


def run_job(out: str, base, job) -> dict:
    """Trains (or reads back) one pilot run and scores it at every cap."""
    from promot_jax import train
    from promot_jax.lab.dmt import data
    from promot_jax.lab.dmt.evaluate import DomainScorer
    from promot_jax.lab.pipeline import enable_compile_cache
    from promot_jax.optimizer import OptimizerConfig

    domain, index, seed = job
    path = Path(out) / "runs" / f"{domain}_v{index}_{'base' if seed is None else f's{seed}'}.json"
    if path.exists():
        return json.loads(path.read_text())
    enable_compile_cache()
    s = DmtSettings()
    difficulty = dataclasses.replace(Difficulty(), **VARIANTS[domain][index])
    world = (s.pools, s.eval_examples, difficulty, s.pool_seed)
    lengths = data.feature_lengths([domain], *world)
    scorer = DomainScorer({domain: data.eval_task(domain, *world)}, s.eval_examples, lengths["targets"])
    scores: dict[str, float] = {}
    if seed is None:
        model = base.config(dropout_rate=0.0)
        from promot_jax import checkpoints

        scores["0"] = scorer.score(model, checkpoints.load_params(base.path, model))[domain]["score"]
    else:
        config = base.config(dropout_rate=s.dropout)

        def eval_fn(params, step):
            scores[str(step)] = scorer.score(config, params)[domain]["score"]
            return {f"pilot/{domain}": scores[str(step)]}

        stage = train.StageConfig(
            method="finetune",
            mixture=data.subset_task(domain, s.pools[domain], *world),
            model=config,
            steps=max(CAPS),
            batch_size=s.batch_size,
            feature_lengths=lengths,
            optimizer=OptimizerConfig(learning_rate=s.learning_rate),
            label_smoothing=s.label_smoothing,
            init_checkpoint=str(base.path),
            save_every=max(CAPS),
            keep=1,
            eval_every=min(CAPS),
            eval_batches=1,
            log_every=50,
            seed=seed,
            rng_impl=s.rng_impl,
            run_dir=str(path.with_suffix("")),
        )
        train.train_stage(stage, eval_fn=eval_fn)
    record = {"domain": domain, "variant": VARIANTS[domain][index], "seed": seed, "scores": scores}
    run_dirs.write_atomic(path, json.dumps(record))
    return record


def choose(records: list[dict]) -> dict:
    """The registered rule; returns {"difficulty": {...knobs}, "max_steps": S, "why": [...]}."""
    why, knobs, picked = [], {}, {}
    for domain in DOMAINS:
        best = None
        for i, variant in enumerate(VARIANTS[domain]):
            runs = [r for r in records if r["domain"] == domain and r["variant"] == variant]
            base = [r["scores"]["0"] for r in runs if r["seed"] is None]
            trained = [r for r in runs if r["seed"] is not None]
            top = [r["scores"][str(max(CAPS))] for r in trained]
            ok = base and base[0] < BASE_CEILING and len(top) == len(PILOT_SEEDS) and min(top) >= FLOOR
            if ok:
                best = i  # variants go easiest first: the last passing one is the hardest
        if best is None:  # none passes: the highest minimum score, reported as below the floor
            def low(i):
                variant = VARIANTS[domain][i]
                return min(r["scores"][str(max(CAPS))] for r in records
                           if r["domain"] == domain and r["variant"] == variant and r["seed"] is not None)
            best = max(range(len(VARIANTS[domain])), key=low)
            why.append(f"{domain}: no variant reached {FLOOR}% on both seeds; highest minimum taken (below the floor)")
        picked[domain] = best
        knobs.update(VARIANTS[domain][best])
    cap = max(CAPS)
    for candidate in sorted(CAPS):
        passing = all(
            r["scores"][str(candidate)] >= FLOOR
            for domain in DOMAINS
            for r in records
            if r["domain"] == domain and r["variant"] == VARIANTS[domain][picked[domain]] and r["seed"] is not None
        )
        if passing:
            cap = candidate
            break
    return {"difficulty": knobs, "max_steps": cap, "why": why}


def write_record(out: Path, records: list[dict]) -> str:
    choice = choose(records)
    lines = [
        "# DMT lab pilot (seeds 100, 101; each domain alone at full data)",
        "",
        f"Rule: hardest variant with >= {FLOOR}% on both seeds at {max(CAPS)} steps and the base "
        f"< {BASE_CEILING}%; then the smallest cap of {CAPS} at which the chosen variants pass.",
        "",
        "| domain | variant | base | " + " | ".join(f"seed {s} @ {c}" for s in PILOT_SEEDS for c in CAPS) + " |",
        "|---|---|---|" + "---|" * (len(PILOT_SEEDS) * len(CAPS)),
    ]
    for domain in DOMAINS:
        for variant in VARIANTS[domain]:
            runs = {r["seed"]: r["scores"] for r in records if r["domain"] == domain and r["variant"] == variant}
            cells = [f"{runs[None]['0']:.1f}" if None in runs else "-"]
            cells += [f"{runs[s][str(c)]:.1f}" if s in runs else "-" for s in PILOT_SEEDS for c in CAPS]
            lines.append(f"| {domain} | {_variant_name(variant)} | " + " | ".join(cells) + " |")
    lines += ["", f"Chosen: {_variant_name(choice['difficulty'])}; max_steps {choice['max_steps']}.", *choice["why"], ""]
    text = "\n".join(lines)
    run_dirs.write_atomic(out / PILOT_MD, text)
    run_dirs.write_atomic(out / PILOT_JSON, json.dumps({"records": records, "choice": choice}, indent=1))
    return text


def run_pilot(out: str | Path, base_path=None, workers: int | None = None, log=print) -> Path:
    import concurrent.futures as cf
    import functools
    import multiprocessing

    from promot_jax.lab import workers as lab_workers
    from promot_jax.lab.config import LabBase

    base = LabBase.read(base_path)
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or len(lab_workers.cpus())
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for i in range(workers):
        slots.put(lab_workers.cpus()[i % len(lab_workers.cpus())])
    records = []
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=lab_workers.pin, initargs=(slots,)) as pool:
        for record in pool.map(functools.partial(run_job, str(out), base), jobs()):
            log(f"pilot: {record['domain']} {_variant_name(record['variant'])} seed {record['seed']}: {record['scores']}")
            records.append(record)
    log(write_record(out, records))
    return out
