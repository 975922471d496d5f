"""Where our training step spends its time: a jax.profiler trace of the step, per XLA op.

Builds one case of benchmarks/anchors.py (our side), compiles it, traces `--steps` steps
and sums the CPU thunks' durations per op (all XLA threads together: "thread time"),
naming each op by what the compiled HLO says it is (a dot and its shapes, a fusion and the
ops it fuses, a copy, a gather...). Dots get their FLOP/s beside the CPU's measured matmul
peak (anchors.peak_matmul), so "slow" and "at the machine's limit" can be told apart.

  python benchmarks/profile_step.py --shape mt5_small --method finetune [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anchors  # noqa: E402

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\([^=]*?\)|\S+?)\s+([\w\-]+)\((.*)$")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def _dims(shape: str) -> list[int]:
    m = _SHAPE.search(shape)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def parse_hlo(text: str) -> dict[str, dict]:
    """Instruction name -> {op, shape, flops, where, fused: [ops]}; one entry per instruction
    (fusions and calls carry the FLOPs and ops of the computation they call)."""
    instrs: dict[str, dict] = {}
    comps: dict[str, list[str]] = collections.defaultdict(list)
    comp = None
    for line in text.splitlines():
        m = _INSTR.match(line)
        if not m:
            c = _COMP.match(line)
            if c:
                comp = c.group(1)
            continue
        name, shape, op, rest = m.groups()
        where = re.search(r'op_name="([^"]*)"', rest)
        info = {"op": op, "shape": shape, "flops": 0.0, "rest": rest}
        if where:
            info["where"] = where.group(1).replace("jit(step)/", "")
        called = re.search(r"(?:calls|to_apply)=%?([\w.\-]+)", rest)
        if called:
            info["calls"] = called.group(1)
        instrs[name] = info
        comps[comp].append(name)
    for info in instrs.values():
        if info["op"] not in ("dot", "convolution"):
            continue
        operands = re.findall(r"%([\w.\-]+)", info["rest"].split(")")[0])
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", info["rest"])
        if operands and contracting and operands[0] in instrs:
            lhs = _dims(instrs[operands[0]]["shape"])
            k = math.prod(lhs[int(i)] for i in contracting.group(1).split(",") if i)
            info["flops"] = 2.0 * math.prod(_dims(info["shape"])) * k
    for info in instrs.values():
        if "calls" in info:
            inner = [instrs[n] for n in comps.get(info["calls"], [])]
            info["fused"] = sorted({i["op"] for i in inner} - {"parameter", "constant"})
            info["flops"] += sum(i["flops"] for i in inner)
    for info in instrs.values():
        del info["rest"]
    return instrs


def category(info: dict | None) -> str:
    if info is None:
        return "other (not in the HLO)"
    if info["flops"]:
        return "matmul (dot, alone or fused)"
    if "rng_bit_generator" in info.get("where", "") or "bernoulli" in info.get("where", ""):
        return "dropout (random bits, masks)"
    op = info["op"]
    fused = set(info.get("fused", ()))
    if op in ("copy", "transpose") or (
        op == "fusion" and fused <= {"copy", "transpose", "bitcast", "reshape", "broadcast"}
    ):
        return "copy / transpose / layout"
    if op in ("gather", "scatter") or fused & {
        "gather",
        "scatter",
        "dynamic-slice",
        "dynamic-update-slice",
    }:
        return "gather / scatter (embedding, one-hot)"
    if op in ("reduce", "reduce-window") or "reduce" in fused:
        return "reductions (softmax, norms, loss, optimizer)"
    if op == "fusion" or op in ("add", "multiply", "exp", "select", "divide", "subtract"):
        return "elementwise fusions"
    return f"other ({op})"


def where_key(where: str) -> str:
    """An op's source without layer numbers: encoder/layers_*/mlp/wi_0/dot_general (bwd)."""
    bwd = where.startswith("transpose(")
    key = re.sub(r"layers_\d+", "layers_*", where)
    key = re.sub(r"^(transpose\()?jvp\((Transformer)?\)\)?/?", "", key)
    key = re.sub(r"Transformer\.(encode|decode)/", "", key)
    key = key.replace("/...d,df->...f", "").replace("jit(_bernoulli)/jit(_uniform)/", "")
    return key + (" (bwd)" if bwd else "")


