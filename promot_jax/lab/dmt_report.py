"""The DMT part of the lab's report: DMT Table 1 and the k sweep beside the paper's numbers,
and the DMT paper's claims on teacher-forced token accuracy (decoded scores stay near the
floor at the lab's 30 steps per stage; issue 20 replaces this design).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from promot_jax.evaluation import reports
from promot_jax.lab import paper
from promot_jax.lab.config import LabSettings
from promot_jax.lab.mixtures import k_label
from promot_jax.lab.plan import DOMAIN_STAGE


def _cell(values: Sequence[float | None]) -> str:
    return reports.mean_std_cell(values, n=True)


def _paper(v) -> str:
    return "-" if v is None else f"{v:.2f}"


DMT_TASK_LABELS = {"toy_math": "math", "toy_code": "code", "toy_general": "general"}


def decoded(runs: Sequence[dict], task: str) -> list[float]:
    return [r["scores"][task] for r in runs]


def token_accuracy(runs: Sequence[dict], task: str) -> list[float | None]:
    """Teacher-forced token accuracy per run (None for a run scored before it was kept)."""
    return [r.get("teacher_forced", {}).get(task, {}).get("token_accuracy") for r in runs]


def dmt_tables(dmt: Mapping[str, list[dict]], settings: LabSettings) -> str:
    tasks = list(DMT_TASK_LABELS)
    names = list(DMT_TASK_LABELS.values())
    head = (
        "| strategy | "
        + " | ".join(f"toy {n} {'EM' if n == 'general' else 'acc'}" for n in names)
        + " | "
        + " | ".join(f"{n} token acc" for n in names)
        + " | paper GSM8K / HumanEval / MT-Bench |"
    )
    lines = [head, "|---|" + "---|" * (2 * len(tasks) + 1)]

    def row(label: str, runs: Sequence[dict], ref) -> str:
        cells = [_cell(decoded(runs, t)) for t in tasks]
        cells += [_cell(token_accuracy(runs, t)) for t in tasks]
        ref_text = " / ".join(_paper(v) for v in ref) if ref else "-"
        return f"| {label} | " + " | ".join(cells) + f" | {ref_text} |"

    for label, runs in dmt.items():
        lines.append(row(label, runs, paper.DMT_TABLE1.get(label)))
    lines += [
        "",
        "Decoded scores count an answer only when all of it is right; token acc is the share "
        "of the reference answer's tokens the model predicts under teacher forcing (same "
        "examples), which moves long before a whole answer is right.",
        "",
        "k sweep (DMT stage 2 = general + k x domain data):",
        "",
        lines[0].replace("| strategy |", "| k |"),
        lines[1],
    ]
    for k in settings.dmt_ks:
        runs = dmt.get(f"DMT k={k_label(k)}", [])
        lines.append(row(k_label(k), runs, paper.DMT_K_SWEEP.get(k_label(k))))
    return "\n".join(lines) + "\n"


def _mean(xs: Sequence[float | None]) -> float:
    """Mean of the values present (None: a run that lacks the figure); NaN if none are."""
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def dmt_checks(dmt: Mapping[str, list[dict]], settings: LabSettings) -> list[str]:
    """The DMT paper's claims on teacher-forced token accuracy, each marked as reproduced
    or not (skipped where a row was not run or not teacher-forced). The paper's figures
    come from `paper.DMT_TABLE1` / `paper.DMT_K_SWEEP` (GSM8K, HumanEval, MT-Bench)."""

    def tok(label: str, task: str) -> float:
        return _mean(token_accuracy(dmt.get(label, []), task))

    def ran(*labels: str) -> bool:
        return not any(np.isnan(tok(label, "toy_math")) for label in labels)

    def verdict(ok: bool) -> str:
        return "reproduced" if ok else "NOT reproduced"

    ref, gsm, humaneval, mtbench = paper.DMT_TABLE1, 0, 1, 2
    dmt256, mixed, multi = "DMT k=1/256", "mixed sequential", "multi-task"
    domain = ("toy_math", "toy_code")
    lines = []
    if ran(DOMAIN_STAGE, mixed):
        ok = all(tok(mixed, t) < tok(DOMAIN_STAGE, t) for t in domain)
        lines.append(
            "- Training on general data after the domains forgets them (paper: sequential "
            f"training forgets what came first; mixed sequential GSM8K {ref[mixed][gsm]:.2f} "
            f"vs multi-task {ref[multi][gsm]:.2f}): math / code token acc "
            f"{tok(DOMAIN_STAGE, 'toy_math'):.1f} / {tok(DOMAIN_STAGE, 'toy_code'):.1f} after "
            f"the domain stage, {tok(mixed, 'toy_math'):.1f} / {tok(mixed, 'toy_code'):.1f} "
            f"after general-only stage 2 -> {verdict(ok)}"
        )
    if ran(dmt256, mixed):
        ok = all(tok(dmt256, t) > tok(mixed, t) for t in domain)
        lines.append(
            "- DMT (k=1/256) keeps more of the domains than mixed sequential training (paper: "
            f"GSM8K {ref[dmt256][gsm]:.2f} vs {ref[mixed][gsm]:.2f}, HumanEval "
            f"{ref[dmt256][humaneval]:.2f} vs {ref[mixed][humaneval]:.2f}): math / code token "
            f"acc {tok(dmt256, 'toy_math'):.1f} / {tok(dmt256, 'toy_code'):.1f} vs "
            f"{tok(mixed, 'toy_math'):.1f} / {tok(mixed, 'toy_code'):.1f} -> {verdict(ok)}"
        )
    if ran(dmt256, multi):
        ok = tok(dmt256, "toy_code") >= tok(multi, "toy_code")
        lines.append(
            f"- DMT (k=1/256) at or above multi-task on code (paper: HumanEval "
            f"{ref[dmt256][humaneval]:.2f} vs {ref[multi][humaneval]:.2f}; GSM8K "
            f"{ref[dmt256][gsm]:.2f} vs {ref[multi][gsm]:.2f}): code / math token acc "
            f"{tok(dmt256, 'toy_code'):.1f} / {tok(dmt256, 'toy_math'):.1f} vs "
            f"{tok(multi, 'toy_code'):.1f} / {tok(multi, 'toy_math'):.1f} -> {verdict(ok)}"
        )
        ok = tok(dmt256, "toy_general") > tok(multi, "toy_general")
        lines.append(
            f"- DMT (k=1/256) above multi-task on general ability (paper: MT-Bench "
            f"{ref[dmt256][mtbench]:.2f} vs {ref[multi][mtbench]:.2f}): general token acc "
            f"{tok(dmt256, 'toy_general'):.1f} vs {tok(multi, 'toy_general'):.1f} -> {verdict(ok)}"
        )
    ks = sorted(settings.dmt_ks)
    small, large = (f"DMT k={k_label(k)}" for k in (ks[0], ks[-1]))
    if len(ks) > 1 and ran(small, large):
        sweep_small, sweep_large = (paper.DMT_K_SWEEP.get(k_label(k)) for k in (ks[0], ks[-1]))
        paper_text = "the paper did not run these k"
        if sweep_small and sweep_large:
            paper_text = (
                f"paper: GSM8K {sweep_large[gsm]:.2f} vs {sweep_small[gsm]:.2f}, MT-Bench "
                f"{sweep_large[mtbench]:.2f} vs {sweep_small[mtbench]:.2f}"
            )
        ok = tok(large, "toy_math") > tok(small, "toy_math") and tok(large, "toy_general") < tok(
            small, "toy_general"
        )
        lines.append(
            f"- More domain data in stage 2 (k={k_label(ks[-1])} vs k={k_label(ks[0])}): more "
            f"math, less general ability ({paper_text}): math {tok(large, 'toy_math'):.1f} vs "
            f"{tok(small, 'toy_math'):.1f}, general {tok(large, 'toy_general'):.1f} vs "
            f"{tok(small, 'toy_general'):.1f} token acc -> {verdict(ok)}"
        )
    return lines
