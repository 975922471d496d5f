"""`promot-jax eval`: the in-context suite on a checkpoint, run comparisons, training curves.

promot-jax eval --checkpoint RUN/stage2 --target toy_rte --out EVAL [--prompt_file P.npy]
promot-jax eval --report ft=EVAL_A promot=EVAL_B promot=EVAL_C --out CMP
promot-jax eval --curves RUN --out FIGS
"""

from __future__ import annotations

import argparse

from promot_jax import paths

HELP = "evaluate a checkpoint on the in-context suite (prompt rule, leak rate), compare runs, plot"

TOY_MODEL = {"vocab_size": 2176, "dtype": "float32"}  # gin/models/toy.gin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--checkpoint",
        help="stage run dir, our params dir (final_params/best_params), T5X checkpoint or "
        "transformers dir",
    )
    mode.add_argument(
        "--report",
        nargs="+",
        metavar="[LABEL=]EVAL_DIR",
        help="eval output dirs side by side; equal labels are seeds of one method",
    )
    mode.add_argument(
        "--curves",
        nargs="+",
        metavar="RUN_DIR",
        help="plot probe scores, leak and gradient alignment vs steps",
    )
    parser.add_argument("--out", required=True, help="output directory")
    g = parser.add_argument_group("suite")
    g.add_argument(
        "--target",
        default="promot_rte",
        help="the fine-tuned task at 0-shot; toy_* selects the toy suite",
    )
    g.add_argument("--tasks", default=None, help="comma-separated tasks replacing the 8-task suite")
    g.add_argument("--shots", default="1,4", help="shot counts of the suite (default 1,4)")
    g.add_argument(
        "--prompt_rule",
        default="same_format",
        type=_rule,
        help="same_format (default, the paper's): prompt only for tasks in the target's "
        "format; always; never",
    )
    g.add_argument("--label", default="", help="column name in tables (default: checkpoint name)")
    m = parser.add_argument_group("model")
    m.add_argument(
        "--prompt_file", default=None, help="[P, d] .npy soft prompt (replaces a stored one)"
    )
    m.add_argument(
        "--prompt_tasks",
        default=None,
        help="comma-separated task of each row of a per-task [T, P, d] prompt, in task-id "
        "order (default: the stage's multi-task mixture)",
    )
    m.add_argument(
        "--which", default="best", choices=("best", "final"), help="which params of a stage run dir"
    )
    m.add_argument("--size", default=None, help="mT5 size when the checkpoint has no stage.json")
    m.add_argument("--vocab_size", type=int, default=None)
    m.add_argument("--dtype", default=None, help="activation dtype override (float32 on CPU)")
    d = parser.add_argument_group("decoding")
    d.add_argument("--decode", default="beam", choices=("beam", "greedy"))
    d.add_argument("--beam_size", type=int, default=4)
    d.add_argument("--alpha", type=float, default=0.6, help="beam length penalty")
    d.add_argument("--batch_size", type=int, default=16)
    d.add_argument("--max_examples", type=int, default=None, help="first N examples per task")
    d.add_argument(
        "--max_decode_length", type=int, default=None, help="default: longest target + 4, per task"
    )
    d.add_argument(
        "--mesh_data",
        type=int,
        default=-1,
        help="data-parallel ways of the decoding mesh (default: the devices --mesh_model leaves)",
    )
    d.add_argument(
        "--mesh_model",
        type=int,
        default=1,
        help="model-parallel ways: kernels split as in training (mT5-XXL needs 8 on TPU v4)",
    )
    d.add_argument(
        "--alignment_examples",
        type=int,
        default=0,
        help="also record the gradient-alignment probe on N target train examples",
    )


def _rule(text: str) -> str:
    """A prompt rule, reading 0.1's spelling `rule` (with a message) until 0.2."""
    import sys

    from promot_jax.evaluation import prompt_rule

    if text in prompt_rule.OLD_SPELLINGS:
        new = prompt_rule.OLD_SPELLINGS[text]
        print(
            f"promot-jax: --prompt_rule={text} is now spelled --prompt_rule={new}; "
            "the old spelling is read until promot-jax 0.2",
            file=sys.stderr,
        )
        return new
    try:
        return prompt_rule.check_rule(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list of names; None when the flag is not given."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers, got {text!r}") from None


