"""Scores a model on each domain's held-out examples, decoded greedily, example by example.

Each domain's own metric (`promot_tasks.metrics`): the final number for math, running the
predicted program for code, exact match for general. Every example's hit (0 or 1) is
kept, so the report's intervals resample examples (paired where two models share them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from promot_jax import run_dirs

DECODE_BATCH = 100  # the validation examples decode in two calls of one compiled shape


class DomainScorer:
    """Decodes and scores the domains' validation examples; one compiled search per shape."""

    def __init__(self, tasks: Mapping[str, str], eval_examples: int, max_decode_length: int):
        from promot_jax.evaluation import runner

        self.tasks = dict(tasks)  # domain -> registered task
        self.settings = runner.DecodeSettings(
            search="greedy",
            batch_size=min(DECODE_BATCH, eval_examples),
            max_examples=eval_examples,
            max_decode_length=max_decode_length,
        )
        self._decoders = runner.Decoders()
        self._examples: dict[str, list] = {}

    def score(self, config, params) -> dict[str, dict]:
        """{domain: {"score": %, "hits": [0/1 per example], "rows": [...]}} for a bare model."""
        from promot_jax.evaluation import runner, scoring, suite

        decoder = self._decoders.get(config, self.settings)
        scored = {}
        for domain, task in self.tasks.items():
            entry = suite.entry(task)
            if task not in self._examples:
                self._examples[task] = runner.load_examples(
                    task, entry.info.eval_split, self.settings.max_examples
                )
            result, rows = runner.evaluate_task(
                entry, entry, decoder, params, self.settings, prompt_used=False,
                examples=self._examples[task],
            )  # fmt: skip
            hits = [
                int(
                    scoring.primary(
                        scoring.score(entry.info, [r["target"]], [r["prediction"]]), entry.info
                    )
                    > 0
                )
                for r in rows
            ]
            scored[domain] = {"score": result["score"], "hits": hits, "rows": rows}
        return scored


def write_scores(path: Path, scored: Mapping[str, dict], meta: Mapping) -> dict:
    """Writes `<path>.json` (scores and hits) and `<path>/<domain>.jsonl` (the outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows_dir = path.with_suffix("")
    rows_dir.mkdir(parents=True, exist_ok=True)
    for domain, s in scored.items():
        lines = "".join(json.dumps(r) + "\n" for r in s["rows"])
        run_dirs.write_atomic(rows_dir / f"{domain}.jsonl", lines)
    record = {
        **meta,
        "scores": {d: s["score"] for d, s in scored.items()},
        "hits": {d: s["hits"] for d, s in scored.items()},
    }
    run_dirs.write_atomic(path, json.dumps(record))  # last: its presence means "scored"
    return record


def read_outputs(path: Path, domain: str, n: int) -> list[dict]:
    rows_path = path.with_suffix("") / f"{domain}.jsonl"
    with open(rows_path) as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]
