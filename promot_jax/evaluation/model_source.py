"""What to evaluate: parameters and (optionally) a soft prompt from any checkpoint we read.

LoRA adapters come with the parameters of a stage that has them (its `stage.json` gives the
rank and targets); the prompt rule attaches or removes them with the prompt. Attached, they
are merged into their kernels (`lora.merge`), so every task decodes with the plain trunk's
compiled search.

Accepted: a stage run directory (`stage.json` gives the model; `best_params/` or
`final_params/` the weights, with the prompt if the stage had one), one of our
params directories (its parent's `stage.json` gives the model), a T5X checkpoint
or a transformers directory (the model comes from `--size`, resp. `config.json`).
A `.npy` prompt file replaces a stored prompt. Everything is checked here, before
any decoding: the prompt width must equal the model's `emb_dim`.

A per-task prompt (`[T, P, d]`, multi-task ProMoT) is evaluated one row at a time, as a
single-prompt model: the row of the task being evaluated (its task id in the stage's
mixture, or `prompt_tasks`), see `prompt_rule.prompt_row`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from promot_jax import checkpoints, network, paths, sharding
from promot_jax import lora as lora_lib
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints import formats
from promot_jax.evaluation import prompt_rule
from promot_jax.paths import Path
from promot_tasks import catalogue
from promot_tasks.catalogue import TaskInfo

STAGE_JSON = "stage.json"
PARAMS_DIRS = ("best_params", "final_params")


@dataclasses.dataclass
class LoadedModel:
    """A model to evaluate: `config` has `prompt_length` 0 (no prompt) or P (prompt attached;
    `num_prompts` T > 1 for a per-task prompt, whose row i is `prompt_tasks[i]`'s), and
    `lora_rank` 0 (no adapters) or r (stage 1's LoRA adapters in `params`)."""

    config: network.T5Config
    params: dict
    source: str
    prompt_source: str | None  # where the prompt came from; None: no prompt
    prompt_tasks: tuple[str, ...] = ()  # per-task prompt: the task of each row, id order
    adapter_source: str | None = None  # where the adapters came from (default: `source`)

    def __post_init__(self):
        if self.has_adapters and self.adapter_source is None:
            self.adapter_source = self.source

    @classmethod
    def training(cls, config: network.T5Config, params: dict) -> LoadedModel:
        """Parameters of a stage being trained (the monitor's, the pilot's probe)."""
        return cls(config, params, "training", "training" if config.prompt_length else None)

    def place(self, mesh: Mesh) -> LoadedModel:
        """The same model with its parameters on `mesh`, in the shardings training gives them
        (`sharding.param_shardings`), so a `Decoder` on that mesh reads them where they are."""
        params = jax.device_put(self.params, sharding.param_shardings(self.config, mesh))
        return dataclasses.replace(self, params=params)

    @property
    def has_prompt(self) -> bool:
        return self.config.prompt_length > 0

    @property
    def has_adapters(self) -> bool:
        return self.config.lora_rank > 0

    def bare(self) -> tuple[network.T5Config, dict]:
        """The trunk alone, soft prompt and LoRA adapters removed (config and params)."""
        config = prompt_lib.config_without_prompt(self.config)
        params = prompt_lib.drop_prompt(self.params)
        if self.has_adapters:
            config = lora_lib.config_without_adapters(config)
            params = lora_lib.drop_adapters(params)
        return config, params

    def attached(self, row: int | None = None) -> tuple[network.T5Config, dict]:
        """The model with stage 1's parts on (config and params): the prompt (of a per-task
        prompt, row `row` alone) and the adapters, merged into their kernels."""
        config, params = self.config, self.params
        if row is not None:
            table = np.asarray(prompt_lib.get_prompt(params))
            config = dataclasses.replace(config, num_prompts=1)
            params = prompt_lib.set_prompt(params, table[row])
        return lora_lib.merge(params, config)

    def prompt_row(self, task: TaskInfo, target: TaskInfo, rule: str) -> int | None:
        """The row of the per-task prompt `task` is evaluated with (None: no prompt)."""
        if rule != "never" and not self.prompt_tasks:
            raise ValueError(
                f"{self.prompt_source} holds a per-task prompt of {self.config.num_prompts} "
                "rows but nothing says which task each row is for (no multi-task mixture in "
                "its stage.json); pass --prompt_tasks=<task of row 0>,<task of row 1>,..."
            )
        infos = [catalogue.task_info(name) for name in self.prompt_tasks]
        return prompt_rule.prompt_row(task, target, rule, infos, str(self.prompt_source))

    def for_task(
        self, task: TaskInfo, target: TaskInfo, rule: str
    ) -> tuple[bool, network.T5Config, dict]:
        """(stage 1's parts attached?, config, params) to evaluate `task` with, for a model
        tuned on `target`: the prompt and the adapters stay on where `rule` says so and the
        model has them; of a per-task prompt, the row of `task`'s own task (or format)."""
        if not (self.has_prompt or self.has_adapters):
            return False, *self.bare()
        if self.config.num_prompts > 1:
            row = self.prompt_row(task, target, rule)
            if row is None:
                return False, *self.bare()
            return True, *self.attached(row)
        if prompt_rule.uses_prompt(task, target, rule):
            return True, *self.attached()
        return False, *self.bare()

    def check_tasks(self, tasks: Iterable[TaskInfo], target: TaskInfo, rule: str) -> None:
        """Fails, before any decoding, when `rule` attaches a prompt for one of `tasks` that
        this model cannot give: it has none, or its per-task prompt has no row for it."""
        tasks = list(tasks)
        prompt_rule.require_prompt(
            tasks, target, rule, self.has_prompt or self.has_adapters, self.source
        )
        if self.has_prompt and self.config.num_prompts > 1:
            for task in tasks:
                self.prompt_row(task, target, rule)


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
    overrides = {**overrides, "prompt_length": 0, "num_prompts": 1}
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


def prompt_tasks_of(
    path: Path, config: network.T5Config, given: Sequence[str] | None
) -> tuple[str, ...]:
    """The task of each row of a per-task prompt: `given`, else the tasks of the stage's
    multi-task mixture in task-id order (what its training fed each row); () if unknown."""
    if config.num_prompts == 1:
        if given:
            raise ValueError(
                f"prompt_tasks ({', '.join(given)}) name the task of each row of a per-task "
                f"prompt, but the prompt of {path} is a single [{config.prompt_length}, "
                f"{config.emb_dim}] one"
            )
        return ()
    names: tuple[str, ...] = tuple(given or ())
    stage_json = _stage_json_for(path)
    if not names and stage_json is not None:
        import promot_tasks  # noqa: F401  (registers the mixtures)
        from promot_tasks import mixtures

        names = mixtures.tasks_by_id(json.loads(stage_json.read_text()).get("mixture", ""))
    if names and len(names) != config.num_prompts:
        raise ValueError(
            f"the prompt of {path} has {config.num_prompts} rows, but {len(names)} prompt tasks "
            f"are named ({', '.join(names)}): give one task per row, in task-id order"
        )
    for name in names:
        catalogue.task_info(name)  # an unknown name fails with the closest registered ones
    return names


def load_model(
    checkpoint: str | Path,
    *,
    prompt_file: str | Path | None = None,
    which: str = "best",
    size: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    prompt_tasks: Sequence[str] | None = None,
) -> LoadedModel:
    """Reads the checkpoint and attaches the prompt (from `prompt_file`, else the stored one);
    LoRA adapters come with the parameters of a stage whose `stage.json` has them.

    `prompt_tasks` names the task of each row of a per-task prompt (default: the stage's
    multi-task mixture, in task-id order).
    """
    path = paths.checked(checkpoint, "checkpoint")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    params_path = resolve_params_path(path, which)
    config = base_config(path, size, dict(config_overrides or {}))
    given = given_config = None
    if prompt_file:
        given = prompt_lib.load_prompt_file(prompt_file)
        given_config = prompt_lib.config_with_prompt(
            config, given.shape, f"prompt file {prompt_file}"
        )
    stored = stored_prompt(params_path)
    read_config = config
    if stored is not None:
        read_config = prompt_lib.config_with_prompt(
            config, stored.shape, f"prompt stored in {params_path}"
        )
    params = checkpoints.load_params(params_path, read_config)
    config, prompt_source = read_config, str(params_path) if stored is not None else None
    if given is not None:
        params = prompt_lib.set_prompt(params, given.astype(np.float32))
        config, prompt_source = given_config, str(prompt_file)
    tasks = prompt_tasks_of(path, config, prompt_tasks)
    adapter_source = str(params_path) if config.lora_rank else None
    return LoadedModel(config, params, str(path), prompt_source, tasks, adapter_source)
