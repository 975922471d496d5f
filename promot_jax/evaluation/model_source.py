"""What to evaluate: parameters and (optionally) a soft prompt from any checkpoint we read.

Accepted: a stage run directory (`stage.json` gives the model; `best_params/` or
`final_params/` the weights, with the prompt if the stage had one), one of our
params directories (its parent's `stage.json` gives the model), a T5X checkpoint
or a transformers directory (the model comes from `--size`, resp. `config.json`).
A `.npy` prompt file replaces a stored prompt. Everything is checked here, before
any decoding: the prompt width must equal the model's `emb_dim`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from promot_jax import checkpoints, network
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints import formats
from promot_jax.evaluation import prompt_rule
from promot_tasks.catalogue import TaskInfo

STAGE_JSON = "stage.json"
PARAMS_DIRS = ("best_params", "final_params")


@dataclasses.dataclass
class LoadedModel:
    """A model to evaluate: `config` has `prompt_length` 0 (no prompt) or P (prompt attached)."""

    config: network.T5Config
    params: dict
    source: str
    prompt_source: str | None  # where the prompt came from; None: no prompt

    @property
    def has_prompt(self) -> bool:
        return self.config.prompt_length > 0

    def without_prompt(self) -> tuple[network.T5Config, dict]:
        """The same model with the soft prompt removed (config and params)."""
        config = dataclasses.replace(self.config, prompt_length=0)
        params = dict(self.params)
        if "prompt" in params.get("encoder", {}):
            params["encoder"] = {k: v for k, v in params["encoder"].items() if k != "prompt"}
        return config, params

    def for_task(
        self, task: TaskInfo, target: TaskInfo, rule: str
    ) -> tuple[bool, network.T5Config, dict]:
        """(prompt attached?, config, params) to evaluate `task` with, for a model tuned on
        `target`: the prompt stays on where `rule` says so and the model has one."""
        if self.has_prompt and prompt_rule.uses_prompt(task, target, rule):
            return True, self.config, self.params
        return False, *self.without_prompt()


def config_from_stage_json(path: Path, **overrides: Any) -> network.T5Config:
    """The model config a stage recorded in `stage.json` (its resume fingerprint)."""
    meta = json.loads(path.read_text())
    if "model" not in meta:
        raise ValueError(f"{path} has no 'model' entry; is it a promot-jax stage.json?")
    fields = {**meta["model"], "dropout_rate": 0.0, **overrides}
    return network.T5Config(**fields)


def _stage_json_for(path: Path) -> Path | None:
    for candidate in (path / STAGE_JSON, path.parent / STAGE_JSON):
        if candidate.is_file():
            return candidate
    return None


def resolve_params_path(path: Path, which: str = "best") -> Path:
    """A stage run directory becomes its `best_params/` (or `final_params/`); other paths stay."""
    if which not in ("best", "final"):
        raise ValueError(f"which must be 'best' or 'final', got {which!r}")
    if (path / STAGE_JSON).is_file():
        chosen = path / f"{which}_params"
        if not chosen.exists():
            have = [d for d in PARAMS_DIRS if (path / d).exists()]
            raise FileNotFoundError(
                f"stage run directory {path} has no {chosen.name}/ (it has {have or 'neither'}); "
                "has the stage finished?"
            )
        return chosen
    return path


def base_config(path: Path, size: str | None, overrides: dict[str, Any]) -> network.T5Config:
    """The architecture of the checkpoint at `path` (without any prompt)."""
    overrides = {**overrides, "prompt_length": 0}
    stage_json = _stage_json_for(path)
    if stage_json is not None:
        return config_from_stage_json(stage_json, **overrides)
    if path.is_dir() and formats.detect(path)[0] == "transformers":
        return checkpoints.t5x_config_from_transformers(path, **overrides)
    if size is None:
        raise ValueError(
            f"{path} records no model config (no stage.json next to it); give the architecture "
            f"with --size (one of {', '.join(network.MT5_SIZES)}) and, for the toy world, "
            "--vocab_size=2176 --dtype=float32"
        )
    return network.mt5_config(size, dropout_rate=0.0, **{k: v for k, v in overrides.items()})


def stored_prompt(path: Path) -> np.ndarray | None:
    """The prompt stored in a checkpoint, or None when it has none."""
    try:
        return checkpoints.load_prompt(path)
    except ValueError:
        return None


def check_prompt_width(prompt: np.ndarray, config: network.T5Config, source: str) -> None:
    if prompt.ndim != 2 or prompt.shape[1] != config.emb_dim:
        raise ValueError(
            f"prompt {source} has shape {tuple(prompt.shape)}, but the model's emb_dim is "
            f"{config.emb_dim}: a prompt must be [prompt_length, {config.emb_dim}]"
        )


def load_model(
    checkpoint: str | Path,
    *,
    prompt_file: str | Path | None = None,
    which: str = "best",
    size: str | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> LoadedModel:
    """Reads the checkpoint and attaches the prompt (from `prompt_file`, else the stored one)."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    params_path = resolve_params_path(path, which)
    config = base_config(path, size, dict(config_overrides or {}))
    given = prompt_lib.load_prompt_file(prompt_file) if prompt_file else None
    if given is not None:
        check_prompt_width(given, config, str(prompt_file))
    stored = stored_prompt(params_path)
    if stored is not None:
        check_prompt_width(stored, config, f"stored in {params_path}")
    prompt_length = (
        int((given if given is not None else stored).shape[0])
        if (given is not None or stored is not None)
        else 0
    )
    read_config = dataclasses.replace(
        config, prompt_length=int(stored.shape[0]) if stored is not None else 0
    )
    params = checkpoints.load_params(params_path, read_config)
    prompt_source = None
    if stored is not None:
        prompt_source = str(params_path)
    if given is not None:
        params.setdefault("encoder", {})["prompt"] = {"prompt": given.astype(np.float32)}
        prompt_source = str(prompt_file)
    config = dataclasses.replace(config, prompt_length=prompt_length)
    return LoadedModel(config, params, str(path), prompt_source)
