"""One training stage, top to bottom: build params, split trainable from frozen, loop, save.

A stage is one method (see `methods`) on one SeqIO mixture. ProMoT is two stages
(`experiment.run_experiment` chains them): `promot_stage1` trains only the soft
prompt, `promot_stage2` trains the trunk with stage 1's prompt attached and frozen.

Frozen means frozen and free: gradients are taken with respect to the trainable
subtree only, and the optimizer state exists only for it. Checkpoints hold the
trainable subtree, its optimizer state and the data position; frozen parameters
are rebuilt from the stage's sources (recorded in `stage.json`), so a stage-1
checkpoint of mT5-XXL is a few megabytes.

Run directory layout:
  stage.json            every setting of the stage (`StageConfig.fingerprint`); a run
                        directory holding a different stage is refused, never overwritten
  config.gin            the resolved gin config (when run through gin)
  checkpoints/<step>/   orbax: {state: trainable + opt_state, data: batches consumed}
  damaged_checkpoints/  steps that failed to restore (moved here, never deleted)
  metrics.jsonl, tb/    training and evaluation scalars
  final_params/, best_params/   full parameter trees (our orbax params format)
  prompt.npy, best_prompt.npy   the soft prompt, `[P, d]` (per task `[T, P, d]`) float32
  adapters.npz, best_adapters.npz   LoRA adapters `{path: array}` float32 (`promot_jax.lora`)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from promot_jax import batches, checkpoints, losses, methods, network, run_dirs, sharding
from promot_jax import lora as lora_lib
from promot_jax import paths as path_lib
from promot_jax import prompt as prompt_lib
from promot_jax.optimizer import OptimizerConfig, make_optimizer
from promot_jax.paths import Path
from promot_jax.run_log import RunLog

EvalFn = Callable[[dict, int], dict[str, float]]

# Placeholder for `prompt_file` / `adapter_file` / `init_checkpoint` inside an experiment:
# the previous stage's best prompt / best adapters / final parameters (see `experiment`).
PREVIOUS_STAGE = "previous_stage"
DEFAULT_RNG_IMPL = "threefry2x32"
RNG_IMPLS = (DEFAULT_RNG_IMPL, "rbg", "unsafe_rbg")


@dataclasses.dataclass
class StageConfig:
    """Everything one stage needs; validated before anything is created on disk."""

    method: str
    mixture: str
    model: network.T5Config
    steps: int
    run_dir: str = ""  # inside an experiment: <experiment run_dir>/<stage name>
    batch_size: int = 64
    feature_lengths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"inputs": 512, "targets": 128}
    )
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    label_smoothing: float = 0.0
    z_loss: float = 1e-4
    loss_normalizing_factor: float | str | None = "num_real_target_tokens"
    init_checkpoint: str | None = None  # trunk (and prompt, if stored); None: random init
    prompt_file: str | None = None  # `[P, d]` (`[T, P, d]`) .npy; promot_stage2 requires it
    adapter_file: str | None = None  # LoRA adapters .npz; promot_lora_stage2 requires it
    save_every: int = 1000
    keep: int = 2
    eval_every: int = 0  # 0: evaluate only at the end
    eval_split: str = "validation"
    eval_batches: int = 4
    best_metric: str = "eval/loss"
    best_mode: str = "min"
    log_every: int = 10
    mesh_data: int = -1
    mesh_model: int = 1
    seed: int = 0
    train_split: str = "train"
    pack: bool = False  # several examples per row (prompt-free stages only, e.g. pretraining)
    # PRNG behind dropout: jax's default threefry, or XLA's generator ("unsafe_rbg", what
    # T5X uses on TPU): a different stream, cheaper to compile and to run.
    rng_impl: str = DEFAULT_RNG_IMPL

    def __post_init__(self):
        method = methods.get_method(self.method)
        if self.rng_impl not in RNG_IMPLS:
            raise ValueError(f"rng_impl must be one of {RNG_IMPLS}, got {self.rng_impl!r}")
        if method.has_prompt and self.model.prompt_length == 0:
            raise ValueError(
                f"method {self.method!r} attaches a soft prompt, but the model has "
                "prompt_length=0; set T5Config.prompt_length (the paper uses 100)"
            )
        if not method.has_prompt and self.model.prompt_length:
            raise ValueError(
                f"method {self.method!r} has no soft prompt, but the model has "
                f"prompt_length={self.model.prompt_length}; set it to 0"
            )
        if method.per_task_prompts != (self.model.num_prompts > 1):
            fix = (
                "set T5Config.num_prompts to the number of tasks"
                if method.per_task_prompts
                else "use multitask_promot_stage1/2 for per-task prompts"
            )
            raise ValueError(
                f"method {self.method!r} and num_prompts={self.model.num_prompts} disagree: {fix}"
            )
        if self.pack and method.has_prompt:
            raise ValueError(
                f"pack=True packs several examples into a row, which method {self.method!r} "
                "cannot do: its soft prompt would be attached once per row; set pack=False"
            )
        self._check_stage1_file(
            "prompt_file", "soft prompt", method.has_prompt, method.prompt_source, "prompt.npy"
        )
        self._check_adapters(method)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1 ({self.steps}, {self.batch_size})")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        for key in ("inputs", "targets"):
            if key not in self.feature_lengths:
                raise ValueError(f"feature_lengths needs {key!r}, got {dict(self.feature_lengths)}")

    def _check_adapters(self, method: methods.Method) -> None:
        if method.has_lora and not self.model.lora_rank:
            raise ValueError(
                f"method {self.method!r} attaches LoRA adapters, but the model has lora_rank="
                f"{self.model.lora_rank}; set T5Config.lora_rank to a rank >= 1"
            )
        if not method.has_lora and self.model.lora_rank:
            raise ValueError(
                f"method {self.method!r} has no LoRA adapters, but the model has lora_rank="
                f"{self.model.lora_rank}; set it to 0"
            )
        self._check_stage1_file(
            "adapter_file", "LoRA adapters", method.has_lora, method.lora_source, "adapters.npz"
        )
        if method.has_lora:
            lora_lib.check_targets(self.model)

    def _check_stage1_file(self, field: str, what: str, has: bool, source: str, export: str):
        """`field` (prompt_file / adapter_file) is set only when the method has `what`, is
        set when the method takes it from stage 1, and names a file that exists."""
        value = getattr(self, field)
        if value and not has:
            raise ValueError(f"method {self.method!r} has no {what}; {field} must not be set")
        if source == "previous_stage" and not value:
            raise ValueError(
                f"method {self.method!r} needs stage 1's {what}: set {field} to the stage-1 "
                f"export ({export} or best_{export}), or run both stages with `promot-jax run`"
            )
        if value not in (None, PREVIOUS_STAGE) and not path_lib.checked(value, field).is_file():
            raise FileNotFoundError(f"{field} {value} does not exist")

    def fingerprint(self, paths: Mapping[str, str | None] | None = None) -> dict:
        """Every setting of the stage, as JSON (what `stage.json` records).

        A run directory is reused only when all of it is equal but `REUSABLE_CHANGES`.
        `paths` overrides `prompt_file` / `init_checkpoint` (an experiment's planned ones);
        paths inside the experiment (the run directory's parent) are recorded relative
        to it, so a run directory can be moved or copied and still resume.
        """
        record = dataclasses.asdict(self)
        model = dataclasses.asdict(self.model)
        prompt_init = model.pop("prompt_init")
        dtypes = ("dtype", *network.PARAM_DTYPE_FIELDS)
        model = {k: (str(np.dtype(v)) if k in dtypes else v) for k, v in model.items()}
        # Dtype fields added after run directories were first recorded are left out at their
        # default, so those directories (which had only the default) still resume.
        defaults = {f.name: f.default for f in dataclasses.fields(network.T5Config)}
        for name in ADDED_MODEL_FIELDS:
            if model[name] == str(np.dtype(defaults[name])):
                del model[name]
        model["mlp_activations"] = list(model["mlp_activations"])
        record["model"] = model
        record["prompt_init"] = describe_callable(prompt_init)
        record["feature_lengths"] = dict(self.feature_lengths)
        root = path_lib.absolute(self.run_dir).parent if self.run_dir else None
        for field in PATH_FIELDS:
            value = (paths or {}).get(field, getattr(self, field))
            record[field] = _portable(value, root)
        if not self.model.lora_rank:
            # A stage without adapters records what promot-jax recorded before adapters
            # existed, so its run directories still resume.
            for key in lora_lib.CONFIG_FIELDS:
                record["model"].pop(key, None)
            del record["optimizer"]["lora_learning_rate"], record["adapter_file"]
        record["run_dir"] = path_lib.path(self.run_dir).name
        return json.loads(json.dumps(record))


# T5Config fields recorded in stage.json only when they differ from their default.
ADDED_MODEL_FIELDS = ("prompt_param_dtype", "lora_param_dtype")

# The fields that name files; inside an experiment a file of the run is recorded relative to it.
PATH_FIELDS = ("prompt_file", "adapter_file", "init_checkpoint")

# Settings that may differ when a run directory is reused: they change how the run is
# logged, evaluated and saved, not the parameters it trains (`steps` only upwards).
REUSABLE_CHANGES = ("run_dir", "steps", "log_every", "eval_every", "save_every", "keep")


def _portable(path: str | None, root: Path | None) -> str | None:
    if path in (None, PREVIOUS_STAGE) or root is None:
        return path
    absolute = path_lib.absolute(path)
    if path_lib.is_remote(absolute) != path_lib.is_remote(root):
        return str(absolute)
    return str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(absolute)


def describe_callable(fn) -> str | None:
    """A stable description of an initialiser closure: its name and the values it closes
    over (arrays by shape, dtype and a hash), so a changed initialiser is seen."""
    if fn is None:
        return None
    parts = [f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"]
    for cell in getattr(fn, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, (int, float, str, bool, type(None))):
            parts.append(repr(value))
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            array = np.asarray(value)
            digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
            parts.append(f"array{list(array.shape)}:{array.dtype}:{digest}")
        elif callable(value):
            parts.append(describe_callable(value))
        else:
            parts.append(type(value).__name__)
    return parts[0] + (f"({', '.join(parts[1:])})" if len(parts) > 1 else "")


@dataclasses.dataclass(frozen=True)
class StageResult:
    run_dir: Path
    steps: int
    final_params: Path
    best_params: Path
    prompt: Path | None
    best_prompt: Path | None
    metrics: dict[str, float]
    adapters: Path | None = None
    best_adapters: Path | None = None


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept as it was."""


# --------------------------------------------------------------------------- the step


def make_train_step(
    model: network.Transformer,
    tx: optax.GradientTransformation,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    loss_normalizing_factor: float | str | None = "num_real_target_tokens",
    state_shardings: tuple | None = None,
):
    """The jitted update: gradients w.r.t. `trainable` only; `frozen` enters as a constant.

    `state_shardings` (trainable's, the optimizer state's) pins the updated state to
    the shardings it came in with, so the second step does not compile again for the
    shardings the compiler would otherwise pick for the outputs.
    """
    loss_kwargs = dict(
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        loss_normalizing_factor=loss_normalizing_factor,
    )

    def step(trainable, frozen, opt_state, batch, rng):
        def loss_fn(trainable):
            params = methods.merge(trainable, frozen)
            return losses.batch_loss(model, params, batch, rng, **loss_kwargs)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}

    out_shardings = None if state_shardings is None else (*state_shardings, None)
    return jax.jit(step, donate_argnums=(0, 2), out_shardings=out_shardings)


@dataclasses.dataclass(frozen=True)
class _StageFunctions:
    mesh: Mesh
    param_shardings: dict  # where every parameter lives; the step keeps the trainable ones there
    init_opt_state: Callable
    train_step: Callable
    eval_step: Callable


def _stage_key(cfg: StageConfig) -> tuple:
    return (
        cfg.model,
        cfg.method,
        cfg.optimizer,
        cfg.label_smoothing,
        cfg.z_loss,
        cfg.loss_normalizing_factor,
        sharding.make_mesh(cfg.mesh_data, cfg.mesh_model),
    )


@functools.lru_cache(maxsize=8)
def _stage_functions(
    model_cfg: network.T5Config,
    method: str,
    optimizer: OptimizerConfig,
    label_smoothing: float,
    z_loss: float,
    loss_normalizing_factor: float | str | None,
    mesh: Mesh,
) -> _StageFunctions:
    """A stage's jitted functions, shared by every stage of this process with the same
    configuration: a chain of equal stages (seeds, the lab) traces and compiles them once.
    The trainable parameters and the optimizer state keep their shardings on `mesh`
    from the first step on (one compiled step, not one per sharding layout)."""
    model = network.Transformer(model_cfg)
    tx = make_optimizer(method, optimizer)
    trainable_shapes = methods.split(method, network.abstract_variables(model_cfg)["params"])[0]
    param_shardings = sharding.param_shardings(model_cfg, mesh)
    trainable_shardings = methods.split(method, param_shardings)[0]
    opt_shardings = sharding.optimizer_state_shardings(
        jax.eval_shape(tx.init, trainable_shapes), trainable_shapes, trainable_shardings, mesh
    )
    return _StageFunctions(
        mesh,
        param_shardings,
        jax.jit(tx.init, out_shardings=opt_shardings),
        make_train_step(
            model,
            tx,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            loss_normalizing_factor=loss_normalizing_factor,
            state_shardings=(trainable_shardings, opt_shardings),
        ),
        jax.jit(lambda params, batch: losses.batch_loss(model, params, batch)),
    )


@functools.lru_cache(maxsize=16)
def _eval_batches(
    mixture: str,
    split: str,
    lengths: tuple[tuple[str, int], ...],
    batch_size: int,
    count: int,
    task_ids: bool,
    pack: bool,
) -> tuple[dict, ...]:
    """A stage's fixed evaluation batches (unshuffled, so equal for every seed), read once
    per process and shared by every stage that asks for the same ones."""
    return tuple(
        itertools.islice(
            batches.batch_iterator(
                mixture,
                split,
                dict(lengths),
                batch_size,
                shuffle=False,
                repeat=False,
                task_id_token=task_ids,
                pack=pack,
            ),
            count,
        )
    )


# --------------------------------------------------------------------------- the stage


def _checked_prompt(cfg: StageConfig) -> np.ndarray:
    """`prompt_file`'s array, checked against the model's prompt shape."""
    return prompt_lib.load_prompt_file(cfg.prompt_file, cfg.model)


def _checked_adapters(cfg: StageConfig) -> dict[str, np.ndarray]:
    """`adapter_file`'s adapters, checked against the model's."""
    return lora_lib.load_adapter_file(cfg.adapter_file, cfg.model)


def initial_params(cfg: StageConfig) -> dict:
    """Params at step 0: from `init_checkpoint` (or random), the prompt from `prompt_file`,
    the adapters from `adapter_file`; each group in the dtype the model config gives it."""
    model_cfg = cfg.model
    prompt = _checked_prompt(cfg) if cfg.prompt_file else None
    adapters = _checked_adapters(cfg) if cfg.adapter_file else None
    if cfg.init_checkpoint is None:
        params = network.init_params(model_cfg, jax.random.key(cfg.seed))
        params = jax.tree_util.tree_map(np.asarray, params)
    else:
        # The trunk (and the prompt and adapters, if the checkpoint has them; else the
        # config's initialisers) from the checkpoint; then the files, when given, win.
        missing_ok = (prompt_lib.PROMPT_KEY,) if model_cfg.prompt_length else ()
        params = checkpoints.load_params(
            cfg.init_checkpoint,
            model_cfg,
            dtype=checkpoints.AS_CONFIG,
            missing_ok=missing_ok + ((lora_lib.LORA_REGEX,) if model_cfg.lora_rank else ()),
            rng=cfg.seed,
        )
    if prompt is not None:
        params = prompt_lib.set_prompt(params, prompt.astype(model_cfg.prompt_param_dtype))
    if adapters is not None:
        dtype = model_cfg.lora_param_dtype
        params = lora_lib.set_adapters(params, {p: a.astype(dtype) for p, a in adapters.items()})
    return params


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps saved under `run_dir/checkpoints`, oldest first (from the folder names)."""
    folder = path_lib.path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def check_run_dir(cfg: StageConfig, paths: Mapping[str, str | None] | None = None) -> Path:
    """Fails, writing nothing, unless `cfg.run_dir` is new or holds this very stage.

    Every setting must equal the recorded one but `REUSABLE_CHANGES`; `steps` may only
    be raised past the saved checkpoints. The refusal names each differing setting.
    `paths`: see `StageConfig.fingerprint`.
    """
    run_dir = path_lib.checked(cfg.run_dir, "run_dir")
    recorded = run_dirs.check_record(
        run_dir / "stage.json",
        cfg.fingerprint(paths),
        what="a different stage",
        fix="choose a new run directory or restore the old settings",
        ignore=REUSABLE_CHANGES,
        where=f"run directory {run_dir}",
    )
    if not recorded and (run_dir / "checkpoints").exists():
        raise ValueError(f"{run_dir}/checkpoints exists without stage.json; refusing to touch it")
    saved = checkpoint_steps(run_dir)
    if saved and cfg.steps < saved[-1]:
        raise ValueError(
            f"steps={cfg.steps}, but {run_dir} has trained to step {saved[-1]} already; "
            f"steps can only be raised (set steps >= {saved[-1]}, or use a new run directory)"
        )
    return run_dir


DAMAGED_DIR = "damaged_checkpoints"


def _restore_newest_good(manager: ocp.CheckpointManager, run_dir: Path, target: dict):
    """(step, restored) of the newest checkpoint that restores cleanly, or None if none is
    saved. Newer ones that fail are moved, not deleted, to `run_dir/damaged_checkpoints/`
    (the run says which, and why); when every checkpoint fails, nothing is moved and the
    run stops naming each failure."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore())
    failed: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=args)
        except Exception as e:  # orbax and tensorstore raise many kinds; the step is skipped
            failed.append((step, " ".join(str(e).split())[:240]))
            continue
        for bad, why in failed:
            aside = run_dir / DAMAGED_DIR / str(bad)
            aside.parent.mkdir(exist_ok=True)
            if aside.exists():
                aside = aside.with_name(f"{bad}-{time.strftime('%Y%m%d-%H%M%S')}")
            path_lib.move(run_dir / "checkpoints" / str(bad), aside)
            print(
                f"promot-jax: warning: checkpoint step {bad} in {run_dir}/checkpoints does not "
                f"restore ({why}); moved to {aside}, resuming from step {step}",
                file=sys.stderr,
            )
        if failed:
            manager.reload()
        return step, restored
    if failed:
        manager.close()
        raise ValueError(
            f"no checkpoint in {run_dir}/checkpoints restores: "
            + "; ".join(f"step {s}: {why}" for s, why in failed)
            + ". They are left as they are: move them away to start the stage from step 0"
        )
    return None


