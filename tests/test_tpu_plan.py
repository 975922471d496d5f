"""`promot-jax plan`: the runner's own programs compiled ahead of time, sized per device."""

from __future__ import annotations

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from promot_jax import cli, methods, network, sharding, tpu_plan
from promot_jax import prompt as prompt_lib
from promot_jax.checkpoints.param_tree import flatten
from promot_jax.commands.plan import describe
from promot_jax.optimizer import OptimizerConfig, make_optimizer

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
TINY = dict(batch_size=8, inputs_length=32, targets_length=8, eval_inputs_length=32)


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def test_the_compiled_training_step_holds_the_method_s_parameters_and_optimizer_state():
    work = tpu_plan.Workload("tiny", "promot_stage1", **TINY, decode_length=8)
    cpu = jax.devices("cpu")[:1]
    p = tpu_plan.plan(work, tpu_plan.parse_slice("v4-8"), 1, devices=cpu, log=lambda _: None)
    config = work.model_config()
    assert config.prompt_length == 100 and config.dropout_rate == 0.1
    params = network.abstract_params(config)
    trainable, _ = methods.split("promot_stage1", params)
    opt = jax.eval_shape(make_optimizer("promot_stage1", OptimizerConfig()).init, trainable)
    assert p.train.param_bytes == _nbytes(params)
    assert p.train.optimizer_bytes == _nbytes(opt) < _nbytes(trainable) * 3
    # Arguments: parameters, optimizer state, the batch and the rng key.
    batch_bytes = 8 * (32 + 3 * 8) * 4
    assert p.train.cost.argument_bytes >= p.train.param_bytes + p.train.optimizer_bytes
    assert p.train.cost.argument_bytes <= p.train.param_bytes + p.train.optimizer_bytes + (
        batch_bytes + 64
    )
    assert p.train.cost.temp_bytes > 0 and p.train.cost.flops > 0
    assert p.decode is not None and p.decode.argument_bytes >= p.train.param_bytes
    assert p.fits  # a few hundred MB against a v4 chip's 32 GiB
    row = p.to_dict()
    assert row["train"]["steps"] == 5000 and row["mesh"] == {"data": 1, "model": 1}
    assert row["train"]["roofline_schedule_hours"] > 0


def test_a_bfloat16_trunk_halves_the_trunk_s_bytes_and_nothing_else():
    """`--param_dtype bfloat16`: 2 bytes per trunk parameter, 4 per prompt parameter, and the
    optimizer state (the trunk's Adafactor statistics in stage 2) float32 as before."""
    mesh = sharding.make_mesh(1, 1, jax.devices("cpu")[:1])
    works = {
        d: tpu_plan.Workload("tiny", "promot_stage2", **TINY, param_dtype=d)
        for d in ("float32", "bfloat16")
    }
    counted = {d: tpu_plan.state_bytes(w, mesh) for d, w in works.items()}
    config = works["bfloat16"].model_config()
    assert (config.param_dtype, config.prompt_param_dtype) == (jnp.bfloat16, jnp.float32)
    sizes = {p: int(np.prod(x.shape)) for p, x in flatten(network.abstract_params(config)).items()}
    prompt = sizes.pop(prompt_lib.PROMPT_KEY)
    trunk = sum(sizes.values())
    (f32_params, f32_optimizer), (bf16_params, bf16_optimizer) = counted.values()
    assert (f32_params, bf16_params) == (4 * (trunk + prompt), 2 * trunk + 4 * prompt)
    assert bf16_optimizer == f32_optimizer > 0

    cost = tpu_plan.ProgramCost(0, 0, 0, 0, 0, 1.0, 1.0)
    plans = [
        tpu_plan.Plan(w, "v4-8", tpu_plan.CHIPS["v4"], (1, 1), tpu_plan.TrainPlan(*b, cost), None)
        for w, b in zip(works.values(), counted.values(), strict=True)
    ]
    assert plans[1].to_dict()["workload"]["param_dtype"] == "bfloat16"
    assert "(trunk bfloat16, prompt float32)" in describe(plans[1])
    # The table's trunk-dtype column; plans written before it existed are float32 ones.
    old = plans[0].to_dict()
    del old["workload"]["param_dtype"]
    table = tpu_plan.markdown_table([plans[1].to_dict(), old])
    assert [line.split(" | ")[2] for line in table.splitlines()[2:]] == ["float32", "bfloat16"]


def test_the_roofline_is_the_slower_of_compute_and_memory_traffic():
    chip = tpu_plan.CHIPS["v4"]
    cost = tpu_plan.ProgramCost(0, 0, 0, 0, 0, flops=275e12, bytes_accessed=600e9)
    assert cost.roofline_seconds(chip) == pytest.approx(1.0)
    memory_bound = dataclasses.replace(cost, bytes_accessed=2400e9)
    assert memory_bound.roofline_seconds(chip) == pytest.approx(2.0)
    donated = tpu_plan.ProgramCost(10, 8, 6, 3, 1, 0.0, 0.0)
    assert donated.hbm_bytes == 10 + 8 - 6 + 3 + 1


