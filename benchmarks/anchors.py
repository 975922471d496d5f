"""Our training step against what a user would pick instead, side by side, case by case.

Sides (each case of each side in its own process, so peak RSS is its own):
  ours  promot_jax's runner: `train._stage_functions`, the jitted step `train_stage` runs.
  hf    transformers' MT5ForConditionalGeneration in PyTorch with
        transformers.optimization.Adafactor, and peft's PromptTuningConfig for the prompt.
  t5x   T5X's train step built from the project's T5X gins (gin/t5x/); only where
        `import t5x` works (it is not on PyPI), skipped otherwise.

Methods: finetune (no prompt, the whole model trains); promot_stage1 (= prompt tuning: the
prompt trains, the trunk is frozen; HF: peft prompt tuning with num_transformer_submodules=1,
the prompt on the encoder's inputs as ours, where peft's seq2seq default also prepends one to
the decoder's); promot_stage2 (the trunk trains,
the prompt is attached and frozen; HF: the same peft model with `requires_grad` flipped: the
prompt encoder's embedding off, every base-model parameter on, the optimizer given only the
parameters that train).

Shapes:
  mt5_small  mT5-small (d 512, 6x64 heads, MLP 1024, 8+8 layers) with T5's 32,128-piece
             vocabulary, batch 8, 512 input / 128 target tokens, P = 100, dropout 0,
             float32, random weights (what benchmarks/train_step.py measured in issues 2, 4).
  lab        the mini-lab's stages as promot_jax/lab/plan.py builds them: the shipped base
             (promot_jax/lab/base_model, 128-d 3+3 layers, vocab 2176), batch 16, the
             primary target's rows (49 input / 4 target tokens), P = 50; the model-tuning
             stages with dropout 0.1 and label smoothing 0.1, the prompt stage without either.
  tiny       a 2+2-layer 64-d model at a few tokens: the CI test of this script's structure.

Optimizer, the same on both sides: Adafactor, factored second moments, decay rate 0.8
(HF: decay_rate=-0.8, the same 1 - t^-0.8), update clipping 1.0, epsilon 1e-30, no momentum,
parameter scaling on for the trunk and off for the prompt, the recipe's learning rates
(the lab's for the lab shape). Where they differ: optax factors a matrix only when both of its
dims are >= 128 (the prompt [P, d] with P < 128 and the relative-position tables keep a full
second moment), HF factors every matrix; the prompt's weight decay 1e-5 is not multiplied by
the learning rate in optax (nor in T5X), HF multiplies it, so HF gets 1e-5 / lr. The loss:
ours is T5X's (mean over target tokens, + z-loss 1e-4), HF's is its built-in mean cross-entropy
(with `label_smoothing` when the stage has it).

Threads: every worker is pinned to the same `--threads` CPUs (os.sched_setaffinity before jax or
torch is imported: XLA sizes its intra-op pool from the CPUs it may run on) and sets
torch.set_num_threads(threads) (torch.set_num_interop_threads(1)).

Denormals: XLA:CPU computes with denormal floats flushed to zero; torch by default does not, and
in float32 at the mT5-small shape HF's full-model step then grows within a run as its
arithmetic meets denormals (5.9, 6.2, 7.9, 10.5, 13.4, 14.1 s; no parameter or optimizer-state
value is denormal, so they arise in the step's intermediates). The HF worker calls
torch.set_flush_denormal(True), the arithmetic XLA uses: its steps are then flat (4.5-5.1 s).

Allocator: our workers run under the C allocator `promot-jax` runs under (jemalloc with page
decay off where it is installed, promot_jax/allocator.py; `PROMOT_JAX_MALLOC=system` for
glibc's, also as `--ab PROMOT_JAX_MALLOC=system` to compare the two in turn), HF's and T5X's
under this process's own (glibc's unless LD_PRELOAD says otherwise: `LD_PRELOAD=libjemalloc.so.2
MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 python benchmarks/anchors.py` gives every side
jemalloc). The header says which each side got, and the faults column (minor page faults per
step) shows what it costs.

Timing: the workers of one group (the sides of one method, or with `--together` every case of
a shape) are alive at once and are stepped in turn, one step each per round, alternating the
order every round, so a drift of the machine's load hits them alike. Step time is the median
of `--steps` timed steps after `--warmup` untimed ones; tokens/s counts the batch's input and
target tokens (not the prompt's); CPU s is the worker's CPU time per step (all its threads),
less moved than wall time when other processes share the CPUs. Beside it: the CPU's measured
float32 matmul peak (XLA and torch, 2048^3) and %peak, our step's FLOPs (XLA's cost analysis,
the same arithmetic on every side) per second of that side's step over the XLA peak.

  python benchmarks/anchors.py                       # both shapes, all sides, ~10 minutes
  python benchmarks/anchors.py --shapes lab --steps 9
  python benchmarks/anchors.py --shapes tiny --steps 2 --json out.json   # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIDES = ("ours", "ours_b", "hf", "t5x")  # ours_b: ours under `--ab`'s environment
METHODS = ("finetune", "promot_stage1", "promot_stage2")
DTYPES = ("float32", "bfloat16")
Z_LOSS = 1e-4
MARK = "@@anchors "  # prefix of a worker's protocol lines on stdout


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    inputs: int
    targets: int
    prompt: int
    describe: str


SHAPES = {
    "mt5_small": Shape("mt5_small", 8, 512, 128, 100, "mT5-small, vocab 32,128"),
    "lab": Shape("lab", 16, 49, 4, 50, "the lab's base (128-d 3+3), vocab 2,176"),
    "tiny": Shape("tiny", 2, 16, 8, 4, "tiny (64-d 2+2), vocab 128"),
}


# --------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
    """Everything both sides need to build one (shape, method) step."""

    shape: Shape
    method: str
    model: object  # network.T5Config
    learning_rate: float
    label_smoothing: float
    rng_impl: str
    base_dir: str | None  # weights to start from (the lab's base), else random
    dtype: str = "float32"  # the activations' (compute) dtype; parameters stay float32

    @property
    def tokens(self) -> int:
        return self.shape.batch * (self.shape.inputs + self.shape.targets)


def make_case(shape_name: str, method_name: str, dtype: str = "float32") -> Case:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    case = _make_case(shape_name, method_name)
    return dataclasses.replace(
        case, model=dataclasses.replace(case.model, dtype=dtype), dtype=dtype
    )


def _make_case(shape_name: str, method_name: str) -> Case:
    from promot_jax import methods, network, recipe, train

    shape = SHAPES[shape_name]
    method = methods.get_method(method_name)
    prompt = shape.prompt if method.has_prompt else 0
    if shape_name == "lab":
        # As promot_jax/lab/plan.py's `_stage` builds the lab's stages (read, not imported:
        # the lab's private helper is not an API).
        from promot_jax.lab.config import BASE_DIR, PRIMARY_TARGET, LabSettings, base_model_config
        from promot_jax.lab.plan import LENGTHS

        settings = LabSettings()
        lengths = LENGTHS[PRIMARY_TARGET]
        assert (settings.batch_size, lengths["inputs"], lengths["targets"]) == (
            shape.batch,
            shape.inputs,
            shape.targets,
        ), "the lab's stage shape moved: update SHAPES['lab']"
        assert settings.prompt_length == shape.prompt, "the lab's prompt length moved"
        model = base_model_config(
            prompt_length=prompt,
            dropout_rate=settings.model_dropout if method.trains_trunk else 0.0,
        )
        return Case(
            shape,
            method_name,
            model,
            settings.model_lr if method.trains_trunk else settings.prompt_lr,
            settings.model_label_smoothing if method.trains_trunk else 0.0,
            settings.rng_impl,
            str(BASE_DIR),
        )
    if shape_name == "mt5_small":
        model = network.mt5_config(
            "small", vocab_size=32128, dtype="float32", dropout_rate=0.0, prompt_length=prompt
        )
    else:
        model = network.mt5_config(
            "tiny", vocab_size=128, dtype="float32", dropout_rate=0.0, prompt_length=prompt
        )
    return Case(
        shape,
        method_name,
        model,
        recipe.for_method(method).learning_rate,
        0.0,
        train.DEFAULT_RNG_IMPL,
        None,
    )


def make_batch(case: Case) -> dict:
    """Random full-length rows (no padding), the same on every side."""
    import numpy as np

    s, vocab = case.shape, case.model.vocab_size
    rng = np.random.default_rng(0)
    tgt = rng.integers(2, vocab, (s.batch, s.targets)).astype(np.int32)
    return {
        "encoder_input_tokens": rng.integers(2, vocab, (s.batch, s.inputs)).astype(np.int32),
        "decoder_target_tokens": tgt,
        "decoder_input_tokens": np.concatenate([np.zeros((s.batch, 1), np.int32), tgt[:, :-1]], 1),
        "decoder_loss_weights": np.ones((s.batch, s.targets), np.float32),
    }


def initial_params(case: Case) -> dict:
    """Our parameter tree: the base checkpoint (prompt from the initialiser) or random."""
    import jax

    from promot_jax import checkpoints, network
    from promot_jax.prompt import PROMPT_KEY

    if case.base_dir is None:
        return jax.device_get(network.init_params(case.model, jax.random.key(0)))
    missing = (PROMPT_KEY,) if case.model.prompt_length else ()
    return checkpoints.load_params(case.base_dir, case.model, missing_ok=missing, rng=0)


# --------------------------------------------------------------------------- our side


@dataclasses.dataclass
class OursStep:
    """One blocking step of our runner's jitted train step (what `train_stage` calls)."""

    fns: object
    trainable: dict
    frozen: dict
    opt_state: object
    batch: dict
    base_rng: object
    steps: int = 0

    def __call__(self) -> None:
        import jax

        rng = jax.random.fold_in(self.base_rng, self.steps)
        self.trainable, self.opt_state, metrics = self.fns.train_step(
            self.trainable, self.frozen, self.opt_state, self.batch, rng
        )
        jax.block_until_ready(metrics["loss"])
        self.steps += 1

    def lowered(self):
        import jax

        rng = jax.random.fold_in(self.base_rng, 0)
        return self.fns.train_step.lower(
            self.trainable, self.frozen, self.opt_state, self.batch, rng
        )


