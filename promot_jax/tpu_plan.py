"""A stage on a TPU slice, planned from any machine: compiled for the slice, sized, timed.

With libtpu installed (`pip install "jax[tpu]==0.10.2"`, or `.[tpu]`), XLA's TPU
compiler runs on a machine without a TPU: `jax.experimental.topologies` describes the
devices of a slice that is not there, and a jitted function lowered with abstract
arguments (`jax.ShapeDtypeStruct`s carrying shardings; nothing is allocated) compiles
for them. `plan` compiles the programs our runner runs, not models of them:

- the training step of `train._stage_functions` (the method's trainable/frozen split,
  Adafactor with its groups, the loss) with the parameters and optimizer state in the
  shardings training gives them on a `data x model` mesh;
- the suite runner's beam-search `Decoder` on the same mesh (`runner.Decoder`).

From each compiled program it reads the bytes one device holds (arguments, outputs not
aliased to arguments, temporaries, code) and XLA's FLOP and memory-traffic counts, and
bounds the step time from below with the chip's published peaks (a roofline: no
communication, no overlap, perfect utilisation). The schedule is the paper's: every
method runs `recipe.for_method(method).steps` steps (stage 1 5000, stage 2 1000).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gin import config_parser
from promot_jax import methods, network, recipe, sharding, train
from promot_jax.evaluation import runner
from promot_jax.gin_paths import gin_dir
from promot_jax.optimizer import OptimizerConfig

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation, with the figures Google Cloud publishes for one chip."""

    name: str  # as in topology names: "v4", "v5e", ...
    hbm_gib: float
    peak_bf16_tflops: float
    hbm_gb_per_s: float
    cores_in_slice_name: int  # "v4-8" counts TensorCores: 2 per v4 chip (one megacore device)
    chip_config: str  # `get_topology_desc`'s chip_config_name
    torus_dims: int  # 3: a 2x2x4 topology; 2: a 4x4 one
    source: str

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib * GIB)


# Per-chip HBM, peak bfloat16 matmul throughput and HBM bandwidth, from each generation's
# page in Google Cloud's TPU documentation (`source`).
CHIPS: dict[str, Chip] = {
    c.name: c
    for c in (
        Chip("v4", 32, 275, 1200, 2, "megacore", 3, "https://cloud.google.com/tpu/docs/v4"),
        Chip("v5e", 16, 197, 819, 1, "default", 2, "https://cloud.google.com/tpu/docs/v5e"),
        Chip("v5p", 95, 459, 2765, 2, "megacore", 3, "https://cloud.google.com/tpu/docs/v5p"),
        Chip("v6e", 32, 918, 1640, 1, "default", 2, "https://cloud.google.com/tpu/docs/v6e"),
    )
}
_SLICE_RE = re.compile(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)")


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice as Cloud TPU names it (`v4-64`: 64 TensorCores, 32 chips)."""

    name: str
    chip: Chip
    chips: int

    @property
    def topology(self) -> str:
        """The torus shape of `chips` (v4: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, ...)."""
        dims = [2, 2, 1] if self.chip.torus_dims == 3 else [1, 1]
        while math.prod(dims) < self.chips:
            smallest = min(dims)
            last = max(i for i, d in enumerate(dims) if d == smallest)
            dims[last] *= 2
        return "x".join(map(str, dims))

    def devices(self) -> list:
        """The slice's TPU devices, one per chip, described by libtpu (no TPU needed)."""
        if importlib.util.find_spec("libtpu") is None:
            raise OSError(
                "compiling for a TPU slice needs libtpu, which is not installed here: "
                'pip install -e ".[tpu]" (it brings jax[tpu]==0.10.2 and libtpu from PyPI)'
            )
        quiet_libtpu()
        from jax.experimental import topologies

        dims = [int(d) for d in self.topology.split("x")]
        desc = topologies.get_topology_desc(
            topology_name=f"{self.chip.name}:{self.topology}",
            platform="tpu",
            chip_config_name=self.chip.chip_config,
            chips_per_host_bounds=tuple(min(2, d) for d in dims[:2]) + (1,),
            num_slices=1,
        )
        return list(desc.devices)