EXPORT_NAMES = {
    "final": ("final_params", "prompt.npy", "adapters.npz"),
    "best": ("best_params", "best_prompt.npy", "best_adapters.npz"),
}


def _export(run_dir: Path, params: dict, which: str, method: methods.Method) -> tuple:
    """Writes the full params (and the prompt, the adapters) of the final or best step,
    atomically; returns their paths (None for what the method does not have)."""
    params_name, prompt_name, adapters_name = EXPORT_NAMES[which]
    params = jax.device_get(params)
    params_path = checkpoints.save_params(params, run_dir / params_name, force=True)
    prompt_path = adapters_path = None
    if method.has_prompt:
        prompt_path = prompt_lib.save_prompt_file(
            prompt_lib.get_prompt(params), run_dir / prompt_name
        )
    if method.has_lora:
        adapters_path = lora_lib.save_adapter_file(
            lora_lib.get_adapters(params), run_dir / adapters_name
        )
    return params_path, prompt_path, adapters_path


def planned_result(cfg: StageConfig) -> StageResult:
    """Where the stage's outputs are (or will be) in its run directory."""
    run_dir = path_lib.path(cfg.run_dir)
    method = methods.get_method(cfg.method)
    (final, prompt, adapters), (best, best_prompt, best_adapters) = (
        [run_dir / name for name in EXPORT_NAMES[w]] for w in ("final", "best")
    )
    return StageResult(
        run_dir,
        cfg.steps,
        final,
        best,
        prompt if method.has_prompt else None,
        best_prompt if method.has_prompt else None,
        {},
        adapters if method.has_lora else None,
        best_adapters if method.has_lora else None,
    )


