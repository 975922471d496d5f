"""`promot-jax lab`: the mini-labs on a CPU in minutes: format specialization and ProMoT's fix;
`promot-jax lab dmt`: the DMT paper's argument.

promot-jax lab                       # full lab from the shipped base, new lab_runs/lab-<time>/
promot-jax lab --quick               # the same pipeline, reduced (CI)
promot-jax lab --full                # + ablations, toy RTE, En-Fr
promot-jax lab --out DIR             # resume an interrupted lab in DIR (--force: start over)
promot-jax lab --seeds 10,11,12      # the seeds of the main rows (default: held-out 10,11,12)
promot-jax lab --regularization_grid # + stage 2 with its dropout / label smoothing off
promot-jax lab pilot --out DIR       # the registered pilot that chose the lab's settings
promot-jax lab pilot --lora --out DIR  # the LoRA pilot that chose --variants' LoRA LR
promot-jax lab --variants            # + LoRA stage 1, trainable prompt, prompt lengths
promot-jax lab pretrain --out DIR    # pretrain the base model (DIR/base_model) and score it
promot-jax lab pretrain --size 10m --out DIR  # the scale axis: a 4.5x base (lab --base reads it)
promot-jax lab scale --runs LAB_2M,LAB_10M --out DIR  # the same lab on two sizes, compared
promot-jax lab dmt --out DIR         # the DMT lab: scaling, mixing, strategies, k sweep
promot-jax lab dmt --quick --out DIR # the same, reduced (CI)
promot-jax lab dmt --pilot --out DIR # the registered pilot that chose the DMT lab's domains
promot-jax lab dmt --ks 1,1/16 --fractions 1,1/4 --pools math=5500,code=1000,general=4300
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

HELP = "the mini-labs: fine-tune the toy base model (FT / ProMoT; `dmt`: DMT) and write a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "pretrain", "pilot", "scale", "dmt"),
        help="run (default): the lab; pretrain: build the base model; pilot: the registered "
        "pilot that chose the lab's settings (docs/lab_pilot.md); scale: compare two finished "
        "labs on bases of two sizes; dmt: the DMT lab (docs/dmt_lab_design.md)",
    )
    parser.add_argument(
        "--out", default=None, help="run directory (default: lab_runs/lab-<timestamp>)"
    )
    parser.add_argument("--quick", action="store_true", help="reduced lab (~2 minutes, for CI)")
    parser.add_argument(
        "--full",
        action="store_true",
        help="also the ablations, toy RTE (secondary target) and En-Fr (DMT: `lab dmt`)",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also, on every seed: ProMoT with LoRA in stage 1, stage 2 with the prompt "
        "trainable, ProMoT at prompt lengths 10 and 100 (issue 19; 36 min under load)",
    )
    parser.add_argument(
        "--lora", action="store_true", help="pilot: the LoRA pilot (LoRA stage 1's LR)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    parser.add_argument(
        "--base",
        default=None,
        help="base params dir (default: the shipped promot_jax/lab/base_model)",
    )
    parser.add_argument(
        "--regularization_grid",
        action="store_true",
        help="also rerun seed 0's FT and ProMoT stage 2 with stage 2's dropout and/or label "
        "smoothing off (a sensitivity table in the report; ~3 more minutes)",
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help="comma-separated seeds of the main rows (default: the held-out 10,11,12; "
        "--quick: 0); the pilot's seeds are refused",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that run the lab's units side by side, one CPU each (default: one "
        "per available CPU); the numbers do not depend on it",
    )
    parser.add_argument(
        "--runs",
        default=None,
        help="scale: two finished lab directories, comma-separated (one per base size)",
    )
    parser.add_argument("--steps", type=int, default=None, help="pretrain: number of steps")
    parser.add_argument(
        "--size",
        default=None,
        help="pretrain: the base's size, one of lab/config.py's LAB_SIZES (2m: the shipped "
        "base; 10m: 4.5x its parameters); the lab reads the size from the --base it is given",
    )
    parser.add_argument(
        "--eval_examples", type=int, default=32, help="pretrain: examples per suite task"
    )
    parser.add_argument(
        "--pilot",
        dest="dmt_pilot",
        action="store_true",
        help="dmt: run the registered pilot that chose the domains' difficulty and step cap",
    )
    parser.add_argument(
        "--ks",
        type=functools.partial(parse_fractions, flag="--ks"),
        default=None,
        help="dmt: DMT stage 2's shares of the domain data, e.g. 1,1/4,1/16 (each in (0, 1])",
    )
    parser.add_argument(
        "--fractions",
        type=functools.partial(parse_fractions, flag="--fractions"),
        default=None,
        help="dmt: the data fractions of the scaling, mixing and ratio experiments, 1 first",
    )
    parser.add_argument(
        "--max_steps",
        type=int,
        default=None,
        help="dmt: the compute rule's cap on a stage's steps (default: the pilot's 100, which "
        "keeps the lab within 15 minutes here)",
    )
    parser.add_argument(
        "--pools",
        type=parse_pools,
        default=None,
        help="dmt: pool sizes, e.g. math=11000,code=2000,general=8600",
    )


def parse_fractions(text: str, flag: str) -> tuple[float, ...]:
    """'1,1/4,0.0625' -> (1.0, 0.25, 0.0625), each in (0, 1]; else an error naming the value."""
    from fractions import Fraction

    values = []
    for part in text.split(","):
        try:
            value = float(Fraction(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(
                f"{flag} needs comma-separated fractions such as 1,1/4,1/16, got {part.strip()!r}"
            ) from None
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(
                f"{flag} values must be in (0, 1], got {part.strip()!r}"
            )
        values.append(value)
    return tuple(values)


def parse_pools(text: str) -> dict[str, int]:
    """'math=11000,code=2000,general=8600' -> {domain: size}; names and sizes checked."""
    from promot_jax.lab.dmt.config import DOMAINS

    pools = {}
    for part in text.split(","):
        name, _, size = part.partition("=")
        name = name.strip()
        if name not in DOMAINS:
            raise argparse.ArgumentTypeError(
                f"--pools: unknown DMT domain {name!r}; the domains are {', '.join(DOMAINS)}"
            )
        try:
            pools[name] = int(size)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--pools: {name}'s size must be an integer, got {size.strip()!r}"
            ) from None
    if sorted(pools) != sorted(DOMAINS):
        raise argparse.ArgumentTypeError(
            f"--pools needs a size for each of {', '.join(DOMAINS)}, got {text!r}"
        )
    return pools


def parse_seeds(text: str) -> tuple[int, ...]:
    """'10,11,12' -> (10, 11, 12); anything else is an argparse error naming the value."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(
            f"--seeds needs a comma-separated list of integers such as 10,11,12, got {text!r}"
        )
    try:
        seeds = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds needs integers such as 10,11,12, got {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds repeats a seed: {text!r}")
    return seeds


def _pretrain(args) -> int:
    import dataclasses

    from promot_jax import run_dirs
    from promot_jax.evaluation import reports, runner
    from promot_jax.lab import evaluate, pipeline, pretrain
    from promot_jax.lab.config import SHIPPED_SIZE, LabBase, PretrainSettings, check_size

    size = check_size(args.size or SHIPPED_SIZE)
    if args.out is None:
        raise ValueError("`promot-jax lab pretrain` needs --out DIR")
    settings = PretrainSettings()
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    pipeline.enable_compile_cache()
    start = time.perf_counter()
    base = pretrain.pretrain(args.out, settings, size)
    seconds = time.perf_counter() - start
    print(f"pretrained base: {base} ({seconds:.0f}s)")
    n = args.eval_examples
    evaluator = evaluate.LabEvaluator(runner.DecodeSettings(search="greedy", max_examples=n), n)
    model = evaluate.load_base(LabBase(base, size))
    run, _ = evaluator.suite_run(model, "toy_rte", "never", "pretrained base")
    run_dirs.write_atomic(Path(args.out, pretrain.BASE_EVAL_JSON), json.dumps(run, indent=2))
    print(reports.markdown_table({"pretrained base": [run]}))
    return 0


# Flags that only one action reads, and their defaults: given to the other, they are refused.
ACTION_FLAGS = {
    "pretrain": {"steps": None, "eval_examples": 32, "size": None},
    "run": {
        "quick": False,
        "force": False,
        "base": None,
        "regularization_grid": False,
        "seeds": None,
        "full": False,
        "variants": False,
        "workers": None,
    },
    "pilot": {"lora": False},
    "scale": {"runs": None},
    "dmt": {"dmt_pilot": False, "ks": None, "fractions": None, "pools": None, "max_steps": None},
}


def _check_flags(args: argparse.Namespace) -> None:
    for action, flags in ACTION_FLAGS.items():
        if action == args.action or (args.action == "pilot" and action == "run"):
            continue  # the pilot reads --out, --force and --base like the lab
        if args.action == "dmt" and action == "run":
            flags = {k: v for k, v in flags.items() if k in DMT_FOREIGN}
        shared = ("force",) if args.action == "scale" else ()  # scale may replace its report
        given = [
            f"--{k}"
            for k, default in flags.items()
            if getattr(args, k) != default and k not in shared
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply to `promot-jax lab {action}`, not to "
                f"`promot-jax lab {args.action}`; drop them (nothing was run)"
            )


# The ProMoT lab's flags the DMT lab does not read (it shares --quick, --force, --base,
# --seeds and --workers).
DMT_FOREIGN = ("full", "variants", "regularization_grid")


def _dmt(args: argparse.Namespace) -> int:
    import dataclasses

    from promot_jax.lab.dmt.config import DmtSettings

    if args.dmt_pilot:
        from promot_jax.lab.dmt import pilot

        if args.out is None or any(
            getattr(args, k) is not None for k in ("ks", "fractions", "pools", "seeds", "max_steps")
        ):
            raise ValueError(
                "`promot-jax lab dmt --pilot` runs its registered grid on the pilot seeds: give "
                "--out DIR and drop --ks, --fractions, --pools, --max_steps and --seeds (nothing "
                "was run)"
            )
        pilot.run_pilot(args.out, args.base, workers=args.workers)
        return 0
    options = {
        k: getattr(args, k)
        for k in ("ks", "fractions", "pools", "seeds", "max_steps")
        if getattr(args, k) is not None
    }
    seeds = options.pop("seeds", None)
    settings = DmtSettings.quick(**({"seeds": seeds} if seeds else {})) if args.quick else None
    settings = (
        dataclasses.replace(settings, **options)
        if settings
        else DmtSettings(**options, **({"seeds": seeds} if seeds else {}))
    )  # fmt: skip  (every check runs here, before anything is written)
    from promot_jax.lab.dmt import run as dmt_run

    out = args.out or time.strftime("lab_runs/dmt-%Y%m%d-%H%M%S")
    path = dmt_run.run_dmt_lab(out, settings, args.base, force=args.force, workers=args.workers)
    print(f"report: {path / 'report.md'}")
    return 0


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    if args.action == "pretrain":
        return _pretrain(args)
    if args.action == "dmt":
        return _dmt(args)
    if args.action == "scale":
        from promot_jax.lab import scale

        if not args.runs or args.out is None:
            raise ValueError("`promot-jax lab scale` needs --runs LAB_A,LAB_B and --out DIR")
        path = scale.compare(args.runs.split(","), args.out, force=args.force)
        print(path.read_text())
        return 0
    import dataclasses

    from promot_jax.lab import pipeline
    from promot_jax.lab.config import LabSettings

    if args.action == "pilot":
        from promot_jax.lab import pilot

        if args.seeds is not None or args.regularization_grid or args.variants or args.full:
            raise ValueError(
                "the pilot runs its registered seeds and grid; drop --seeds, --full, "
                "--variants and --regularization_grid (nothing was run)"
            )
        run_pilot = pilot.run_lora_pilot if args.lora else pilot.run_pilot
        run_pilot(args.out, args.base, force=args.force, quick=args.quick)
        return 0
    if args.quick and args.full:
        raise ValueError("--quick and --full are two sizes of the lab; give one (nothing ran)")
    seeds = {"seeds": args.seeds} if args.seeds else {}
    if args.quick:
        settings = LabSettings.quick(**seeds)
    elif args.full:
        settings = LabSettings.full(**seeds)
    else:
        settings = LabSettings(**seeds)
    if args.regularization_grid:
        settings = dataclasses.replace(settings, regularization_grid=True)
    if args.variants:
        settings = dataclasses.replace(settings, run_variants=True)
    pipeline.run_lab(args.out, settings, args.base, force=args.force, workers=args.workers)
    return 0
