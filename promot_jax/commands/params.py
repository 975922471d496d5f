"""`promot-jax params`: parameter counts of an mT5 size, per module, without allocating."""

from __future__ import annotations

import argparse

from promot_jax.network import MT5_SIZES, mt5_config
from promot_jax.param_count import count_params, format_count

HELP = "print total and per-module parameter counts of an mT5 size (no allocation)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="small", help=f"one of: {', '.join(MT5_SIZES)}")
    parser.add_argument("--prompt-length", type=int, default=0, help="soft prompt length P")
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="override the mT5 vocabulary (250112)"
    )


def run(args: argparse.Namespace) -> int:
    overrides = {"prompt_length": args.prompt_length}
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    config = mt5_config(args.size, **overrides)
    counts = count_params(config)
    width = max(len(k) for k in counts)
    print(
        f"mT5-{args.size}: emb {config.emb_dim}, {config.num_heads}x{config.head_dim} heads, "
        f"mlp {config.mlp_dim}, layers {config.num_encoder_layers}/{config.num_decoder_layers}, "
        f"vocab {config.vocab_size}, prompt {config.prompt_length}"
    )
    for name, n in counts.items():
        print(f"{name:<{width}}  {n:>15,}  {format_count(n):>8}")
    return 0
