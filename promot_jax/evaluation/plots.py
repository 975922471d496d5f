"""PNG figures (matplotlib, no display): training curves from metrics.jsonl and suite bars.

Curves read the scalars the training monitor logs (see `monitor`):
`probe/target/<task>/<metric>`, `probe/<task>/<metric>`, `probe/<task>/leak`
and `grad_align/<part>`, giving the paper's Figure 1 (scores vs steps), Figure 2
(leak vs steps) and Figure 7 (gradient alignment vs steps) for any run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence

import numpy as np

from promot_jax import paths, run_dirs
from promot_jax.paths import Path

METRICS_JSONL = "metrics.jsonl"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """`fig` as a PNG at `path`: written in place locally, uploaded whole to gs://."""
    if paths.is_remote(path):
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=100, format="png")
        run_dirs.write_atomic(path, buffer.getvalue())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (a file or a run directory holding one)."""
    path = paths.path(path)
    file = path / METRICS_JSONL if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; give a stage run directory")
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def series(records: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar; a resumed run's repeated steps keep the last value."""
    by_step = {int(r["step"]): float(r[key]) for r in records if key in r}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _keys(records: Sequence[Mapping], accept) -> list[str]:
    keys: list[str] = []
    for r in records:
        for k in r:
            if k not in keys and accept(k):
                keys.append(k)
    return keys


def _is_score(key: str) -> bool:
    parts = key.split("/")
    return parts[0] == "probe" and len(parts) >= 3 and parts[-1] != "leak"


def _is_leak(key: str) -> bool:
    return key.startswith("probe/") and key.endswith("/leak")


def _line_plot(records, keys, path: Path, title: str, ylabel: str, label_of) -> Path | None:
    if not keys:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for k in keys:
        steps, values = series(records, k)
        style = "-o" if k.startswith("probe/target/") else "--o"
        ax.plot(steps, values, style, markersize=3, label=label_of(k))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_training_curves(run_dir: str | Path, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Scores, leak and gradient alignment vs steps for one stage; returns the PNGs written."""
    records = read_metrics(run_dir)
    out = paths.path(out_dir)

    def name(k: str) -> str:
        return k.removeprefix("probe/target/").removeprefix("probe/") + (
            " (target)" if k.startswith("probe/target/") else ""
        )

    written = [
        _line_plot(
            records,
            _keys(records, _is_score),
            out / f"{prefix}scores_vs_steps.png",
            "Target and other-task scores",
            "score",
            name,
        ),
        _line_plot(
            records,
            _keys(records, _is_leak),
            out / f"{prefix}leak_vs_steps.png",
            "Outputs in the fine-tuned task's label set",
            "% of outputs",
            name,
        ),
        _line_plot(
            records,
            _keys(records, lambda k: k.startswith("grad_align/")),
            out / f"{prefix}grad_alignment_vs_steps.png",
            "cos(grad, grad with shuffled labels), last decoder layer",
            "cosine",
            lambda k: k.removeprefix("grad_align/"),
        ),
    ]
    return [p for p in written if p is not None]


def stage_dirs(run_dir: str | Path) -> list[Path]:
    """The run directory itself if it holds metrics.jsonl, else its stage subdirectories."""
    run_dir = paths.path(run_dir)
    if (run_dir / METRICS_JSONL).is_file():
        return [run_dir]
    found = sorted(p.parent for p in run_dir.glob(f"*/{METRICS_JSONL}"))
    if not found:
        raise FileNotFoundError(f"no {METRICS_JSONL} in {run_dir} or its stage subdirectories")
    return found


def plot_norm_avg(runs: Mapping[str, Sequence[Mapping]], path: str | Path) -> Path:
    """Norm. Avg. per label and shot count; error bars (std) where a label has several seeds."""
    plt = _pyplot()
    labels = list(runs)
    shots = sorted(
        {k for g in runs.values() for run in g for k in run["summary"]["norm_avg"]}, key=int
    )
    width = 0.8 / max(len(shots), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 2), 4.0))
    x = np.arange(len(labels))
    for i, k in enumerate(shots):
        means, errs = [], []
        for g in runs.values():
            vals = [run["summary"]["norm_avg"][k] for run in g if k in run["summary"]["norm_avg"]]
            means.append(float(np.mean(vals)) if vals else np.nan)
            errs.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
        ax.bar(
            x + (i - (len(shots) - 1) / 2) * width,
            means,
            width,
            yerr=errs,
            capsize=3,
            label=f"{k}-shot",
        )
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("Norm. Avg.")
    ax.set_ylim(bottom=0)
    ax.set_title("In-context suite, Norm. Avg. (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = paths.path(path)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_task_scores(run: Mapping, path: str | Path) -> Path:
    """One run's per-task scores (grouped by shots) and its fine-tuned task score."""
    plt = _pyplot()
    results = run["results"]
    names = list(dict.fromkeys(r["display"] for r in results if not r["is_target"]))
    shots = sorted({r["shots"] for r in results if not r["is_target"]})
    width = 0.8 / max(len(shots), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 4.0))
    x = np.arange(len(names))
    for i, k in enumerate(shots):
        by_name = {
            r["display"]: r["score"] for r in results if r["shots"] == k and not r["is_target"]
        }
        ax.bar(
            x + (i - (len(shots) - 1) / 2) * width,
            [by_name.get(n, np.nan) for n in names],
            width,
            label=f"{k}-shot",
        )
    target = run["summary"]["target"]
    if target:
        ax.axhline(
            target["score"],
            color="k",
            ls=":",
            lw=1,
            label=f"{target['task']} 0-shot {target['metric']}",
        )
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("score")
    ax.set_ylim(bottom=0)
    ax.set_title(str(run["config"].get("label") or "suite scores"))
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = paths.path(path)
    _save(fig, path)
    plt.close(fig)
    return path
