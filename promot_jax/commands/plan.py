"""`promot-jax plan`: compile a stage for a TPU slice here (no TPU), and say if and how it fits.

    promot-jax plan --size xxl --method promot_stage2 --slice v4-128
    promot-jax plan --size xl --method finetune --slice v5e-64 --mesh_model 8 --json xl.json
    promot-jax plan --size xxl --method promot_stage1 --slice v4-128 --param_dtype bfloat16

Needs libtpu (`pip install -e ".[tpu]"`). See promot_jax.tpu_plan for what is compiled
and how the figures are derived.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from promot_jax import methods, network, run_dirs, tpu_plan

HELP = "compile a stage's training step and decoder for a TPU slice; print per-chip memory and time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", required=True, help=f"mT5 size: {', '.join(network.MT5_SIZES)}")
    parser.add_argument("--method", required=True, help=f"one of: {', '.join(methods.METHODS)}")
    parser.add_argument(
        "--slice", required=True, help="Cloud TPU slice: v4-8 .. v4-4096, v5e-N, v5p-N, v6e-N"
    )
    parser.add_argument(
        "--mesh_model",
        type=int,
        default=None,
        help="model-parallel ways (default: num_partitions of gin/t5x/sizes/<size>.gin)",
    )
    w = parser.add_argument_group("workload (default: the paper's)")
    defaults = tpu_plan.Workload
    w.add_argument("--batch_size", type=int, default=defaults.batch_size)
    w.add_argument("--inputs_length", type=int, default=defaults.inputs_length)
    w.add_argument("--targets_length", type=int, default=defaults.targets_length)
    w.add_argument(
        "--eval_inputs_length",
        type=int,
        default=defaults.eval_inputs_length,
        help="decoder input length (the suite's summarisation inputs: 1024)",
    )
    w.add_argument("--decode_length", type=int, default=defaults.decode_length)
    w.add_argument("--beam_size", type=int, default=defaults.beam_size)
    w.add_argument(
        "--param_dtype",
        default=defaults.param_dtype,
        choices=sorted(network.DTYPES),
        help="the trunk's storage dtype (T5Config.param_dtype); the prompt and LoRA adapters "
        "stay float32, and so does the optimizer state",
    )
    parser.add_argument("--no_decode", action="store_true", help="compile the training step only")
    parser.add_argument(
        "--no_search",
        action="store_true",
        help="when the mesh does not fit, do not compile larger model-parallel meshes",
    )
    parser.add_argument("--json", default=None, help="also write the plan as JSON to this path")


def _gib(n: float) -> str:
    return f"{n / tpu_plan.GIB:.2f} GiB"


def describe(p: tpu_plan.Plan) -> str:
    """The plan as a few lines of per-chip figures."""
    chip, work, cost = p.chip, p.work, p.train.cost
    config = work.model_config()
    prompt = f" (+{config.prompt_length} prompt)" if config.prompt_length else ""
    tuned = [
        f"{name} {np.dtype(dtype).name}"
        for name, dtype, has in (
            ("prompt", config.prompt_param_dtype, config.prompt_length),
            ("adapters", config.lora_param_dtype, config.lora_rank),
        )
        if has
    ]
    dtypes = ", ".join([f"trunk {np.dtype(config.param_dtype).name}", *tuned])
    step = cost.roofline_seconds(chip)
    lines = [
        f"mT5-{work.size} {work.method} on {p.slice_name}: {p.mesh[0] * p.mesh[1]} "
        f"TPU {chip.name} chips, mesh {p.mesh[0]} data x {p.mesh[1]} model; batch "
        f"{work.batch_size}, inputs {work.inputs_length}{prompt}, targets {work.targets_length}",
        f"chip: {chip.hbm_gib:g} GiB HBM, {chip.peak_bf16_tflops:g} TFLOP/s bf16 peak, "
        f"{chip.hbm_gb_per_s:g} GB/s ({chip.source})",
        "per chip              training step",
        f"  parameters          {_gib(p.train.param_bytes)} ({dtypes})",
        f"  optimizer state     {_gib(p.train.optimizer_bytes)}",
        f"  temporaries         {_gib(cost.temp_bytes)}",
        f"  program             {_gib(cost.code_bytes)}",
        f"  total               {_gib(cost.hbm_bytes)} of {chip.hbm_gib:g} GiB "
        f"({100 * cost.hbm_bytes / chip.hbm_bytes:.0f}%)",
        f"  FLOPs per step      {cost.flops:.3g}",
        f"  HBM traffic         {_gib(cost.bytes_accessed)} per step",
        f"  roofline step       {step:.3f} s (lower bound: peak FLOP/s or HBM bandwidth, "
        "no communication)",
        f"  paper's schedule    {work.steps} steps >= {step * work.steps / 3600:.2f} h",
    ]
    if p.decode is not None:
        d = p.decode
        lines += [
            f"beam-{work.beam_size} decoder (batch {work.batch_size}, inputs "
            f"{work.eval_inputs_length}, {work.decode_length} output tokens)",
            f"  temporaries         {_gib(d.temp_bytes)}",
            f"  total               {_gib(d.hbm_bytes)} of {chip.hbm_gib:g} GiB "
            f"({100 * d.hbm_bytes / chip.hbm_bytes:.0f}%)",
            f"  FLOPs               {d.flops:.3g} (encoder and one decoding step: XLA counts "
            "a loop's body once)",
        ]
    lines.append("fits" if p.fits else "DOES NOT FIT")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    work = tpu_plan.Workload(
        args.size,
        args.method,
        batch_size=args.batch_size,
        inputs_length=args.inputs_length,
        targets_length=args.targets_length,
        eval_inputs_length=args.eval_inputs_length,
        decode_length=args.decode_length,
        beam_size=args.beam_size,
        param_dtype=args.param_dtype,
    )
    slice_ = tpu_plan.parse_slice(args.slice)
    model = args.mesh_model or tpu_plan.t5x_num_partitions(args.size)
    devices = slice_.devices()
    p = tpu_plan.plan(work, slice_, model, decode=not args.no_decode, devices=devices)
    print(describe(p))
    if args.json:
        run_dirs.write_atomic(args.json, json.dumps(p.to_dict(), indent=2))
    if p.fits:
        return 0
    mesh = (
        f"mesh {p.mesh[0]}x{p.mesh[1]} needs {_gib(p.hbm_bytes)} per chip, more than the "
        f"{p.chip.hbm_gib:g} GiB of a {p.chip.name} chip"
    )
    if args.no_search:
        raise ValueError(f"{mesh}; try a larger --mesh_model or slice")
    better = tpu_plan.smallest_fitting(work, slice_, p, devices=devices)
    if better is None:
        raise ValueError(f"{mesh}, and no mesh of {slice_.name} fits; try a larger slice")
    print(describe(better))
    raise ValueError(
        f"{mesh}; the smallest mesh of {slice_.name} that fits is {better.mesh[0]} data x "
        f"{better.mesh[1]} model (--mesh_model {better.mesh[1]}, "
        f"{_gib(better.hbm_bytes)} per chip)"
    )
