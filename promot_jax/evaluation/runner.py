"""Decode, post-process and score a suite, one task at a time, resumable.

Each task's examples come from its SeqIO eval split in file order (the first
`max_examples`). Inputs are padded to a power of two and batches to a fixed
size, so a few compiled searches serve the whole suite. The soft
prompt and LoRA adapters are attached or removed per task by the prompt rule.

Output directory:
  eval_config.json           what was evaluated and how; a rerun must match it
  tasks/<task>.json          one task's scores, leak rate, prompt and adapter use (written
                             atomically when the task finishes: the resume unit)
  predictions/<task>.jsonl   input, target, raw output, post-processed prediction
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from promot_jax import decoding, network, paths, run_dirs, sharding
from promot_jax.evaluation import prompt_rule, scoring
from promot_jax.evaluation.model_source import LoadedModel
from promot_jax.evaluation.suite import Suite, SuiteEntry
from promot_jax.paths import Path

MIN_INPUT_LENGTH = 32  # inputs are padded to a power of two >= this: few compilations
DECODE_MARGIN = 4  # room for the sentinels around a span answer
MIN_DECODE_LENGTH = 8
SEARCHES = ("beam", "greedy")  # of decoding.SEARCHES: the suite is scored deterministically


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How outputs are produced; recorded in the output and compared on resume."""

    search: str = "beam"
    beam_size: int = 4  # [ProMoT B.4]
    alpha: float = 0.6  # T5X's default length penalty
    batch_size: int = 16
    max_examples: int | None = None  # None: the whole eval split
    max_decode_length: int | None = None  # None: longest target + margin, per task (pow2)

    def __post_init__(self):
        if self.search not in SEARCHES:
            raise ValueError(f"unknown search {self.search!r}; valid: {', '.join(SEARCHES)}")
        if self.beam_size < 1 or self.batch_size < 1:
            raise ValueError(
                f"beam_size and batch_size must be >= 1, got {self.beam_size}, {self.batch_size}"
            )
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 or None, got {self.max_examples}")


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def bucket(n: int, minimum: int) -> int:
    """The smallest power of two >= max(n, minimum): tasks share compiled shapes."""
    return 1 << (max(n, minimum) - 1).bit_length()


# --------------------------------------------------------------------------- data


def load_examples(task: str, split: str, max_examples: int | None) -> list[dict[str, Any]]:
    """The first `max_examples` tokenised examples of a task's eval split, as numpy dicts."""
    import seqio

    import promot_tasks  # noqa: F401

    ds = seqio.get_mixture_or_task(task).get_dataset(
        sequence_length=None, split=split, shuffle=False, num_epochs=1, use_cached=False
    )
    if max_examples is not None:
        ds = ds.take(max_examples)
    examples = list(ds.as_numpy_iterator())
    if not examples:
        raise ValueError(f"task {task!r} has no examples in split {split!r}")
    return examples


def vocabulary_of(task: str):
    import seqio

    return seqio.get_mixture_or_task(task).output_features["targets"].vocabulary


# --------------------------------------------------------------------------- decoding


class Decoder:
    """Jitted batched search for one model config; compiled once per (input, output) shape.

    With a `mesh`, the search runs on it as training does: parameters in their
    `sharding.param_shardings` (model-parallel kernels split along `model`), input and
    output rows split along `data`. Parameters already placed there (`LoadedModel.place`)
    are not moved; host arrays are sent to their shardings on each call.
    """

    def __init__(
        self, config: network.T5Config, settings: DecodeSettings, mesh: Mesh | None = None
    ):
        if mesh is not None:
            sharding.check_batch_size(settings.batch_size, mesh)
        self.config = config
        self.model = network.Transformer(config)
        self.settings = settings
        self.mesh = mesh
        self._fns: dict[int, Callable] = {}

    def search_fn(self, max_length: int) -> Callable:
        """The jitted `(params, tokens [batch, L]) -> ids [batch, max_length]` (lowerable)."""
        if max_length not in self._fns:
            s = self.settings

            def search(params, tokens):
                return decoding.generate(
                    self.model,
                    params,
                    tokens,
                    max_length,
                    search=s.search,
                    beam_size=s.beam_size,
                    alpha=s.alpha,
                )

            if self.mesh is None:
                self._fns[max_length] = jax.jit(search)
            else:
                rows = sharding.batch_sharding(self.mesh)
                params = sharding.param_shardings(self.config, self.mesh)
                self._fns[max_length] = jax.jit(
                    search, in_shardings=(params, rows), out_shardings=rows
                )
        return self._fns[max_length]

    def __call__(self, params: Any, inputs: Sequence[np.ndarray], max_length: int) -> np.ndarray:
        """`[N, max_length]` output ids for N variable-length input id arrays."""
        batch = self.settings.batch_size
        width = bucket(max(len(x) for x in inputs), MIN_INPUT_LENGTH)
        tokens = np.zeros((_round_up(len(inputs), batch), width), np.int32)
        for i, x in enumerate(inputs):
            tokens[i, : len(x)] = x
        tokens[len(inputs) :] = tokens[0]  # padding rows: copies, never all-padding inputs
        fn = self.search_fn(max_length)
        out = [
            np.asarray(fn(params, jnp.asarray(tokens[i : i + batch])))
            for i in range(0, len(tokens), batch)
        ]
        return np.concatenate(out)[: len(inputs)]


