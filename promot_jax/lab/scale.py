"""The scale axis: the same lab on two base sizes, side by side (`promot-jax lab scale`).

Reads two finished lab directories (`promot-jax lab --base DIR/base_model`, one per size in
`config.LAB_SIZES`), checks that they ran the same settings, and writes `scale.md`,
`scale.json` and a Norm. Avg. figure: per size the main rows, ProMoT's protection per seed
(the share of FT's Norm. Avg. loss it keeps), the paper's "ProMoT above FT" per size, and
the registered scale question (`verdicts.judge_scale`; docs/lab_design.md, "The scale axis").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from promot_jax import param_count, run_dirs
from promot_jax.evaluation import plots, reports
from promot_jax.lab import verdicts
from promot_jax.lab.config import size_parameters
from promot_jax.lab.pipeline import LAB_JSON
from promot_jax.lab.plan import FT, MAIN, PRETRAINED, PROMOT
from promot_jax.lab.report import ABOVE_FT, REPORT_MD, RESULTS_JSON
from promot_jax.lab.stats import Interval

SCALE_KIND = "scale"
SCALE_MD, SCALE_JSON, FIG_SCALE = "scale.md", "scale.json", "scale_norm_avg.png"


@dataclasses.dataclass(frozen=True)
class SizeRun:
    """One finished lab: its size, settings, and the main rows of its results.json."""

    out: Path
    size: str
    settings: dict
    rows: dict[str, list[dict]]  # label -> the label's main rows, in seed order
    norm_diffs: list[Interval]  # ProMoT - FT on Norm. Avg., per seed (paired)

    @property
    def parameters(self) -> int:
        return size_parameters(self.size)

    def norm(self, label: str) -> list[float]:
        return [r["summary"]["norm_avg"]["1"] for r in self.rows[label]]

    def protection(self) -> list[float]:
        """Per seed: (ProMoT - FT) / (pretrained - FT) on Norm. Avg."""
        (pre,) = self.norm(PRETRAINED)
        return [(p - f) / (pre - f) for p, f in zip(self.norm(PROMOT), self.norm(FT), strict=True)]


def read_run(out: str | Path) -> SizeRun:
    """A finished lab directory; fails naming what is missing."""
    out = Path(out)
    for name in (LAB_JSON, RESULTS_JSON, REPORT_MD):
        if not (out / name).is_file():
            raise ValueError(
                f"--runs {out}: no {name}; give a finished lab directory (`promot-jax lab "
                "--base DIR/base_model --out DIR` run to its report)"
            )
    record = json.loads((out / LAB_JSON).read_text())
    if "size" not in record:
        raise ValueError(
            f"--runs {out}: its {LAB_JSON} records no base size (a lab made before sizes "
            "existed); rerun that lab"
        )
    numbers = json.loads((out / RESULTS_JSON).read_text())
    rows: dict[str, list[dict]] = {}
    for row in numbers["rows"].values():
        if row["table"] == MAIN and row["label"] in (PRETRAINED, FT, PROMOT):
            rows.setdefault(row["label"], []).append(row)
    for label in rows:
        rows[label].sort(key=lambda r: r["seed"])
    return SizeRun(
        out,
        record["size"],
        record["settings"],
        rows,
        [Interval(**d) for d in numbers["paired"]["norm"]],
    )


def _check_comparable(runs: Sequence[SizeRun]) -> None:
    small, large = runs
    if small.size == large.size:
        raise ValueError(
            f"--runs: both labs ran the {small.size} base; give one lab per size "
            f"({small.out}, {large.out})"
        )
    a, b = run_dirs.flat(small.settings), run_dirs.flat(large.settings)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        raise ValueError(
            f"--runs: the two labs ran different settings ({', '.join(differ)}); the scale "
            "axis compares the same lab on two bases"
        )
    if len(small.settings["seeds"]) < 2:
        raise ValueError("--runs: the labs ran one seed; the scale comparison needs >= 2")


def _size_table(runs: Sequence[SizeRun]) -> list[str]:
    lines = [
        "| base | parameters | model | target acc | Norm. Avg. | leak % | protection per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        protection = ", ".join(f"{p:.2f}" for p in run.protection())
        for label in (PRETRAINED, FT, PROMOT):
            summaries = [r["summary"] for r in run.rows[label]]
            cells = [
                reports.mean_std_cell([get(x) for x in summaries], digits=1)
                for get in (
                    lambda x: x["target"]["score"],
                    lambda x: x["norm_avg"]["1"],
                    lambda x: x["leak_rate"]["1"],
                )
            ]
            lines.append(
                f"| {run.size} | {param_count.format_count(run.parameters)} | {label} | "
                + " | ".join(cells)
                + f" | {protection if label == PROMOT else ''} |"
            )
    return lines


def compare(run_dirs_: Sequence[str | Path], out: str | Path, force: bool = False) -> Path:
    """Writes the scale comparison of two finished labs into `out`; returns scale.md."""
    if len(run_dirs_) != 2:
        raise ValueError(f"--runs needs two lab directories (one per size), got {len(run_dirs_)}")
    runs = sorted((read_run(d) for d in run_dirs_), key=lambda r: r.parameters)
    _check_comparable(runs)
    out = Path(out)
    run_dirs.check_writable(out, "--out")
    entries = (SCALE_MD, SCALE_JSON, FIG_SCALE)
    claimed = run_dirs.check_claimable(out, SCALE_KIND, entries, SCALE_JSON)
    if claimed and (out / SCALE_MD).exists() and not force:
        raise FileExistsError(f"{out} already holds {SCALE_MD}; pass --force to replace it")
    run_dirs.claim(out, SCALE_KIND, entries, SCALE_JSON)

    sizes = (runs[0].size, runs[1].size)
    growth = verdicts.judge_scale(sizes, (runs[0].protection(), runs[1].protection()))
    above = [
        dataclasses.replace(
            verdicts.judge_above(*ABOVE_FT, run.norm_diffs),
            claim=f"{ABOVE_FT[0]} on the {run.size} base",
        )
        for run in runs
    ]
    plots.plot_norm_avg(
        {
            f"{label} ({run.size})": run.rows[label]
            for run in runs
            for label in (PRETRAINED, FT, PROMOT)
        },
        out / FIG_SCALE,
    )
    seeds = ", ".join(str(s) for s in runs[0].settings["seeds"])
    md = [
        "# promot-jax mini-lab: the scale axis",
        "",
        "The default lab on two bases of the same architecture and pretraining: "
        + ", ".join(
            f"{r.size} ({param_count.format_count(r.parameters)} parameters, `{r.out}`)"
            for r in runs
        )
        + f"; seeds {seeds}; the same settings (checked). Design and thresholds: "
        'docs/lab_design.md, "The scale axis" (registered before the larger base was '
        "scored).",
        "",
        "## Verdicts",
        "",
        *[v.line() for v in (*above, growth)],
        "",
        "## Main rows per size (mean ± std over seeds)",
        "",
        *_size_table(runs),
        "",
        "Protection = (ProMoT - FT) / (pretrained - FT) on Norm. Avg., per seed: 1 keeps "
        "everything FT lost, 0 is no better than FT.",
        "",
        f"![Norm. Avg. per size]({FIG_SCALE})",
        "",
    ]
    numbers = {
        "runs": [
            {
                "out": str(r.out),
                "size": r.size,
                "parameters": r.parameters,
                "protection": r.protection(),
                "norm_avg": {label: r.norm(label) for label in (PRETRAINED, FT, PROMOT)},
            }
            for r in runs
        ],
        "verdicts": [dataclasses.asdict(v) for v in (*above, growth)],
    }
    run_dirs.write_atomic(out / SCALE_JSON, json.dumps(numbers, indent=2))
    return run_dirs.write_atomic(out / SCALE_MD, "\n".join(md))