def parse_slice(name: str) -> Slice:
    """`v4-64`, `v5e-16` (or `v5litepod-16`), `v5p-128`, `v6e-8`; anything else fails
    naming the accepted forms."""
    m = _SLICE_RE.fullmatch(name)
    if m is None:
        raise ValueError(
            f"unknown TPU slice {name!r}; expected <generation>-<cores>, generation one of "
            f"{', '.join(CHIPS)} (e.g. v4-64, v5e-16, v5p-128, v6e-8)"
        )
    chip = CHIPS["v5e" if m[1] == "v5litepod" else m[1]]
    cores = int(m[2])
    chips, rest = divmod(cores, chip.cores_in_slice_name)
    if rest or chips < 1 or chips & (chips - 1) or (chip.torus_dims == 3 and chips < 4):
        smallest = 4 * chip.cores_in_slice_name if chip.torus_dims == 3 else 1
        counts = "TensorCores, 2 per chip" if chip.cores_in_slice_name == 2 else "chips"
        raise ValueError(
            f"TPU slice {name!r}: {chip.name} slices are {chip.name}-N with N a power of two "
            f">= {smallest} (N counts {counts})"
        )
    return Slice(f"{chip.name}-{cores}", chip, chips)


def quiet_libtpu() -> None:
    """libtpu, loaded on a machine that is not a TPU VM, asks the metadata server for its
    accelerator and takes a lock file meant for one process per TPU host: neither applies
    to compiling for a described topology."""
    for name, value in (
        ("TPU_SKIP_MDS_QUERY", "1"),
        ("TPU_ACCELERATOR_TYPE", "v4-8"),
        ("TPU_WORKER_HOSTNAMES", "localhost"),
        ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),
    ):
        os.environ.setdefault(name, value)


# --------------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one stage runs: the paper's batch and lengths by default ([P] B.4)."""

    size: str
    method: str
    batch_size: int = recipe.BATCH_SIZE
    inputs_length: int = 512
    targets_length: int = 128
    eval_inputs_length: int = 1024  # the suite's summarisation inputs are cut at 1024
    decode_length: int = 128
    beam_size: int = 4
    num_prompts: int = 2  # multi-task methods: one prompt per task (RTE + En-Fr)
    # The trunk's storage dtype (T5Config.param_dtype); the prompt and adapters keep theirs.
    param_dtype: str = np.dtype(network.T5Config.param_dtype).name

    def __post_init__(self):
        methods.get_method(self.method)
        # Unknown sizes and dtypes fail naming the valid ones.
        network.mt5_config(self.size, param_dtype=self.param_dtype)
        for name in ("batch_size", "inputs_length", "targets_length", "eval_inputs_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def model_config(self) -> network.T5Config:
        """mT5 at `size` as the stage trains it: the method's prompt, the recipe's dropout."""
        method = methods.get_method(self.method)
        stage = recipe.for_method(method)
        prompt = dict(prompt_length=recipe.PROMPT_LENGTH) if method.has_prompt else {}
        if method.per_task_prompts:
            prompt["num_prompts"] = self.num_prompts
        return network.mt5_config(
            self.size, dropout_rate=stage.dropout, param_dtype=self.param_dtype, **prompt
        )

    def eval_config(self) -> network.T5Config:
        """What the suite decodes with: one prompt attached (a per-task prompt gives one row
        at a time), no dropout."""
        return runner.scoring_config(dataclasses.replace(self.model_config(), num_prompts=1))

    @property
    def steps(self) -> int:
        return recipe.for_method(self.method).steps


# --------------------------------------------------------------------------- compiling


@dataclasses.dataclass(frozen=True)
class ProgramCost:
    """Per-device figures of one compiled program."""

    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    flops: float
    bytes_accessed: float

    @property
    def hbm_bytes(self) -> int:
        """What the program needs resident: arguments, outputs that do not reuse an
        argument's buffer (donation), temporaries and the program itself."""
        return (
            self.argument_bytes
            + self.output_bytes
            - self.alias_bytes
            + self.temp_bytes
            + self.code_bytes
        )

    def roofline_seconds(self, chip: Chip) -> float:
        """A lower bound: the larger of compute at peak and memory traffic at full bandwidth."""
        return max(
            self.flops / (chip.peak_bf16_tflops * 1e12),
            self.bytes_accessed / (chip.hbm_gb_per_s * 1e9),
        )


def program_cost(compiled) -> ProgramCost:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return ProgramCost(
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes),
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
    )


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    param_bytes: int  # per device: trainable and frozen
    optimizer_bytes: int  # per device
    cost: ProgramCost


def _train_step_and_state(work: Workload, mesh):
    """Our runner's jitted stage functions for `work` on `mesh`, and the abstract training
    state in the shardings training gives it: (functions, params, trainable, frozen,
    optimizer state)."""
    config = work.model_config()
    fns = train._stage_functions(
        config,
        work.method,
        OptimizerConfig(),
        recipe.for_method(work.method).label_smoothing,
        0.0,
        "num_real_target_tokens",
        mesh,
    )
    params = sharding.with_shardings(network.abstract_params(config), fns.param_shardings)
    trainable, frozen = methods.split(work.method, params)
    opt_state = jax.eval_shape(fns.init_opt_state, trainable)
    return fns, params, trainable, frozen, opt_state


