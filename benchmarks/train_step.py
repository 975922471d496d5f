"""Step time, tokens/s and peak RSS at the mT5-small shape, measured side by side.

Every case runs in its own subprocess (peak RSS is per process), one after the
other, on the same machine in the same invocation, so ratios are comparable.

  forward+backward (issue 2): loss and gradients of all parameters, no optimizer,
      float32 and bfloat16 activations.
  training step (issue 4): promot_stage1, promot_stage2 and finetune, full update
      with Adafactor on the trainable subtree only (P = 100 for prompt methods): the
      cases of benchmarks/anchors.py at its mt5_small shape (built there, one place;
      anchors.py also runs them against transformers + peft).

Shape: mT5-small (d 512, 6x64 heads, mlp 1024, 8+8 layers) with the vocabulary
reduced to 32,128 (T5's) so it fits a laptop; batch 8, 512 input / 128 target tokens.

  python benchmarks/train_step.py [--steps 3] [--cases fwd_bwd_float32,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anchors  # noqa: E402

CASES = (
    "fwd_bwd_float32",
    "fwd_bwd_bfloat16",
    "promot_stage1",
    "promot_stage2",
    "finetune",
)
SHAPE = anchors.SHAPES["mt5_small"]
BATCH, INPUTS, TARGETS, VOCAB = SHAPE.batch, SHAPE.inputs, SHAPE.targets, 32128


def build_case(case: str):
    """A zero-argument callable doing one blocking step of `case` (compiled on first call)."""
    import jax

    from promot_jax import losses, network

    if not case.startswith("fwd_bwd"):
        return anchors.build_ours(anchors.make_case("mt5_small", case))
    batch = anchors.make_batch(anchors.make_case("mt5_small", "finetune"))
    dtype = case.rsplit("_", 1)[1]
    cfg = network.mt5_config("small", vocab_size=VOCAB, dtype=dtype)
    model = network.Transformer(cfg)
    params = network.init_params(cfg, jax.random.key(0))

    def loss_fn(p):
        return losses.batch_loss(model, p, batch)[0]

    fn = jax.jit(jax.value_and_grad(loss_fn))

    def step():
        jax.block_until_ready(fn(params))

    return step


def run_case(case: str, steps: int) -> dict:
    step = build_case(case)
    t0 = time.perf_counter()
    step()  # compile + first step
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tokens = BATCH * (INPUTS + TARGETS)
    return {
        "case": case,
        "compile_and_first_step_s": round(compile_s, 2),
        "step_s_median": round(median, 3),
        "step_s_all": [round(t, 3) for t in times],
        "tokens_per_s": round(tokens / median, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def interleaved(cases: list[str], rounds: int) -> dict[str, float]:
    """Median step time per case, stepping the cases in turn so load drifts hit all alike."""
    steps = {case: build_case(case) for case in cases}
    for step in steps.values():
        step()  # compile
    times: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(rounds):
        for case, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[case].append(time.perf_counter() - t0)
    return {case: statistics.median(t) for case, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--_case", help=argparse.SUPPRESS)
    parser.add_argument("--_interleave", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._case:
        print(json.dumps(run_case(args._case, args.steps)))
        return
    if args._interleave:
        print(json.dumps(interleaved(args._interleave.split(","), args.steps)))
        return
    import os

    print(
        f"mT5-small shape, vocab {VOCAB}, batch {BATCH}, {INPUTS}/{TARGETS} tokens, "
        f"{os.cpu_count()} CPUs, {args.steps} timed steps per case (median)"
    )
    results = {}
    for case in args.cases.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--_case", case, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"{case}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results[case] = r
        print(
            f"{case:18s} step {r['step_s_median']:8.3f} s  {r['tokens_per_s']:9.1f} tok/s  "
            f"peak RSS {r['peak_rss_gib']:5.2f} GiB  "
            f"(compile+first {r['compile_and_first_step_s']} s, steps {r['step_s_all']})"
        )
    training = [c for c in ("promot_stage1", "promot_stage2", "finetune") if c in results]
    if "finetune" in training and len(training) > 1:
        # Ratios from one process stepping the cases in turn (fair under a noisy machine).
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_interleave",
                ",".join(training),
                "--steps",
                str(args.steps),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"interleaved run failed\n{out.stderr[-2000:]}")
        else:
            med = json.loads(out.stdout.strip().splitlines()[-1])
            shown = ", ".join(f"{c} {t:.3f} s" for c, t in med.items())
            print(f"interleaved medians ({args.steps} rounds): {shown}")
            for case in training:
                if case != "finetune":
                    print(f"{case} / finetune step time: {med[case] / med['finetune']:.2f}x")
    if "fwd_bwd_float32" in results and "fwd_bwd_bfloat16" in results:
        ratio = (
            results["fwd_bwd_bfloat16"]["step_s_median"]
            / results["fwd_bwd_float32"]["step_s_median"]
        )
        print(f"bfloat16 / float32 forward+backward time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