def scoring_config(config: network.T5Config) -> network.T5Config:
    """The config compiled scorers are keyed by: scoring never uses dropout, so configs
    that differ only in `dropout_rate` (the base, a stage trained with dropout) share one."""
    return dataclasses.replace(config, dropout_rate=0.0)


class Decoders:
    """One `Decoder` per (`scoring_config`, settings), so each search compiles once however
    many models share an architecture; all on `mesh` when one is given."""

    def __init__(self, mesh: Mesh | None = None):
        self.mesh = mesh
        self._by_key: dict[str, Decoder] = {}

    def get(self, config: network.T5Config, settings: DecodeSettings) -> Decoder:
        config = scoring_config(config)
        key = repr((config, settings))
        if key not in self._by_key:
            self._by_key[key] = Decoder(config, settings, self.mesh)
        return self._by_key[key]


def decode_length(examples: Sequence[dict], settings: DecodeSettings) -> int:
    """Output budget: the fixed setting, else the longest target plus sentinel margin,
    rounded up to a power of two."""
    if settings.max_decode_length is not None:
        return settings.max_decode_length
    longest = max(len(ex["targets"]) for ex in examples)
    return bucket(longest + DECODE_MARGIN, MIN_DECODE_LENGTH)


# --------------------------------------------------------------------------- one task


def evaluate_task(
    entry: SuiteEntry,
    target: SuiteEntry,
    decoder: Decoder,
    params: Any,
    settings: DecodeSettings,
    *,
    prompt_used: bool,
    adapters_used: bool = False,
    examples: list[dict] | None = None,
) -> tuple[dict, list[dict]]:
    """(result, per-example predictions) of one task: decode, post-process, score, leak rate."""
    info = entry.info
    if examples is None:
        examples = load_examples(entry.task, info.eval_split, settings.max_examples)
    vocab = vocabulary_of(entry.task)
    max_length = decode_length(examples, settings)
    start = time.perf_counter()
    ids = decoder(params, [ex["inputs"] for ex in examples], max_length)
    seconds = time.perf_counter() - start
    outputs = [vocab.decode([int(t) for t in row]) for row in ids]
    targets = [scoring.reference(ex, info) for ex in examples]
    predictions = [scoring.prediction(o, info) for o in outputs]
    scores = scoring.score(info, targets, predictions)
    result = {
        "task": entry.task,
        "key": entry.key,
        "display": entry.display,
        "shots": entry.shots,
        "family": info.family,
        "metric": info.metric,
        "prompt_used": prompt_used,
        "adapters_used": adapters_used,
        "split": info.eval_split,
        "examples": len(examples),
        "max_decode_length": max_length,
        "scores": scores,
        "score": scoring.primary(scores, info),
        "seconds": seconds,
        "examples_per_second": len(examples) / max(seconds, 1e-9),
    }
    rows = [
        {
            "index": i,
            "input": ex.get("inputs_pretokenized", b"").decode("utf-8"),
            "target": t,
            "output": o,
            "prediction": p,
        }
        for i, (ex, t, o, p) in enumerate(zip(examples, targets, outputs, predictions, strict=True))
    ]
    return for_target(result, rows, entry, target), rows


def for_target(result: dict, rows: Sequence[dict], entry: SuiteEntry, target: SuiteEntry) -> dict:
    """`result` with the figures that depend on the fine-tuned target: whether `entry` is
    the target and, for any other task, its leak rate (% of outputs in the target's labels)."""
    outputs = [r["output"] for r in rows]
    leak = None if entry.is_target else scoring.leak_rate(outputs, target.info.labels)
    return {**result, "is_target": entry.is_target, "leak_rate": leak}