def state_bytes(work: Workload, mesh) -> tuple[int, int]:
    """(parameter, optimizer-state) bytes one device of `mesh` holds for `work`, from the
    shapes, dtypes and shardings alone (nothing compiled): a bfloat16 trunk counts 2 bytes a
    parameter, the prompt, adapters and Adafactor's statistics 4."""
    _, params, _, _, opt_state = _train_step_and_state(work, mesh)
    return sharding.per_device_bytes(params), sharding.per_device_bytes(opt_state)


def compile_train_step(work: Workload, mesh) -> TrainPlan:
    """Our runner's training step for `work`, compiled for `mesh`'s devices."""
    fns, params, trainable, frozen, opt_state = _train_step_and_state(work, mesh)
    rows = sharding.batch_sharding(mesh)
    task_id = 1 if work.model_config().num_prompts > 1 else 0  # per-task prompts' first token
    lengths = {
        "encoder_input_tokens": work.inputs_length + task_id,
        "decoder_input_tokens": work.targets_length,
        "decoder_target_tokens": work.targets_length,
        "decoder_loss_weights": work.targets_length,
    }
    batch = {
        k: jax.ShapeDtypeStruct((work.batch_size, n), jnp.int32, sharding=rows)
        for k, n in lengths.items()
    }
    rng = jax.eval_shape(lambda: jax.random.key(0))
    compiled = fns.train_step.lower(trainable, frozen, opt_state, batch, rng).compile()
    return TrainPlan(
        param_bytes=sharding.per_device_bytes(params),
        optimizer_bytes=sharding.per_device_bytes(opt_state),
        cost=program_cost(compiled),
    )


def compile_decoder(work: Workload, mesh) -> ProgramCost:
    """The suite runner's beam search for `work`'s evaluation, compiled for `mesh`."""
    config = work.eval_config()
    settings = runner.DecodeSettings(
        search="beam", beam_size=work.beam_size, batch_size=work.batch_size
    )
    decoder = runner.Decoder(config, settings, mesh)
    params = sharding.with_shardings(
        network.abstract_params(config), sharding.param_shardings(config, mesh)
    )
    tokens = jax.ShapeDtypeStruct(
        (work.batch_size, work.eval_inputs_length),
        np.int32,
        sharding=sharding.batch_sharding(mesh),
    )
    return program_cost(decoder.search_fn(work.decode_length).lower(params, tokens).compile())


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Plan:
    work: Workload
    slice_name: str
    chip: Chip
    mesh: tuple[int, int]  # (data, model)
    train: TrainPlan
    decode: ProgramCost | None

    @property
    def hbm_bytes(self) -> int:
        """Per chip, the larger of what training and decoding need (they run in turn)."""
        return max(self.train.cost.hbm_bytes, self.decode.hbm_bytes if self.decode else 0)

    @property
    def fits(self) -> bool:
        return self.hbm_bytes <= self.chip.hbm_bytes

    def to_dict(self) -> dict:
        step = self.train.cost.roofline_seconds(self.chip)
        out = {
            "size": self.work.size,
            "method": self.work.method,
            "slice": self.slice_name,
            "mesh": {"data": self.mesh[0], "model": self.mesh[1]},
            "workload": dataclasses.asdict(self.work),
            "chip": dataclasses.asdict(self.chip),
            "fits": self.fits,
            "train": {
                "param_bytes": self.train.param_bytes,
                "optimizer_bytes": self.train.optimizer_bytes,
                **dataclasses.asdict(self.train.cost),
                "hbm_bytes": self.train.cost.hbm_bytes,
                "roofline_step_seconds": step,
                "steps": self.work.steps,
                "roofline_schedule_hours": step * self.work.steps / 3600,
            },
        }
        if self.decode is not None:
            out["decode"] = {
                **dataclasses.asdict(self.decode),
                "hbm_bytes": self.decode.hbm_bytes,
            }
        return out


