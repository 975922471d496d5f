"""The registered pilot (docs/dmt_lab_design.md "The pilot"): which difficulty can the base
learn, each domain alone at full data, within the budget's step cap, at which LR and with
which regularisation?

Pilot seeds only (100, 101); single-domain training only, never a comparison the claims
are judged by. Each run trains `max(CAPS)` packed steps (as the lab's stages do) and is
scored on the domain's 200 validation examples at every cap (constant LR: the checkpoint
at step S is the S-step run). Rule (`choose`), per setting (regularisation, LR): per domain
the hardest variant reaching `FLOOR`% on both seeds at the largest cap while the base
scores below `BASE_CEILING`%; then, among the settings at which all three domains pass,
the one whose weakest domain (its chosen variant's lower seed) scores highest, else that
maximum over all settings (reported as below the floor). The cap is the largest.

This is round 5 (docs/dmt_lab_design.md has rounds 1-4): round 4's bfloat16 stages and caps,
with the regularisation as a new axis: T5's dropout and label smoothing 0.1 (rounds 1-4)
or none (the paper's LLaMA has no dropout; its recipe names no label smoothing).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from promot_jax import run_dirs
from promot_jax.lab.config import PILOT_SEEDS
from promot_jax.lab.dmt.config import CODE, DOMAINS, GENERAL, MATH, DmtSettings
from promot_tasks.toy_world.dmt import WORD_INSTRUCTIONS, Difficulty

FLOOR, BASE_CEILING = 60.0, 20.0
CAPS = (50, 100, 150)
LRS = (1e-2, 2e-2)
# Dropout rate = label smoothing of the stages: T5's 0.1 (rounds 1-4), or none.
REGULARISATION = (0.1, 0.0)
# Per domain, easiest first: the knob values the pilot tries (the rest of Difficulty is
# irrelevant to that domain's generator). General takes the word-level instructions.
VARIANTS: dict[str, tuple[dict, ...]] = {
    MATH: (
        {"math_steps": (1, 1), "max_number": 6},
        {"math_steps": (1, 1), "max_number": 10},
    ),
    CODE: ({"code_depth": (1, 2)},),
    GENERAL: (
        {"list_words": (2, 4), "instructions": WORD_INSTRUCTIONS},
        {"list_words": (3, 6), "instructions": WORD_INSTRUCTIONS},
    ),
}
PILOT_JSON, PILOT_MD = "pilot.json", "pilot.md"


def variants(domain: str) -> tuple[dict, ...]:
    return VARIANTS[domain]


def _variant_name(knobs: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in knobs.items())


def settings() -> list[tuple[float, float]]:
    """(regularisation, LR) pairs the pilot tries."""
    return [(reg, lr) for reg in REGULARISATION for lr in LRS]


def jobs() -> list[tuple[str, dict, int | None, float, float]]:
    """(domain, variant, seed or None for the base's score, LR, regularisation)."""
    out = []
    for domain in DOMAINS:
        for v in VARIANTS[domain]:
            out += [(domain, v, seed, lr, reg) for reg, lr in settings() for seed in PILOT_SEEDS]
            out.append((domain, v, None, LRS[0], REGULARISATION[0]))
    return out


def _job_name(domain: str, variant: dict, seed, lr: float, reg: float) -> str:
    index = VARIANTS[domain].index(variant)
    return f"{domain}_v{index}_{'base' if seed is None else f's{seed}'}_lr{lr:g}_reg{reg:g}"


def run_job(out: str, base, job) -> dict:
    """Trains (or reads back) one pilot run and scores it at every cap."""
    from promot_jax import train
    from promot_jax.lab.dmt import data
    from promot_jax.lab.dmt.evaluate import DomainScorer
    from promot_jax.lab.pipeline import enable_compile_cache
    from promot_jax.optimizer import OptimizerConfig

    domain, variant, seed, lr, reg = job
    path = Path(out) / "runs" / f"{_job_name(domain, variant, seed, lr, reg)}.json"
    if path.exists():
        return json.loads(path.read_text())
    enable_compile_cache()
    s = DmtSettings()
    difficulty = dataclasses.replace(Difficulty(), **variant)
    world = (s.pools, s.eval_examples, difficulty, s.pool_seed)
    lengths = data.feature_lengths([domain], *world)
    scorer = DomainScorer(
        {domain: data.eval_task(domain, *world)}, s.eval_examples, lengths["targets"]
    )
    scores: dict[str, float] = {}
    if seed is None:
        model = base.config(dropout_rate=0.0, dtype=s.dtype)
        from promot_jax import checkpoints

        scores["0"] = scorer.score(model, checkpoints.load_params(base.path, model))[domain][
            "score"
        ]
    else:
        config = base.config(dropout_rate=reg, dtype=s.dtype)

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
            optimizer=OptimizerConfig(learning_rate=lr),
            label_smoothing=reg,
            init_checkpoint=str(base.path),
            save_every=max(CAPS),
            keep=1,
            eval_every=CAPS[0],
            eval_batches=1,
            log_every=50,
            seed=seed,
            rng_impl=s.rng_impl,
            run_dir=str(path.with_suffix("")),
            pack=True,
        )
        train.train_stage(stage, eval_fn=eval_fn)
    record = {"domain": domain, "variant": variant, "seed": seed, "lr": lr,
              "regularisation": reg, "scores": scores}  # fmt: skip
    run_dirs.write_atomic(path, json.dumps(record))
    return record


def _same(a: Mapping, b: Mapping) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))  # tuples read back as lists


