"""The registered pilot (`promot-jax lab pilot`): how the lab's stage settings were chosen.

Registered in docs/lab_design.md before it ran, on its own seeds (`PILOT_SEEDS`), reading
the primary target's validation examples and stage 1 alone, never the suite:

- Stage 1 (prompt tuning = ProMoT stage 1): prompt length in `PROMPT_LENGTHS` x stage-1
  steps in `STAGE1_STEPS` (read at each step count of one run: the LR is constant, so the
  state at step 200 of a 400-step run is that of a 200-step run). Choice: among the
  settings whose label share on the target is >= `verdicts.PROMPT_FORMAT_SHARE` on every
  pilot seed, the highest mean accuracy; within `TIE` points of it, the cheapest (prompt
  length x steps). None passing: the highest mean label share.
- Stage 2 (the model-tuning recipe, shared by standard FT and ProMoT stage 2): (LR, steps)
  in `STAGE2_OPTIONS`, read from standard FT's target accuracy. Choice: among the options
  within the lab's budget (steps <= `STAGE2_BUDGET`), the highest mean accuracy; within
  `TIE` points, the fewest steps. An option past the budget (the paper's LR 1e-3 with more
  steps) replaces it only when it is better by more than `OVER_BUDGET_MARGIN` points.

It writes `pilot.json` and `pilot.md` in its directory; docs/lab_pilot.md records the run
the lab's settings came from.

The LoRA pilot (`promot-jax lab pilot --lora`, registered in docs/lab_design.md "Variants"
before it ran) chooses the LR of LoRA stage 1 for the `--variants` rows the same way: LRs in
`LORA_LRS` at the prompt's stage-1 steps and `LabSettings.lora_rank`, read from the target
alone, chosen by `choose_stage1`'s rule with the LR as the cost.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from promot_jax import run_dirs
from promot_jax.lab import verdicts
from promot_jax.lab.config import PILOT_SEEDS, PRIMARY_TARGET, LabBase, LabSettings

PROMPT_LENGTHS = (10, 50, 100)
STAGE1_STEPS = (200, 400)
STAGE2_OPTIONS = ((6e-3, 150), (3e-3, 300), (1e-3, 600))  # (model LR, steps)
STAGE2_BUDGET = 300
OVER_BUDGET_MARGIN = 5.0
TIE = 2.0
LORA_LRS = (1e-3, 3e-3, 1e-2)  # 1e-3: the recipe's LORA_LEARNING_RATE
PILOT_KIND, LORA_PILOT_KIND = "lab_pilot", "lab_lora_pilot"
PILOT_JSON, PILOT_MD = "pilot.json", "pilot.md"


def choose_stage1(results: Mapping[tuple, Sequence[dict]]) -> tuple:
    """(prompt length, steps) by the registered rule; `results[(P, steps)]` holds one
    {"accuracy", "label_share"} per pilot seed. The LoRA pilot passes (LR, steps): its
    cost is LR x steps as the prompt's is P x steps."""
    mean = {k: float(np.mean([r["accuracy"] for r in v])) for k, v in results.items()}
    passing = [
        k
        for k, v in results.items()
        if min(r["label_share"] for r in v) >= verdicts.PROMPT_FORMAT_SHARE
    ]
    if not passing:
        return max(results, key=lambda k: np.mean([r["label_share"] for r in results[k]]))
    best = max(mean[k] for k in passing)
    close = [k for k in passing if mean[k] >= best - TIE]
    return min(close, key=lambda k: (k[0] * k[1], k))


def choose_stage2(results: Mapping[tuple[float, int], Sequence[float]]) -> tuple[float, int]:
    """(LR, steps) by the registered rule; `results[(lr, steps)]` holds FT's target accuracy
    per pilot seed."""
    mean = {k: float(np.mean(v)) for k, v in results.items()}
    within = [k for k in results if k[1] <= STAGE2_BUDGET]
    best = max(mean[k] for k in within)
    close = [k for k in within if mean[k] >= best - TIE]
    choice = min(close, key=lambda k: (k[1], -k[0]))
    over = [k for k in results if k[1] > STAGE2_BUDGET]
    if over:
        top = max(over, key=lambda k: mean[k])
        if mean[top] > mean[choice] + OVER_BUDGET_MARGIN:
            return top
    return choice