def stage_config(case: Case):
    """The `train.StageConfig` our runner would run for `case` (it validates the case)."""
    from promot_jax import methods, train
    from promot_jax.optimizer import OptimizerConfig

    method = methods.get_method(case.method)
    return train.StageConfig(
        method=case.method,
        mixture="anchors",
        model=case.model,
        steps=1,
        batch_size=case.shape.batch,
        feature_lengths={"inputs": case.shape.inputs, "targets": case.shape.targets},
        optimizer=OptimizerConfig(learning_rate=case.learning_rate),
        label_smoothing=case.label_smoothing,
        z_loss=Z_LOSS,
        prompt_file=train.PREVIOUS_STAGE if method.prompt_source == "previous_stage" else None,
        rng_impl=case.rng_impl,
    )


def build_ours(case: Case) -> OursStep:
    import jax

    from promot_jax import methods, sharding, train

    cfg = stage_config(case)
    fns = train._stage_functions(*train._stage_key(cfg))
    params = jax.device_put(initial_params(case), fns.param_shardings)
    trainable, frozen = methods.split(case.method, params)
    return OursStep(
        fns,
        trainable,
        frozen,
        fns.init_opt_state(trainable),
        sharding.global_batch(make_batch(case), fns.mesh),
        jax.random.key(cfg.seed, impl=cfg.rng_impl),
    )


