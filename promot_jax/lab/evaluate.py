"""Scoring the lab's models with the evaluation package, sharing compiled decoders.

Each model is scored with `evaluation.runner.evaluate_task` under the paper's
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

from promot_jax import checkpoints, run_dirs
from promot_jax.evaluation import reports, runner, suite
from promot_jax.evaluation.model_source import LoadedModel, load_model
from promot_jax.evaluation.teacher_forced import TeacherForcedScorer
from promot_jax.lab.config import base_model_config
from promot_jax.lab.mixtures import DMT_DOMAIN, DMT_GENERAL
from promot_jax.lab.plan import LENGTHS

DMT_TASKS = (*DMT_DOMAIN, *DMT_GENERAL)
DMT_LENGTHS = LENGTHS["dmt"]  # the DMT stages' own feature lengths


def load_base(path: str | Path) -> LoadedModel:
    """The pretrained base checkpoint (our params format) as an evaluable model, no prompt."""
    config = base_model_config(dropout_rate=0.0)
    return LoadedModel(config, checkpoints.load_params(path, config), str(path), None)


def _scoring_config(config):
    """The config decoders and scorers are keyed by: scoring never uses dropout, so one
    compile serves the base (dropout 0) and the stages trained with dropout."""
    return dataclasses.replace(config, dropout_rate=0.0)


class LabEvaluator:
    """Decodes with shared decoders and cached examples; greedy or beam as configured."""

    def __init__(self, settings: runner.DecodeSettings, dmt_examples: int):
        self.settings = settings
        self.dmt_settings = runner.DecodeSettings(
            method=settings.method,
            beam_size=settings.beam_size,
            batch_size=settings.batch_size,
            max_examples=dmt_examples,
        )
        self._decoders: dict[str, runner.Decoder] = {}
        self._scorers: dict[str, TeacherForcedScorer] = {}
        self._examples: dict[tuple[str, int | None], list] = {}

    def _decoder(self, config, settings) -> runner.Decoder:
        config = _scoring_config(config)
        key = repr((config, settings))
        if key not in self._decoders:
            self._decoders[key] = runner.Decoder(config, settings)
        return self._decoders[key]

    def _load(self, entry: suite.SuiteEntry, n: int | None) -> list:
        key = (entry.task, n)
        if key not in self._examples:
            self._examples[key] = runner.load_examples(entry.task, entry.info.eval_split, n)
        return self._examples[key]

    def _score(self, model, entries, target, rule, settings) -> list[dict]:
        results = []
        for entry in entries:
            with_prompt, config, params = model.for_task(entry.info, target.info, rule)
            result, _ = runner.evaluate_task(
                entry,
                target,
                self._decoder(config, settings),
                params,
                settings,
                prompt_used=with_prompt,
                examples=self._load(entry, settings.max_examples),
            )
            results.append(result)
        return results

    def suite_run(self, model: LoadedModel, target: str, rule: str, label: str) -> dict:
        """The target at 0-shot and the 8-task toy suite at 1 shot (an eval.json-shaped dict)."""
        s = suite.build_suite(target, shots=(1,))
        results = self._score(model, s.entries, s.target, rule, self.settings)
        config = {
            "label": label,
            "checkpoint": model.source,
            "prompt": model.prompt_source,
            "prompt_rule": rule,
            "target": target,
            "decode": dict(self.settings.__dict__),
        }
        return {"config": config, "summary": reports.summarize(results), "results": results}

    def _teacher_forced_scorer(self, config) -> TeacherForcedScorer:
        config = _scoring_config(config)
        key = repr(config)
        if key not in self._scorers:
            self._scorers[key] = TeacherForcedScorer(config, DMT_LENGTHS)
        return self._scorers[key]

    def dmt_run(self, model: LoadedModel, label: str, tasks: Sequence[str] = DMT_TASKS) -> dict:
        """Math, code and general scores (0-shot; no prompt in DMT), decoded and, on the
        same examples, teacher-forced (token accuracy and loss of the reference answers)."""
        entries = [suite.entry(t) for t in tasks]
        results = []
        for e in entries:
            results += self._score(model, [e], e, "never", self.dmt_settings)
        scores = {r["task"]: r["score"] for r in results}
        config, params = model.without_prompt()
        scorer = self._teacher_forced_scorer(config)
        n = self.dmt_settings.max_examples
        teacher_forced = {
            e.task: scorer.score(params, e.task, e.info.eval_split, n) for e in entries
        }
        run_config = {
            "label": label,
            "checkpoint": model.source,
            "decode": self.dmt_settings.__dict__,
            "teacher_forced_lengths": DMT_LENGTHS,
        }
        return {
            "config": run_config,
            "scores": scores,
            "teacher_forced": teacher_forced,
            "results": results,
        }


def evaluate(
    evaluator: LabEvaluator,
    out_dir: Path,
    source: Path | None,
    base: Path,
    target: str | None,
    rule: str,
    label: str,
) -> dict:
    """Scores one model (a stage run dir, or the base when `source` is None), reusing a
    finished eval.json in `out_dir`."""
    done = out_dir / reports.EVAL_JSON
    if done.is_file():
        return json.loads(done.read_text())
    model = load_base(base) if source is None else load_model(source, which="final")
    if target is None:
        run = evaluator.dmt_run(model, label)
        run_dirs.write_atomic(done, json.dumps(run, indent=2))
        return run
    run = evaluator.suite_run(model, target, rule, label)
    reports.write_run(out_dir, run["config"], run["results"])
    return json.loads(done.read_text())
