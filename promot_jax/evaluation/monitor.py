"""The training-time monitor: an `eval_fn` for `train_stage` that watches format specialization.

At every evaluation step it decodes a small fixed probe set (the first few
examples of the fine-tuned task and of two or three other-format tasks), applies
the prompt rule, and returns their scores, format-leak rates and the
gradient-alignment cosines. `train_stage` writes them to TensorBoard and
metrics.jsonl, and `plots.plot_training_curves` turns them into the paper's
Figures 1, 2 and 7. Scalar names:

  probe/target/<task>/<metric>   the fine-tuned task (prompt on when the model has one)
  probe/target/score             the same, under its own metric: a task-agnostic name
                                 for `StageConfig.best_metric` (keep best on the target)
  probe/<task>/<metric>          another task (prompt off under the paper's rule)
  probe/<task>/leak              % of its outputs in the target's label set
  probe/leak_mean                mean of those leak rates
  grad_align/{mlp,query,key,value,all}   see `alignment`

In gin: `experiment.run_experiment.eval_fn = @monitor.training_monitor()` with
`monitor.training_monitor.model = %MODEL` and `.target = %MIXTURE`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promot_jax import network
from promot_jax.evaluation import alignment, prompt_rule, runner, suite
from promot_jax.evaluation.model_source import LoadedModel

DEFAULT_PROBE_KEYS = ("triviaqa_1shot", "wmt16_en_de_1shot")  # the paper's Figures 1 and 2


def default_probe_tasks(target: str) -> list[str]:
    """1-shot TriviaQA and WMT16 En-De of the target's world (`toy_...` or `promot_...`)."""
    world = suite.split_name(target)[0] or "promot"
    return [f"{world}_{key}" for key in DEFAULT_PROBE_KEYS]


def _shift_right(targets: np.ndarray) -> np.ndarray:
    out = np.zeros_like(targets)
    out[:, 1:] = targets[:, :-1]
    return out


def alignment_batch(task: str, size: int, split: str = "train") -> dict[str, np.ndarray]:
    """The first `size` examples of `task` as an unpacked encoder-decoder batch."""
    examples = runner.load_examples(task, split, size)
    if len(examples) < 2:
        raise ValueError(f"task {task!r} gave {len(examples)} examples; alignment needs >= 2")
    in_len = max(len(ex["inputs"]) for ex in examples)
    out_len = max(len(ex["targets"]) for ex in examples)
    inputs = np.zeros((len(examples), in_len), np.int32)
    targets = np.zeros((len(examples), out_len), np.int32)
    for i, ex in enumerate(examples):
        inputs[i, : len(ex["inputs"])] = ex["inputs"]
        targets[i, : len(ex["targets"])] = ex["targets"]
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": _shift_right(targets),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.float32),
    }


def training_monitor(
    model: network.T5Config,
    target: str,
    probe_tasks: Sequence[str] | None = None,
    *,
    examples: int = 16,
    search: str = "greedy",
    beam_size: int = 4,
    batch_size: int = 16,
    rule: str = "same_format",
    alignment_examples: int = 8,
    seed: int = 0,
):
    """An `eval_fn(params, step) -> {name: float}` for `train_stage` (names in the module doc).

    Task names and the rule are checked now, so a typo fails before training;
    examples are read on the first call. `alignment_examples=0` skips the
    gradient-alignment probe.
    """
    probes = suite.build_suite(
        target, tasks=list(probe_tasks) if probe_tasks is not None else default_probe_tasks(target)
    )
    prompt_rule.check_rule(rule)
    settings = runner.DecodeSettings(
        search=search, beam_size=beam_size, batch_size=batch_size, max_examples=examples
    )
    state: dict = {}

    def setup():
        state["examples"] = {
            e.task: runner.load_examples(e.task, e.info.eval_split, examples)
            for e in probes.entries
        }
        state["decoders"] = runner.Decoders()
        if alignment_examples:
            state["batch"] = alignment_batch(target, alignment_examples)
            state["align"] = alignment.make_alignment_fn(model)

    def eval_fn(params, step: int) -> dict[str, float]:
        if not state:
            setup()
        loaded = LoadedModel.training(model, params)
        scalars: dict[str, float] = {}
        leaks = []
        scored = runner.score_entries(
            loaded,
            probes.entries,
            probes.target,
            rule,
            settings,
            decoders=state["decoders"],
            examples=lambda e: state["examples"][e.task],
        )
        for entry, result, _ in scored:
            prefix = f"probe/target/{entry.task}" if entry.is_target else f"probe/{entry.task}"
            for name, value in result["scores"].items():
                scalars[f"{prefix}/{name}"] = value
                if entry.is_target and name == entry.info.metric:
                    scalars["probe/target/score"] = value
            if result["leak_rate"] is not None:
                scalars[f"{prefix}/leak"] = result["leak_rate"]
                leaks.append(result["leak_rate"])
        if leaks:
            scalars["probe/leak_mean"] = float(np.mean(leaks))
        if alignment_examples:
            cosines = alignment.gradient_alignment(
                model, params, state["batch"], seed=seed, fn=state["align"]
            )
            scalars.update({f"grad_align/{k}": v for k, v in cosines.items()})
        return scalars

    return eval_fn
