"""DMT's real data: GSM8K (TFDS), Code Alpaca and ShareGPT (user-supplied JSONL files).

`promot_gsm8k` is always registered. The JSONL tasks need paths: call
`register_code_alpaca(path)` / `register_sharegpt(path)`, or set
`PROMOT_CODE_ALPACA_JSONL` and `PROMOT_SHAREGPT_JSONL` before importing
promot_tasks; with both set, `promot_dmt_stage1` / `promot_dmt_stage2` (k = 1/256,
or `PROMOT_DMT_K`) and the multi-task baseline `promot_dmt_k1_stage2` (all data by size)
are registered too. Schemas: see sources.py.

GSM8K here is TFDS's 7.5K-example original, not the 110K RFT-augmented set the
DMT paper trains on; an RFT file can be registered as JSONL through
`register_math_jsonl` ({"question", "answer"} per line).
HumanEval and MT-Bench (DMT's code/general metrics) are not part of this
registry, so the code and general tasks carry no metric.
"""

from __future__ import annotations

import os

import seqio
import tensorflow as tf

from promot_tasks import mixtures, pipeline, sources
from promot_tasks.vocabularies import mt5_output_features

CODE_ALPACA_ENV = "PROMOT_CODE_ALPACA_JSONL"
SHAREGPT_ENV = "PROMOT_SHAREGPT_JSONL"
DMT_K_ENV = "PROMOT_DMT_K"


def _gsm8k(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda ex: {"question": ex["question"], "answer": ex["answer"]})


def register_gsm8k(name: str = "promot_gsm8k", output_features=None) -> seqio.Task:
    """GSM8K (gsm8k:1.0.0, train/test); answers end in `#### N`, scored by final number."""
    return pipeline.register_task(
        name,
        source=seqio.TfdsDataSource(tfds_name="gsm8k:1.0.0", splits=("train", "test")),
        adapter=_gsm8k,
        family="math",
        output_features=output_features or mt5_output_features(),
        eval_split="test",
        metric="math_accuracy",
        description="gsm8k:1.0.0 (DMT math domain)",
    )


def _jsonl_task(name: str, family: str, records: list, metric: str | None, description: str):
    return pipeline.register_task(
        name,
        source=sources.records_source(lambda: {"train": records}, {"train": len(records)}),
        adapter=lambda ds: ds,
        family=family,
        output_features=mt5_output_features(),
        eval_split="train",
        metric=metric,
        description=description,
    )


def register_code_alpaca(path: str, name: str = "promot_code_alpaca") -> seqio.Task:
    """Code Alpaca JSONL ({instruction, input, output}) as a `code` task (read now, so a bad
    record fails here, naming file, line and field)."""
    return _jsonl_task(name, "code", sources.read_code_alpaca(path), None, f"Code Alpaca {path}")


def register_sharegpt(path: str, name: str = "promot_sharegpt") -> seqio.Task:
    """ShareGPT JSONL ({conversations: [{from, value}]}) as a `general` task."""
    return _jsonl_task(name, "general", sources.read_sharegpt(path), None, f"ShareGPT {path}")


def register_math_jsonl(path: str, name: str = "promot_gsm8k_rft") -> seqio.Task:
    """A math JSONL ({question, answer}, e.g. GSM8K RFT) as a `math` task."""
    records = []
    for line, row in sources.read_jsonl_rows(path):
        records.append(
            {
                "question": sources.require_field(row, "question", path, line),
                "answer": sources.require_field(row, "answer", path, line),
            }
        )
    return _jsonl_task(name, "math", records, "math_accuracy", f"math JSONL {path}")


def register_dmt_from_env() -> list[str]:
    """Registers the JSONL tasks and the DMT mixtures named by environment variables."""
    names = []
    code_path, chat_path = os.environ.get(CODE_ALPACA_ENV), os.environ.get(SHAREGPT_ENV)
    if code_path:
        names.append(register_code_alpaca(code_path).name)
    if chat_path:
        names.append(register_sharegpt(chat_path).name)
    if code_path and chat_path:
        raw = os.environ.get(DMT_K_ENV, str(mixtures.DMT_DEFAULT_K))
        try:
            k = float(raw)
        except ValueError:
            raise ValueError(
                f"environment variable {DMT_K_ENV}={raw!r} is not a number; set it to the "
                f"fraction of domain data in DMT stage 2, e.g. {DMT_K_ENV}=0.00390625 (1/256)"
            ) from None
        domain, general = ["promot_gsm8k", "promot_code_alpaca"], ["promot_sharegpt"]
        stage1, stage2 = mixtures.dmt_mixtures(domain, general, k=k, name="promot_dmt")
        # DMT's multi-task baseline, all data in one stage by size, is stage 2 at k = 1.
        _, multitask = mixtures.dmt_mixtures(domain, general, k=1.0, name="promot_dmt_k1")
        names += [stage1.name, stage2.name, multitask.name]
    return names