def score_entries(
    model: LoadedModel,
    entries: Sequence[SuiteEntry],
    target: SuiteEntry,
    rule: str,
    settings: DecodeSettings,
    *,
    decoders: Decoders,
    examples: Callable[[SuiteEntry], list[dict]] | None = None,
    memo: dict | None = None,
) -> Iterator[tuple[SuiteEntry, dict, list[dict]]]:
    """(entry, result, per-example rows) of each entry in turn, the prompt and adapters
    attached or removed by `rule`; lazily, so a caller can keep each task as it finishes.

    `examples(entry)` gives an entry's examples (default: its first
    `settings.max_examples`). With `memo`, a task already decoded for the same
    checkpoint, prompt use and settings (the base under two targets) is not decoded
    again: only the target's figures (`for_target`) are recomputed.
    """
    for entry in entries:
        attached, config, params = model.for_task(entry.info, target.info, rule)
        key = (model.source, model.prompt_source, entry.task, attached, repr(settings))
        if memo is not None and key in memo:
            result, rows = memo[key]
            yield entry, for_target(result, rows, entry, target), rows
            continue
        result, rows = evaluate_task(
            entry,
            target,
            decoders.get(config, settings),
            params,
            settings,
            prompt_used=attached and model.has_prompt,
            adapters_used=attached and model.has_adapters,
            examples=None if examples is None else examples(entry),
        )
        if memo is not None:
            memo[key] = result, rows
        yield entry, result, rows


# --------------------------------------------------------------------------- the suite


def eval_config(
    model: LoadedModel, suite: Suite, settings: DecodeSettings, rule: str, label: str
) -> dict:
    """What this evaluation is; stored as eval_config.json and compared on resume (a model
    without adapters records what it did before adapters existed)."""
    config = {
        "label": label,
        "checkpoint": model.source,
        "prompt": model.prompt_source,
        "prompt_length": model.config.prompt_length,
        "prompt_rule": rule,
        "target": suite.target.task,
        "tasks": suite.tasks,
        "decode": dataclasses.asdict(settings),
    }
    if model.has_adapters:
        config.update(adapters=model.adapter_source, lora_rank=model.config.lora_rank)
    return config


def _check_resume(out_dir: Path, config: dict) -> None:
    path = out_dir / "eval_config.json"
    run_dirs.check_record(
        path,
        config,
        what="results of a different evaluation",
        fix="choose another --out directory or rerun with the same settings to continue",
        ignore=("tasks",),
    )
    run_dirs.write_atomic(path, json.dumps(config, indent=2))


def task_result_path(out_dir: Path, task: str) -> Path:
    return out_dir / "tasks" / f"{task}.json"


def run_suite(
    model: LoadedModel,
    suite: Suite,
    out_dir: str | Path,
    *,
    settings: DecodeSettings = DecodeSettings(),
    rule: str = "same_format",
    label: str = "",
    log: Callable[[str], None] = print,
    mesh: Mesh | None = None,
) -> list[dict]:
    """Evaluates every suite task not already done in `out_dir`; returns all task results.

    Fails before decoding when the rule needs a prompt the model lacks. With `mesh`, every
    search runs on it (`Decoder`); place the model there first (`LoadedModel.place`).
    """
    prompt_rule.check_rule(rule)
    model.check_tasks([e.info for e in suite.entries], suite.target.info, rule)
    out_dir = paths.path(out_dir)
    _check_resume(out_dir, eval_config(model, suite, settings, rule, label))

    done: dict[str, dict] = {}
    for n, entry in enumerate(suite.entries, 1):
        path = task_result_path(out_dir, entry.task)
        if path.exists():
            done[entry.task] = json.loads(path.read_text())
            log(f"[{n}/{len(suite.entries)}] {entry.task}: done earlier, kept")
    pending = [e for e in suite.entries if e.task not in done]
    scored = score_entries(model, pending, suite.target, rule, settings, decoders=Decoders(mesh))
    for entry, result, rows in scored:
        write_predictions(out_dir, entry.task, rows)
        run_dirs.write_atomic(task_result_path(out_dir, entry.task), json.dumps(result, indent=2))
        done[entry.task] = result
        n = suite.entries.index(entry) + 1
        leak = "" if result["leak_rate"] is None else f", leak {result['leak_rate']:.1f}%"
        parts = "prompt " + ("on" if result["prompt_used"] else "off")
        if model.has_adapters:
            parts += ", adapters " + ("on" if result["adapters_used"] else "off")
        log(
            f"[{n}/{len(suite.entries)}] {entry.task}: {result['metric']} "
            f"{result['score']:.2f}{leak} ({parts}, {result['examples']} examples, "
            f"{result['seconds']:.1f}s)"
        )
    return [done[e.task] for e in suite.entries]


def predictions_path(out_dir: str | Path, task: str) -> Path:
    return paths.path(out_dir) / "predictions" / f"{task}.jsonl"


def write_predictions(out_dir: str | Path, task: str, rows: Sequence[dict]) -> None:
    """One task's per-example rows (input, target, output, prediction), atomically."""
    text = "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows)
    run_dirs.write_atomic(predictions_path(out_dir, task), text)


def read_predictions(out_dir: str | Path, task: str) -> list[dict]:
    path = predictions_path(out_dir, task)
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
