"""Which parameters train: one small table, used by our runner and by the T5X gin files.

A method says whether the network carries a soft prompt and LoRA adapters, and which
of prompt, adapters and trunk receive gradients. Everything else is derived from
`is_trainable(method, path)`: the local runner's trainable/frozen split (`split`, so
frozen parameters get no gradient and no optimizer state), the optimizer's groups
(`group_labels`) and T5X's MultiOptimizer traversal (`promot_jax.t5x.freezing`).

| method                         | soft prompt       | LoRA adapters     | trunk  |
|--------------------------------|-------------------|-------------------|--------|
| promot_stage1 / prompt_tuning  | trains            | -                 | frozen |
| promot_stage2                  | stage 1's, frozen | -                 | trains |
| promot_stage2_prompt_trainable | stage 1's, trains | -                 | trains |
| lora_stage1                    | -                 | trains            | frozen |
| promot_lora_stage2             | -                 | stage 1's, frozen | trains |
| finetune                       | -                 | -                 | trains |
| joint                          | trains            | -                 | trains |
| finetune_fixed_random_prompt   | random, frozen    | -                 | trains |
| multitask_promot_stage1 / _stage2: as stage 1 / 2, one prompt per task id |

"Stage 1's": attached from the stage-1 export (`prompt_source` / `lora_source`
"previous_stage"); "-": the network has none.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

import jax

from promot_jax import lora
from promot_jax.prompt import PROMPT_REGEX

_PROMPT_RE = re.compile(PROMPT_REGEX)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    has_prompt: bool
    trains_prompt: bool
    trains_trunk: bool
    prompt_source: str  # "init": the config's initialiser; "previous_stage": a stage-1 export
    description: str
    per_task_prompts: bool = False  # multi-task ProMoT: T5Config.num_prompts > 1
    has_lora: bool = False  # LoRA adapters (T5Config.lora_rank > 0)
    trains_lora: bool = False
    lora_source: str = "init"  # as prompt_source, for the adapters


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("promot_stage1", True, True, False, "init", "ProMoT stage 1: prompt only"),
        Method(
            "promot_stage2",
            True,
            False,
            True,
            "previous_stage",
            "ProMoT stage 2: trunk, with stage 1's prompt attached and frozen",
        ),
        Method(
            "multitask_promot_stage1",
            True,
            True,
            False,
            "init",
            "multi-task ProMoT stage 1: one prompt per task id, trunk frozen",
            per_task_prompts=True,
        ),
        Method(
            "multitask_promot_stage2",
            True,
            False,
            True,
            "previous_stage",
            "multi-task ProMoT stage 2: mixed batches, each task's prompt attached and frozen",
            per_task_prompts=True,
        ),
        Method(
            "promot_stage2_prompt_trainable",
            True,
            True,
            True,
            "previous_stage",
            "ProMoT stage 2 with stage 1's prompt attached and still training",
        ),
        Method(
            "lora_stage1",
            False,
            False,
            False,
            "init",
            "stage 1 with LoRA adapters instead of a prompt: adapters only, trunk frozen",
            has_lora=True,
            trains_lora=True,
        ),
        Method(
            "promot_lora_stage2",
            False,
            False,
            True,
            "init",
            "stage 2 after lora_stage1: trunk, with stage 1's adapters attached and frozen",
            has_lora=True,
            lora_source="previous_stage",
        ),
        Method("prompt_tuning", True, True, False, "init", "prompt tuning baseline"),
        Method("finetune", False, False, True, "init", "standard fine-tuning, no prompt"),
        Method("joint", True, True, True, "init", "prompt and model tuned in one stage"),
        Method(
            "finetune_fixed_random_prompt",
            True,
            False,
            True,
            "init",
            "fine-tuning with a random prompt attached and frozen",
        ),
    )
}


def get_method(name: str) -> Method:
    """The method called `name`; unknown names list the valid ones and the closest."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def is_prompt(path: str) -> bool:
    """Whether a parameter path (with or without the leading "/") belongs to the prompt."""
    return _PROMPT_RE.fullmatch("/" + path.lstrip("/") + "/") is not None


def is_trainable(method: Method | str, path: str) -> bool:
    method = get_method(method) if isinstance(method, str) else method
    if lora.is_lora(path):
        return method.trains_lora
    return method.trains_prompt if is_prompt(path) else method.trains_trunk


def _path_str(key_path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in key_path)


def group(path: str) -> str:
    """The optimizer group of a parameter: "lora", "prompt" or "trunk"."""
    if lora.is_lora(path):
        return "lora"
    return "prompt" if is_prompt(path) else "trunk"


def group_labels(params: Mapping) -> Any:
    """A tree like `params` labelling each leaf with its `group` (optimizer groups)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: group(_path_str(p)), params)


def split(method: Method | str, params: Mapping) -> tuple[dict, dict]:
    """(trainable, frozen) nested dicts; frozen parameters never reach the optimizer."""
    trainable: dict = {}
    frozen: dict = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = _path_str(key_path)
        target = trainable if is_trainable(method, path) else frozen
        node = target
        *parents, last = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return trainable, frozen


def merge(trainable: Mapping, frozen: Mapping) -> dict:
    """Inverse of `split`."""
    out: dict = {}
    for tree in (frozen, trainable):
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            *parents, last = _path_str(key_path).split("/")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = leaf
    return out
