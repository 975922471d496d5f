"""In-memory and JSONL data sources: toy-world records, Code Alpaca and ShareGPT files.

JSONL schemas (one JSON object per line; blank lines are skipped):
- Code Alpaca: `{"instruction": str, "input": str, "output": str}`; `input` may be
  "" (then the input is the instruction alone, else instruction + newline + input).
- ShareGPT: `{"conversations": [{"from": "human"|"user"|"gpt"|"assistant"|"system",
  "value": str}, ...]}`; every assistant turn becomes one example whose input is
  the conversation so far (`User: ... Assistant: ... User: ...`).
A malformed record fails with the file, the line number and the missing field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

Record = Mapping[str, object]
SplitRecords = Callable[[], Mapping[str, Sequence[Record]]]


def records_to_dataset(records: Sequence[Record]) -> tf.data.Dataset:
    """A tf.data.Dataset of dicts from equally-keyed Python records (strings or string lists)."""
    if not records:
        raise ValueError("cannot build a dataset from zero records")
    keys = list(records[0])
    columns = {k: [r[k] for r in records] for k in keys}
    return tf.data.Dataset.from_tensor_slices(columns)


def records_source(
    load: SplitRecords, sizes: Mapping[str, int] | None = None
) -> seqio.FunctionDataSource:
    """A SeqIO source over records produced (lazily, on first use) by `load()`.

    `sizes` gives `num_input_examples` per split without loading, so mixture
    rates can be computed cheaply.
    """

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one in-memory shard; SeqIO shuffles examples itself
        splits = load()
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; this source has {sorted(splits)}")
        return records_to_dataset(splits[split])

    splits = tuple(sizes) if sizes else ("train",)
    return seqio.FunctionDataSource(dataset_fn, splits=splits, num_input_examples=sizes)


class JsonlError(ValueError):
    """A JSONL record that does not match its schema; the message names file, line and field."""


def read_jsonl_rows(path: str) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; bad JSON names file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise JsonlError(
                    f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append((line_no, row))
    if not rows:
        raise JsonlError(f"{path}: no records")
    return rows


def require_field(row: Mapping, field: str, path: str, line: int, where: str = "", kind=str):
    """row[field], checked for presence and type; errors name file, line and field."""
    if field not in row:
        raise JsonlError(f"{path}:{line}: record has no field {where + field!r}")
    value = row[field]
    if not isinstance(value, kind):
        raise JsonlError(
            f"{path}:{line}: field {where + field!r} must be {kind.__name__}, "
            f"got {type(value).__name__}"
        )
    return value


def read_code_alpaca(path: str) -> list[dict[str, str]]:
    """Code Alpaca records -> canonical `code` fields {instruction, answer}."""
    records = []
    for line, row in read_jsonl_rows(path):
        instruction = require_field(row, "instruction", path, line)
        extra = require_field(row, "input", path, line)
        output = require_field(row, "output", path, line)
        text = f"{instruction}\n{extra}" if extra.strip() else instruction
        records.append({"instruction": text, "answer": output})
    return records


_SPEAKERS = {
    "human": "User",
    "user": "User",
    "gpt": "Assistant",
    "assistant": "Assistant",
    "chatgpt": "Assistant",
    "bard": "Assistant",
    "bing": "Assistant",
    "system": "System",
}


def read_sharegpt(path: str) -> list[dict[str, str]]:
    """ShareGPT conversations -> canonical `general` fields {dialogue, answer}, one per reply."""
    records = []
    for line, row in read_jsonl_rows(path):
        turns = require_field(row, "conversations", path, line, kind=list)
        history: list[str] = []
        for i, turn in enumerate(turns):
            where = f"conversations[{i}]."
            if not isinstance(turn, dict):
                raise JsonlError(f"{path}:{line}: {where[:-1]} must be an object")
            speaker = require_field(turn, "from", path, line, where)
            value = require_field(turn, "value", path, line, where)
            role = _SPEAKERS.get(speaker.lower())
            if role is None:
                raise JsonlError(
                    f"{path}:{line}: field {where + 'from'!r} is {speaker!r}; expected one of "
                    f"{sorted(_SPEAKERS)}"
                )
            if role == "Assistant" and history:
                records.append({"dialogue": " ".join(history), "answer": value})
            history.append(f"{role}: {value}")
    if not records:
        raise JsonlError(f"{path}: no assistant turn after a user turn in any conversation")
    return records
