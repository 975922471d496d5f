"""Evaluation: the in-context suite with ProMoT's prompt-removal rule, format probes, reports.

| module          | holds |
|-----------------|-------|
| `suite`         | 8 tasks at 1/4 shots + the fine-tuned task at 0-shot (or toy analogs) |
| `prompt_rule`   | when the soft prompt stays on: `same_format` (the paper's), `always`, `never` |
| `scoring`       | post-processing, metrics, format-leak rate, Norm. Avg. (pure) |
| `model_source`  | checkpoint (+ prompt file) -> config and params, checked before decoding |
| `runner`        | batched jitted decoding, per-task results written atomically, resumable |
| `alignment`     | cos(grad, grad with shuffled labels) on the last decoder layer |
| `monitor`       | `training_monitor(...)`: an eval_fn for `train_stage` |
| `reports`       | eval.json, paper-layout markdown tables across runs and seeds |
| `plots`         | PNGs: curves vs steps, Norm. Avg. with error bars, per-task bars |
"""

from promot_jax.evaluation.prompt_rule import RULES, uses_prompt
from promot_jax.evaluation.runner import DecodeSettings, run_suite
from promot_jax.evaluation.scoring import leak_rate, norm_avg
from promot_jax.evaluation.suite import Suite, build_suite

__all__ = [
    "RULES",
    "DecodeSettings",
    "Suite",
    "build_suite",
    "leak_rate",
    "norm_avg",
    "run_suite",
    "uses_prompt",
]
