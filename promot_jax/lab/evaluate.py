"""Scoring the lab's models with the evaluation package, sharing compiled decoders.

Each model is scored with `evaluation.runner.score_entries` under the paper's
prompt rule; one `Decoder` per architecture (with or without the prompt) serves
every model of the lab, so the searches compile once. A model's results are
written as the evaluation package's `eval.json` (+ `table.md`) in its own
directory, which is also the unit a rerun reuses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from promot_jax import checkpoints
from promot_jax.evaluation import reports, runner, suite
from promot_jax.evaluation.model_source import LoadedModel, load_model
from promot_jax.lab.config import LabBase
from promot_tasks.toy_world import formats


def load_base(base: LabBase) -> LoadedModel:
    """The pretrained base checkpoint (our params format) as an evaluable model, no prompt."""
    config = base.config(dropout_rate=0.0)
    return LoadedModel(config, checkpoints.load_params(base.path, config), str(base.path), None)


class LabEvaluator:
    """Decodes with shared decoders and cached examples; greedy or beam as configured."""

    def __init__(self, settings: runner.DecodeSettings, target_examples: int):
        self.settings = settings
        self.target_settings = dataclasses.replace(settings, max_examples=target_examples)
        self._decoded: dict[tuple, tuple[dict, list[dict]]] = {}
        self._decoders = runner.Decoders()
        self._examples: dict[tuple[str, int | None], list] = {}

    def _load(self, entry: suite.SuiteEntry, n: int | None) -> list:
        key = (entry.task, n)
        if key not in self._examples:
            self._examples[key] = runner.load_examples(entry.task, entry.info.eval_split, n)
        return self._examples[key]

    def _score(self, model, entries, target, rule, settings) -> list[tuple[dict, list[dict]]]:
        """(result, per-example rows) of each entry, with the shares of output kinds. A
        task decoded earlier for the same checkpoint and prompt use (the base under two
        targets) is not decoded again."""
        scored = runner.score_entries(
            model,
            entries,
            target,
            rule,
            settings,
            decoders=self._decoders,
            examples=lambda e: self._load(e, settings.max_examples),
            memo=self._decoded,
        )
        done = []
        for entry, result, rows in scored:
            outputs = [r["output"] for r in rows]
            kinds = output_shares(entry.task, outputs, target.info.labels)
            done.append(({**result, "output_kinds": kinds}, rows))
        return done

    def suite_run(
        self, model: LoadedModel, target: str, rule: str, label: str, *, suite_tasks: bool = True
    ) -> tuple[dict, dict[str, list[dict]]]:
        """The target at 0-shot (its first `target_examples`) and, with `suite_tasks`, the
        8-task toy suite at 1 shot: an eval.json-shaped dict and each task's rows."""
        s = suite.build_suite(target, shots=(1,))
        scored = self._score(model, s.entries[:1], s.target, rule, self.target_settings)
        if suite_tasks:
            scored += self._score(model, s.entries[1:], s.target, rule, self.settings)
        config = {
            "label": label,
            "checkpoint": model.source,
            "prompt": model.prompt_source,
            "prompt_rule": rule,
            "target": target,
            "decode": dict(self.settings.__dict__),
            "target_examples": self.target_settings.max_examples,
        }
        results = [r for r, _ in scored]
        run = {"config": config, "summary": reports.summarize(results), "results": results}
        return run, {r["task"]: rows for r, rows in scored}


def output_shares(
    task: str, outputs: Sequence[str], labels: Sequence[str] | None
) -> dict[str, float] | None:
    """% of `outputs` of each kind in formats.OUTPUT_KINDS (label of the fine-tuned target /
    the task's own format / empty / other); None for a task without a format check."""
    _, key, _ = suite.split_name(task)
    if not formats.has_check(key):
        return None
    kinds = [formats.output_kind(key, o, labels) for o in outputs]
    n = max(len(kinds), 1)
    return {k: 100.0 * kinds.count(k) / n for k in formats.OUTPUT_KINDS}


def evaluate(
    evaluator: LabEvaluator,
    out_dir: Path,
    source: Path | None,
    base: LabBase,
    target: str,
    rule: str,
    label: str,
    suite_tasks: bool = True,
) -> dict:
    """Scores one model (a stage run dir, or the base when `source` is None), reusing a
    finished eval.json in `out_dir`; the per-example rows go to `out_dir/predictions/`."""
    done = out_dir / reports.EVAL_JSON
    if done.is_file():
        return json.loads(done.read_text())
    model = load_base(base) if source is None else load_model(source, which="final")
    run, rows = evaluator.suite_run(model, target, rule, label, suite_tasks=suite_tasks)
    for task, task_rows in rows.items():
        runner.write_predictions(out_dir, task, task_rows)
    reports.write_run(out_dir, run["config"], run["results"])
    return json.loads(done.read_text())