def finished_result(cfg: StageConfig) -> StageResult | None:
    """The outputs of a stage whose run directory already holds its final export, else None."""
    result = planned_result(cfg)
    return result if checkpoints.params_complete(result.final_params) else None


def validate(cfg: StageConfig, paths: Mapping[str, str | None] | None = None) -> None:
    """Every check `train_stage` makes before it writes anything: the run directory, the
    batch against the mesh, the prompt file's shape. `paths`: see `StageConfig.fingerprint`."""
    check_run_dir(cfg, paths)
    sharding.check_batch_size(cfg.batch_size, sharding.make_mesh(cfg.mesh_data, cfg.mesh_model))
    if cfg.prompt_file not in (None, PREVIOUS_STAGE):
        _checked_prompt(cfg)
    if cfg.adapter_file not in (None, PREVIOUS_STAGE):
        _checked_adapters(cfg)


def train_stage(cfg: StageConfig, eval_fn: EvalFn | None = None) -> StageResult:
    """Runs (or resumes) one stage and returns where its outputs are.

    A stage that already finished (final export present, latest checkpoint at
    `steps`) is not rebuilt: its outputs are returned as they are.
    """
    method = methods.get_method(cfg.method)
    if PREVIOUS_STAGE in (cfg.prompt_file, cfg.adapter_file, cfg.init_checkpoint):
        raise ValueError(
            f"{cfg.method}: prompt_file/adapter_file/init_checkpoint say {PREVIOUS_STAGE!r}, "
            "which only an experiment can resolve; run it with `promot-jax run` or give real "
            "paths"
        )
    if not cfg.run_dir:
        raise ValueError("StageConfig.run_dir is empty; give the stage a run directory")
    run_dir = path_lib.path(cfg.run_dir)
    validate(cfg)
    done_already = finished_result(cfg)
    # `steps` may have been raised since: then the stage goes on training.
    if done_already is not None and checkpoint_steps(run_dir)[-1:] == [cfg.steps]:
        return done_already
    fns = _stage_functions(*_stage_key(cfg))
    mesh = fns.mesh
    params = jax.device_put(initial_params(cfg), fns.param_shardings)
    trainable, frozen = methods.split(method, params)
    del params
    opt_state = fns.init_opt_state(trainable)

    run_dir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        run_dirs.write_atomic(run_dir / "stage.json", json.dumps(cfg.fingerprint(), indent=2))
    manager = ocp.CheckpointManager(
        path_lib.absolute(run_dir / "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, create=True, enable_async_checkpointing=False
        ),
    )
    start, consumed = 0, 0
    best: dict = {}
    restored = _restore_newest_good(
        manager, run_dir, {"trainable": trainable, "opt_state": opt_state}
    )
    if restored is not None:
        start, restored = restored
        trainable = restored.state["trainable"]
        opt_state = restored.state["opt_state"]
        consumed = restored.data["batches"]
        best = restored.data.get("best", {})

    train_step, eval_step = fns.train_step, fns.eval_step
    task_ids = cfg.model.num_prompts > 1
    data = batches.batch_iterator(
        cfg.mixture,
        cfg.train_split,
        cfg.feature_lengths,
        cfg.batch_size,
        seed=cfg.seed,
        start_batch=consumed,
        task_id_token=task_ids,
        pack=cfg.pack,
    )
    log = RunLog(run_dir, cfg.steps, start, desc=f"{cfg.method}")
    base_rng = jax.random.key(cfg.seed, impl=cfg.rng_impl)

    def evaluate(step: int) -> dict[str, float]:
        eval_batches = _eval_batches(
            cfg.mixture,
            cfg.eval_split,
            tuple(sorted(cfg.feature_lengths.items())),
            cfg.batch_size,
            cfg.eval_batches,
            task_ids,
            cfg.pack,
        )
        params = methods.merge(trainable, frozen)
        totals = {"loss": 0.0, "accuracy": 0.0}
        for batch in eval_batches:
            loss, aux = eval_step(params, sharding.global_batch(batch, mesh))
            totals["loss"] += float(loss)
            totals["accuracy"] += float(aux["accuracy"])
        scores = {f"eval/{k}": v / max(len(eval_batches), 1) for k, v in totals.items()}
        if eval_fn is not None:
            scores.update(eval_fn(params, step))
        return scores

    def save(step: int, scores: dict | None) -> None:
        nonlocal best
        if scores is not None and cfg.best_metric in scores:
            value = scores[cfg.best_metric]
            better = not best or (
                value < best["value"] if cfg.best_mode == "min" else value > best["value"]
            )
            if better:
                best = {"step": step, "value": value}
                _export(run_dir, methods.merge(trainable, frozen), "best", method)
        log.flush()  # a gs:// run's scalars up to this step, uploaded before its checkpoint
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"trainable": trainable, "opt_state": opt_state}),
                data=ocp.args.JsonSave({"batches": step, "best": best}),
            ),
            force=True,
        )

    last = {}
    # Metrics stay on the device until a step logs, evaluates or saves: reading them every
    # step would block dispatch. They are all read then, in one transfer, and checked
    # before anything is written, so a non-finite loss between two reads is still caught
    # and nothing after it is saved.
    pending: list[tuple[int, dict]] = []
    tokens_since = 0.0

    def read_pending() -> dict[str, float]:
        nonlocal tokens_since
        host = jax.device_get([m for _, m in pending])
        for (step, _), metrics in zip(pending, host, strict=True):
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}; stopped. The last good checkpoint "
                    f"(step {manager.latest_step()}) in {run_dir}/checkpoints is unchanged"
                )
            tokens_since += float(metrics["num_tokens"])
        pending.clear()
        return {f"train/{k}": float(v) for k, v in host[-1].items()}

    try:
        for step in range(start, cfg.steps):
            batch = sharding.global_batch(next(data), mesh)
            rng = jax.random.fold_in(base_rng, step)
            trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batch, rng)
            done = step + 1
            pending.append((done, metrics))
            logs = done % cfg.log_every == 0 or done == cfg.steps
            evals = bool(cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps
            saves = evals or done % cfg.save_every == 0
            if not (logs or saves):
                continue
            newest = read_pending()
            if logs:
                last = newest
                log.scalars(done, last)
                log.progress(done, last["train/loss"], tokens_since)
                tokens_since = 0.0
            scores = None
            if evals:
                scores = evaluate(done)
                log.scalars(done, scores)
                last.update(scores)
            if saves:
                save(done, scores)
    finally:
        log.close()
        manager.wait_until_finished()
        manager.close()

    final = _export(run_dir, methods.merge(trainable, frozen), "final", method)
    planned = planned_result(cfg)
    best = (planned.best_params, planned.best_prompt, planned.best_adapters)
    if not checkpoints.params_complete(planned.best_params):
        best = _export(run_dir, methods.merge(trainable, frozen), "best", method)
    return StageResult(
        run_dir, cfg.steps, final[0], best[0], final[1], best[1], last, final[2], best[2]
    )