def _runs(records, domain: str, variant: Mapping, setting) -> dict[int, dict]:
    """{seed: {cap: score}} of one domain's variant trained at one (regularisation, LR)."""
    reg, lr = setting
    return {
        r["seed"]: r["scores"]
        for r in records
        if r["domain"] == domain
        and _same(r["variant"], variant)
        and r["lr"] == lr
        and r["regularisation"] == reg
        and r["seed"] is not None
    }


def _scores(records, domain: str, variant: Mapping, setting, cap: int) -> list[float]:
    return [scores[str(cap)] for scores in _runs(records, domain, variant, setting).values()]


def _base(records, domain: str, variant: Mapping) -> float | None:
    found = [
        r["scores"]["0"]
        for r in records
        if r["domain"] == domain and _same(r["variant"], variant) and r["seed"] is None
    ]
    return found[0] if found else None


def choose_at(records: list[dict], setting: tuple[float, float]) -> dict:
    """The rule at one (regularisation, LR): {"difficulty", "max_steps", "learning_rate",
    "regularisation", "passes", "weakest", "why"}."""
    reg, lr = setting
    cap = max(CAPS)
    why, knobs, passes, weakest = [], {}, True, 100.0
    for domain in DOMAINS:
        tried = [
            v
            for v in variants(domain)
            if len(_scores(records, domain, v, setting, cap)) == len(PILOT_SEEDS)
        ]
        ok = [
            v
            for v in tried
            if (_base(records, domain, v) or 0.0) < BASE_CEILING
            and min(_scores(records, domain, v, setting, cap)) >= FLOOR
        ]
        if ok:
            picked = ok[-1]  # easiest first: the last passing one is the hardest
        else:
            picked = max(tried, key=lambda v: min(_scores(records, domain, v, setting, cap)))
            passes = False
            why.append(
                f"{domain} at LR {lr:g}, regularisation {reg:g}: no variant reached {FLOOR}% on "
                "both seeds; the highest minimum taken (below the floor)"
            )
        weakest = min(weakest, min(_scores(records, domain, picked, setting, cap)))
        knobs.update(picked)
    return {
        "difficulty": knobs,
        "max_steps": cap,
        "learning_rate": lr,
        "regularisation": reg,
        "passes": passes,
        "weakest": weakest,
        "why": why,
    }


def choose(records: list[dict]) -> dict:
    """The registered rule over the settings (module docstring)."""
    ran = [
        st
        for st in settings()
        if all(any(_runs(records, d, v, st) for v in variants(d)) for d in DOMAINS)
    ]
    at = [choose_at(records, st) for st in ran]
    passing = [c for c in at if c["passes"]]
    return max(passing or at, key=lambda c: c["weakest"])  # ties: the earlier setting


def write_record(out: Path, records: list[dict]) -> str:
    choice = choose(records)
    lines = [
        "# DMT lab pilot (seeds 100, 101; each domain alone at full data)",
        "",
        f"Rule: per (regularisation, LR) the hardest variant with >= {FLOOR}% on both seeds at "
        f"{max(CAPS)} steps and the base < {BASE_CEILING}%; among the settings where all three "
        "domains pass, the highest weakest domain (module docstring of "
        "promot_jax/lab/dmt/pilot.py).",
        "",
        "| domain | variant | reg. | LR | base | "
        + " | ".join(f"seed {s} @ {c}" for s in PILOT_SEEDS for c in CAPS)
        + " |",
        "|---|---|---|---|---|" + "---|" * (len(PILOT_SEEDS) * len(CAPS)),
    ]
    for domain in DOMAINS:
        for variant in variants(domain):
            base = _base(records, domain, variant)
            for reg, lr in settings():
                runs = _runs(records, domain, variant, (reg, lr))
                if not runs:
                    continue
                cells = ["-" if base is None else f"{base:.1f}"]
                cells += [
                    f"{runs[s][str(c)]:.1f}" if s in runs else "-"
                    for s in PILOT_SEEDS
                    for c in CAPS
                ]
                lines.append(
                    f"| {domain} | {_variant_name(variant)} | {reg:g} | {lr:g} | "
                    + " | ".join(cells)
                    + " |"
                )
    lines += [
        "",
        f"Chosen: {_variant_name(choice['difficulty'])}; LR {choice['learning_rate']:g}; "
        f"regularisation {choice['regularisation']:g}; max_steps {choice['max_steps']}; "
        f"weakest domain {choice['weakest']:.1f}.",
        *choice["why"],
        "",
    ]
    text = "\n".join(lines)
    run_dirs.write_atomic(out / PILOT_MD, text)
    run_dirs.write_atomic(
        out / PILOT_JSON, json.dumps({"records": records, "choice": choice}, indent=1)
    )
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
    from promot_jax.lab.pipeline import check_workers

    workers = check_workers(workers)  # --workers 0 or below is refused, as by the labs
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for i in range(workers):
        slots.put(lab_workers.cpus()[i % len(lab_workers.cpus())])
    records = []
    with cf.ProcessPoolExecutor(
        workers, mp_context=context, initializer=lab_workers.pin, initargs=(slots,)
    ) as pool:
        for record in pool.map(functools.partial(run_job, str(out), base), jobs()):
            log(
                f"pilot: {record['domain']} {_variant_name(record['variant'])} LR "
                f"{record['lr']:g} reg. {record['regularisation']:g} seed {record['seed']}: "
                f"{record['scores']}"
            )
            records.append(record)
    log(write_record(out, records))
    return out
