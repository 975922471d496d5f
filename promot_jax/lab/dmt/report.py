"""The DMT lab's report: each experiment's table and curve, the strategy table and the k
sweep beside the paper's numbers, the verdicts, and what the outputs become.

Writes `report.md`, `results.json` and the PNGs in `OUTPUTS`, each replaced whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from promot_jax import run_dirs
from promot_jax.evaluation import plots, reports
from promot_jax.lab import paper
from promot_jax.lab.dmt import evaluate, plan, verdicts
from promot_jax.lab.dmt.config import (
    CODE,
    DOMAINS,
    GENERAL,
    MATH,
    SPECIALISED,
    DmtSettings,
    fraction_label,
)
from promot_jax.lab.pipeline import EVALS_DIR

REPORT_MD, RESULTS_JSON = "report.md", "results.json"
FIG_SCALING, FIG_RATIO, FIG_STRATEGIES, FIG_K = (
    "dmt_f1_f2_scaling.png",
    "dmt_f3_ratio.png",
    "dmt_t1_strategies.png",
    "dmt_k_sweep.png",
)
OUTPUTS = (REPORT_MD, RESULTS_JSON, FIG_SCALING, FIG_RATIO, FIG_STRATEGIES, FIG_K)
PAPER_METRICS = "GSM8K / HumanEval / MT-Bench"
OUTPUT_EXAMPLES = 3


class Results:
    """The scored rows of one lab, looked up by table, label, seed and point."""

    def __init__(self, lab_plan: plan.Plan, records: Mapping[str, dict]):
        self.plan, self.records = lab_plan, records

    def rows(self, table: str, label: str | None = None) -> list[plan.Row]:
        return [r for r in self.plan.rows_of(table, label) if r.key in self.records]

    def one(self, table: str, **point) -> dict | None:
        for row in self.plan.rows_of(table):
            if all(row.point.get(k) == v for k, v in point.items()) and row.key in self.records:
                return self.records[row.key]
        return None

    def per_seed(self, table: str, label: str) -> dict[int, dict]:
        return {r.seed: self.records[r.key] for r in self.rows(table, label)}


def _score(record: Mapping | None, domain: str) -> float | None:
    return None if record is None else record["scores"][domain]


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _diff(a: Mapping, b: Mapping, domain: str, samples: int) -> verdicts.Interval:
    return verdicts.paired_interval(a["hits"][domain], b["hits"][domain], samples)


def _line_plot(path: Path, panels: Sequence[tuple[str, str, Callable]]) -> str:
    """One panel per (title, x label, draw(ax))."""
    plt = plots._pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (title, xlabel, draw) in zip(axes[0], panels, strict=True):
        draw(ax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _fraction_axis(ax, fractions: Sequence[float]) -> None:
    ax.set_xticks([math.log2(f) for f in fractions], [fraction_label(f) for f in fractions])


def _scaling(res: Results, s: DmtSettings, out: Path) -> tuple[list[str], dict]:
    fr = s.fractions
    lines = [
        f"## F1 and F2: scaling with data (Figures 1 and 2 analogs; seed {s.seeds[0]})",
        "",
        "Each domain alone (F1) and the three mixed (F2), each pool at the fraction; score % on "
        f"{s.eval_examples} held-out examples; steps in brackets (compute rule).",
        "",
        "| run | " + " | ".join(f"f={fraction_label(f)}" for f in fr) + " |",
        "|---|" + "---|" * len(fr),
    ]
    steps = {row.key: _steps_of(res.plan, row) for row in res.plan.rows}
    for domain in DOMAINS:
        cells = []
        for f in fr:
            row = [
                r
                for r in res.plan.rows_of(plan.SCALING)
                if r.point == {"domain": domain, "fraction": f}
            ]
            rec = res.records.get(row[0].key) if row else None
            cells.append(
                f"{_cell(_score(rec, domain))} [{steps.get(row[0].key, '-')}]" if row else "-"
            )
        lines.append(f"| {domain} alone | " + " | ".join(cells) + " |")
    for domain in DOMAINS:
        cells = []
        for f in fr:
            row = [r for r in res.plan.rows_of(plan.MIXED) if r.point == {"fraction": f}]
            rec = res.records.get(row[0].key) if row else None
            cells.append(
                f"{_cell(_score(rec, domain))} [{steps.get(row[0].key, '-')}]" if row else "-"
            )
        lines.append(f"| {domain} in the mix | " + " | ".join(cells) + " |")
    lines += ["", "Mixed minus single, paired over the same examples (bootstrap 95%):", ""]
    lines += [
        "| domain | " + " | ".join(f"f={fraction_label(f)}" for f in fr) + " |",
        "|---|" + "---|" * len(fr),
    ]
    diffs: dict[tuple[str, float], verdicts.Interval] = {}
    for domain in DOMAINS:
        cells = []
        for f in fr:
            single = res.one(plan.SCALING, domain=domain, fraction=f)
            mixed = res.one(plan.MIXED, fraction=f)
            if single and mixed:
                diffs[domain, f] = _diff(mixed, single, domain, s.bootstrap_samples)
                cells.append(diffs[domain, f].text())
            else:
                cells.append("-")
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")

    def draw(ax):
        x = [math.log2(f) for f in fr]
        for i, domain in enumerate(DOMAINS):
            color = f"C{i}"
            single = [_score(res.one(plan.SCALING, domain=domain, fraction=f), domain) for f in fr]
            mixed = [_score(res.one(plan.MIXED, fraction=f), domain) for f in fr]
            ax.plot(
                x,
                [np.nan if v is None else v for v in single],
                "o-",
                color=color,
                label=f"{domain} alone",
            )
            ax.plot(
                x,
                [np.nan if v is None else v for v in mixed],
                "s--",
                color=color,
                label=f"{domain} mixed",
            )
        _fraction_axis(ax, fr)

    figure = _line_plot(out / FIG_SCALING, [("F1 (solid) and F2 (dashed)", "data fraction", draw)])
    lines += ["", f"![F1 and F2]({figure})", ""]
    return lines, diffs


def _steps_of(lab_plan: plan.Plan, row: plan.Row) -> int | str:
    if row.source is None:
        return "-"
    exp_name, stage = row.source.rsplit("/", 1)
    for exp in lab_plan.experiments:
        if exp.name == exp_name:
            return exp.stages[stage].steps
    return "-"


def _ratio(res: Results, s: DmtSettings, out: Path) -> tuple[list[str], dict[str, float], str]:
    fr = s.fractions
    low = fr[1] if len(fr) > 1 else fr[0]
    lines = [
        f"## F3: ratio (Figure 3 analog; seed {s.seeds[0]})",
        "",
        "General score with the domain data (math + code) at each fraction, general fixed at 1 "
        f"and at {fraction_label(low)}; drop = minus general alone at the same general amount "
        "(F1). The domain data at 1 with general varied below.",
        "",
        "| general | "
        + " | ".join(
            f"domain {fraction_label(d)} ({int(d * (s.pools[MATH]) + int(d * s.pools[CODE]))} ex.)"
            for d in fr
        )
        + " | general alone |",
        "|---|" + "---|" * (len(fr) + 1),
    ]
    gaps: dict[str, float] = {}
    drops: dict[float, dict[float, float]] = {}
    for g in dict.fromkeys((1.0, low)):
        alone = _score(res.one(plan.SCALING, domain=GENERAL, fraction=g), GENERAL)
        cells = []
        for d in fr:
            rec = (
                res.one(plan.MIXED, fraction=1.0)
                if g == d == 1.0
                else res.one(plan.RATIO, general=g, domain=d)
            )
            v = _score(rec, GENERAL)
            if v is not None and alone is not None:
                drops.setdefault(g, {})[d] = v - alone
                cells.append(f"{v:.1f} ({v - alone:+.1f})")
            else:
                cells.append("-")
        lines.append(f"| {fraction_label(g)} | " + " | ".join(cells) + f" | {_cell(alone)} |")
    if 1.0 in drops and low in drops and low != 1.0:
        for d in fr:
            if d in drops[1.0] and d in drops[low]:
                gaps[fraction_label(d)] = drops[1.0][d] - drops[low][d]
    lines += ["", "| domain 1, general at | math | code | general |", "|---|---|---|---|"]
    reverse = {}
    for g in fr:
        rec = (
            res.one(plan.MIXED, fraction=1.0)
            if g == 1.0
            else res.one(plan.RATIO, general=g, domain=1.0)
        )
        reverse[g] = rec
        lines.append(
            f"| {fraction_label(g)} | " + " | ".join(_cell(_score(rec, d)) for d in DOMAINS) + " |"
        )

    def general_panel(ax):
        for i, g in enumerate(drops):
            xs = sorted(drops[g])
            amounts = [int(d * s.pools[MATH]) + int(d * s.pools[CODE]) for d in xs]
            alone = _score(res.one(plan.SCALING, domain=GENERAL, fraction=g), GENERAL) or 0
            scores = [drops[g][d] + alone for d in xs]
            ax.plot(amounts, scores, "o-", color=f"C{i}", label=f"general at {fraction_label(g)}")
        ax.set_xscale("log")

    def domain_panel(ax):
        x = [math.log2(g) for g in fr]
        for i, domain in enumerate(DOMAINS):
            ys = [_score(reverse[g], domain) for g in fr]
            ax.plot(x, [np.nan if y is None else y for y in ys], "o-", color=f"C{i}", label=domain)
        _fraction_axis(ax, fr)

    figure = _line_plot(out / FIG_RATIO, [
        ("general score vs domain amount", "domain examples (math + code)", general_panel),
        ("domain data at 1, general varied", "general fraction", domain_panel),
    ])  # fmt: skip
    lines += ["", f"![F3]({figure})", ""]
    return lines, gaps, fraction_label(low)


STRATEGY_ORDER = (
    plan.GENERAL_ONLY,
    plan.MULTITASK,
    plan.SEQUENTIAL,
    plan.MIXED_SEQUENTIAL,
    plan.dmt_label(plan.DMT_K),
)


def _strategy_runs(res: Results) -> dict[str, dict[int, dict]]:
    runs = {label: res.per_seed(plan.STRATEGIES, label) for label in STRATEGY_ORDER}
    runs[plan.dmt_label(plan.DMT_K)] = runs[plan.dmt_label(plan.DMT_K)] or res.per_seed(
        plan.K_SWEEP, plan.dmt_label(plan.DMT_K)
    )
    runs[plan.DOMAIN_STAGE] = res.per_seed(plan.STRATEGIES, plan.DOMAIN_STAGE)
    return runs


def _seeds(s: DmtSettings) -> str:
    return ", ".join(map(str, s.seeds))


def _mean_row(label: str, runs: Mapping[int, dict], ref) -> str:
    cells = [
        reports.mean_std_cell([r["scores"][d] for r in runs.values()], digits=1) for d in DOMAINS
    ]
    ref_text = " / ".join(f"{v:g}" for v in ref) if ref else "-"
    return f"| {label} | " + " | ".join(cells) + f" | {ref_text} |"


def _strategies(res: Results, s: DmtSettings, out: Path, runs) -> list[str]:
    lines = [
        f"## T1: training strategies (Table 1 analog; seeds {_seeds(s)}, mean ± std)",
        "",
        "Every strategy trains the same number of general-data steps.",
        "",
        f"| strategy | math | code | general | paper {PAPER_METRICS} |",
        "|---|---|---|---|---|",
    ]
    for label in (*STRATEGY_ORDER[:3], plan.DOMAIN_STAGE, *STRATEGY_ORDER[3:]):
        lines.append(_mean_row(label, runs[label], paper.DMT_TABLE1.get(label)))
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels = [label for label in STRATEGY_ORDER if runs[label]]
    width = 0.25
    for i, domain in enumerate(DOMAINS):
        means = [np.mean([r["scores"][domain] for r in runs[label].values()]) for label in labels]
        stds = [
            np.std([r["scores"][domain] for r in runs[label].values()], ddof=1)
            if len(runs[label]) > 1
            else 0.0
            for label in labels
        ]
        ax.bar(np.arange(len(labels)) + (i - 1) * width, means, width, yerr=stds, label=domain)
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / FIG_STRATEGIES, dpi=100)
    plt.close(fig)
    return [*lines, "", f"![T1]({FIG_STRATEGIES})", ""]


def _k_sweep(res: Results, s: DmtSettings, out: Path) -> tuple[list[str], dict]:
    lines = [
        f"## K: the k sweep (seeds {_seeds(s)}, mean ± std)",
        "",
        f"| k | math | code | general | paper {PAPER_METRICS} |",
        "|---|---|---|---|---|",
    ]
    means: dict[float, dict[str, float]] = {}
    for k in s.ks:
        runs = res.per_seed(plan.K_SWEEP, plan.dmt_label(k))
        lines.append(
            _mean_row(f"k={fraction_label(k)}", runs, paper.DMT_K_SWEEP.get(fraction_label(k)))
        )
        if runs:
            means[k] = {d: float(np.mean([r["scores"][d] for r in runs.values()])) for d in DOMAINS}

    def draw(ax):
        ks = sorted(means)
        for i, domain in enumerate(DOMAINS):
            ax.plot(
                [math.log2(k) for k in ks],
                [means[k][domain] for k in ks],
                "o-",
                color=f"C{i}",
                label=domain,
            )
        _fraction_axis(ax, ks)

    figure = _line_plot(out / FIG_K, [("DMT stage 2: domain share k", "k", draw)])
    return [*lines, "", f"![K]({figure})", ""], means


def _judge(res: Results, s: DmtSettings, scaling_diffs, gaps, low_label, runs, k_means) -> list:
    fr, n = s.fractions, s.bootstrap_samples
    out = []
    if len(fr) >= 2:
        diffs = {}
        for d in SPECIALISED:
            a, b = (
                res.one(plan.SCALING, domain=d, fraction=fr[0]),
                res.one(plan.SCALING, domain=d, fraction=fr[1]),
            )
            if a and b:
                diffs[d] = _diff(a, b, d, n)
        if diffs:
            out.append(verdicts.keeps_improving(diffs, fraction_label(fr[1])))
    # fractions start at 1 and decrease (DmtSettings): "early" is the third, or the last
    third = fr[min(2, len(fr) - 1)]
    a = res.one(plan.SCALING, domain=GENERAL, fraction=fr[0])
    b = res.one(plan.SCALING, domain=GENERAL, fraction=third)
    if a and b and third < 1.0:
        out.append(verdicts.general_saturates(_diff(a, b, GENERAL, n), fraction_label(third)))
    smallest = min(fr)
    helps = {
        d: scaling_diffs[d, smallest]
        for d in SPECIALISED
        if (d, smallest) in scaling_diffs and smallest < 1.0
    }
    if helps:
        out.append(verdicts.mixing_helps(helps, fraction_label(smallest)))
    conflicts = {d: scaling_diffs[d, 1.0] for d in DOMAINS if (d, 1.0) in scaling_diffs}
    if conflicts:
        out.append(verdicts.mixing_conflicts(conflicts))
    if gaps:
        out.append(verdicts.amount_not_ratio(gaps, "1", low_label))
    dmt = runs[plan.dmt_label(plan.DMT_K)]
    go, mt, seq = runs[plan.GENERAL_ONLY], runs[plan.MULTITASK], runs[plan.SEQUENTIAL]
    seeds = [x for x in s.seeds if all(x in r for r in (dmt, go, mt, seq))]
    if seeds:
        out.append(verdicts.multitask_tradeoff(
            [mt[x]["scores"][GENERAL] - go[x]["scores"][GENERAL] for x in seeds],
            {d: [mt[x]["scores"][d] - dmt[x]["scores"][d] for x in seeds] for d in SPECIALISED},
        ))  # fmt: skip
        out.append(
            verdicts.sequential_forgets(
                [seq[x]["scores"][CODE] - mt[x]["scores"][CODE] for x in seeds]
            )
        )
        domains = {
            d: ([dmt[x]["scores"][d] for x in seeds], [mt[x]["scores"][d] for x in seeds])
            for d in SPECIALISED
        }
        general = [dmt[x]["scores"][GENERAL] - go[x]["scores"][GENERAL] for x in seeds]
        out.append(verdicts.dmt_keeps_both(domains, general))
    if len(k_means) >= 3:
        ks = sorted(k_means)
        domain = [np.mean([k_means[k][d] for d in SPECIALISED]) for k in ks]
        out.append(verdicts.k_tradeoff(ks, domain, [k_means[k][GENERAL] for k in ks]))
    return out


def _outputs(res: Results, out: Path, runs) -> list[str]:
    """What the answers become: the first examples of a few rows, output beside reference."""
    first = min((x for r in runs.values() for x in r), default=None)
    dmt = plan.dmt_label(plan.DMT_K)
    picks = [
        (GENERAL, plan.GENERAL_ONLY), (GENERAL, plan.MULTITASK), (GENERAL, dmt),
        (MATH, plan.MULTITASK), (MATH, plan.SEQUENTIAL), (MATH, dmt),
        (CODE, plan.MULTITASK), (CODE, plan.SEQUENTIAL),
    ]  # fmt: skip
    lines = [f"## What the outputs become (seed {first}, first {OUTPUT_EXAMPLES} examples)", ""]
    for domain, label in picks:
        rec = runs.get(label, {}).get(first)
        if rec is None:
            continue
        rows = [r for r in res.plan.rows if r.label == label and r.seed == first and r.source]
        path = out / EVALS_DIR / f"{rows[0].key}.json"
        lines.append(f"- {label}, {domain}:")
        for r in evaluate.read_outputs(path, domain, OUTPUT_EXAMPLES):
            lines.append(f"  - `{r['output']}` (reference `{r['target']}`)")
    return [*lines, ""]


def write_report(
    out: Path, settings: DmtSettings, lab_plan: plan.Plan, records, timings, log=print
) -> Path:
    res = Results(lab_plan, records)
    s = settings
    base = res.one(plan.BASE)
    header = [
        "# DMT lab report (toy scale)",
        "",
        "Design, claims and thresholds: docs/dmt_lab_design.md. "
        + ("**Smoke run (`--quick`): its numbers judge nothing.** " if s.smoke else ""),
        f"Base: {lab_plan.base.path} ({lab_plan.base.size}). Pools: "
        + ", ".join(f"{d} {s.pools[d]:,}" for d in DOMAINS)
        + f"; {s.eval_examples} held-out examples per domain, decoded greedily. "
        f"Difficulty: {s.difficulty}.",
        f"Compute rule: steps = clip({s.epochs:g} x examples / {s.batch_size}, {s.min_steps}, "
        f"{s.max_steps}), packed rows; "
        f"LR {s.learning_rate:g}, dropout {s.dropout}, label smoothing {s.label_smoothing}. "
        f"Lab wall time this invocation: {timings.get('lab_this_invocation', 0) / 60:.1f} min.",
        "",
        "| pretrained | " + " | ".join(DOMAINS) + " |",
        "|---|---|---|---|",
        "| base | " + " | ".join(_cell(_score(base, d)) for d in DOMAINS) + " |",
        "",
    ]
    scaling_lines, scaling_diffs = _scaling(res, s, out)
    ratio_lines, gaps, low_label = _ratio(res, s, out)
    runs = _strategy_runs(res)
    strategy_lines = _strategies(res, s, out, runs)
    k_lines, k_means = _k_sweep(res, s, out)
    judged = _judge(res, s, scaling_diffs, gaps, low_label, runs, k_means)
    verdict_lines = [
        "## Verdicts (thresholds in promot_jax/lab/dmt/verdicts.py)",
        "",
        *[v.line() for v in judged],
        "",
    ]
    text = "\n".join(
        header
        + verdict_lines
        + scaling_lines
        + ratio_lines
        + strategy_lines
        + k_lines
        + _outputs(res, out, runs)
    )
    summary = {
        "settings": json.loads(json.dumps(s.__dict__, default=str)),
        "scores": {
            key: {**{k: v for k, v in r.items() if k != "hits"}} for key, r in records.items()
        },
        "verdicts": [v.__dict__ for v in judged],
        "timings": timings,
    }
    run_dirs.write_atomic(out / RESULTS_JSON, json.dumps(summary, indent=1))
    run_dirs.write_atomic(out / REPORT_MD, text)  # last: its presence marks a finished lab
    log(f"lab dmt: report in {out / REPORT_MD}")
    return out / REPORT_MD
