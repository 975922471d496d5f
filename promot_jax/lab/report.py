"""The lab's report: verdicts first, then the tables they rest on, the figures and the design.

`report.md` holds the verdict per claim (thresholds in `verdicts`), the main table on the
primary target with paired bootstrap intervals per seed, what the outputs become, the
controls, the ablations, the secondary target (toy RTE), the Table 4 analog and the
training curves; `results.json` holds every number the tables show (the CI test checks they
are finite). DMT has a lab and a report of its own (`promot_jax.lab.dmt`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from promot_jax import param_count, run_dirs
from promot_jax.evaluation import plots, reports, runner
from promot_jax.lab import figures, paper, stats, verdicts
from promot_jax.lab.config import LAB_SIZES, PILOT_SEEDS, PRIMARY_TARGET, LabSettings
from promot_jax.lab.pipeline import EVALS_DIR
from promot_jax.lab.plan import (
    ABLATIONS,
    C1,
    CONTROLS,
    EN_FR_TABLE,
    FT,
    LORA_STAGE1,
    MAIN,
    MECHANISM,
    PRETRAINED,
    PROMOT,
    PROMOT_1SHOT,
    PROMOT_LORA,
    PROMPT_TRAINABLE,
    PT,
    REGULARIZATION,
    REGULARIZATION_GRID,
    SECONDARY,
    VARIANTS,
    Plan,
    Row,
    prompt_length_label,
    regularization_label,
)
from promot_tasks import catalogue

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
# Every top-level name the report writes into the lab directory (the lab's marker lists them).
OUTPUTS = (REPORT_MD, RESULTS_JSON, *figures.FIGURES)
# The headline claim and the paper's figures for it (ProMoT vs FT, RTE, 1-shot Norm. Avg.).
ABOVE_FT = ("ProMoT's Norm. Avg. above standard FT's", "20.10 vs 15.43")
DESIGN_DOCS = "docs/lab_design.md, docs/lab_pilot.md, docs/lab_history.md"


@dataclasses.dataclass
class Scored:
    """The scored rows of a lab, by table and label (equal labels = seeds, in plan order)."""

    out: Path
    plan: Plan
    results: Mapping[str, dict]
    _figures: dict = dataclasses.field(default_factory=dict)

    def runs(self, table: str, label: str) -> list[tuple[Row, dict]]:
        return [(r, self.results[r.key]) for r in self.plan.rows_of(table, label)]

    def group(self, table: str, labels: Sequence[str] | None = None) -> dict[str, list[dict]]:
        """{label: [eval.json runs]} for the rows of `table` that scored the suite."""
        out: dict[str, list[dict]] = {}
        for row in self.plan.rows_of(table):
            if row.suite and (labels is None or row.label in labels):
                out.setdefault(row.label, []).append(self.results[row.key])
        return {k: out[k] for k in (labels or list(out)) if k in out}

    def figure(self, row: Row, what: str) -> stats.Figure:
        """A row's figure for `stats.interval`, read from its predictions once."""
        key = (row.key, what)
        if key not in self._figures:
            self._figures[key] = stats.figure(
                self.out / EVALS_DIR / row.key, self.results[row.key], what
            )
        return self._figures[key]


def _target(run: Mapping) -> float:
    return run["summary"]["target"]["score"]


def _norm(run: Mapping) -> float | None:
    return run["summary"]["norm_avg"].get("1")


def _leak(run: Mapping) -> float | None:
    return run["summary"]["leak_rate"].get("1")


def _target_kinds(run: Mapping) -> dict[str, float]:
    return next(r for r in run["results"] if r["is_target"])["output_kinds"]


def _cell(values: Sequence[float | None]) -> str:
    return reports.mean_std_cell(values, digits=1)


# --------------------------------------------------------------------------- tables