def ours_flops(step: OursStep) -> float | None:
    """FLOPs of one step from XLA's cost analysis of the compiled step (None if absent)."""
    try:
        cost = step.lowered().compile().cost_analysis()
    except Exception:  # cost analysis is best effort on every backend
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) or None


# --------------------------------------------------------------------------- transformers' side


def hf_config(model_cfg):
    import transformers

    if tuple(model_cfg.mlp_activations) != ("gelu", "linear"):
        raise ValueError(f"no transformers equivalent of {model_cfg.mlp_activations}")
    return transformers.MT5Config(
        vocab_size=model_cfg.vocab_size,
        d_model=model_cfg.emb_dim,
        d_kv=model_cfg.head_dim,
        d_ff=model_cfg.mlp_dim,
        num_layers=model_cfg.num_encoder_layers,
        num_decoder_layers=model_cfg.num_decoder_layers,
        num_heads=model_cfg.num_heads,
        relative_attention_num_buckets=model_cfg.relpos_num_buckets,
        relative_attention_max_distance=model_cfg.relpos_max_distance,
        dropout_rate=model_cfg.dropout_rate,
        layer_norm_epsilon=model_cfg.layer_norm_epsilon,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def hf_state_dict(case: Case) -> dict:
    """Our initial parameters under transformers' names (so the lab's base is the same)."""
    import numpy as np
    import torch

    from promot_jax.checkpoints import param_tree
    from promot_jax.checkpoints.transformers_mt5 import name_map

    flat = param_tree.flatten(initial_params(case))
    state = {}
    for ours, (theirs, transpose) in name_map(case.model).items():
        value = np.asarray(flat[ours], np.float32)
        state[theirs] = torch.from_numpy(np.ascontiguousarray(value.T if transpose else value))
    state["lm_head.weight"] = torch.from_numpy(
        np.ascontiguousarray(np.asarray(flat["decoder/logits_dense/kernel"], np.float32).T)
    )
    return state


@dataclasses.dataclass
class HFStep:
    model: object
    optimizer: object
    inputs: dict
    label_smoothing: float
    dtype: str = "float32"

    def __call__(self) -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        # bfloat16: torch's autocast (float32 parameters, bfloat16 matmuls), what a PyTorch
        # user would turn on; the loss is taken in float32 as ours.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"):
            if self.label_smoothing:
                labels = self.inputs["labels"]
                out = self.model(**{k: v for k, v in self.inputs.items() if k != "labels"})
            else:
                out = self.model(**self.inputs)
        if self.label_smoothing:
            loss = torch.nn.functional.cross_entropy(
                out.logits.float().flatten(0, 1),
                labels.flatten(),
                label_smoothing=self.label_smoothing,
            )
        else:
            loss = out.loss
        loss.backward()
        self.optimizer.step()


def build_hf(case: Case) -> HFStep:
    import torch
    import transformers
    from transformers.optimization import Adafactor

    from promot_jax import methods

    method = methods.get_method(case.method)
    torch.manual_seed(0)
    model = transformers.MT5ForConditionalGeneration(hf_config(case.model))
    # transformers 5 ties lm_head to the embedding whatever the config says; mT5's is untied.
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if case.base_dir is not None:
        missing, unexpected = model.load_state_dict(hf_state_dict(case), strict=False)
        assert not unexpected, unexpected
    if method.has_prompt:
        import peft

        model = peft.get_peft_model(
            model,
            peft.PromptTuningConfig(
                task_type=peft.TaskType.SEQ_2_SEQ_LM,
                num_virtual_tokens=case.model.prompt_length,
                # The prompt on the encoder only, as ours (peft's seq2seq default, 2, also
                # prepends P virtual tokens to the decoder's inputs).
                num_transformer_submodules=1,
            ),
        )
        prompt_params = list(model.prompt_encoder.parameters())
        for p in model.base_model.parameters():
            p.requires_grad_(method.trains_trunk)
        for p in prompt_params:
            p.requires_grad_(method.trains_prompt)
    else:
        prompt_params = []
    model.train()
    prompt_ids = {id(p) for p in prompt_params}
    trunk = [p for p in model.parameters() if p.requires_grad and id(p) not in prompt_ids]
    groups = []
    if trunk:
        groups.append({"params": trunk, "scale_parameter": True, "weight_decay": 0.0})
    if method.trains_prompt:
        from promot_jax import recipe

        groups.append(
            {
                "params": prompt_params,
                "scale_parameter": False,
                # optax and T5X decay by rate x param, HF by rate x lr x param.
                "weight_decay": recipe.PROMPT_WEIGHT_DECAY / case.learning_rate,
            }
        )
    optimizer = Adafactor(
        groups,
        lr=case.learning_rate,
        eps=(1e-30, 1e-3),
        clip_threshold=1.0,
        decay_rate=-0.8,
        beta1=None,
        relative_step=False,
        warmup_init=False,
    )
    batch = make_batch(case)
    inputs = {
        "input_ids": torch.from_numpy(batch["encoder_input_tokens"].astype("int64")),
        "attention_mask": torch.ones(batch["encoder_input_tokens"].shape, dtype=torch.int64),
        "decoder_input_ids": torch.from_numpy(batch["decoder_input_tokens"].astype("int64")),
        "labels": torch.from_numpy(batch["decoder_target_tokens"].astype("int64")),
    }
    return HFStep(model, optimizer, inputs, case.label_smoothing, case.dtype)


# --------------------------------------------------------------------------- T5X's side


T5X_STAGE_GIN = {
    "finetune": "t5x/baseline_finetune.gin",
    "promot_stage1": "t5x/stage1_prompt_only.gin",
    "promot_stage2": "t5x/stage2_frozen_prompt.gin",
}


@dataclasses.dataclass
class T5XStep:
    trainer: object
    batch: dict

    def __call__(self) -> None:
        import jax

        self.trainer.train(iter([self.batch]), num_steps=1)
        jax.block_until_ready(self.trainer.train_state.params)


def build_t5x(case: Case) -> T5XStep:
    """T5X's `Trainer` over the MODEL, partitioner and trainer class that the project's T5X
    stage gins bind (gin/t5x/: the network, T5X's loss, the method's MultiOptimizer of
    t5x.adafactor). The data, the initial parameters and the loop are the benchmark's: its
    batch, our initial parameters, one `Trainer.train` call per step.

    Run where t5x is installed from source (it is not on PyPI; README "Speed" says how).
    """
    import copy

    import flax
    import jax
    import numpy as np
    import t5x.train
    from t5x import utils

    import __main__
    import gin
    from promot_jax import prompt as prompt_lib
    from promot_jax.gin_paths import gin_dir

    cfg = case.model
    params = initial_params(case)
    sizes = {"mt5_small": "small", "lab": "tiny", "tiny": "tiny"}
    bindings = [
        # Bindings are parsed apart from the files: they need their own imports.
        "from __gin__ import dynamic_registration",
        "from t5x import partitioning",
        "from t5x import utils",
        "from promot_jax import network",
        "from promot_tasks import vocabularies",
        "VOCABULARY = @vocabularies.toy_vocabulary()",
        f"MODEL_SIZE = '{sizes[case.shape.name]}'",
        f"DROPOUT_RATE = {cfg.dropout_rate}",
        f"PROMPT_LENGTH = {cfg.prompt_length}",
        f"LABEL_SMOOTHING = {case.label_smoothing}",
        f"BATCH_SIZE = {case.shape.batch}",
        "partitioning.PjitPartitioner.num_partitions = 1",
        f"utils.create_learning_rate_scheduler.base_learning_rate = {case.learning_rate}",
    ]
    for key in (
        "vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
        "num_decoder_layers",
    ):  # fmt: skip
        bindings.append(f"network.mt5_config.{key} = {getattr(cfg, key)}")
    bindings.append(f"network.mt5_config.dtype = '{case.dtype}'")
    if case.method == "promot_stage2":
        path = Path(tempfile.mkdtemp()) / "prompt.npy"
        np.save(path, np.asarray(prompt_lib.get_prompt(params)))
        bindings.append(f"PROMPT_FILE = '{path}'")
    # T5X's run gins configure `__main__.train` (`import __main__ as train_script`), as
    # `t5x/train.py` run as a script provides it. With skip_unknown, gin 0.5 would also skip
    # every dynamically registered name it meets first, so nothing is skipped here.
    __main__.train = t5x.train.train
    gin.clear_config()
    gin.add_config_file_search_path(str(gin_dir()))
    gin.parse_config_files_and_bindings(
        [T5X_STAGE_GIN[case.method]], bindings, finalize_config=False, skip_unknown=False
    )
    model, partitioner, trainer_cls = (
        copy.deepcopy(gin.query_parameter(f"train_script.train.{k}"))
        for k in ("model", "partitioner", "trainer_cls")
    )
    batch = {k: np.asarray(v) for k, v in make_batch(case).items()}
    initializer = utils.TrainStateInitializer(
        optimizer_def=model.optimizer_def,
        init_fn=model.get_initial_variables,
        input_shapes={k: v.shape for k, v in batch.items()},
        input_types={k: v.dtype for k, v in batch.items()},
        partitioner=partitioner,
    )
    state = initializer.from_scratch(jax.random.key(0)).replace_params(flax.core.freeze(params))
    # Placed as the train state's axes say, so that the first step does not recompile.
    state = partitioner.move_params_to_devices(state, initializer.train_state_axes)
    trainer = trainer_cls(
        model=model,
        train_state=state,
        partitioner=partitioner,
        train_state_axes=initializer.train_state_axes,
        eval_names=[],
        summary_dir=None,
        rng=jax.random.key(0),
    )
    return T5XStep(trainer, batch)


# --------------------------------------------------------------------------- workers


def _pin_threads(threads: int) -> None:
    """Before jax or torch is imported: run on `threads` CPUs (XLA sizes its pool from them)."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads > len(cpus):
        raise SystemExit(f"--threads {threads}, but only {len(cpus)} CPUs are available")
    os.sched_setaffinity(0, cpus[:threads])


def _send(**msg) -> None:
    sys.stdout.write(MARK + json.dumps(msg) + "\n")
    sys.stdout.flush()


def worker(side: str, shape: str, method: str, threads: int, dtype: str) -> None:
    """Builds one case, compiles it with one step, then steps on each 'step' line of stdin."""
    _pin_threads(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    flops = None
    if side == "hf":
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # only settable before any parallel work
            torch.set_num_interop_threads(1)
        torch.set_flush_denormal(True)  # XLA:CPU flushes denormals to zero; see the docstring
    case = make_case(shape, method, dtype)
    if side == "ours":
        step = build_ours(case)
    elif side == "hf":
        step = build_hf(case)
    elif side == "t5x":
        step = build_t5x(case)
    else:
        raise SystemExit(f"unknown side {side!r}")
    step()  # compiles (ours, t5x) and allocates
    if side == "ours":
        flops = ours_flops(step)
    _send(ready=round(time.perf_counter() - t0, 2), flops=flops, tokens=case.tokens)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        _send(step_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0, faults=faults)
    _send(peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def allocator_env(env: dict[str, str]) -> dict[str, str]:
    """`env` as `promot-jax` would run our step in it (promot_jax/allocator.py)."""
    from promot_jax import allocator

    return allocator.preload_env(env) or env


def describe_allocator(env: dict[str, str]) -> str:
    preload = env.get("LD_PRELOAD", "").strip()
    if not preload:
        return "the C library's malloc"
    return f"LD_PRELOAD={preload} MALLOC_CONF={env.get('MALLOC_CONF', '')}"


def ab_env(assignments: str) -> dict[str, str]:
    """`--ab`'s 'KEY=VALUE ...' as environment changes; XLA_FLAGS are added to the current."""
    env = {}
    for item in assignments.split():
        key, _, value = item.partition("=")
        if key == "XLA_FLAGS" or key.startswith("--"):
            flag = item if key.startswith("--") else value
            env["XLA_FLAGS"] = " ".join(
                [env.get("XLA_FLAGS", os.environ.get("XLA_FLAGS", "")), flag]
            )
        else:
            env[key] = value
    return {k: v.strip() for k, v in env.items()}


class Worker:
    def __init__(
        self, side: str, shape: str, method: str, threads: int, ab: str = "", dtype="float32"
    ):
        self.side, self.method = side, method
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        if side == "ours_b":
            env.update(ab_env(ab))  # `--ab PROMOT_JAX_MALLOC=system`: glibc's malloc for B
            side = "ours"
        if side == "ours":
            env = allocator_env(env)
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in `kill`)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--_worker", side, shape, method]
            + ["--threads", str(threads), "--dtype", dtype],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A file, not a pipe: a worker that logs more than a pipe holds (T5X does)
            # would block on its next write while we wait for its next step.
            stderr=self.log,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.faults: list[int] = []
        self.info: dict = {}

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        self.proc.wait()
        self.log.seek(0)
        err = self.log.read()
        raise RuntimeError(f"{self.side} {self.method} worker died:\n{err[-3000:]}")

    def step(self) -> None:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        msg = self.read()
        self.times.append(msg["step_s"])
        self.cpu.append(msg["cpu_s"])
        self.faults.append(msg["faults"])

    def finish(self) -> None:
        self.proc.stdin.write("done\n")
        self.proc.stdin.close()
        self.info.update(self.read())
        self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def t5x_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("t5x") is not None
    except (ImportError, ValueError):
        return False


