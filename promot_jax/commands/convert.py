"""`promot-jax convert SRC DST`: any checkpoint we read -> our Orbax params checkpoint.

SRC may be a transformers MT5/T5 directory, a T5X checkpoint (legacy or Orbax
layout, a `checkpoint_<step>` or a model directory) or one of our own. The
parameters are checked against the config before anything is written, and the
write is atomic, so a failure leaves nothing at DST.
"""

from __future__ import annotations

import argparse

from promot_jax import checkpoints, network, paths

HELP = "convert a transformers or T5X checkpoint into a promot-jax params checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint to read (any supported format)")
    parser.add_argument("dst", help="directory to write (an Orbax PyTree of the params)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--size", choices=list(network.MT5_SIZES), help="mT5 size of SRC")
    which.add_argument(
        "--config-from-source",
        action="store_true",
        help="read the architecture from SRC's config.json (transformers directories only)",
    )
    parser.add_argument("--vocab-size", type=int, help="override the size's vocabulary size")
    parser.add_argument("--prompt-length", type=int, default=0, help="soft prompt rows in SRC")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="the trunk's dtype (default: as stored); a prompt in SRC is written float32",
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")


def _config(args: argparse.Namespace) -> network.T5Config:
    overrides = {"prompt_length": args.prompt_length}
    if args.dtype is not None:
        overrides["param_dtype"] = args.dtype
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    if args.config_from_source:
        if checkpoints.detect_format(args.src) != "transformers":
            raise ValueError(
                f"{args.src}: --config-from-source needs a transformers directory "
                "(config.json); give --size for T5X and promot-jax checkpoints"
            )
        return checkpoints.t5x_config_from_transformers(args.src, **overrides)
    return network.mt5_config(args.size, **overrides)


def run(args: argparse.Namespace) -> int:
    dst = paths.path(args.dst)
    if dst.exists() and not args.force:
        raise ValueError(f"{dst} already exists; pass --force to replace it")
    config = _config(args)
    dtype = checkpoints.AS_CONFIG if args.dtype else None
    params = checkpoints.load_params(args.src, config, dtype=dtype)
    checkpoints.save_params(params, dst, force=args.force)
    n = sum(a.size for a in checkpoints.param_tree.flatten(params).values())
    print(
        f"wrote {n:,} parameters ({checkpoints.detect_format(args.src)} -> orbax params) to {dst}"
    )
    return 0
