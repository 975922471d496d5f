"""The lab's report: paper-layout tables beside the papers' numbers, figures, direction checks.

`report.md` holds the ProMoT Table 2/3/4/6 analogs, the Figure 1/2/7 analogs
(PNG), the DMT Table 1 and k-sweep analogs, the timings and the fixed design;
`results.json` holds every number the tables show (the CI test checks they are
finite). The Table 3 analog is also printed to the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from promot_jax import run_dirs
from promot_jax.evaluation import plots, reports
from promot_jax.lab import paper
from promot_jax.lab.config import HISTORY, LAB_MODEL, LabSettings
from promot_jax.lab.mixtures import k_label
from promot_jax.lab.plan import (
    DOMAIN_STAGE,
    REGULARIZATION_GRID,
    Experiment,
    Plan,
    regularization_label,
)

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
FIG_LEAK = "fig1_2_leak_and_target.png"
FIG_ALIGNMENT = "fig7_gradient_alignment.png"
FIG_NORM_AVG = "norm_avg_rte.png"
FIG_K_SWEEP = "dmt_k_sweep.png"
# Every top-level name the report writes into the lab directory (the lab's marker lists them).
OUTPUTS = (REPORT_MD, RESULTS_JSON, FIG_LEAK, FIG_ALIGNMENT, FIG_NORM_AVG, FIG_K_SWEEP)
STEP0_JSON = "step0.json"
LEAK_KEYS = ("probe/toy_triviaqa_1shot/leak", "probe/toy_wmt16_en_de_1shot/leak")
TARGET_KEY = "probe/target/toy_rte/accuracy"
ALIGN_KEYS = (
    "grad_align/all",
    "grad_align/mlp",
    "grad_align/query",
    "grad_align/key",
    "grad_align/value",
)


# --------------------------------------------------------------------------- curves


def step0_point(out: Path, exp: Experiment, eval_fn, base: Path) -> list:
    """The monitor's scalars before the first step (kept in `<exp>/step0.json`)."""
    from promot_jax import train

    path = out / exp.name / STEP0_JSON
    if not path.exists():
        first = dataclasses.replace(next(iter(exp.stages.values())), run_dir=str(path.parent))
        scalars = eval_fn(train.initial_params(first), 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"step": 0, **scalars}))
    return [json.loads(path.read_text())]


def curve_records(out: Path, exp: Experiment) -> list[dict]:
    """Monitor records of all stages of `exp`, on one step axis (stage 2 continues stage 1)."""
    records = list(json.loads((out / exp.name / STEP0_JSON).read_text()) for _ in [0])
    offset = 0
    for name, stage in exp.stages.items():
        for r in plots.read_metrics(out / exp.name / name):
            if any(k.startswith(("probe/", "grad_align/")) for k in r):
                records.append({**r, "step": r["step"] + offset, "stage": name})
        offset += stage.steps
    return records