def run_group(
    shape: str,
    cases: list[tuple[str, str]],
    steps: int,
    warmup: int,
    threads: int,
    ab: str = "",
    dtype: str = "float32",
) -> list[dict]:
    """Starts every (side, method) of `cases` (one after the other: compiles do not overlap),
    then steps them in turn, `warmup + steps` rounds, reversing the order every round."""
    workers: list[Worker] = []
    results = []
    try:
        for side, method in cases:
            w = Worker(side, shape, method, threads, ab, dtype)
            workers.append(w)
            try:
                w.info.update(w.read())
            except RuntimeError as e:
                print(f"  {shape} {side} {method}: failed to build\n{e}", file=sys.stderr)
                workers.pop().kill()
        for r in range(warmup + steps):
            for w in workers if r % 2 == 0 else workers[::-1]:
                w.step()
        for w in workers:
            w.finish()
            timed = w.times[warmup:]
            med = statistics.median(timed)
            results.append(
                {
                    "shape": shape,
                    "side": w.side,
                    "method": w.method,
                    "step_s": med,
                    "steps_s": [round(t, 4) for t in timed],
                    # CPU seconds of all the worker's threads per step: less moved by other
                    # processes than wall time (but spinning threads count too).
                    "cpu_s": statistics.median(w.cpu[warmup:]),
                    # Minor page faults per step: memory the step touches afresh (XLA's
                    # temporaries come back from the OS zeroed when malloc returned them).
                    "faults_per_step": statistics.median(w.faults[warmup:]),
                    "tokens_per_s": w.info["tokens"] / med,
                    "peak_rss_gib": w.info["peak_rss_gib"],
                    "build_s": w.info["ready"],
                    "flops": w.info.get("flops"),
                }
            )
    finally:
        for w in workers:
            w.kill()
    return results