@functools.lru_cache(maxsize=8)
def _target_probe(config, examples: int) -> Callable:
    """An eval_fn: the target's first `examples` validation examples, decoded greedily;
    accuracy and share of outputs that are its labels. Reads nothing else. One per model
    config, so both pilot seeds share its decoder and examples."""
    from promot_jax.evaluation import runner, suite
    from promot_jax.evaluation.model_source import LoadedModel
    from promot_jax.lab.evaluate import output_shares

    settings = runner.DecodeSettings(search="greedy", batch_size=16, max_examples=examples)
    entry = suite.entry(PRIMARY_TARGET, is_target=True)
    data = runner.load_examples(PRIMARY_TARGET, entry.info.eval_split, examples)
    decoders = runner.Decoders()

    def probe(params, step: int) -> dict[str, float]:
        scored = runner.score_entries(
            LoadedModel.training(config, params),
            [entry],
            entry,
            "same_format",
            settings,
            decoders=decoders,
            examples=lambda e: data,
        )
        [(_, result, rows)] = scored
        shares = output_shares(PRIMARY_TARGET, [r["output"] for r in rows], entry.info.labels)
        return {"pilot/accuracy": result["score"], "pilot/label_share": shares["label"]}

    return probe


def _claim(out: str | Path | None, kind: str, entries: list[str], force: bool) -> Path:
    """The pilot's directory, checked and marked as `kind`'s before anything runs."""
    if out is None:
        raise ValueError("`promot-jax lab pilot` needs --out DIR")
    out = Path(out).absolute()
    run_dirs.check_writable(out, "--out")
    if force:
        run_dirs.clear(out, kind)
    run_dirs.claim(out, kind, entries, evidence=entries[0])
    return out


def _write(out: Path, record: dict, markdown: str, log: Callable[[str], None]) -> dict:
    """The pilot's record (pilot.json) and its table (pilot.md), each written atomically."""
    run_dirs.write_atomic(out / PILOT_JSON, json.dumps(record, indent=2))
    run_dirs.write_atomic(out / PILOT_MD, markdown)
    log(markdown)
    return record


def _per_seed(seeds: Sequence[dict]) -> str:
    """'acc / acc | share / share': a table's accuracy and label-share cells, one per seed."""
    acc = " / ".join(f"{x['accuracy']:.1f}" for x in seeds)
    share = " / ".join(f"{x['label_share']:.1f}" for x in seeds)
    return f"{acc} | {share}"


def _at_steps(run_dir: Path, steps: Sequence[int]) -> dict[int, dict]:
    from promot_jax.evaluation import plots

    found = {r["step"]: r for r in plots.read_metrics(run_dir) if "pilot/accuracy" in r}
    missing = [s for s in steps if s not in found]
    if missing:
        raise RuntimeError(f"{run_dir} has no pilot record at steps {missing}")
    return {
        s: {"accuracy": found[s]["pilot/accuracy"], "label_share": found[s]["pilot/label_share"]}
        for s in steps
    }