def summary_table(scored: Scored, table: str, labels: Sequence[str]) -> str:
    """Per label: target accuracy, share of target outputs that are labels, Norm. Avg. and
    leak (mean ± std over seeds, n)."""
    lines = [
        "| model | n | target acc | target label share % | Norm. Avg. | leak % |",
        "|---|---|---|---|---|---|",
    ]
    if not scored.plan.rows_of(table):
        return "not run\n"
    for label in labels:
        runs = [run for _, run in scored.runs(table, label)]
        if not runs:
            continue
        has_labels = catalogue.task_info(runs[0]["config"]["target"]).labels
        shares = [_target_kinds(r)["label"] for r in runs] if has_labels else []
        lines.append(
            f"| {label} | {len(runs)} | {_cell([_target(r) for r in runs])} | "
            f"{_cell(shares)} | "
            f"{_cell([_norm(r) for r in runs])} | {_cell([_leak(r) for r in runs])} |"
        )
    return "\n".join(lines) + "\n"


def output_kinds_table(groups: Mapping[str, list[dict]]) -> str:
    """Per task and model: % of outputs that are a target label / own format / empty / other
    (means over seeds)."""
    labels = list(groups)
    lines = [
        "| task (label / own / empty / other %) | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    tasks = list(dict.fromkeys(r["task"] for g in groups.values() for r in g[0]["results"]))
    for task in tasks:
        cells = []
        for runs in groups.values():
            kinds = [r["output_kinds"] for run in runs for r in run["results"] if r["task"] == task]
            if not kinds:
                cells.append("-")
                continue
            mean = {k: np.mean([x[k] for x in kinds]) for k in kinds[0]}
            cells.append(" / ".join(f"{mean[k]:.0f}" for k in ("label", "own", "empty", "other")))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _examples(scored: Scored, row: Row, task: str, n: int = 3) -> list[str]:
    rows = runner.read_predictions(scored.out / EVALS_DIR / row.key, task)
    return [repr(r["output"])[:60] for r in rows[:n]]


def sample_outputs(scored: Scored, tasks: Sequence[str], labels: Sequence[str]) -> str:
    """The first outputs of a few tasks, first seed: what the answers become."""
    lines = ["| task | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for task in tasks:
        cells = []
        for label in labels:
            runs = scored.runs(MAIN, label)
            cells.append("<br>".join(_examples(scored, runs[0][0], task)) if runs else "-")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Paired:
    """Per seed, the paired intervals the main claims rest on."""

    seeds: list[int]
    target: list[stats.Interval]  # ProMoT - FT, target score
    norm: list[stats.Interval]  # ProMoT - FT, Norm. Avg.
    leak: list[stats.Interval]  # ProMoT - FT, leak
    ft_vs_pre: list[stats.Interval]
    promot_vs_pre: list[stats.Interval]


def paired_intervals(scored: Scored, table: str, samples: int) -> Paired:
    pre_row = scored.runs(table, PRETRAINED)[0][0]
    pre_norm = scored.figure(pre_row, "norm_avg")
    ft_rows = {r.seed: r for r, _ in scored.runs(table, FT)}
    pm_rows = {r.seed: r for r, _ in scored.runs(table, PROMOT)}
    seeds = [s for s in ft_rows if s in pm_rows]
    p = Paired(seeds, [], [], [], [], [])
    figures_ = [("target", "target"), ("norm_avg", "norm")]
    if catalogue.task_info(pre_row.target).labels:  # a leak needs the target's label set
        figures_.append(("leak", "leak"))
    for seed in seeds:
        ft, pm = ft_rows[seed], pm_rows[seed]
        for what, attr in figures_:
            getattr(p, attr).append(
                stats.interval(scored.figure(pm, what), scored.figure(ft, what), samples, seed)
            )
        p.ft_vs_pre.append(stats.interval(scored.figure(ft, "norm_avg"), pre_norm, samples, seed))
        p.promot_vs_pre.append(
            stats.interval(scored.figure(pm, "norm_avg"), pre_norm, samples, seed)
        )
    return p


def paired_table(p: Paired) -> str:
    lines = [
        "| seed | target: ProMoT - FT | Norm. Avg.: ProMoT - FT | leak: ProMoT - FT "
        "| Norm. Avg.: FT - pretrained | Norm. Avg.: ProMoT - pretrained |",
        "|---|---|---|---|---|---|",
    ]
    for i, seed in enumerate(p.seeds):
        cells = [p.target[i], p.norm[i], p.leak[i], p.ft_vs_pre[i], p.promot_vs_pre[i]]
        lines.append(f"| {seed} | " + " | ".join(c.text() for c in cells) + " |")
    return "\n".join(lines) + "\n"


def paired_norm(
    scored: Scored, a: tuple[str, str], b: tuple[str, str], samples: int
) -> list[tuple[int, stats.Interval]]:
    """Per seed both (table, label) rows have: Norm. Avg. of a minus b, paired."""
    rows_b = {r.seed: r for r, _ in scored.runs(*b)}
    return [
        (r.seed, stats.interval(
            scored.figure(r, "norm_avg"), scored.figure(rows_b[r.seed], "norm_avg"), samples, r.seed
        ))
        for r, _ in scored.runs(*a)
        if r.seed in rows_b
    ]  # fmt: skip


# The registered variant claims (docs/lab_design.md "Variants"): (claim, paper's figure).
LORA_CLAIM = (
    "LoRA in stage 1 protects worse than the prompt: ProMoT's Norm. Avg. above ProMoT-LoRA's",
    paper.TABLE15,
)
FROZEN_PROMPT_CLAIM = (
    "freezing the prompt in stage 2 matters: ProMoT's Norm. Avg. above the variant whose "
    "prompt keeps training",
    "not measured; joint tuning from scratch collapses like FT",
)
LENGTH_CLAIM = (
    "a longer prompt protects more: ProMoT's Norm. Avg. at the longest prompt above the shortest",
    "not measured; the paper uses P = 100",
)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired Norm. Avg. difference per seed, and the registered claim it judges (if any)."""

    name: str
    diffs: list[tuple[int, stats.Interval]]
    claim: tuple[str, str] | None = None


def variant_comparisons(scored: Scored, settings: LabSettings) -> list[Comparison]:
    """The variants' paired Norm. Avg. differences per seed (docs/lab_design.md)."""
    main = settings.prompt_length
    short, long = min(settings.variant_prompt_lengths), max(settings.variant_prompt_lengths)
    promot, p = (MAIN, PROMOT), lambda n: (VARIANTS, prompt_length_label(PROMOT, n))
    pairs = [
        (f"ProMoT - {PROMOT_LORA}", promot, (VARIANTS, PROMOT_LORA), LORA_CLAIM),
        ("ProMoT - prompt trainable in stage 2", promot, (VARIANTS, PROMPT_TRAINABLE),
         FROZEN_PROMPT_CLAIM),
        (f"ProMoT P = {long} - P = {short}", p(long), p(short), LENGTH_CLAIM),
        *[(f"ProMoT P = {n} - P = {main}", p(n), promot, None)
          for n in settings.variant_prompt_lengths],
    ]  # fmt: skip
    samples = settings.bootstrap_samples
    return [
        Comparison(name, paired_norm(scored, a, b, samples), claim) for name, a, b, claim in pairs
    ]


def variant_verdicts(comparisons: Sequence[Comparison]) -> list[verdicts.Verdict]:
    """A verdict for each comparison that carries a registered claim and has seeds."""
    return [
        verdicts.judge_above(*c.claim, [i for _, i in c.diffs])
        for c in comparisons
        if c.claim and c.diffs
    ]


def variants_section(
    scored: Scored, settings: LabSettings, comparisons: Sequence[Comparison]
) -> list[str]:
    labels = [r.label for r in scored.plan.rows_of(VARIANTS) if r.seed == settings.seeds[0]]
    lines = [
        "| comparison (Norm. Avg.) | " + " | ".join(f"seed {s}" for s in settings.seeds) + " |",
        "|---|" + "---|" * len(settings.seeds),
    ]
    for c in comparisons:
        by_seed = dict(c.diffs)
        cells = [by_seed[s].text() if s in by_seed else "-" for s in settings.seeds]
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    groups = {**scored.group(MAIN, (PROMOT,)), **scored.group(VARIANTS)}
    return [
        f"## Variants: LoRA in stage 1, a trainable prompt, prompt length (every seed; "
        f"LoRA rank {settings.lora_rank}, LR {settings.lora_lr})",
        "",
        summary_table(scored, MAIN, (PT, PROMOT, MECHANISM)),
        summary_table(scored, VARIANTS, labels),
        "Paired differences per seed (estimate [95% interval]):",
        "",
        "\n".join(lines) + "\n",
        "What the outputs become (label / own / empty / other %, means over seeds):",
        "",
        output_kinds_table(groups),
        f"Paper: {paper.TABLE15}.",
        "",
    ]


def regularization_table(scored: Scored, settings: LabSettings) -> str:
    """The first seed's standard FT and ProMoT with the lab's stage-2 regularisation and with
    each REGULARIZATION_GRID setting."""
    lines = [
        "| stage-2 dropout | label smoothing | FT target | FT Norm. Avg. | FT leak % "
        "| ProMoT target | ProMoT Norm. Avg. | ProMoT leak % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    own = (settings.model_dropout, settings.model_label_smoothing)
    for dropout, smoothing in (own, *REGULARIZATION_GRID):
        cells = [f"{dropout}" + (" (lab)" if (dropout, smoothing) == own else ""), f"{smoothing}"]
        for method in (FT, PROMOT):
            if (dropout, smoothing) == own:
                runs = [run for _, run in scored.runs(MAIN, method)][:1]
            else:
                label = regularization_label(method, dropout, smoothing)
                runs = [run for _, run in scored.runs(REGULARIZATION, label)]
            cells += [_cell([_target(r) for r in runs]), _cell([_norm(r) for r in runs]),
                      _cell([_leak(r) for r in runs])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- verdicts


def _probe_leak(curve: Sequence[Mapping]) -> tuple[float | None, str]:
    best, where = None, ""
    for key in figures.leak_keys(curve):
        for r in curve:
            if key in r and (best is None or r[key] > best):
                best, where = r[key], f"{key.split('/')[1]} at step {r['step']}"
    return best, where


def _alignment(curve: Sequence[Mapping]) -> tuple[float | None, float | None]:
    vals = [r["grad_align/all"] for r in curve if "grad_align/all" in r]
    return (vals[0], vals[-1]) if vals else (None, None)


def judge(scored: Scored, p: Paired, curves: Mapping[str, list], samples: int, variants=()) -> list:
    """Every claim's verdict, in the order of the report."""
    ft_runs = [run for _, run in scored.runs(MAIN, FT)]
    ft_target = [_target(r) for r in ft_runs]
    ft_leak = [_leak(r) for r in ft_runs]
    learned = verdicts.judge_target_learned(ft_target)
    out = [
        learned,
        verdicts.judge_prompt_carries_format(
            [_target_kinds(run)["label"] for _, run in scored.runs(MAIN, PT)]
        ),
        verdicts.judge_ft_specializes(ft_leak, p.ft_vs_pre),
    ]
    c1 = scored.runs(CONTROLS, C1)
    if c1:
        pre = _norm(scored.runs(MAIN, PRETRAINED)[0][1])
        out.append(
            verdicts.judge_drop_is_format(
                _norm(ft_runs[0]) - pre, _norm(c1[0][1]) - pre, ft_leak[0]
            )
        )
    out += [
        verdicts.judge_target_parity(learned.verdict == verdicts.REPRODUCED, p.target),
        verdicts.judge_keeps_suite(p.promot_vs_pre, p.ft_vs_pre),
        verdicts.judge_above(*ABOVE_FT, p.norm),
        verdicts.judge_above(
            "ProMoT's suite outputs are target labels less often than FT's (leak)",
            "ProMoT keeps TriviaQA at 17.64 where FT falls to 0.15",
            p.leak,
            lower_is_better=True,
        ),
        verdicts.judge_mechanism(
            [_target_kinds(run)["label"] for _, run in scored.runs(MAIN, MECHANISM)],
            [_target(run) for _, run in scored.runs(MAIN, MECHANISM)],
        ),
    ]
    ft_curve = curves.get(FT, [])
    out.append(verdicts.judge_probe_leak(*_probe_leak(ft_curve)))
    out.append(verdicts.judge_alignment(*_alignment(ft_curve)))
    one_shot = scored.runs(ABLATIONS, PROMOT_1SHOT)
    pm = {r.seed: r for r, _ in scored.runs(MAIN, PROMOT)}
    if one_shot and one_shot[0][0].seed in pm:
        row = one_shot[0][0]
        diff = stats.interval(
            scored.figure(row, "norm_avg"), scored.figure(pm[row.seed], "norm_avg"), samples
        )
        out.append(
            verdicts.judge_above(
                "ProMoT + 1-shot's Norm. Avg. above ProMoT's", "22.26 vs 20.10", [diff]
            )
        )
    for table, claim, ref in (
        (EN_FR_TABLE, "fine-tuned on toy En-Fr: ProMoT's Norm. Avg. above FT's", "18.87 vs 9.15"),
        (SECONDARY, "secondary target toy RTE (format not new): ProMoT's Norm. Avg. above FT's",
         "20.10 vs 15.43"),
    ):  # fmt: skip
        if scored.runs(table, PROMOT):
            sp = paired_intervals(scored, table, samples)
            out.append(verdicts.judge_above(claim, ref, sp.norm))
    if scored.plan.rows_of(VARIANTS):
        lora_share = [_target_kinds(run)["label"] for _, run in scored.runs(VARIANTS, LORA_STAGE1)]
        out.append(
            verdicts.judge_prompt_carries_format(
                lora_share, "LoRA stage 1 (adapters, trunk frozen)"
            )
        )
        out += variant_verdicts(variants)
    return out


# --------------------------------------------------------------------------- the report


def _curves(scored: Scored) -> dict[str, list]:
    """Monitor curves of the first seed's FT and ProMoT on the primary target."""
    return {
        exp.label: figures.curve_records(scored.out, exp)
        for exp in scored.plan.experiments
        if exp.monitor_target == PRIMARY_TARGET and exp.label
    }


def _mechanism_bars(scored: Scored) -> dict[str, list[tuple[float, float]]]:
    bars = {}
    for label, name in ((FT, FT), (PT, PT), (PROMOT, "ProMoT (prompt on)"),
                        (MECHANISM, "ProMoT trunk (prompt off)")):  # fmt: skip
        runs = [run for _, run in scored.runs(MAIN, label)]
        if runs:
            bars[name] = [(_target_kinds(r)["label"], _target(r)) for r in runs]
    return bars


def write_report(
    out: Path,
    settings: LabSettings,
    plan: Plan,
    results: Mapping[str, dict],
    timings: Mapping[str, float],
    log: Callable[[str], None] = print,
) -> Path:
    scored = Scored(out, plan, results)
    samples = settings.bootstrap_samples
    curves = _curves(scored)
    figs = figures.plot_curves(curves, out, settings.stage1_steps) if curves else []
    figs.append(figures.plot_mechanism(_mechanism_bars(scored), out / figures.FIG_MECHANISM))
    main_labels = (PRETRAINED, FT, PROMOT)
    plots.plot_norm_avg(
        {**scored.group(MAIN, main_labels), **scored.group(CONTROLS)}, out / figures.FIG_NORM_AVG
    )
    figs.append(figures.FIG_NORM_AVG)
    p = paired_intervals(scored, MAIN, samples)
    variants = variant_comparisons(scored, settings) if plan.rows_of(VARIANTS) else []
    claims = judge(scored, p, curves, samples, variants)
    seeds = ", ".join(str(s) for s in settings.seeds)
    train_s = sum(v for k, v in timings.items() if k.startswith("train "))
    eval_s = sum(v for k, v in timings.items() if k.startswith("eval "))
    main_groups = scored.group(MAIN, main_labels)
    kinds_groups = {**main_groups, **scored.group(CONTROLS), **scored.group(ABLATIONS)}

    md = ["# promot-jax mini-lab report", ""]
    if settings.smoke:
        md += [
            f"**This is the `--quick` variant ({settings.stage2_steps} steps, "
            f"{settings.target_examples} target and {settings.eval_examples} suite examples): "
            "its numbers and verdicts judge nothing.** It checks that the pipeline runs.",
            "",
        ]
    model = LAB_SIZES[plan.base.size]
    md += [
        f"Toy-world test of ProMoT on the lab's {plan.base.size} base, a {model['emb_dim']}-d "
        f"mT5-architecture model ({model['num_encoder_layers']}+{model['num_decoder_layers']} "
        f"layers, {param_count.format_count(plan.base.parameters)} parameters) pretrained by "
        f"`promot-jax lab pretrain`. Primary target: `{PRIMARY_TARGET}` (labels "
        "near / behind, a format no pretraining task has; is the claim about a relation the "
        f"premise mentions?). Design, controls and thresholds: {DESIGN_DOCS} (written before "
        "the comparison was run; settings chosen by the pilot on its own seeds "
        f"{PILOT_SEEDS}).",
        "",
        f"Seeds: {seeds} (held out: no design choice looked at them). Main rows on every seed "
        "(mean ± sample std); controls, ablations, the secondary target and En-Fr on "
        f"seed {settings.seeds[0]}. Target: first {settings.target_examples} validation "
        f"examples, 0-shot; suite: 1-shot, first {settings.eval_examples} validation "
        f"examples per task, {settings.decode} decoding; prompt removed for tasks of other "
        f"formats (the paper's rule). Intervals: bootstrap 95% over examples ({samples} "
        "resamples), paired (same resampled examples for both models).",
        "",
        "## Verdict per claim",
        "",
        *[c.line() for c in claims],
        "",
        "## Main table: the primary target and the 1-shot suite",
        "",
        summary_table(scored, MAIN, (PRETRAINED, FT, PT, PROMOT, MECHANISM)),
        "Prompt tuning (= ProMoT stage 1, control C3) is scored on the target only: under the "
        "rule its prompt is removed for every suite task and its trunk is the base's, so its "
        "suite outputs are the pretrained model's. The mechanism row is ProMoT's stage-2 "
        "model with its prompt removed, on the target.",
        "",
        "Paired differences per seed (estimate [95% interval]):",
        "",
        paired_table(p),
        "Per task (mean ± std over seeds):",
        "",
        reports.markdown_table(main_groups),
        "## What the outputs become",
        "",
        "Share of each task's outputs that are exactly a target label (near / behind) / in the "
        "task's own format / empty / other, means over seeds "
        "(`promot_tasks.toy_world.formats`); every output is in `evals/<row>/predictions/`.",
        "",
        output_kinds_table(kinds_groups),
        f"First outputs (seed {settings.seeds[0]}):",
        "",
        sample_outputs(
            scored,
            [f"toy_{k}_1shot" for k in ("triviaqa", "wmt16_en_de", "xsum")],
            (PRETRAINED, FT, PROMOT),
        ),  # fmt: skip
        f"![mechanism]({figures.FIG_MECHANISM})",
        "",
        f"## Controls (seed {settings.seeds[0]})",
        "",
        "The same model-tuning recipe as standard FT (steps, LR, dropout, label smoothing) on "
        "other data: C1 on the base's own pretraining mixture (generic damage), C2 on toy CB "
        "(narrow FT in a format the base knows), C4 on the target's inputs with labels drawn "
        "at random (the format without the content). C3 is prompt tuning (main table).",
        "",
        summary_table(scored, CONTROLS, [r.label for r in plan.rows_of(CONTROLS)]),
        reports.markdown_table(scored.group(CONTROLS)) if scored.group(CONTROLS) else "",
        f"## Ablations (Table 3 ProMoT + 1-shot, Table 6; seed {settings.seeds[0]})",
        "",
        summary_table(scored, ABLATIONS, [r.label for r in plan.rows_of(ABLATIONS)]),
        f"Paper: {paper.TABLE6}; ProMoT + 1-shot Norm. Avg. 22.26 vs ProMoT 20.10.",
        "",
        *(variants_section(scored, settings, variants) if variants else []),
        "## Secondary target: toy RTE (format not new)",
        "",
        "True / False are also CB's and WiC's answers, which the base was pretrained on: the "
        "leak measure counts their right answers too, and the base reaches 75% from the 'not' "
        "cue alone (runs 1-9, docs/lab_history.md).",
        "",
        summary_table(scored, SECONDARY, (PRETRAINED, FT, PT, PROMOT)),
        "## Table 4 analog: fine-tuned on toy WMT14 En-Fr",
        "",
        summary_table(scored, EN_FR_TABLE, (PRETRAINED, FT, PT, PROMOT)),
        "## Table 2 analog: the fine-tuned task's score, paper beside",
        "",
        table2(scored),
        "## Figures 1, 2 and 7 analogs (seed "
        f"{settings.seeds[0]}, monitor every {settings.eval_every} steps on "
        f"{settings.monitor_examples} probe examples, greedy)",
        "",
        *[f"![{f}]({f})" for f in figs if f != figures.FIG_MECHANISM],
        "",
        f"Paper: {paper.FIGURES}.",
        "",
    ]
    if scored.plan.rows_of(REGULARIZATION):
        md += [
            "## Sensitivity: stage 2's dropout and label smoothing (seed "
            f"{settings.seeds[0]}; not the design)",
            "",
            regularization_table(scored, settings),
        ]
    md += [
        "## Design and hyperparameters (fixed before running)",
        "",
        "```json",
        json.dumps(dataclasses.asdict(settings), indent=2),
        "```",
        "",
        f"Wall time: training {train_s:.0f}s, evaluation {eval_s:.0f}s "
        f"(this invocation: {timings.get('lab_this_invocation', 0):.0f}s; see timings.json).",
        "",
    ]
    numbers = {
        "verdicts": [dataclasses.asdict(c) for c in claims],
        "paired": {
            k: [dataclasses.asdict(i) for i in getattr(p, k)]
            for k in ("target", "norm", "leak", "ft_vs_pre", "promot_vs_pre")
        },
        "variants": {
            c.name: {str(seed): dataclasses.asdict(i) for seed, i in c.diffs} for c in variants
        },
        "rows": {
            row.key: {
                "table": row.table,
                "label": row.label,
                "seed": row.seed,
                "summary": results[row.key].get("summary"),
            }
            for row in plan.rows
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
    path = out / REPORT_MD
    run_dirs.write_atomic(path, "\n".join(md))
    log("\n" + "\n".join(c.line() for c in claims))
    log(f"\nreport: {path}")
    return path


def table2(scored: Scored) -> str:
    lines = [
        "| task | prompt tuning | standard FT | ProMoT | paper: PT / FT / ProMoT |",
        "|---|---|---|---|---|",
    ]
    for name, table, ref in (
        (f"{PRIMARY_TARGET} acc", MAIN, "RTE acc"),
        ("toy RTE acc", SECONDARY, "RTE acc"),
        ("toy WMT14 En-Fr BLEU", EN_FR_TABLE, "WMT14 En-Fr BLEU"),
    ):
        cells = [
            _cell([_target(run) for _, run in scored.runs(table, c)]) for c in (PT, FT, PROMOT)
        ]
        paper_cells = " / ".join(f"{paper.TABLE2[ref][c]:.2f}" for c in (PT, FT, PROMOT))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {paper_cells} |")
    return "\n".join(lines) + "\n"
