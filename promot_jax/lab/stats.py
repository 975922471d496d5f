"""Bootstrap intervals over examples for the lab's claims, paired where two models are compared.

A model's figure (the target's score, Norm. Avg. over the suite, the leak rate) is
recomputed on resampled examples: each task's examples are drawn with replacement, the
same draw for both models of a pair (they were scored on the same examples), and the
figure is the task metric on the draw (corpus BLEU from summed sentence statistics, as
sacrebleu's own paired bootstrap does; the other metrics are means over examples).
`interval` returns the mean difference and its 2.5 / 97.5 percentiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from sacrebleu.metrics import BLEU

from promot_jax.evaluation import runner, scoring
from promot_tasks import catalogue, postprocessors

Scorer = Callable[[np.ndarray], float]  # example indices -> the task's figure


@dataclasses.dataclass(frozen=True)
class Interval:
    """`estimate` (on all examples) with its bootstrap 95% interval [`low`, `high`]."""

    estimate: float
    low: float
    high: float

    def text(self, digits: int = 1) -> str:
        return f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _bleu_scorer(rows: Sequence[dict]) -> Scorer:
    bleu = BLEU()
    refs = [r["target"] if isinstance(r["target"], str) else r["target"][0] for r in rows]
    stats = np.array(bleu._extract_corpus_statistics([r["prediction"] for r in rows], [refs]))
    return lambda idx: float(bleu._compute_score_from_stats(stats[idx].sum(0).tolist()).score)


def score_scorer(task: str, rows: Sequence[dict]) -> Scorer:
    """The task's own metric on resampled examples."""
    info = catalogue.task_info(task)
    if info.metric == "bleu":
        return _bleu_scorer(rows)
    per_example = np.array(
        [scoring.primary(scoring.score(info, [r["target"]], [r["prediction"]]), info) for r in rows]
    )
    return lambda idx: float(per_example[idx].mean())


def leak_scorer(rows: Sequence[dict], labels: Sequence[str]) -> Scorer:
    """% of resampled outputs that are exactly a label of the fine-tuned target."""
    hits = np.array([postprocessors.is_label(r["output"], labels) for r in rows], float)
    return lambda idx: float(100.0 * hits[idx].mean())


@dataclasses.dataclass(frozen=True)
class Figure:
    """A model's figure as a mean over tasks of per-task scorers: the target alone (one
    task), Norm. Avg. (the suite's tasks' scores) or the leak rate (their label shares)."""

    scorers: dict[str, Scorer]
    sizes: dict[str, int]

    def value(self, draws: Mapping[str, np.ndarray] | None = None) -> float:
        vals = [
            fn(draws[t] if draws else np.arange(self.sizes[t])) for t, fn in self.scorers.items()
        ]
        return float(np.mean(vals))


def figure(eval_dir: Path, run: Mapping, what: str) -> Figure:
    """`what`: "target", "norm_avg" or "leak" of one scored model (its eval.json `run`)."""
    target_labels = catalogue.task_info(run["config"]["target"]).labels
    scorers, sizes = {}, {}
    for result in run["results"]:
        if (what == "target") != result["is_target"]:
            continue
        rows = runner.read_predictions(eval_dir, result["task"])
        sizes[result["task"]] = len(rows)
        if what == "leak":
            scorers[result["task"]] = leak_scorer(rows, target_labels)
        else:
            scorers[result["task"]] = score_scorer(result["task"], rows)
    if not scorers:
        raise ValueError(f"{eval_dir} has no {what} figure (was the suite scored?)")
    return Figure(scorers, sizes)


def interval(a: Figure, b: Figure | None = None, samples: int = 1000, seed: int = 0) -> Interval:
    """a - b (a alone when b is None), resampling each task's examples `samples` times."""
    if b is not None and a.sizes != b.sizes:
        raise ValueError(f"a paired interval needs the same examples; got {a.sizes} vs {b.sizes}")
    rng = np.random.default_rng(seed)
    estimate = a.value() - (b.value() if b else 0.0)
    diffs = []
    for _ in range(samples):
        draws = {t: rng.integers(0, n, n) for t, n in a.sizes.items()}
        diffs.append(a.value(draws) - (b.value(draws) if b else 0.0))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Interval(estimate, float(low), float(high))


def welch_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(b) - mean(a) with Welch's 95% interval (seeds as the units)."""
    from scipy import stats as scipy_stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Welch interval needs >= 2 seeds per side, got {len(a)} and {len(b)}")
    test = scipy_stats.ttest_ind(b, a, equal_var=False)
    ci = test.confidence_interval(0.95)
    return Interval(float(np.mean(b) - np.mean(a)), float(ci.low), float(ci.high))