# What the project aims at (issue 21), judged here and never in tests: ours' speed over HF's
# per (shape, method) at least this; our stage 1 step at most this fraction of our
# fine-tuning step; our peak RSS at most HF's.
SPEED_TARGETS = {
    ("mt5_small", "finetune"): 1.2,
    ("mt5_small", "promot_stage1"): 1.5,
    ("lab", "finetune"): 1.5,
    ("lab", "promot_stage1"): 1.5,
    ("lab", "promot_stage2"): 1.5,
}
STAGE1_OVER_FINETUNE = 0.70
RSS_OVER_HF = 1.0


# --------------------------------------------------------------------------- the matmul peak


def peak_matmul(threads: int, dtype: str = "float32", n: int = 2048, reps: int = 5) -> dict:
    """This CPU's matmul FLOP/s on `threads` CPUs: XLA (jnp.dot) and torch (mm). In bfloat16
    XLA's dot is asked for a float32 result (as promot_jax.mixed_precision does)."""
    _pin_threads(threads)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    out = {}
    x = np.random.default_rng(0).standard_normal((n, n), np.float32)
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    xj = jnp.asarray(x, dtype)
    xt = torch.from_numpy(x).to(getattr(torch, dtype))
    for name, fn in (
        ("xla", lambda: dot(xj, xj).block_until_ready()),
        ("torch", lambda: torch.mm(xt, xt)),
    ):
        fn()
        best = min(_timed(fn) for _ in range(reps))
        out[name] = 2 * n**3 / best
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- the report


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _by_case(results: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(r["shape"], r["side"], r["method"]): r for r in results}