def profile(step, steps: int, trace_dir: str) -> dict[str, float]:
    """Thread time (s) per thunk name over `steps` traced steps."""
    import jax

    jax.profiler.start_trace(trace_dir)
    for _ in range(steps):
        step()
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    data = jax.profiler.ProfileData.from_file(path)
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                name = event.name
                if name.startswith(("end: ", "ThunkExecutor", "ThreadpoolListener")):
                    continue
                totals[name] += event.duration_ns / 1e9
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="mt5_small", choices=sorted(anchors.SHAPES))
    parser.add_argument("--method", default="finetune", choices=anchors.METHODS)
    parser.add_argument("--dtype", default="float32", choices=anchors.DTYPES)
    parser.add_argument("--steps", type=int, default=2, help="traced steps")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--peak", action="store_true", help="measure the matmul peak first")
    parser.add_argument("--json", help="write the per-op table here")
    args = parser.parse_args()

    peak = None
    if args.peak:
        out = subprocess.run(
            [sys.executable, anchors.__file__, "--_peak", "--threads", str(args.threads)]
            + ["--dtype", args.dtype],
            capture_output=True,
            text=True,
        )
        peak = json.loads(out.stdout.strip().splitlines()[-1])["xla"]
    anchors._pin_threads(args.threads)
    case = anchors.make_case(args.shape, args.method, args.dtype)
    step = anchors.build_ours(case)
    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    compiled = step.lowered().compile()
    hlo = parse_hlo(compiled.as_text())
    memory = compiled.memory_analysis()
    step()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        totals = profile(step, args.steps, tmp)
    wall = (time.perf_counter() - t0) / args.steps
    thread_time = sum(totals.values()) / args.steps
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{args.shape} {args.method} {args.dtype}: step {wall:.3f} s wall (traced), "
        f"{thread_time:.3f} s of XLA thread time on {args.threads} threads; "
        f"compile+first {compile_s:.1f} s; load {load}"
    )
    if memory is not None:
        gib = 2**30
        print(
            f"XLA buffers: arguments {memory.argument_size_in_bytes / gib:.2f} GiB, outputs "
            f"{memory.output_size_in_bytes / gib:.2f} GiB (aliased "
            f"{memory.alias_size_in_bytes / gib:.2f}), temporaries "
            f"{memory.temp_size_in_bytes / gib:.2f} GiB, code "
            f"{memory.generated_code_size_in_bytes / gib:.3f} GiB"
        )
    by_cat: dict[str, float] = collections.defaultdict(float)
    cat_flops: dict[str, float] = collections.defaultdict(float)
    for name, secs in totals.items():
        info = hlo.get(name)
        cat = category(info)
        by_cat[cat] += secs / args.steps
        cat_flops[cat] += (info or {}).get("flops", 0.0)
    print(f"\n{'share':>6s} {'s/step':>8s}  category")
    for cat, secs in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        rate = ""
        if cat_flops[cat]:
            gf = cat_flops[cat] / secs / 1e9
            rate = f"  ({gf:.1f} GFLOP/s per thread-second" + (
                f", {100 * gf * 1e9 * args.threads / peak:.0f}% of the {args.threads}-thread peak)"
                if peak
                else ")"
            )
        print(f"{100 * secs / thread_time:5.1f}% {secs:8.3f}  {cat}{rate}")
    by_where: dict[str, float] = collections.defaultdict(float)
    for name, secs in totals.items():
        by_where[where_key((hlo.get(name) or {}).get("where", "?"))] += secs / args.steps
    print(f"\nby source (layers summed; 'bwd' = the backward pass), top {args.top}:")
    for key, secs in sorted(by_where.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{100 * secs / thread_time:5.1f}% {secs:8.3f}  {key}")
    print(f"\ntop {args.top} ops:")
    rows = []
    for name, secs in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
        info = hlo.get(name) or {}
        what = info.get("where") or ",".join(info.get("fused", [])[:6]) or info.get("op", "?")
        gf = info.get("flops", 0.0) / (secs / args.steps) / 1e9 if info.get("flops") else 0.0
        rows.append((name, secs / args.steps, info.get("shape", "?"), what, gf))
        rate = f" {gf:6.1f} GFLOP/s" if gf else ""
        print(
            f"{100 * secs / args.steps / thread_time:5.1f}% {secs / args.steps:7.3f}s  "
            f"{name[:36]:36s} {info.get('shape', '?')[:34]:34s} {what[:60]}{rate}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"categories": by_cat, "top": rows, "wall_s": wall}, indent=1)
        )


if __name__ == "__main__":
    main()
