"""The lab's figures: training curves (ProMoT Figures 1, 2 and 7 analogs), the mechanism
figure and Norm. Avg. per method.

Every curve is drawn on one step axis where trunk training starts at the same place for
standard FT and ProMoT: FT's steps are shifted by stage 1's length (before the dotted
line only ProMoT's prompt trains). Percent axes run from 0 to 100.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from promot_jax.evaluation import plots
from promot_jax.lab.plan import FT, Experiment

FIG_LEAK = "fig1_2_leak_and_target.png"
FIG_ALIGNMENT = "fig7_gradient_alignment.png"
FIG_NORM_AVG = "norm_avg.png"
FIG_MECHANISM = "mechanism.png"
FIGURES = (FIG_LEAK, FIG_ALIGNMENT, FIG_NORM_AVG, FIG_MECHANISM)
STEP0_JSON = "step0.json"
ALIGN_KEYS = ("grad_align/all", "grad_align/mlp")


def leak_keys(records: Sequence[Mapping]) -> list[str]:
    """The monitor's per-probe leak scalars (probe/<task>/leak), in a fixed order."""
    keys = {k for r in records for k in r if k.startswith("probe/") and k.endswith("/leak")}
    return sorted(keys - {"probe/leak_mean"})


def target_key(records: Sequence[Mapping]) -> str | None:
    keys = sorted({k for r in records for k in r if k.startswith("probe/target/")})
    keys = [k for k in keys if k != "probe/target/score"]
    return keys[0] if keys else None


def curve_records(out: Path, exp: Experiment) -> list[dict]:
    """Monitor records of all stages of `exp`, on one step axis (stage 2 continues stage 1),
    after the step-0 point the pipeline recorded."""
    records = [json.loads((out / exp.name / STEP0_JSON).read_text())]
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


def _save(fig, path: Path) -> str:
    plt = plots._pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plot_curves(curves: Mapping[str, list], out: Path, stage1_steps: int) -> list[str]:
    """Figures 1/2 (probe leak and target accuracy vs steps) and 7 (gradient alignment)."""
    plt = plots._pyplot()
    shift = {label: stage1_steps if label == FT else 0 for label in curves}
    xlabel = "step (dotted: trunk training starts; before it ProMoT stage 1)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, records in curves.items():
        for key, ls in zip(leak_keys(records), ("-", "--", ":"), strict=False):
            task = key.split("/")[1].replace("toy_", "").replace("_1shot", "")
            axes[0].plot(
                *_series(records, key, shift[label]), ls, marker="o", ms=3, label=f"{label}: {task}"
            )
        key = target_key(records)
        if key:
            axes[1].plot(*_series(records, key, shift[label]), marker="o", ms=3, label=label)
    axes[0].set_ylabel("format leak % (outputs that are target labels)")
    axes[0].set_title("Fig. 1/2 analog: 1-shot probe leak")
    axes[1].set_ylabel("target accuracy (probe)")
    axes[1].set_title("target score")
    for ax in axes:
        ax.axvline(stage1_steps, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    written = [_save(fig, out / FIG_LEAK)]

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, records in curves.items():
        for key, ls in zip(ALIGN_KEYS, ("-", "--"), strict=True):
            ax.plot(
                *_series(records, key, shift[label]), ls, marker="o", ms=3,
                label=f"{label}: {key.split('/')[1]}",
            )  # fmt: skip
    ax.axvline(stage1_steps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cos(grad, grad with shuffled labels)")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("Fig. 7 analog: gradient alignment, last decoder layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out / FIG_ALIGNMENT))
    return written


def plot_mechanism(bars: Mapping[str, Sequence[tuple[float, float]]], path: Path) -> str:
    """Per model on the target: (label share, accuracy) per seed -> two bars (mean, points
    for seeds). The ProMoT trunk without its prompt is the bar the paper's account is about."""
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(bars) + 2), 4.0))
    x = np.arange(len(bars))
    for i, (what, color) in enumerate((("label share %", "C0"), ("accuracy", "C1"))):
        for j, seeds in enumerate(bars.values()):
            vals = [v[i] for v in seeds]
            pos = x[j] + (i - 0.5) * 0.38
            ax.bar(pos, np.mean(vals), 0.38, color=color, label=what if j == 0 else None)
            ax.plot([pos] * len(vals), vals, "k.", ms=4)
    ax.set_xticks(x, list(bars), rotation=15, ha="right", fontsize=8)
    ax.set_ylim(0, 102)
    ax.set_ylabel("% of target validation examples")
    ax.set_title("Where the format lives: the target with and without the prompt")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