def run_pilot(
    out: str | Path | None,
    base: str | Path | None = None,
    *,
    force: bool = False,
    quick: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs the registered pilot in `out` (resumable) and writes pilot.json / pilot.md."""
    from promot_jax import experiment
    from promot_jax.lab import pipeline, plan

    base = LabBase.read(base)
    stage1_steps = (2, 4) if quick else STAGE1_STEPS
    options = tuple((lr, max(2, s // 75)) for lr, s in STAGE2_OPTIONS) if quick else STAGE2_OPTIONS
    examples = 8 if quick else 200
    out = _claim(out, PILOT_KIND, [PILOT_JSON, PILOT_MD, "stage1", "stage2"], force)
    pipeline.enable_compile_cache()
    start = time.perf_counter()
    s1: dict[tuple[int, int], list[dict]] = {}
    s2: dict[tuple[float, int], list[float]] = {}
    for seed in PILOT_SEEDS:
        for length in PROMPT_LENGTHS:
            settings = LabSettings(seeds=(0,), prompt_length=length)
            stage = plan._stage(
                "promot_stage1", PRIMARY_TARGET, stage1_steps[-1], settings.prompt_lr,
                plan.LENGTHS[PRIMARY_TARGET], settings, base, seed, eval_every=stage1_steps[0],
            )  # fmt: skip
            run_dir = out / "stage1" / f"p{length}" / f"s{seed}"
            experiment.run_experiment(
                {"stage1": stage}, str(run_dir), eval_fn=_target_probe(stage.model, examples)
            )
            for steps, record in _at_steps(run_dir / "stage1", stage1_steps).items():
                s1.setdefault((length, steps), []).append(record)
            log(f"pilot: stage 1 P={length} seed {seed} done ({time.perf_counter() - start:.0f}s)")
        for lr, steps in options:
            settings = LabSettings(seeds=(0,), model_lr=lr, stage2_steps=steps)
            stage = plan._model_tuning(
                "finetune", PRIMARY_TARGET, settings, base, seed, eval_every=steps
            )
            run_dir = out / "stage2" / f"lr{lr}_steps{steps}" / f"s{seed}"
            experiment.run_experiment(
                {"ft": stage}, str(run_dir), eval_fn=_target_probe(stage.model, examples)
            )
            s2.setdefault((lr, steps), []).append(_at_steps(run_dir / "ft", [steps])[steps])
            log(f"pilot: FT lr={lr} steps={steps} seed {seed} ({time.perf_counter() - start:.0f}s)")
    choice1 = choose_stage1(s1)
    choice2 = choose_stage2({k: [r["accuracy"] for r in v] for k, v in s2.items()})
    record = {
        "seeds": list(PILOT_SEEDS),
        "quick": quick,
        "examples": examples,
        "stage1": [{"prompt_length": k[0], "steps": k[1], "seeds": v} for k, v in s1.items()],
        "stage2": [{"model_lr": k[0], "steps": k[1], "seeds": v} for k, v in s2.items()],
        "choice": {
            "prompt_length": choice1[0],
            "stage1_steps": choice1[1],
            "model_lr": choice2[0],
            "stage2_steps": choice2[1],
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    return _write(out, record, pilot_markdown(record), log)


def pilot_markdown(record: Mapping) -> str:
    lines = [
        f"Pilot seeds {record['seeds']}, first {record['examples']} validation examples of "
        f"{PRIMARY_TARGET} ({record['seconds']:.0f}s).",
        "",
        "| stage 1: prompt length | steps | accuracy per seed | label share % per seed |",
        "|---|---|---|---|",
    ]
    for r in record["stage1"]:
        lines.append(f"| {r['prompt_length']} | {r['steps']} | {_per_seed(r['seeds'])} |")
    lines += ["", "| stage 2 (standard FT): LR | steps | accuracy per seed |", "|---|---|---|"]
    for r in record["stage2"]:
        acc = " / ".join(f"{x['accuracy']:.1f}" for x in r["seeds"])
        lines.append(f"| {r['model_lr']} | {r['steps']} | {acc} |")
    c = record["choice"]
    lines += [
        "",
        f"Chosen by the registered rule: prompt length {c['prompt_length']}, stage 1 "
        f"{c['stage1_steps']} steps; model LR {c['model_lr']}, stage 2 {c['stage2_steps']} steps.",
        "",
    ]
    return "\n".join(lines)


def run_lora_pilot(
    out: str | Path | None,
    base: str | Path | None = None,
    *,
    force: bool = False,
    quick: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """The registered LoRA pilot in `out` (resumable): LoRA stage 1 at each of `LORA_LRS` on
    the pilot seeds, read on the target; writes pilot.json / pilot.md."""
    from promot_jax import experiment
    from promot_jax.lab import pipeline, plan

    base = LabBase.read(base)
    settings = LabSettings(seeds=(0,))
    steps = 4 if quick else settings.stage1_steps
    examples = 8 if quick else 200
    out = _claim(out, LORA_PILOT_KIND, [PILOT_JSON, PILOT_MD, "lora_stage1"], force)
    pipeline.enable_compile_cache()
    start = time.perf_counter()
    results: dict[tuple[float, int], list[dict]] = {}
    for seed in PILOT_SEEDS:
        for lr in LORA_LRS:
            lr_settings = dataclasses.replace(settings, lora_lr=lr)
            stage = plan._stage(
                "lora_stage1", PRIMARY_TARGET, steps, settings.prompt_lr,
                plan.LENGTHS[PRIMARY_TARGET], lr_settings, base, seed, eval_every=steps,
            )  # fmt: skip
            run_dir = out / "lora_stage1" / f"lr{lr}" / f"s{seed}"
            experiment.run_experiment(
                {"stage1": stage}, str(run_dir), eval_fn=_target_probe(stage.model, examples)
            )
            results.setdefault((lr, steps), []).append(
                _at_steps(run_dir / "stage1", [steps])[steps]
            )
            log(f"LoRA pilot: lr={lr} seed {seed} done ({time.perf_counter() - start:.0f}s)")
    lr, _ = choose_stage1(results)
    record = {
        "seeds": list(PILOT_SEEDS),
        "quick": quick,
        "examples": examples,
        "lora_rank": settings.lora_rank,
        "steps": steps,
        "lora_stage1": [{"lora_lr": k[0], "seeds": v} for k, v in results.items()],
        "choice": {"lora_lr": lr},
        "seconds": round(time.perf_counter() - start, 1),
    }
    return _write(out, record, lora_pilot_markdown(record), log)


def lora_pilot_markdown(record: Mapping) -> str:
    lines = [
        f"LoRA pilot: seeds {record['seeds']}, rank {record['lora_rank']}, "
        f"{record['steps']} steps, first {record['examples']} validation examples of "
        f"{PRIMARY_TARGET} ({record['seconds']:.0f}s).",
        "",
        "| LoRA stage 1: LR | accuracy per seed | label share % per seed |",
        "|---|---|---|",
    ]
    for r in record["lora_stage1"]:
        lines.append(f"| {r['lora_lr']} | {_per_seed(r['seeds'])} |")
    lines += ["", f"Chosen by the registered rule: LoRA LR {record['choice']['lora_lr']}.", ""]
    return "\n".join(lines)