def run_checkpoint(args: argparse.Namespace) -> int:
    import json

    from promot_jax import run_dirs, sharding
    from promot_jax.evaluation import model_source, plots, reports, runner, suite

    the_suite = suite.build_suite(
        args.target, shots=_ints(args.shots, "--shots"), tasks=_names(args.tasks)
    )
    settings = runner.DecodeSettings(
        search=args.decode,
        beam_size=args.beam_size,
        alpha=args.alpha,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        max_decode_length=args.max_decode_length,
    )
    mesh = sharding.make_mesh(args.mesh_data, args.mesh_model)
    sharding.check_batch_size(settings.batch_size, mesh)  # before anything is read
    overrides = {}
    if args.size and suite.split_name(args.target)[0] == "toy":
        overrides.update(TOY_MODEL)
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    model = model_source.load_model(
        args.checkpoint,
        prompt_file=args.prompt_file,
        which=args.which,
        size=args.size,
        config_overrides=overrides,
        prompt_tasks=_names(args.prompt_tasks),
    )
    model = model.place(mesh)
    label = args.label or paths.resolve(args.checkpoint).name
    results = runner.run_suite(
        model,
        the_suite,
        args.out,
        settings=settings,
        rule=args.prompt_rule,
        label=label,
        mesh=mesh,
    )
    config = runner.eval_config(model, the_suite, settings, args.prompt_rule, label)
    if args.alignment_examples:
        from promot_jax.evaluation import alignment, monitor

        batch = monitor.alignment_batch(the_suite.target.task, args.alignment_examples)
        cos = alignment.gradient_alignment(model.config, model.params, batch)
        config["gradient_alignment"] = cos
        run_dirs.write_atomic(paths.path(args.out) / "alignment.json", json.dumps(cos, indent=2))
    run = reports.write_run(args.out, config, results)
    plots.plot_task_scores(run, paths.path(args.out) / "scores.png")
    plots.plot_norm_avg({label: [run]}, paths.path(args.out) / "norm_avg.png")
    print(reports.markdown_table({label: [run]}))
    print(f"wrote {args.out}/eval.json, table.md, scores.png, norm_avg.png, predictions/")
    return 0


def run_report(args: argparse.Namespace) -> int:
    import json

    from promot_jax import run_dirs
    from promot_jax.evaluation import plots, reports

    runs = reports.group_runs(args.report)
    text = reports.comparison_markdown(runs)
    out = paths.path(args.out)
    run_dirs.write_atomic(out / "comparison.md", text)
    summary = {label: [r["summary"] for r in group] for label, group in runs.items()}
    run_dirs.write_atomic(out / "comparison.json", json.dumps(summary, indent=2))
    plots.plot_norm_avg(runs, out / "norm_avg.png")
    print(text)
    print(f"wrote {out}/comparison.md, comparison.json, norm_avg.png")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from promot_jax.evaluation import plots

    written = []
    for run_dir in args.curves:
        dirs = plots.stage_dirs(run_dir)
        for stage in dirs:
            prefix = f"{stage.name}_" if len(dirs) > 1 or len(args.curves) > 1 else ""
            written += plots.plot_training_curves(stage, args.out, prefix=prefix)
    if not written:
        raise ValueError(
            f"{', '.join(args.curves)}: metrics.jsonl holds no probe/ or grad_align/ scalars; "
            "train with eval_fn=evaluation.monitor.training_monitor(...)"
        )
    for p in written:
        print(f"wrote {p}")
    return 0


def run(args: argparse.Namespace) -> int:
    from promot_jax import run_dirs

    run_dirs.check_writable(args.out, "--out")
    if args.checkpoint:
        return run_checkpoint(args)
    if args.report:
        return run_report(args)
    return run_curves(args)