def _stage1_over_finetune(by: dict, shape: str, side: str) -> tuple[dict, dict] | None:
    """(stage 1's result, fine-tuning's) of one side at one shape, when both were measured."""
    st1, ft = by.get((shape, side, "promot_stage1")), by.get((shape, side, "finetune"))
    return (st1, ft) if st1 and ft else None


def targets(results: list[dict], peak: dict | None) -> list[str]:
    """Each target against what was measured. Beside a speed target: the ratio ours would
    reach if every FLOP of our compiled step ran at XLA's measured matmul peak and nothing
    else took time (HF's step as measured), a ceiling on what tuning our step can give on this
    CPU; beside the stage 1 target: the ratio of the two compiled steps' FLOPs."""
    by = _by_case(results)
    lines = ["\ntargets (judged here, not in tests):"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for (shape, method), want in SPEED_TARGETS.items():
        ours, hf = by.get((shape, "ours", method)), by.get((shape, "hf", method))
        if not (ours and hf):
            continue
        got = hf["step_s"] / ours["step_s"]
        line = f"  {shape} {method}: ours/hf speed {got:.2f}x, target >= {want:.2f}x: "
        line += verdict(got >= want)
        if ours.get("flops") and peak:
            ceiling = hf["step_s"] * peak["xla"] / ours["flops"]
            line += f" (ceiling at XLA's matmul peak: {ceiling:.2f}x)"
        lines.append(line)
    for shape in dict.fromkeys(r["shape"] for r in results):
        pair = _stage1_over_finetune(by, shape, "ours")
        if pair:
            st1, ft = pair
            got = st1["step_s"] / ft["step_s"]
            line = (
                f"  {shape} our stage 1 step / fine-tuning step {got:.2f}x, target <= "
                f"{STAGE1_OVER_FINETUNE:.2f}x: {verdict(got <= STAGE1_OVER_FINETUNE)}"
            )
            if st1.get("flops") and ft.get("flops"):
                line += f" (their FLOPs: {st1['flops'] / ft['flops']:.2f}x)"
            lines.append(line)
        rss = [
            (m, by[(shape, "ours", m)]["peak_rss_gib"] / by[(shape, "hf", m)]["peak_rss_gib"])
            for m in METHODS
            if (shape, "ours", m) in by and (shape, "hf", m) in by
        ]
        if rss:
            lines.append(
                f"  {shape} peak RSS ours/hf "
                + ", ".join(f"{m} {x:.2f}" for m, x in rss)
                + f", target <= {RSS_OVER_HF:.2f}: {verdict(all(x <= RSS_OVER_HF for _, x in rss))}"
            )
    return lines


def report(results: list[dict], peak: dict | None) -> list[str]:
    lines = []
    by = _by_case(results)
    for shape in dict.fromkeys(r["shape"] for r in results):
        s = SHAPES[shape]
        lines.append(
            f"\n{shape}: {s.describe}, batch {s.batch}, {s.inputs}/{s.targets} tokens, P {s.prompt}"
        )
        lines.append(
            f"{'method':15s} {'side':6s} {'step s':>8s} {'CPU s':>7s} {'tok/s':>9s} "
            f"{'RSS GiB':>8s} {'%peak':>7s} {'faults':>7s}  {'speed ours/it':>13s} "
            f"{'RSS ours/it':>11s}  steps"
        )
        for method in METHODS:
            for side in SIDES:
                r = by.get((shape, side, method))
                if r is None:
                    continue
                ours = by.get((shape, "ours", method))
                flops = (ours or {}).get("flops")
                util = f"{100 * flops / r['step_s'] / peak['xla']:6.1f}%" if flops and peak else ""
                ratio = rss = ""
                if side != "ours" and ours:
                    ratio = f"{r['step_s'] / ours['step_s']:.2f}x"
                    rss = f"{ours['peak_rss_gib'] / r['peak_rss_gib']:.2f}"
                lines.append(
                    f"{method:15s} {side:6s} {r['step_s']:8.3f} {r['cpu_s']:7.2f} "
                    f"{r['tokens_per_s']:9.1f} {r['peak_rss_gib']:8.2f} {util:>7s} "
                    f"{r['faults_per_step'] / 1e3:6.0f}k  "
                    f"{ratio:>13s} {rss:>11s}  {r['steps_s']}"
                )
        for side in SIDES:
            pair = _stage1_over_finetune(by, shape, side)
            if pair:
                st1, ft = pair
                lines.append(
                    f"{side}: stage 1 step / fine-tuning step {st1['step_s'] / ft['step_s']:.2f}x"
                    f" (CPU s {st1['cpu_s'] / ft['cpu_s']:.2f}x)"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="mt5_small,lab")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sides", default="ours,hf,t5x", help="t5x is skipped without t5x")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--together",
        action="store_true",
        help="keep every case of a shape alive at once (all methods interleaved; needs the "
        "memory of all of them: ~25 GiB at mt5_small), instead of one method at a time",
    )
    parser.add_argument(
        "--ab",
        default="",
        help="also run our step as side 'ours_b' with these environment changes, e.g. "
        "'--xla_cpu_foo=1' (an XLA flag, added to XLA_FLAGS) or 'PROMOT_JAX_MALLOC=system'",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="compute dtype on every side (parameters stay float32): ours and T5X through "
        "T5Config.dtype, HF through torch.autocast",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--_peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        worker(*args._worker, args.threads, args.dtype)
        return
    if args._peak:
        print(json.dumps(peak_matmul(args.threads, args.dtype)))
        return

    sides = [s for s in args.sides.split(",") if s]
    if args.ab:
        sides.insert(sides.index("ours") + 1 if "ours" in sides else 0, "ours_b")
        print(f"ours_b: our step with {ab_env(args.ab)}")
    if "t5x" in sides and not t5x_available():
        print("t5x: not importable, its step is skipped")
        sides.remove("t5x")
    methods = args.methods.split(",")
    started = time.time()
    print(
        f"anchors: {args.dtype}, {args.threads} threads of {os.cpu_count()} CPUs, {args.steps} "
        "timed steps per "
        f"case after {args.warmup} warm-up, load average {_load()}"
    )
    allocators = {"ours": allocator_env(dict(os.environ))}
    if args.ab:
        allocators["ours_b"] = allocator_env(dict(os.environ, **ab_env(args.ab)))
    allocators["others"] = dict(os.environ)
    print("allocator: " + "; ".join(f"{k} {describe_allocator(e)}" for k, e in allocators.items()))
    out = subprocess.run(
        [sys.executable, __file__, "--_peak", "--threads", str(args.threads)]
        + ["--dtype", args.dtype],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    peak = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    if peak:
        print(
            f"{args.dtype} matmul peak (2048^3): XLA {peak['xla'] / 1e9:.1f} GFLOP/s, "
            f"torch {peak['torch'] / 1e9:.1f} GFLOP/s"
        )
    results = []
    for shape in args.shapes.split(","):
        groups = (
            [[(s, m) for m in methods for s in sides]]
            if args.together
            else [[(s, m) for s in sides] for m in methods]
        )
        for group in groups:
            t0 = time.time()
            done = run_group(
                shape, group, args.steps, args.warmup, args.threads, args.ab, args.dtype
            )
            results += done
            shown = ", ".join(f"{r['side']} {r['step_s']:.3f} s" for r in done)
            print(
                f"  {shape} {', '.join(dict.fromkeys(m for _, m in group))}: {shown} "
                f"({time.time() - t0:.0f} s, load average {_load()})",
                flush=True,
            )
    if not args.together and len(methods) > 1:
        print(
            "\nours/it ratios come from steps taken in turn; the stage 1 / fine-tuning ratios "
            "compare groups run one after the other (--together interleaves them too)"
        )
    for line in report(results, peak) + targets(results, peak):
        print(line)
    print(f"\n{time.time() - started:.0f} s in all; load average {_load()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"peak_matmul_flops": peak, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