def _fake_plan(needs: dict[int, int]):
    """A compile_plan that 'compiles' to the given per-chip bytes for each model axis."""
    chip = dataclasses.replace(tpu_plan.CHIPS["v4"], hbm_gib=1)

    def compile_plan(work, slice_, model, *, decode, devices, log):
        cost = tpu_plan.ProgramCost(needs[model], 0, 0, 0, 0, 1.0, 1.0)
        train = tpu_plan.TrainPlan(0, 0, cost)
        return tpu_plan.Plan(work, slice_.name, chip, (len(devices) // model, model), train, None)

    return compile_plan


def test_a_mesh_that_does_not_fit_names_the_smallest_model_axis_that_does():
    gib = tpu_plan.GIB
    compile_plan = _fake_plan({1: 9 * gib, 2: 3 * gib, 4: gib // 2, 8: gib // 4})
    work = tpu_plan.Workload("xxl", "finetune")
    slice_ = tpu_plan.parse_slice("v4-16")
    devices = list(range(8))
    tried = compile_plan(work, slice_, 1, decode=False, devices=devices, log=None)
    assert not tried.fits
    best = tpu_plan.smallest_fitting(
        work, slice_, tried, devices=devices, log=None, compile_plan=compile_plan
    )
    assert best.mesh == (2, 4)
    nothing = _fake_plan({m: 2 * gib for m in (1, 2, 4, 8)})
    assert (
        tpu_plan.smallest_fitting(
            work, slice_, tried, devices=devices, log=None, compile_plan=nothing
        )
        is None
    )


def test_meshes_keep_the_batch_divisible_by_the_data_axis():
    assert tpu_plan.mesh_candidates(64, 64) == [
        (64, 1), (32, 2), (16, 4), (8, 8), (4, 16), (2, 32), (1, 64)
    ]  # fmt: skip
    assert tpu_plan.mesh_candidates(64, 16) == [(16, 4), (8, 8), (4, 16), (2, 32), (1, 64)]


@pytest.mark.parametrize(
    "name, chips, topology",
    [("v4-8", 4, "2x2x1"), ("v4-64", 32, "2x4x4"), ("v4-128", 64, "4x4x4"),
     ("v5p-256", 128, "4x4x8"), ("v5e-16", 16, "4x4"), ("v5litepod-8", 8, "2x4"),
     ("v6e-64", 64, "8x8")],
)  # fmt: skip
def test_slice_names_give_cloud_tpu_s_chip_counts_and_topologies(name, chips, topology):
    s = tpu_plan.parse_slice(name)
    assert (s.chips, s.topology) == (chips, topology)


@pytest.mark.parametrize(
    "name, says",
    [("v3-8", "generation one of v4, v5e, v5p, v6e"), ("v4-6", "power of two >= 8"),
     ("v4-4", "power of two >= 8"), ("v5e-12", "power of two >= 1"), ("tpu", "v4-64")],
)  # fmt: skip
def test_unknown_slices_fail_naming_the_accepted_form(name, says):
    with pytest.raises(ValueError, match=says):
        tpu_plan.parse_slice(name)


def test_bad_workloads_and_meshes_fail_naming_the_value(capsys):
    with pytest.raises(ValueError, match="unknown method 'promot_stage3'"):
        tpu_plan.Workload("xxl", "promot_stage3")
    with pytest.raises(ValueError, match="unknown mT5 size 'xxxl'"):
        tpu_plan.Workload("xxxl", "finetune")
    work = tpu_plan.Workload("tiny", "finetune", **TINY)
    with pytest.raises(ValueError, match="--mesh_model 3 does not divide the slice's 1 chips"):
        tpu_plan.plan(work, tpu_plan.parse_slice("v4-8"), 3, devices=jax.devices("cpu")[:1])
    code = cli.main(["plan", "--size", "xxl", "--method", "finetune", "--slice", "v3-8"])
    assert code == 2 and "unknown TPU slice 'v3-8'" in capsys.readouterr().err


def test_the_default_mesh_is_the_t5x_size_file_s():
    assert {s: tpu_plan.t5x_num_partitions(s) for s in ("small", "xl", "xxl")} == {
        "small": 1,
        "xl": 4,
        "xxl": 8,
    }


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed here: the slice's devices load")
def test_without_libtpu_the_plan_says_how_to_install_it():
    with pytest.raises(OSError, match=r'pip install -e "\.\[tpu\]"'):
        tpu_plan.parse_slice("v4-8").devices()


@pytest.mark.skipif(not HAS_LIBTPU, reason='needs libtpu: pip install -e ".[tpu]"')
def test_tiny_training_step_compiles_for_a_v4_slice():
    work = tpu_plan.Workload("tiny", "finetune", **TINY)
    slice_ = tpu_plan.parse_slice("v4-8")
    devices = slice_.devices()
    assert len(devices) == 4 and devices[0].device_kind == "TPU v4"
    p = tpu_plan.plan(work, slice_, 2, decode=False, devices=devices, log=lambda _: None)
    assert p.mesh == (2, 2) and p.fits and p.train.cost.code_bytes > 0
    # The embedding [vocab, d] is split along the model axis: half of it per chip.
    embedding = network.mt5_config("tiny").vocab_size * 64 * 4
    assert p.train.param_bytes < _nbytes(network.abstract_params(work.model_config()))
    assert p.train.param_bytes >= embedding // 2
