"""Suite summaries and the paper-layout tables: JSON per run, markdown across runs.

A run's `eval.json` holds its config, every task result and the derived numbers
(fine-tuned task score, Norm. Avg. and mean leak rate per shot count). The
markdown table follows [ProMoT Table 3]: rows are the fine-tuned task, Norm. Avg.
and the 8 tasks; each cell reads "1-shot (4-shot)"; columns are runs. Runs
sharing a label (seeds of one method) collapse into one column "mean ± std".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from promot_jax import paths as path_lib
from promot_jax.evaluation import scoring
from promot_jax.paths import Path

EVAL_JSON = "eval.json"
TABLE_MD = "table.md"


def summarize(results: Sequence[Mapping]) -> dict:
    """Fine-tuned task score, Norm. Avg. (plain mean of raw scores) and mean leak per shots."""
    target = [r for r in results if r["is_target"]]
    others = [r for r in results if not r["is_target"]]
    summary: dict = {"target": None, "norm_avg": {}, "leak_rate": {}, "tasks_per_shots": {}}
    if target:
        t = target[0]
        summary["target"] = {"task": t["task"], "metric": t["metric"], "score": t["score"]}
    for shots in sorted({r["shots"] for r in others}):
        rows = [r for r in others if r["shots"] == shots]
        key = str(shots)
        summary["norm_avg"][key] = scoring.norm_avg([r["score"] for r in rows])
        summary["tasks_per_shots"][key] = len(rows)
        leaks = [r["leak_rate"] for r in rows if r["leak_rate"] is not None]
        summary["leak_rate"][key] = float(np.mean(leaks)) if leaks else None
    return summary


def write_run(out_dir: str | Path, config: Mapping, results: Sequence[Mapping]) -> dict:
    """Writes `eval.json` and a one-column `table.md` for one evaluated checkpoint."""
    from promot_jax.run_dirs import write_atomic

    out_dir = path_lib.path(out_dir)
    run = {"config": dict(config), "summary": summarize(results), "results": list(results)}
    write_atomic(out_dir / EVAL_JSON, json.dumps(run, indent=2))
    label = config.get("label") or path_lib.path(str(config.get("checkpoint", "run"))).name
    write_atomic(out_dir / TABLE_MD, comparison_markdown({label: [run]}))
    return run


def load_run(path: str | Path) -> dict:
    """A run's `eval.json` (from its directory or the file itself)."""
    path = path_lib.path(path)
    file = path / EVAL_JSON if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} does not exist; give an output directory of `promot-jax eval --checkpoint`"
        )
    return json.loads(file.read_text())


def group_runs(paths: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, list]:
    """Runs keyed by label (`label=path` or the run's own label); equal labels are seeds."""
    grouped: dict[str, list] = {}
    for i, item in enumerate(paths):
        label, sep, path = item.partition("=")
        if not sep:
            label, path = "", item
        run = load_run(path)
        if labels is not None:
            label = labels[i]
        label = label or run["config"].get("label") or path_lib.path(path).name
        grouped.setdefault(label, []).append(run)
    return grouped


def mean_std_cell(values: Sequence[float | None], digits: int = 2, n: bool = False) -> str:
    """ "-" for no values, the value for one, "mean ± sample std" (and "(n=...)") for more."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    count = f" (n={len(values)})" if n else ""
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}{count}"


def _task_scores(run: Mapping, key: str, shots: int) -> float | None:
    for r in run["results"]:
        if r["key"] == key and r["shots"] == shots and not r["is_target"]:
            return r["score"]
    return None


def _rows(runs: Mapping[str, Sequence[Mapping]]) -> tuple[list, list[int]]:
    """(row key, display name) in suite order, and the shot counts present, over all runs."""
    rows: list[tuple[str, str]] = []
    shots: set[int] = set()
    for group in runs.values():
        for run in group:
            for r in run["results"]:
                if not r["is_target"]:
                    shots.add(r["shots"])
                    if (r["key"], r["display"]) not in rows:
                        rows.append((r["key"], r["display"]))
    return rows, sorted(shots)


def markdown_table(runs: Mapping[str, Sequence[Mapping]], what: str = "score") -> str:
    """The paper's layout: rows = fine-tuned task, Norm. Avg., tasks; columns = labels.

    `what="leak"` tabulates the format-leak rate (% of outputs in the target's label set).
    """
    rows, shots = _rows(runs)
    labels = list(runs)
    first, rest = (shots[0], shots[1:]) if shots else (0, [])
    legend = f"{first}-shot" + "".join(f" ({k}-shot)" for k in rest)

    def cell(group: Sequence[Mapping], fn) -> str:
        parts = [mean_std_cell([fn(run, first) for run in group])]
        parts += [f"({mean_std_cell([fn(run, k) for run in group])})" for k in rest]
        return " ".join(parts)

    header = (
        f"| {'format leak %' if what == 'leak' else 'eval'} ({legend}) | "
        + " | ".join(labels)
        + " |"
    )
    lines = [header, "|---|" + "---|" * len(labels)]
    if what == "score":
        targets = [g[0]["summary"]["target"] for g in runs.values() if g[0]["summary"]["target"]]
        if targets:
            name = f"{targets[0]['task']} ({targets[0]['metric']}, 0-shot)"
            values = [
                mean_std_cell(
                    [run["summary"]["target"]["score"] for run in g if run["summary"]["target"]]
                )
                for g in runs.values()
            ]
            lines.append(f"| {name} | " + " | ".join(values) + " |")
        lines.append(
            "| Norm. Avg. | "
            + " | ".join(
                cell(g, lambda run, k: run["summary"]["norm_avg"].get(str(k)))
                for g in runs.values()
            )
            + " |"
        )
        value = _task_scores
    else:
        lines.append(
            "| mean | "
            + " | ".join(
                cell(g, lambda run, k: run["summary"]["leak_rate"].get(str(k)))
                for g in runs.values()
            )
            + " |"
        )

        def value(run, key, k):
            for r in run["results"]:
                if r["key"] == key and r["shots"] == k and not r["is_target"]:
                    return r["leak_rate"]
            return None

    for key, display in rows:
        lines.append(
            f"| {display} | "
            + " | ".join(cell(g, lambda run, k, key=key: value(run, key, k)) for g in runs.values())
            + " |"
        )
    return "\n".join(lines) + "\n"


def comparison_markdown(runs: Mapping[str, Sequence[Mapping]]) -> str:
    """Scores and leak rates of several runs side by side, with what each column used."""
    notes = []
    for label, group in runs.items():
        cfg = group[0]["config"]
        decode = cfg.get("decode", {})
        search = f"beam {decode.get('beam_size')}" if decode.get("search") == "beam" else "greedy"
        notes.append(
            f"- **{label}**: {len(group)} run(s); prompt rule `{cfg.get('prompt_rule')}`, "
            f"prompt {cfg.get('prompt') or 'none'}; {search}; "
            f"max_examples {decode.get('max_examples') or 'all'}"
        )
    return (
        "## Scores\n\n"
        + markdown_table(runs)
        + "\n## Format leak (% of outputs in the fine-tuned task's label set)\n\n"
        + markdown_table(runs, what="leak")
        + "\n## Runs\n\n"
        + "\n".join(notes)
        + "\n"
    )