def mesh_candidates(devices: int, batch_size: int) -> list[tuple[int, int]]:
    """(data, model) meshes of `devices`, fewest model-parallel ways first, whose data
    axis divides the batch."""
    return [
        (devices // m, m)
        for m in (2**i for i in range(devices.bit_length()))
        if devices % m == 0 and batch_size % (devices // m) == 0
    ]


def plan(
    work: Workload,
    slice_: Slice,
    mesh_model: int,
    *,
    decode: bool = True,
    devices: Sequence | None = None,
    log: Callable[[str], None] = print,
) -> Plan:
    """Compiles `work` for `slice_` on a `(chips / mesh_model) x mesh_model` mesh."""
    devices = list(slice_.devices() if devices is None else devices)
    n = len(devices)
    if mesh_model < 1 or n % mesh_model:
        raise ValueError(f"--mesh_model {mesh_model} does not divide the slice's {n} chips")
    shape = (n // mesh_model, mesh_model)
    mesh = sharding.make_mesh(*shape, devices)
    sharding.check_batch_size(work.batch_size, mesh)
    log(f"compiling the {work.method} training step for {slice_.name}, mesh {shape[0]}x{shape[1]}")
    train_plan = compile_train_step(work, mesh)
    decode_cost = None
    if decode:
        log(f"compiling the beam-{work.beam_size} decoder")
        decode_cost = compile_decoder(work, mesh)
    return Plan(work, slice_.name, slice_.chip, shape, train_plan, decode_cost)


def smallest_fitting(
    work: Workload,
    slice_: Slice,
    tried: Plan,
    *,
    devices: Sequence | None = None,
    log: Callable[[str], None] = print,
    compile_plan: Callable[..., Plan] = plan,
) -> Plan | None:
    """The plan with the fewest model-parallel ways above `tried`'s that fits, or None."""
    devices = list(slice_.devices() if devices is None else devices)
    for _, model in mesh_candidates(len(devices), work.batch_size):
        if model <= tried.mesh[1]:
            continue
        candidate = compile_plan(
            work, slice_, model, decode=tried.decode is not None, devices=devices, log=log
        )
        if candidate.fits:
            return candidate
    return None


def t5x_num_partitions(size: str) -> int:
    """`PjitPartitioner.num_partitions` of gin/t5x/sizes/<size>.gin: the model-parallel
    ways `t5x train` uses at that size (the plan's default mesh)."""
    path = gin_dir() / "t5x" / "sizes" / f"{size}.gin"
    if not path.exists():
        raise ValueError(f"no T5X size file {path}; sizes: {', '.join(network.MT5_SIZES)}")
    for statement in config_parser.ConfigParser(path.read_text(), _Literal()):
        if (
            isinstance(statement, config_parser.BindingStatement)
            and statement.selector.endswith("PjitPartitioner")
            and statement.arg_name == "num_partitions"
        ):
            return int(statement.value)
    raise ValueError(f"{path} sets no PjitPartitioner.num_partitions")


class _Literal(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name: str, evaluate: bool):
        return scoped_name

    def macro(self, name: str):
        return name


def trunk_dtype(row: dict) -> str:
    """The trunk's dtype of a `Plan.to_dict` row; rows written before `Workload.param_dtype`
    existed compiled the default one."""
    return row["workload"].get("param_dtype", Workload.param_dtype)


def markdown_table(rows: Sequence[dict]) -> str:
    """The per-chip table of docs/cloud_tpu.md from `Plan.to_dict` rows (docs/tpu_plans/)."""
    order = {s: i for i, s in enumerate(network.MT5_SIZES)}
    rows = sorted(
        rows, key=lambda r: (order[r["size"]], r["method"], trunk_dtype(r) != Workload.param_dtype)
    )
    gib = lambda n: f"{n / GIB:.2f}"  # noqa: E731
    lines = [
        "| size | method | trunk dtype | slice | mesh (data x model) | params GiB | optimizer GiB "
        "| temporaries GiB | training total GiB (% HBM) | decoder total GiB "
        "| TFLOPs per step | roofline step s | steps | schedule h (lower bound) |",
        "|" + "---|" * 14,
    ]
    for r in rows:
        t, chip = r["train"], r["chip"]
        decode = gib(r["decode"]["hbm_bytes"]) if "decode" in r else "-"
        lines.append(
            f"| {r['size']} | {r['method']} | {trunk_dtype(r)} | {r['slice']} | "
            f"{r['mesh']['data']} x {r['mesh']['model']} | {gib(t['param_bytes'])} | "
            f"{gib(t['optimizer_bytes'])} | {gib(t['temp_bytes'])} | {gib(t['hbm_bytes'])} "
            f"({100 * t['hbm_bytes'] / (chip['hbm_gib'] * GIB):.0f}%) | {decode} | "
            f"{t['flops'] / 1e12:.1f} | {t['roofline_step_seconds']:.3f} | {t['steps']} | "
            f"{t['roofline_schedule_hours']:.2f} |"
        )
    return "\n".join(lines)