def _series(records, key, offset: int = 0):
    pts = [(r["step"] + offset, r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(curves: Mapping[str, list], out: Path, stage1_steps: int) -> list[str]:
    """Figures 1/2 (leak and RTE accuracy vs steps) and 7 (gradient alignment vs steps).

    Standard FT is shifted by `stage1_steps`, so trunk training (FT, ProMoT stage 2) starts at
    the dotted line for both methods; before it, ProMoT's stage 1 trains only the prompt.
    """
    plt = plots._pyplot()
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    shift = {label: stage1_steps if label == "standard FT" else 0 for label in curves}
    for label, records in curves.items():
        for key, ls in zip(LEAK_KEYS, ("-", "--"), strict=True):
            task = key.split("/")[1].replace("toy_", "").replace("_1shot", "")
            axes[0].plot(
                *_series(records, key, shift[label]), ls, marker="o", ms=3, label=f"{label}: {task}"
            )
        axes[1].plot(*_series(records, TARGET_KEY, shift[label]), marker="o", ms=3, label=label)
    for ax in axes:
        ax.axvline(stage1_steps, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step (dotted: trunk training starts; before it ProMoT stage 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("format leak % (outputs True/False)")
    axes[0].set_title("Fig. 1/2 analog: 1-shot TriviaQA / En-De leak")
    axes[1].set_ylabel("toy RTE accuracy (probe)")
    axes[1].set_title("target score")
    fig.tight_layout()
    path = out / FIG_LEAK
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path.name)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, records in curves.items():
        for key, ls in zip(ALIGN_KEYS[:2], ("-", "--"), strict=True):
            ax.plot(
                *_series(records, key), ls, marker="o", ms=3, label=f"{label}: {key.split('/')[1]}"
            )
    ax.axvline(stage1_steps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("step (dotted: trunk training starts; before it ProMoT stage 1)")
    ax.set_ylabel("cos(grad, grad with shuffled labels)")
    ax.set_title("Fig. 7 analog: gradient alignment, last decoder layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / FIG_ALIGNMENT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path.name)
    return written


# --------------------------------------------------------------------------- tables


def _cell(values: Sequence[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} (n={len(values)})"


def _paper(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def group(results: Mapping[str, dict], table: str) -> dict[str, list[dict]]:
    """Runs of one table keyed by label (equal labels = seeds), in plan order."""
    grouped: dict[str, list[dict]] = {}
    for key, run in results.items():
        if key.startswith(table + "/"):
            grouped.setdefault(run["config"]["label"], []).append(run)
    return grouped


def _target_scores(runs: Sequence[dict]) -> list[float]:
    return [r["summary"]["target"]["score"] for r in runs]


def _norm(runs: Sequence[dict]) -> list[float]:
    return [r["summary"]["norm_avg"]["1"] for r in runs]


def _leak(runs: Sequence[dict]) -> list[float]:
    return [r["summary"]["leak_rate"]["1"] for r in runs]


def _suite_numbers(groups: Mapping[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    """Target score, Norm. Avg. and leak per run, for each label (results.json)."""
    return {
        k: {"target": _target_scores(v), "norm_avg": _norm(v), "leak": _leak(v)}
        for k, v in groups.items()
    }


def table2(rte: Mapping, en_fr: Mapping) -> str:
    lines = [
        "| task | prompt tuning | standard FT | ProMoT | paper: PT / FT / ProMoT |",
        "|---|---|---|---|---|",
    ]
    for name, groups, cols in (
        ("RTE acc", rte, ("prompt tuning", "standard FT", "ProMoT")),
        ("WMT14 En-Fr BLEU", en_fr, ("prompt tuning", "standard FT", "ProMoT")),
    ):
        cells = [_cell(_target_scores(groups[c])) if c in groups else "not run" for c in cols]
        ref = " / ".join(_paper(paper.TABLE2[name][c]) for c in cols)
        lines.append(f"| toy {name} | " + " | ".join(cells) + f" | {ref} |")
    return "\n".join(lines) + "\n"


def seed_table(groups: Mapping[str, list[dict]]) -> str:
    """Every seed of every RTE row: target accuracy, Norm. Avg., mean leak (1-shot)."""
    lines = ["| run | seed | toy RTE acc | Norm. Avg. | leak % |", "|---|---|---|---|---|"]
    for label, runs in groups.items():
        for run in runs:
            seed = Path(run["config"]["checkpoint"]).parent.name if label != "pretrained" else "-"
            lines.append(
                f"| {label} | {seed} | {_target_scores([run])[0]:.2f} | {_norm([run])[0]:.2f} "
                f"| {_leak([run])[0]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def paper_table3() -> str:
    lines = [
        "| eval (paper, mT5 XXL, 1-shot) | " + " | ".join(paper.TABLE3_COLUMNS) + " |",
        "|---|" + "---|" * len(paper.TABLE3_COLUMNS),
    ]
    for row, vals in paper.TABLE3.items():
        lines.append(f"| {row} | " + " | ".join(_paper(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"


DMT_TASK_LABELS = {"toy_math": "math", "toy_code": "code", "toy_general": "general"}


def _decoded(runs: Sequence[dict], task: str) -> list[float]:
    return [r["scores"][task] for r in runs]


def _token_accuracy(runs: Sequence[dict], task: str) -> list[float | None]:
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
        cells = [_cell(_decoded(runs, t)) for t in tasks]
        cells += [_cell(_token_accuracy(runs, t)) for t in tasks]
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


def plot_k_sweep(dmt: Mapping[str, list[dict]], settings: LabSettings, path: Path) -> str:
    plt = plots._pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ks = list(settings.dmt_ks)
    panels = (("decoded score", _decoded), ("teacher-forced token accuracy %", _token_accuracy))
    for ax, (ylabel, values) in zip(axes, panels, strict=True):
        for task, name in DMT_TASK_LABELS.items():
            means = []
            for k in ks:
                got = [v for v in values(dmt.get(f"DMT k={k_label(k)}", []), task) if v is not None]
                means.append(np.mean(got) if got else np.nan)
            ax.plot([math.log2(k) for k in ks], means, marker="o", label=f"toy {name}")
        ax.set_xticks([math.log2(k) for k in ks], [k_label(k) for k in ks])
        ax.set_xlabel("k (fraction of domain data in DMT stage 2)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("DMT k sweep analog")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _mean(xs: Sequence[float | None]) -> float:
    """Mean of the values present (None: a run that lacks the figure); NaN if none are."""
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def dmt_checks(dmt: Mapping[str, list[dict]], settings: LabSettings) -> list[str]:
    """The DMT paper's claims on teacher-forced token accuracy, each marked as reproduced
    or not (skipped where a row was not run or not teacher-forced). The paper's figures
    come from `paper.DMT_TABLE1` / `paper.DMT_K_SWEEP` (GSM8K, HumanEval, MT-Bench)."""

    def tok(label: str, task: str) -> float:
        return _mean(_token_accuracy(dmt.get(label, []), task))

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


def direction_checks(rte: Mapping[str, list[dict]], curves: Mapping[str, list]) -> list[str]:
    """The paper's claims, each marked as reproduced or not at this scale."""
    lines = []

    mean = _mean
    pre = mean(_norm(rte.get("pretrained", [])))
    ft, pm = rte.get("standard FT", []), rte.get("ProMoT", [])
    ft_curve = curves.get("standard FT", [])
    leak = [r.get("probe/leak_mean") for r in ft_curve if r.get("probe/leak_mean") is not None]
    if leak:
        ok = max(leak) > 90
        lines.append(
            f"- Standard FT leak rate above 90% during training (paper: by 300 steps): "
            f"max probe leak {max(leak):.1f}% -> {'reproduced' if ok else 'NOT reproduced'}"
        )
    lines.append(
        f"- Standard FT Norm. Avg. below pretrained: {mean(_norm(ft)):.2f} vs {pre:.2f} -> "
        f"{'reproduced' if mean(_norm(ft)) < pre else 'NOT reproduced'}"
    )
    gap = mean(_target_scores(pm)) - mean(_target_scores(ft))
    chance = all(abs(mean(_target_scores(g)) - 50) < 10 for g in (ft, pm))
    lines.append(
        f"- ProMoT within about a point of FT on the target: ProMoT - FT = {gap:+.2f} accuracy "
        f"points -> {'reproduced' if gap >= -1.0 else 'NOT reproduced'}"
        + (
            " (but both are near chance, 50%: the target task itself was not learned)"
            if chance
            else ""
        )
    )
    pre_leak = mean(_leak(rte.get("pretrained", [])))
    ft_leak, pm_leak = mean(_leak(ft)), mean(_leak(pm))
    lines.append(
        f"- Format specialization (suite outputs that are True/False, 1-shot): pretrained "
        f"{pre_leak:.1f}%, standard FT {ft_leak:.1f}%, ProMoT {pm_leak:.1f}% -> FT raises it "
        f"{'yes' if ft_leak > pre_leak + 5 else 'no'}; ProMoT keeps it closer to pretrained "
        f"{'yes' if abs(pm_leak - pre_leak) < abs(ft_leak - pre_leak) else 'no'}"
    )
    lines.append(
        f"- ProMoT Norm. Avg. at or above pretrained: {mean(_norm(pm)):.2f} vs {pre:.2f} -> "
        f"{'reproduced' if mean(_norm(pm)) >= pre else 'NOT reproduced'}"
    )
    lines.append(
        f"- ProMoT Norm. Avg. above standard FT: {mean(_norm(pm)):.2f} vs "
        f"{mean(_norm(ft)):.2f} -> "
        f"{'reproduced' if mean(_norm(pm)) > mean(_norm(ft)) else 'NOT reproduced'}"
    )
    return lines


def regularization_table(
    rte: Mapping[str, list[dict]], grid: Mapping[str, list[dict]], settings: LabSettings
) -> str:
    """Seed 0's standard FT and ProMoT with the lab's stage-2 regularisation and with each
    REGULARIZATION_GRID setting (empty when the grid was not run)."""
    if not grid:
        return ""
    lines = [
        "| stage-2 dropout | label smoothing | FT target | FT Norm. Avg. | FT leak % "
        "| ProMoT target | ProMoT Norm. Avg. | ProMoT leak % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    own = (settings.model_dropout, settings.model_label_smoothing)
    for dropout, smoothing in (own, *REGULARIZATION_GRID):
        cells = [f"{dropout}" + (" (lab)" if (dropout, smoothing) == own else ""), f"{smoothing}"]
        for method in ("standard FT", "ProMoT"):
            if (dropout, smoothing) == own:
                runs = rte.get(method, [])[:1]  # the first seed's main run
            else:
                runs = grid.get(regularization_label(method, dropout, smoothing), [])
            cells += [_cell(_target_scores(runs)), _cell(_norm(runs)), _cell(_leak(runs))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the report


def _subset(groups: Mapping[str, list], labels: Sequence[str]) -> dict[str, list]:
    return {k: groups[k] for k in labels if k in groups}


def write_report(
    out: Path,
    settings: LabSettings,
    plan: Plan,
    results: Mapping[str, dict],
    timings: Mapping[str, float],
    log: Callable[[str], None] = print,
) -> Path:
    rte, en_fr, dmt = group(results, "rte"), group(results, "en_fr"), group(results, "dmt")
    grid = group(results, "regularization")
    curves = {
        ("standard FT" if "finetune" in e.name else "ProMoT"): curve_records(out, e)
        for e in plan.experiments
        if e.monitor_target
    }
    figures = plot_curves(curves, out, settings.stage1_steps) if curves else []
    main = _subset(rte, ("pretrained", "standard FT", "ProMoT", "ProMoT + 1-shot"))
    table3 = reports.markdown_table(main)
    leak3 = reports.markdown_table(main, what="leak")
    ablation = _subset(
        rte,
        (
            "pretrained",
            "standard FT",
            "prompt tuning",
            "joint",
            "FT + fixed random prompt",
            "ProMoT",
        ),
    )
    plots.plot_norm_avg(_subset(rte, list(rte)), out / FIG_NORM_AVG)
    figures.append(FIG_NORM_AVG)
    figures.append(plot_k_sweep(dmt, settings, out / FIG_K_SWEEP))
    checks = direction_checks(rte, curves)
    t4 = paper.TABLE4["Norm. Avg."]
    seeds = ", ".join(str(s) for s in settings.seeds)
    train_s = sum(v for k, v in timings.items() if k.startswith("train "))
    eval_s = sum(v for k, v in timings.items() if k.startswith("eval "))

    md = [
        "# promot-jax mini-lab report",
        "",
        "Toy-world reproduction of ProMoT (format specialization and its fix) and DMT on a "
        f"{LAB_MODEL['emb_dim']}-d mT5-architecture model ({LAB_MODEL['num_encoder_layers']}+"
        f"{LAB_MODEL['num_decoder_layers']} layers) pretrained by `promot-jax lab pretrain`. "
        "The toy world's design and every hyperparameter below were fixed before the "
        "comparison was run; the numbers are reported as they came out.",
        "",
        f"Seeds for the headline comparison (standard FT, prompt tuning, ProMoT): {seeds} "
        "(mean ± sample std over seeds). Other rows: seed "
        f"{settings.seeds[0]} only. In-context suite: 1-shot, first {settings.eval_examples} "
        f"validation examples per task, {settings.decode} decoding (paper: beam 4), prompt "
        "removed for tasks of other formats (the paper's rule).",
        "",
        "## Direction of the paper's claims at this scale",
        "",
        *checks,
        "",
        "## Table 2 analog: fine-tuned task score (0-shot, prompt kept)",
        "",
        table2(rte, en_fr),
        "## Table 3 analog: fine-tuned on toy RTE, 1-shot in-context suite",
        "",
        table3,
        "Format leak (% of outputs that are True/False):",
        "",
        leak3,
        "Per seed:",
        "",
        seed_table(main),
        "Paper (mT5 XXL):",
        "",
        paper_table3(),
        "## Table 4 analog: fine-tuned on toy WMT14 En-Fr",
        "",
        reports.markdown_table(en_fr) if en_fr else "not run\n",
        f"Paper: Norm. Avg. pretrained {t4['pretrained']}, standard FT "
        f"{t4['standard FT']}, ProMoT {t4['ProMoT']}; "
        "ProMoT lifts En-De 3.97 -> 15.52 and En-Ro 1.82 -> 18.54.",
        "",
        "## Table 6 analog: ablations on toy RTE",
        "",
        reports.markdown_table(ablation),
        f"Paper: {paper.TABLE6}.",
        "",
        "## Figures 1, 2 and 7 analogs (seed "
        f"{settings.seeds[0]}, monitor every {settings.eval_every} steps on "
        f"{settings.monitor_examples} probe examples, greedy)",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
        f"Paper: {paper.FIGURES}.",
        "",
        *(
            [
                f"## Sensitivity: stage 2's dropout and label smoothing (seed {settings.seeds[0]}"
                "; not the design)",
                "",
                "Standard FT and ProMoT stage 2 (from the same stage-1 prompt) rerun with "
                "stage 2's regularisation switched off; the lab's design keeps the paper's 0.1 "
                "and 0.1. Single runs: read the direction, not the decimals.",
                "",
                regularization_table(rte, grid, settings),
            ]
            if grid
            else []
        ),
        "## DMT Table 1 analog (seed "
        f"{settings.seeds[0]}; {settings.dmt_steps} steps per stage, multi-task "
        f"{2 * settings.dmt_steps}; first {settings.dmt_eval_examples} validation examples)",
        "",
        *dmt_checks(dmt, settings),
        "",
        dmt_tables(dmt, settings),
        "## Design and hyperparameters (fixed before running)",
        "",
        "```json",
        json.dumps(dataclasses.asdict(settings), indent=2),
        "```",
        "",
        HISTORY,
        "",
        f"Wall time: training {train_s:.0f}s, evaluation {eval_s:.0f}s "
        f"(this invocation: {timings.get('lab_this_invocation', 0):.0f}s; see timings.json).",
        "",
    ]
    path = out / REPORT_MD
    numbers = {
        "rte": _suite_numbers(rte),
        "en_fr": _suite_numbers(en_fr),
        "regularization": _suite_numbers(grid),
        "dmt": {
            k: [{"scores": r["scores"], "teacher_forced": r.get("teacher_forced")} for r in v]
            for k, v in dmt.items()
        },
        "curves": {
            k: [
                {kk: vv for kk, vv in r.items() if kk.startswith(("probe/", "grad_align/", "step"))}
                for r in v
            ]
            for k, v in curves.items()
        },
    }
    run_dirs.write_atomic(out / RESULTS_JSON, json.dumps(numbers, indent=2))
    run_dirs.write_atomic(path, "\n".join(md))
    log("\n" + table3)
    log(seed_table(main))
    log("\n".join(checks))
    log(f"\nreport: {path}")
    return path
